// The WebAssembly core: every export of build/core.wasm. Each subsystem keeps its own
// export list so the subsystems can grow independently. Conventions of the whole ABI: export
// names are <subsystem>_<verb> in snake case; 64-bit values cross as two u32 halves, low half
// first. The host side is src/core/abi (its exports.ts is generated from these sources).

/** Raised whenever an export, an import or a shared constant changes meaning; the host refuses
 *  a core built for another version (src/core/wasm.ts). */
export const CORE_ABI_VERSION: u32 = 3;
export * from "./memory/exports";
export * from "./iommu/exports";
export * from "./pci/exports";
