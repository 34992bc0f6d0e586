// PCI function model (issue #4): device-author API, config space, BARs, capabilities,
// interrupts. See api.ts for the contract.
export * from "./api.js";
export { PciError } from "./errors.js";
export type { PciErrorFields } from "./errors.js";
export { createPciFunction, defaultPciCore, PCI_MAX_BAR_SIZE } from "./function.js";
export type { CreatePciFunctionOptions } from "./function.js";
export * as pciRegs from "./regs.js";
