// The WebAssembly core: every export of build/core.wasm. Each subsystem keeps its own
// export list so the subsystems can grow independently.
export * from "./memory/exports";
export * from "./iommu/exports";
export * from "./pci/exports";
