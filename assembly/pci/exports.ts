// Exports of the pci subsystem (see assembly/index.ts).
export const PCI_ABI_VERSION: u32 = 1;
