// Host-shared rings for device models (NVMe queues today; the same pieces fit virtio rings).
export { CompletionRing, needEvent, ShadowDoorbell, SubmissionRing, type RingMemory } from "./ring.js";
