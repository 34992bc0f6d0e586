// The access path (QEMU system/physmem.c flatview_read_continue / flatview_write_continue and
// memory_access_size; system/memory.c memory_region_dispatch_read/write,
// memory_region_access_valid, access_with_adjusted_size, adjust_endianness).
//
// An access of `len` bytes at `addr` is cut at flat-range boundaries. RAM/ROM pieces are
// served from linear memory (ROM and read-only pieces drop writes, as QEMU's TCG does for
// read-only sections). Reads of a ROM device in ROMD mode are served from its RAM like ROM
// reads (no callback, no size checks: QEMU memory_access_is_direct); its writes are I/O
// pieces like any device's. I/O pieces are cut by memory_access_size (at most valid.max, default
// 4, and at most the address alignment unless impl.unaligned; rounded down to a power of 2),
// checked (accepts, alignment, valid sizes: failure = decode error, reads give 0), then split
// or widened to the impl sizes for the device callbacks, and byte-swapped for big-endian
// devices. Results are MemTx bits OR-ed over all pieces.
//
// Differences from QEMU, on purpose: an access starting in an unassigned gap is cut at the
// end of the gap (QEMU's unassigned section nominally spans everything, so a 4-byte access
// straddling into a region was treated wholly as unassigned); ROM / read-only writes are
// dropped silently (QEMU's address_space_write reports a decode error for ROM).
import {
  IO_ACCEPTS, IO_BIG_ENDIAN, IO_IMPL_UNALIGNED, IO_NO_GUARD, IO_UNASSIGNED, IO_VALID_UNALIGNED,
  MEMTX_ACCESS_ERROR, MEMTX_DECODE_ERROR, MEMTX_ERROR, MEMTX_OK,
} from "./status";
import { R_GUARD, R_IMAX, R_IMIN, R_IOFLAGS, R_VMAX, R_VMIN, guardTable, regionPtr } from "./regions";
import {
  F_IO, F_LAST, F_OFFSET, F_PTR, F_START, IOW_FAST_SHIFT, IOW_GUARD_MASK, IOW_NO_GUARD, MODE_IO, MODE_RAM, MODE_ROMD,
  flatFor, flatMode, flatRegion, liveAs,
} from "./flatview";

// Host callbacks (src/core/memory/wasm-engine.ts). `key` = region id << 4 | access size.
// The common case (1, 2 or 4 bytes at a region offset below 2^32) crosses with two i32
// arguments and an i32 result: every argument and an f64 result cost measurably on each
// wasm->JS call. A callback that throws makes the host call mem_io_fail() before returning,
// which sets ioFailed (nested accesses made by the callback clear their own failures first).
/** Value of a 1/2/4-byte read at offset < 2^32 (bits of the result). */
// @ts-ignore: decorator
@external("host", "mem_io_read")
declare function hostIoRead(key: u32, offset: u32): u32;
/** Any size at any offset: the low half; for size 8 the high half goes to SCRATCH + 8. */
// @ts-ignore: decorator
@external("host", "mem_io_read_wide")
declare function hostIoReadWide(key: u32, offLo: u32, offHi: u32): u32;
/** A 1/2/4-byte write at offset < 2^32. */
// @ts-ignore: decorator
@external("host", "mem_io_write")
declare function hostIoWrite(key: u32, offset: u32, value: u32): void;
/** Any size at any offset. */
// @ts-ignore: decorator
@external("host", "mem_io_write_wide")
declare function hostIoWriteWide(key: u32, offLo: u32, offHi: u32, valueLo: u32, valueHi: u32): void;
/** QEMU valid.accepts: returns 0 to veto. */
// @ts-ignore: decorator
@external("host", "mem_io_accepts")
declare function hostIoAccepts(region: u32, offLo: u32, offHi: u32, size: u32, isWrite: u32): u32;

/** Set by the host (mem_io_fail) when the device callback just called threw. */
let ioFailed: bool = false;
export function setIoFailed(): void {
  ioFailed = true;
}

/** Calls the device's read callback for one piece; sets ioFailed on a device error. */
// @ts-ignore: decorator
@inline function deviceRead(region: u32, a: u64, size: u32): u64 {
  const key = (region << 4) | size;
  if (size <= 4 && a <= <u64>U32.MAX_VALUE) return <u64>hostIoRead(key, <u32>a);
  const lo = hostIoReadWide(key, <u32>a, <u32>(a >> 32));
  return size == 8 ? (<u64>load<u32>(SCRATCH, 8) << 32) | <u64>lo : <u64>lo;
}

