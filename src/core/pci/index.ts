// PCI function model (issue #4): device-author API, config space, BARs, capabilities,
// interrupts. See api.ts for the contract.
export * from "./api.js";
export { PciError } from "./errors.js";
export type { PciErrorFields } from "./errors.js";
