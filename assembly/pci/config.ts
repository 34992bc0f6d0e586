// PCI function config space and BAR decode, in linear memory (issue #4).
//
// One block per function, allocated unmanaged (heap.alloc) and addressed by its pointer:
//
//   fn ─► +0      config  [4096] u8   the register bytes guests read
//         +4096   wmask   [4096] u8   1 = bit writable by config writes  (QEMU PCIDevice.wmask)
//         +8192   w1cmask [4096] u8   1 = bit cleared by writing 1       (QEMU PCIDevice.w1cmask)
//         +12288  bars[7] ┌──────────┬──────────┬───────┬─────┬──────┐ 32 bytes each;
//                         │ size u64 │ addr u64 │ flags │ reg │ pad  │ slot 6 = expansion ROM
//                         └──────────┴──────────┴───────┴─────┴──────┘
//                 size 0 = no BAR in this slot; addr = decoded bus address or BAR_UNMAPPED;
//                 reg = config offset of the BAR's (low) dword.
//         +12512  configSize u32 (256 or 4096)
//         +12516  pad u32
//         +12520  decodedOffset u64 (result of pciBarDecode)
//
// The host (src/core/pci) fills ids, capabilities and their masks through views of this
// block; everything a config write does to masks and BAR mappings runs here.

// @ts-ignore: decorator
@inline export const CONFIG_OFF: usize = 0;
// @ts-ignore: decorator
@inline export const WMASK_OFF: usize = 4096;
// @ts-ignore: decorator
@inline export const W1CMASK_OFF: usize = 8192;
// @ts-ignore: decorator
@inline export const BARS_OFF: usize = 12288;
// @ts-ignore: decorator
@inline export const BAR_ENTRY_SIZE: usize = 32;
// @ts-ignore: decorator
@inline export const BAR_SIZE: usize = 0;
// @ts-ignore: decorator
@inline export const BAR_ADDR: usize = 8;
// @ts-ignore: decorator
@inline export const BAR_FLAGS: usize = 16;
// @ts-ignore: decorator
@inline export const BAR_REG: usize = 20;
// @ts-ignore: decorator
@inline export const CONFIG_SIZE_OFF: usize = 12512;
// @ts-ignore: decorator
@inline export const DECODED_OFFSET_OFF: usize = 12520;
// @ts-ignore: decorator
@inline export const FUNCTION_BLOCK_SIZE: usize = 12544;

/** Number of BAR slots: six BARs and the expansion ROM. */
export const PCI_NUM_REGIONS: i32 = 7;
export const PCI_ROM_SLOT: i32 = 6;

/** BAR flags (slot `flags` field). */
export const BAR_FLAG_IO: u32 = 1;
export const BAR_FLAG_MEM64: u32 = 2;
export const BAR_FLAG_PREFETCH: u32 = 4;
export const BAR_FLAG_ROM: u32 = 8;

/** QEMU PCI_BAR_UNMAPPED. */
export const BAR_UNMAPPED: u64 = 0xffffffffffffffff;

/** pciConfigWrite result bits. Bits 0..6: that slot's decoded address changed. */
export const CFGW_COMMAND: u32 = 1 << 8; // the command register was written
export const CFGW_INTX_DISABLE_CHANGED: u32 = 1 << 9;
export const CFGW_INVALID: u32 = 1 << 31; // bad offset/size; nothing written

// Header register offsets and bits (PCI Local Bus 3.0, ch. 6).
// @ts-ignore: decorator
@inline const PCI_COMMAND: u32 = 0x04;
// @ts-ignore: decorator
@inline const PCI_STATUS: u32 = 0x06;
// @ts-ignore: decorator
@inline const PCI_CACHE_LINE_SIZE: u32 = 0x0c;
// @ts-ignore: decorator
@inline const PCI_BASE_ADDRESS_0: u32 = 0x10;
// @ts-ignore: decorator
@inline const PCI_ROM_ADDRESS: u32 = 0x30;
// @ts-ignore: decorator
@inline const PCI_INTERRUPT_LINE: u32 = 0x3c;
// @ts-ignore: decorator
@inline const PCI_HEADER_SIZE: u32 = 0x40;

