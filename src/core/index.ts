// Public host API of the core (address spaces, regions, DMA). See README "Library".
export { instantiateCore, coreWasmPath } from "./wasm.js";
export type { CoreRef, CoreBuild, HostImportFactory } from "./wasm.js";
export * from "./memory/index.js";
export * from "./dma/index.js";
export * from "./iommu/index.js";
export * from "./pci/index.js";
export { realClock, createManualClock } from "./clock.js";
export type { DeviceClock, DeviceTimer, ManualClock } from "./clock.js";