// @ts-ignore: decorator
@inline function deviceWrite(region: u32, a: u64, size: u32, v: u64): void {
  const key = (region << 4) | size;
  if (size <= 4 && a <= <u64>U32.MAX_VALUE) hostIoWrite(key, <u32>a, <u32>v);
  else hostIoWriteWide(key, <u32>a, <u32>(a >> 32), <u32>v, <u32>(v >> 32));
}

/** Scratch shared with the host: [0] result value (u64), [8] high half of an 8-byte device read (u32). */
export const SCRATCH: usize = memory.data(16, 8);

/** Value of the last scalar read. */
export let lastValue: u64 = 0;

// @ts-ignore: decorator
@inline function sizeMask(size: u32): u64 {
  return size >= 8 ? u64.MAX_VALUE : (<u64>1 << (<u64>size << 3)) - 1;
}

/** QEMU memory_access_size: the largest piece an I/O region takes at region offset `addr1`. */
// @ts-ignore: decorator
@inline export function memoryAccessSize(region: u32, len: u32, addr1: u64): u32 {
  const p = regionPtr(region);
  let max = <u32>load<u8>(p, R_VMAX);
  if (max == 0) max = 4;
  if ((<u32>load<u8>(p, R_IOFLAGS) & IO_IMPL_UNALIGNED) == 0) {
    const align = addr1 & (0 - addr1); // lowest set bit (0 when addr1 == 0)
    if (align != 0 && align < <u64>max) max = <u32>align;
  }
  let l = len < max ? len : max;
  // pow2floor
  return <u32>1 << (31 - clz<u32>(l));
}

/** QEMU memory_region_access_valid. */
// @ts-ignore: decorator
@inline export function accessValid(region: u32, addr1: u64, size: u32, isWrite: bool): bool {
  const p = regionPtr(region);
  const flags = <u32>load<u8>(p, R_IOFLAGS);
  if ((flags & IO_UNASSIGNED) != 0) return false; // unassigned_mem_accepts
  if ((flags & IO_ACCEPTS) != 0 && hostIoAccepts(region, <u32>addr1, <u32>(addr1 >> 32), size, isWrite ? 1 : 0) == 0) return false;
  if ((flags & IO_VALID_UNALIGNED) == 0 && (addr1 & <u64>(size - 1)) != 0) return false;
  const vmax = <u32>load<u8>(p, R_VMAX);
  if (vmax == 0) return true; // "unspecified": everything is valid
  return size <= vmax && size >= <u32>load<u8>(p, R_VMIN);
}

// @ts-ignore: decorator
@inline function bswapN(v: u64, size: u32): u64 {
  if (size == 2) return <u64>bswap<u16>(<u16>v);
  if (size == 4) return <u64>bswap<u32>(<u32>v);
  if (size == 8) return bswap<u64>(v);
  return v;
}

/** QEMU access_with_adjusted_size: the size of each callback call for an access of `size`. */
// @ts-ignore: decorator
@inline function adjustedAccessSize(p: usize, size: u32): u32 {
  let imin = <u32>load<u8>(p, R_IMIN);
  let imax = <u32>load<u8>(p, R_IMAX);
  if (imin == 0) imin = 1;
  if (imax == 0) imax = 4;
  return size < imax ? (size > imin ? size : imin) : (imax > imin ? imax : imin);
}

let dispatchValue: u64 = 0;

/** QEMU memory_region_dispatch_read for one I/O piece; value in dispatchValue. */
export function dispatchRead(region: u32, addr1: u64, size: u32): u32 {
  dispatchValue = 0;
  if (!accessValid(region, addr1, size, false)) return MEMTX_DECODE_ERROR;
  const p = regionPtr(region);
  const flags = <u32>load<u8>(p, R_IOFLAGS);
  let guard: usize = 0;
  if ((flags & IO_NO_GUARD) == 0) {
    guard = guardTable + <usize>load<u32>(p, R_GUARD);
    if (load<u8>(guard) != 0) return MEMTX_ACCESS_ERROR; // re-entrant access to this device
    store<u8>(guard, 1);
  }
  const accessSize = adjustedAccessSize(p, size);
  const mask = sizeMask(accessSize);
  const big = (flags & IO_BIG_ENDIAN) != 0;
  let value: u64 = 0;
  let status: u32 = MEMTX_OK;
  for (let i: u32 = 0; i < size; i += accessSize) {
    let tmp = deviceRead(region, addr1 + <u64>i, accessSize);
    if (ioFailed) {
      ioFailed = false;
      status |= MEMTX_ERROR;
      tmp = 0;
    }
    const shift: i32 = big ? <i32>(size - accessSize - i) * 8 : <i32>i * 8;
    if (shift >= 0) value |= (tmp & mask) << <u64>shift;
    else value |= (tmp & mask) >> <u64>(-shift);
  }
  if (guard != 0) store<u8>(guard, 0);
  value &= sizeMask(size);
  if (big) value = bswapN(value, size); // adjust_endianness (the target is little-endian)
  dispatchValue = value;
  return status;
}