export const PCI_COMMAND_IO: u32 = 0x1;
export const PCI_COMMAND_MEMORY: u32 = 0x2;
export const PCI_COMMAND_MASTER: u32 = 0x4;
export const PCI_COMMAND_SERR: u32 = 0x100;
export const PCI_COMMAND_INTX_DISABLE: u32 = 0x400;
/** Status bits software clears by writing 1 (QEMU pci_init_w1cmask). */
export const PCI_STATUS_W1C: u32 = 0xf900;

// @ts-ignore: decorator
@inline function barEntry(fn: usize, slot: i32): usize {
  return fn + BARS_OFF + (<usize>slot) * BAR_ENTRY_SIZE;
}

// @ts-ignore: decorator
@inline function cfgSize(fn: usize): u32 {
  return load<u32>(fn, CONFIG_SIZE_OFF);
}

/**
 * Allocates a function block with QEMU's default masks (pci_init_wmask, pci_init_w1cmask):
 * the header is read-only except the command bits IO/MEM/MASTER/SERR/INTX_DISABLE, cache
 * line size and interrupt line; status error bits are W1C; everything past the 64-byte
 * header is writable until capabilities claim it. Returns 0 for a bad size.
 */
export function pciFunctionCreate(configSize: u32): usize {
  if (configSize != 256 && configSize != 4096) return 0;
  const fn = heap.alloc(FUNCTION_BLOCK_SIZE);
  memory.fill(fn, 0, FUNCTION_BLOCK_SIZE);
  store<u32>(fn, configSize, CONFIG_SIZE_OFF);
  const wm = fn + WMASK_OFF;
  store<u8>(wm + PCI_CACHE_LINE_SIZE, 0xff);
  store<u8>(wm + PCI_INTERRUPT_LINE, 0xff);
  store<u16>(wm + PCI_COMMAND, <u16>(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE));
  memory.fill(wm + PCI_HEADER_SIZE, 0xff, configSize - PCI_HEADER_SIZE);
  store<u16>(fn + W1CMASK_OFF + PCI_STATUS, <u16>PCI_STATUS_W1C);
  for (let i = 0; i < PCI_NUM_REGIONS; i++) store<u64>(barEntry(fn, i), BAR_UNMAPPED, BAR_ADDR);
  return fn;
}

export function pciFunctionFree(fn: usize): void {
  if (fn) heap.free(fn);
}

export function pciConfigBase(fn: usize): usize {
  return fn + CONFIG_OFF;
}
export function pciWmaskBase(fn: usize): usize {
  return fn + WMASK_OFF;
}
export function pciW1cmaskBase(fn: usize): usize {
  return fn + W1CMASK_OFF;
}
export function pciConfigSize(fn: usize): u32 {
  return cfgSize(fn);
}

/**
 * Declares a BAR in `slot` (0..5, or 6 for the ROM) of `size` bytes (power of two, given as
 * two u32 halves). Sets the type bits in config space and the sizing mask in wmask
 * (QEMU pci_register_bar): the BAR reads back ~(size-1) | type after an all-ones write. A
 * 64-bit BAR's mask spans slot and slot+1. Returns 0, or -1 for an invalid declaration.
 */
export function pciBarRegister(fn: usize, slot: i32, sizeLo: u32, sizeHi: u32, flags: u32): i32 {
  if (slot < 0 || slot >= PCI_NUM_REGIONS) return -1;
  const size = ((<u64>sizeHi) << 32) | <u64>sizeLo;
  if (size == 0 || (size & (size - 1)) != 0) return -1;
  const isRom = slot == PCI_ROM_SLOT;
  if (isRom != ((flags & BAR_FLAG_ROM) != 0)) return -1;
  const isIo = (flags & BAR_FLAG_IO) != 0;
  const is64 = (flags & BAR_FLAG_MEM64) != 0;
  if (isIo && (is64 || (flags & BAR_FLAG_PREFETCH) != 0 || size < 4)) return -1;
  if (!isIo && !isRom && size < 16) return -1;
  if (isRom && (is64 || size < 2048)) return -1;
  if (is64 && slot >= 5) return -1;
  if (!is64 && size > 0x80000000) return -1;
  const reg: u32 = isRom ? PCI_ROM_ADDRESS : PCI_BASE_ADDRESS_0 + 4 * <u32>slot;
  let type: u32 = 0;
  if (isIo) type = 1;
  else if (!isRom) type = (is64 ? 0x4 : 0) | ((flags & BAR_FLAG_PREFETCH) != 0 ? 0x8 : 0);
  let wmask: u64 = ~(size - 1);
  if (isRom) wmask |= 1; // the ROM enable bit is writable
  const e = barEntry(fn, slot);
  store<u64>(e, size, BAR_SIZE);
  store<u64>(e, BAR_UNMAPPED, BAR_ADDR);
  store<u32>(e, flags, BAR_FLAGS);
  store<u32>(e, reg, BAR_REG);
  store<u32>(fn + CONFIG_OFF + reg, type);
  if (is64) {
    store<u32>(fn + CONFIG_OFF + reg + 4, 0);
    store<u64>(fn + WMASK_OFF + reg, wmask);
    store<u64>(fn + W1CMASK_OFF + reg, 0);
  } else {
    store<u32>(fn + WMASK_OFF + reg, <u32>wmask);
    store<u32>(fn + W1CMASK_OFF + reg, 0);
  }
  return 0;
}

