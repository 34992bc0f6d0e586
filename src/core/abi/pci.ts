// Numeric contract of the wasm PCI tables: the host side of assembly/pci/config.ts.
// test/architecture/abi.test.ts checks every value against the assembly source.

/** pciBarRegister flags. */
export const BAR_FLAG_IO = 1;
export const BAR_FLAG_MEM64 = 2;
export const BAR_FLAG_PREFETCH = 4;
export const BAR_FLAG_ROM = 8;

/** pciConfigWrite result bits (bits 0..6: that slot's decoded address changed). */
export const CFGW_COMMAND = 1 << 8;
export const CFGW_INTX_DISABLE_CHANGED = 1 << 9;
export const CFGW_INVALID = 1 << 31;

/** Offsets in a function block: config bytes, write mask, write-1-to-clear mask. */
export const CONFIG_OFF = 0;
export const WMASK_OFF = 4096;
export const W1CMASK_OFF = 8192;
/** Bytes of one function block in linear memory. */
export const FUNCTION_BLOCK_SIZE = 12544;
/** BAR slots 0..5 plus the ROM (slot 6). */
export const PCI_NUM_REGIONS = 7;
export const PCI_ROM_SLOT = 6;