/** QEMU memory_region_dispatch_write for one I/O piece. */
export function dispatchWrite(region: u32, addr1: u64, size: u32, data: u64): u32 {
  if (!accessValid(region, addr1, size, true)) return MEMTX_DECODE_ERROR;
  const p = regionPtr(region);
  const flags = <u32>load<u8>(p, R_IOFLAGS);
  let value = data & sizeMask(size);
  const big = (flags & IO_BIG_ENDIAN) != 0;
  if (big) value = bswapN(value, size);
  let guard: usize = 0;
  if ((flags & IO_NO_GUARD) == 0) {
    guard = guardTable + <usize>load<u32>(p, R_GUARD);
    if (load<u8>(guard) != 0) return MEMTX_ACCESS_ERROR;
    store<u8>(guard, 1);
  }
  const accessSize = adjustedAccessSize(p, size);
  const mask = sizeMask(accessSize);
  let status: u32 = MEMTX_OK;
  for (let i: u32 = 0; i < size; i += accessSize) {
    const shift: i32 = big ? <i32>(size - accessSize - i) * 8 : <i32>i * 8;
    const tmp = (shift >= 0 ? value >> <u64>shift : value << <u64>(-shift)) & mask;
    deviceWrite(region, addr1 + <u64>i, accessSize, tmp);
    if (ioFailed) {
      ioFailed = false;
      status |= MEMTX_ERROR;
    }
  }
  if (guard != 0) store<u8>(guard, 0);
  return status;
}

// @ts-ignore: decorator
@inline function loadN(ptr: usize, n: u32): u64 {
  if (n == 4) return <u64>load<u32>(ptr);
  if (n == 8) return load<u64>(ptr);
  if (n == 2) return <u64>load<u16>(ptr);
  if (n == 1) return <u64>load<u8>(ptr);
  let v: u64 = 0;
  for (let i: u32 = 0; i < n; i++) v |= <u64>load<u8>(ptr + i) << (<u64>i << 3);
  return v;
}

// @ts-ignore: decorator
@inline function storeN(ptr: usize, v: u64, n: u32): void {
  if (n == 4) store<u32>(ptr, <u32>v);
  else if (n == 8) store<u64>(ptr, v);
  else if (n == 2) store<u16>(ptr, <u16>v);
  else if (n == 1) store<u8>(ptr, <u8>v);
  else for (let i: u32 = 0; i < n; i++) store<u8>(ptr + i, <u8>(v >> (<u64>i << 3)));
}

/** Bytes of the flat range `f` available from `addr`, capped at `want`. */
// @ts-ignore: decorator
@inline function pieceLength(f: usize, addr: u64, want: u32): u32 {
  const rem = load<u64>(f, F_LAST) - addr; // bytes after addr inside the range
  return rem < <u64>(want - 1) ? <u32>rem + 1 : want;
}

/**
 * One I/O piece that needs no splitting, widening or byte swap (the range's dispatch word
 * lists the size, the offset is aligned and below 2^32): guard, one callback, done. Same
 * outcome as dispatchRead for such a piece, in fewer steps. Value in lastValue.
 */
// @ts-ignore: decorator
@inline function fastIoRead(word: u32, region: u32, offset: u32, size: u32): u32 {
  let guard: usize = 0;
  if ((word & IOW_NO_GUARD) == 0) {
    guard = guardTable + <usize>(word & IOW_GUARD_MASK);
    if (load<u8>(guard) != 0) {
      lastValue = 0;
      return MEMTX_ACCESS_ERROR; // re-entrant access to this device
    }
    store<u8>(guard, 1);
  }
  const v = hostIoRead((region << 4) | size, offset);
  if (guard != 0) store<u8>(guard, 0);
  if (ioFailed) {
    ioFailed = false;
    lastValue = 0;
    return MEMTX_ERROR;
  }
  lastValue = <u64>v & sizeMask(size);
  return MEMTX_OK;
}

