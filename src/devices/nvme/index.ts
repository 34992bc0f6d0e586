// The NVMe controller device: createNvme() and the constants a host driver needs.
export * from "./controller.js";
export * from "./constants.js";
export { createFileBacking, createRamBacking, NVME_MAX_RAM_BYTES, type NvmeBacking } from "./backing.js";
