// Exports of the pci subsystem (see assembly/index.ts).
export {
  pciFunctionCreate as pci_function_create,
  pciFunctionFree as pci_function_free,
  pciConfigBase as pci_config_base,
  pciWmaskBase as pci_wmask_base,
  pciW1cmaskBase as pci_w1cmask_base,
  pciConfigSize as pci_config_size,
  pciBarRegister as pci_bar_register,
  pciBarClearSlot as pci_bar_clear_slot,
  pciUpdateMappings as pci_update_mappings,
  pciConfigWrite as pci_config_write,
  pciConfigRead as pci_config_read,
  pciBarAddressLo as pci_bar_address_lo,
  pciBarAddressHi as pci_bar_address_hi,
  pciBarDecode as pci_bar_decode,
  pciDecodedOffsetLo as pci_decoded_offset_lo,
  pciDecodedOffsetHi as pci_decoded_offset_hi,
} from "./config";