// @ts-ignore: decorator
@inline function fastIoWrite(word: u32, region: u32, offset: u32, size: u32, value: u64): u32 {
  let guard: usize = 0;
  if ((word & IOW_NO_GUARD) == 0) {
    guard = guardTable + <usize>(word & IOW_GUARD_MASK);
    if (load<u8>(guard) != 0) return MEMTX_ACCESS_ERROR;
    store<u8>(guard, 1);
  }
  hostIoWrite((region << 4) | size, offset, <u32>(value & sizeMask(size)));
  if (guard != 0) store<u8>(guard, 0);
  if (ioFailed) {
    ioFailed = false;
    return MEMTX_ERROR;
  }
  return MEMTX_OK;
}

/** True when an access of `size` bytes at region offset `addr1` can take the fast path. */
// @ts-ignore: decorator
@inline function fastPiece(word: u32, addr1: u64, size: u32): bool {
  return ((word >>> IOW_FAST_SHIFT) & (<u32>1 << size)) != 0 && (addr1 & <u64>(size - 1)) == 0 && addr1 <= <u64>U32.MAX_VALUE;
}

/** Scalar read of 1..8 bytes (little-endian); value in lastValue. `ap` must be live. */
export function readScalar(ap: usize, addr: u64, size: u32): u32 {
  let f = flatFor(ap, addr);
  let mode = flatMode(f);
  if (load<u64>(f, F_LAST) - addr >= <u64>(size - 1)) {
    // Fast paths: the whole access inside one range, RAM/ROM or a single device callback.
    if (mode != MODE_IO) {
      lastValue = loadN(<usize>load<u32>(f, F_PTR) + <usize>(addr - load<u64>(f, F_START)), size);
      return MEMTX_OK;
    }
    const word = load<u32>(f, F_IO);
    const addr1 = load<u64>(f, F_OFFSET) + (addr - load<u64>(f, F_START));
    if (fastPiece(word, addr1, size)) return fastIoRead(word, flatRegion(f), <u32>addr1, size);
  }
  let value: u64 = 0;
  let status: u32 = MEMTX_OK;
  let done: u32 = 0;
  while (true) {
    let l = pieceLength(f, addr, size - done);
    let v: u64;
    if (mode != MODE_IO) {
      v = loadN(<usize>load<u32>(f, F_PTR) + <usize>(addr - load<u64>(f, F_START)), l);
    } else {
      const region = flatRegion(f);
      const addr1 = load<u64>(f, F_OFFSET) + (addr - load<u64>(f, F_START));
      l = memoryAccessSize(region, l, addr1);
      status |= dispatchRead(region, addr1, l);
      v = dispatchValue;
    }
    value |= v << (<u64>done << 3);
    done += l;
    if (done >= size) break;
    addr += <u64>l;
    f = flatFor(ap, addr);
    mode = flatMode(f);
  }
  lastValue = value;
  return status;
}

/** Scalar write of 1..8 bytes (little-endian). `ap` must be live. */
export function writeScalar(ap: usize, addr: u64, size: u32, value: u64): u32 {
  let f = flatFor(ap, addr);
  let mode = flatMode(f);
  if (load<u64>(f, F_LAST) - addr >= <u64>(size - 1)) {
    if (mode == MODE_RAM) {
      storeN(<usize>load<u32>(f, F_PTR) + <usize>(addr - load<u64>(f, F_START)), value, size);
      return MEMTX_OK;
    }
    if (mode == MODE_IO) {
      const word = load<u32>(f, F_IO);
      const addr1 = load<u64>(f, F_OFFSET) + (addr - load<u64>(f, F_START));
      if (fastPiece(word, addr1, size)) return fastIoWrite(word, flatRegion(f), <u32>addr1, size, value);
    }
  }
  let status: u32 = MEMTX_OK;
  let done: u32 = 0;
  while (true) {
    let l = pieceLength(f, addr, size - done);
    const v = value >> (<u64>done << 3);
    if (mode == MODE_RAM) {
      storeN(<usize>load<u32>(f, F_PTR) + <usize>(addr - load<u64>(f, F_START)), v, l);
    } else if (mode >= MODE_IO) { // I/O, or a ROM device's write callback
      const region = flatRegion(f);
      const addr1 = load<u64>(f, F_OFFSET) + (addr - load<u64>(f, F_START));
      l = memoryAccessSize(region, l, addr1);
      status |= dispatchWrite(region, addr1, l, v);
    } // MODE_ROM: dropped
    done += l;
    if (done >= size) break;
    addr += <u64>l;
    f = flatFor(ap, addr);
    mode = flatMode(f);
  }
  return status;
}

let romdPieceLength: u32 = 0;