/** Marks a BAR slot read-only and absent (reads 0, as an unimplemented BAR must). */
export function pciBarClearSlot(fn: usize, slot: i32): void {
  if (slot < 0 || slot >= PCI_NUM_REGIONS) return;
  const reg: u32 = slot == PCI_ROM_SLOT ? PCI_ROM_ADDRESS : PCI_BASE_ADDRESS_0 + 4 * <u32>slot;
  store<u32>(fn + CONFIG_OFF + reg, 0);
  store<u32>(fn + WMASK_OFF + reg, 0);
  store<u32>(fn + W1CMASK_OFF + reg, 0);
}

/**
 * The bus address a BAR decodes at, or BAR_UNMAPPED (QEMU pci_bar_address with
 * pci_allow_0_address false, as on PC machines): I/O BARs need COMMAND.IO, memory BARs
 * COMMAND.MEMORY, the ROM also its enable bit; address 0, a range that wraps, and a 32-bit
 * BAR whose last byte reaches 0xffffffff are unmapped.
 */
export function barDecodedAddress(fn: usize, slot: i32): u64 {
  const e = barEntry(fn, slot);
  const size = load<u64>(e, BAR_SIZE);
  if (size == 0) return BAR_UNMAPPED;
  const flags = load<u32>(e, BAR_FLAGS);
  const reg = load<u32>(e, BAR_REG);
  const cmd = <u32>load<u16>(fn + CONFIG_OFF + PCI_COMMAND);
  const cfg = fn + CONFIG_OFF + reg;
  if ((flags & BAR_FLAG_IO) != 0) {
    if ((cmd & PCI_COMMAND_IO) == 0) return BAR_UNMAPPED;
    const base = (<u64>load<u32>(cfg)) & ~(size - 1);
    const last = base + size - 1;
    if (last <= base || last >= 0xffffffff || base == 0) return BAR_UNMAPPED;
    return base;
  }
  if ((cmd & PCI_COMMAND_MEMORY) == 0) return BAR_UNMAPPED;
  let raw: u64 = (flags & BAR_FLAG_MEM64) != 0 ? load<u64>(cfg) : <u64>load<u32>(cfg);
  if ((flags & BAR_FLAG_ROM) != 0 && (raw & 1) == 0) return BAR_UNMAPPED;
  const base = raw & ~(size - 1);
  const last = base + size - 1;
  if (last <= base || last == BAR_UNMAPPED || base == 0) return BAR_UNMAPPED;
  if ((flags & BAR_FLAG_MEM64) == 0 && last >= 0xffffffff) return BAR_UNMAPPED;
  return base;
}

/** Recomputes every slot's decoded address (QEMU pci_update_mappings); returns a bit per
 *  slot whose address changed. */
export function pciUpdateMappings(fn: usize): u32 {
  let changed: u32 = 0;
  for (let i = 0; i < PCI_NUM_REGIONS; i++) {
    const e = barEntry(fn, i);
    if (load<u64>(e, BAR_SIZE) == 0) continue;
    const addr = barDecodedAddress(fn, i);
    if (addr != load<u64>(e, BAR_ADDR)) {
      store<u64>(e, addr, BAR_ADDR);
      changed |= 1 << <u32>i;
    }
  }
  return changed;
}

// @ts-ignore: decorator
@inline function overlaps(a: u32, alen: u32, b: u32, blen: u32): bool {
  return a < b + blen && b < a + alen;
}

