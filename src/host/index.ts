// OS resources a device needs, shared by the vfio-user server and the mpqemu remote: the
// mappings of DMA memory a peer passes as fds, and the eventfds of ioeventfds. src/core
// describes what it needs as interfaces (FdMapper, EventFdSource) and never calls the OS.
import { createDmaContext, type DmaContext } from "../core/dma/context.js";
import type { DmaContextOptions } from "../core/dma/api.js";
import type { IommuCore } from "../core/iommu/iommu.js";
import { hostFdMapper } from "./fd-mapper.js";

export { hostFdMapper } from "./fd-mapper.js";
export { hostEventFds } from "./eventfds.js";

/** createDmaContext with fd regions mapped by the host (hostFdMapper) unless `mapFd` is given. */
export function createHostDmaContext(options: DmaContextOptions & { core?: IommuCore } = {}): DmaContext {
  return createDmaContext({ ...options, mapFd: options.mapFd ?? hostFdMapper });
}
