// Exports of the pci subsystem (see assembly/index.ts).
export const PCI_ABI_VERSION: u32 = 1;
export {
  pciFunctionCreate,
  pciFunctionFree,
  pciConfigBase,
  pciWmaskBase,
  pciW1cmaskBase,
  pciConfigSize,
  pciBarRegister,
  pciBarClearSlot,
  pciUpdateMappings,
  pciConfigWrite,
  pciConfigRead,
  pciBarAddressLo,
  pciBarAddressHi,
  pciBarDecode,
  pciDecodedOffsetLo,
  pciDecodedOffsetHi,
} from "./config";