/**
 * A config write of `size` (1..4) bytes at `offset` (QEMU pci_default_write_config): each
 * byte becomes (old & ~wmask) | (val & wmask), then bits set in both val and w1cmask are
 * cleared. A write touching a BAR, the ROM BAR or the command register remaps the BARs.
 * Returns CFGW_* bits and a bit per slot whose decoded address changed.
 */
export function pciConfigWrite(fn: usize, offset: u32, size: u32, value: u32): u32 {
  if (size < 1 || size > 4 || offset >= cfgSize(fn) || size > cfgSize(fn) - offset) return CFGW_INVALID;
  const cfg = fn + CONFIG_OFF;
  const oldCmd = <u32>load<u16>(cfg + PCI_COMMAND);
  let v = value;
  for (let i: u32 = 0; i < size; i++) {
    const at = <usize>(offset + i);
    const wm = <u32>load<u8>(fn + WMASK_OFF + at);
    const w1c = <u32>load<u8>(fn + W1CMASK_OFF + at);
    const b = v & 0xff;
    let cur = <u32>load<u8>(cfg + at);
    cur = (cur & ~wm) | (b & wm);
    cur &= ~(b & w1c);
    store<u8>(cfg + at, <u8>cur);
    v >>>= 8;
  }
  let result: u32 = 0;
  const touchesCommand = overlaps(offset, size, PCI_COMMAND, 2);
  if (touchesCommand) result |= CFGW_COMMAND;
  if (overlaps(offset, size, PCI_BASE_ADDRESS_0, 24) || overlaps(offset, size, PCI_ROM_ADDRESS, 4) || touchesCommand) {
    result |= pciUpdateMappings(fn);
  }
  const newCmd = <u32>load<u16>(cfg + PCI_COMMAND);
  if (((oldCmd ^ newCmd) & PCI_COMMAND_INTX_DISABLE) != 0) result |= CFGW_INTX_DISABLE_CHANGED;
  return result;
}

/** A config read of `size` (1..4) bytes, little-endian; all-ones for a bad offset/size. */
export function pciConfigRead(fn: usize, offset: u32, size: u32): u32 {
  if (size < 1 || size > 4 || offset >= cfgSize(fn) || size > cfgSize(fn) - offset) return 0xffffffff;
  const p = fn + CONFIG_OFF + <usize>offset;
  if (size == 4) return load<u32>(p);
  if (size == 2) return <u32>load<u16>(p);
  if (size == 1) return <u32>load<u8>(p);
  return <u32>load<u16>(p) | ((<u32>load<u8>(p, 2)) << 16);
}

export function pciBarAddressLo(fn: usize, slot: i32): u32 {
  if (slot < 0 || slot >= PCI_NUM_REGIONS) return 0xffffffff;
  return <u32>load<u64>(barEntry(fn, slot), BAR_ADDR);
}
export function pciBarAddressHi(fn: usize, slot: i32): u32 {
  if (slot < 0 || slot >= PCI_NUM_REGIONS) return 0xffffffff;
  return <u32>(load<u64>(barEntry(fn, slot), BAR_ADDR) >> 32);
}

/**
 * Finds the BAR that decodes the whole access [addr, addr+size) in the I/O (isIo) or memory
 * space. Returns the slot and leaves the offset inside it for pciDecodedOffsetLo/Hi, or -1.
 */
export function pciBarDecode(fn: usize, isIo: bool, addrLo: u32, addrHi: u32, size: u32): i32 {
  const addr = ((<u64>addrHi) << 32) | <u64>addrLo;
  const last = addr + <u64>size - 1;
  if (size == 0 || last < addr) return -1;
  for (let i = 0; i < PCI_NUM_REGIONS; i++) {
    const e = barEntry(fn, i);
    const base = load<u64>(e, BAR_ADDR);
    if (base == BAR_UNMAPPED) continue;
    if (((load<u32>(e, BAR_FLAGS) & BAR_FLAG_IO) != 0) != isIo) continue;
    const barSize = load<u64>(e, BAR_SIZE);
    if (addr >= base && last - base < barSize) {
      store<u64>(fn, addr - base, DECODED_OFFSET_OFF);
      return i;
    }
  }
  return -1;
}
export function pciDecodedOffsetLo(fn: usize): u32 {
  return <u32>load<u64>(fn, DECODED_OFFSET_OFF);
}
export function pciDecodedOffsetHi(fn: usize): u32 {
  return <u32>(load<u64>(fn, DECODED_OFFSET_OFF) >> 32);
}
