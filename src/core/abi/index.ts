// The wasm ABI, host side: typed exports and imports generated from assembly/ (exports.ts),
// and the numeric constants each subsystem shares with the core. One convention throughout:
// snake-case <subsystem>_<verb> names, 64-bit values as (lo, hi) u32 halves.
export * from "./exports.js";
export * as memoryAbi from "./memory.js";
export * as iommuAbi from "./iommu.js";
export * as pciAbi from "./pci.js";