/**
 * One piece of a buffer write to a ROM device in ROMD mode: cut and dispatched like an I/O
 * piece (the general path; kept out of line so the RAM and I/O paths stay as they were).
 * The piece length goes to romdPieceLength.
 */
function romdWritePiece(f: usize, addr: u64, buf: usize, len: u32): u32 {
  const region = flatRegion(f);
  const addr1 = load<u64>(f, F_OFFSET) + (addr - load<u64>(f, F_START));
  const piece = memoryAccessSize(region, len, addr1);
  romdPieceLength = piece;
  return dispatchWrite(region, addr1, piece, loadN(buf, piece));
}

/** Buffer access of any length (QEMU flatview_read_continue / flatview_write_continue). */
export function accessBuffer(ap: usize, addr: u64, buf: usize, len: usize, isWrite: bool): u32 {
  let status: u32 = MEMTX_OK;
  while (len > 0) {
    const f = flatFor(ap, addr);
    const mode = flatMode(f);
    const rem = load<u64>(f, F_LAST) - addr;
    let l: usize = rem < <u64>(len - 1) ? <usize>rem + 1 : len;
    if (mode != MODE_IO) {
      const host = <usize>load<u32>(f, F_PTR) + <usize>(addr - load<u64>(f, F_START));
      if (!isWrite) memory.copy(buf, host, l);
      else if (mode == MODE_RAM) memory.copy(host, buf, l);
      else if (mode == MODE_ROMD) {
        status |= romdWritePiece(f, addr, buf, l > 8 ? 8 : <u32>l);
        l = romdPieceLength;
      } // MODE_ROM: dropped
    } else {
      const region = flatRegion(f);
      const addr1 = load<u64>(f, F_OFFSET) + (addr - load<u64>(f, F_START));
      const piece = memoryAccessSize(region, l > 8 ? 8 : <u32>l, addr1);
      l = piece;
      const word = load<u32>(f, F_IO);
      if (isWrite) {
        const v = loadN(buf, piece);
        status |= fastPiece(word, addr1, piece) ? fastIoWrite(word, region, <u32>addr1, piece, v) : dispatchWrite(region, addr1, piece, v);
      } else if (fastPiece(word, addr1, piece)) {
        status |= fastIoRead(word, region, <u32>addr1, piece);
        storeN(buf, lastValue, piece);
      } else {
        status |= dispatchRead(region, addr1, piece);
        storeN(buf, dispatchValue, piece);
      }
    }
    len -= l;
    buf += l;
    addr += <u64>l;
  }
  return status;
}

// ---------------------------------------------------------------- entry points by id

/** Reads 1..8 bytes at `addr` of address space `as`; value via lastValue. */
export function asRead(as: u32, addr: u64, size: u32): u32 {
  const ap = liveAs(as);
  if (ap == 0 || size == 0 || size > 8) {
    lastValue = 0;
    return MEMTX_DECODE_ERROR;
  }
  return readScalar(ap, addr, size);
}

export function asWrite(as: u32, addr: u64, size: u32, value: u64): u32 {
  const ap = liveAs(as);
  if (ap == 0 || size == 0 || size > 8) return MEMTX_DECODE_ERROR;
  return writeScalar(ap, addr, size, value);
}

export function asAccessBuffer(as: u32, addr: u64, buf: usize, len: usize, isWrite: bool): u32 {
  const ap = liveAs(as);
  if (ap == 0) return MEMTX_DECODE_ERROR;
  return accessBuffer(ap, addr, buf, len, isWrite);
}

// ---------------------------------------------------------------- traces

/**
 * Trace record (TRACE_RECORD = 24 bytes), see src/core/abi/memory.ts:
 *   0 op (u32: size in bits 0..3, bit 4 = write)   4 address (u64, lo then hi)
 *   12 value (u64)                                  20 status (u32, written by replay)
 */
export const TRACE_RECORD: usize = 24;

/** Runs `count` trace records against address space `as`; returns how many failed. */
export function asReplay(as: u32, records: usize, count: u32): u32 {
  const ap = liveAs(as);
  let failed: u32 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const r = records + <usize>i * TRACE_RECORD;
    const op = load<u32>(r);
    const size = op & 15;
    const addr = load<u64>(r, 4);
    let st: u32;
    if (ap == 0 || size == 0 || size > 8) {
      st = MEMTX_DECODE_ERROR;
    } else if ((op & 16) != 0) {
      st = writeScalar(ap, addr, size, load<u64>(r, 12));
    } else {
      st = readScalar(ap, addr, size);
      store<u64>(r, lastValue, 12);
    }
    store<u32>(r, st, 20);
    if (st != 0) failed++;
  }
  return failed;
}
