// Exports of the memory subsystem (see assembly/index.ts). 64-bit values cross as (lo, hi)
// u32 halves, as in every subsystem; region sizes as `last = size - 1`. The host side is src/core/memory/wasm-engine.ts.
import {
  R_ADDR, R_ALIAS_OFFSET, R_ALIAS_TARGET, R_CONTAINER, R_KIND, R_LAST, R_PRIORITY, R_STATE,
  regionAddSubregion, regionAlive, regionDelSubregion, regionFree, regionNewLast, regionPtr, regionRam,
  regionSetAddress, regionSetAlias, regionSetAliasOffset, regionSetEnabled, regionSetIo,
  regionSetReadonly, regionSetRomd, regionPendingFree, transactionBegin, transactionCommit, getTransactionDepth, initRegions,
} from "./regions";
import { A_COUNT, A_FLAT, FLAT_SIZE, asFree, asNew, asRenderCount, liveAs } from "./flatview";
import { SCRATCH, TRACE_RECORD, asAccessBuffer, asRead, asReplay, asWrite, lastValue, setIoFailed } from "./dispatch";

// @ts-ignore: decorator
@inline function u64of(lo: u32, hi: u32): u64 {
  return (<u64>hi << 32) | <u64>lo;
}

export function mem_init(): void {
  initRegions();
}

export function mem_region_new(kind: u32, lastLo: u32, lastHi: u32): i32 {
  return regionNewLast(kind, u64of(lastLo, lastHi));
}
export function mem_region_set_io(id: u32, flags: u32, vmin: u32, vmax: u32, imin: u32, imax: u32, guard: u32): i32 {
  return regionSetIo(id, flags, vmin, vmax, imin, imax, guard);
}
export function mem_region_set_alias(id: u32, target: u32, offLo: u32, offHi: u32): i32 {
  return regionSetAlias(id, target, u64of(offLo, offHi));
}
export function mem_region_add_subregion(parent: u32, child: u32, lo: u32, hi: u32, priority: i32): i32 {
  return regionAddSubregion(parent, child, u64of(lo, hi), priority);
}
export function mem_region_del_subregion(parent: u32, child: u32): i32 {
  return regionDelSubregion(parent, child);
}
export function mem_region_set_address(id: u32, lo: u32, hi: u32): i32 {
  return regionSetAddress(id, u64of(lo, hi));
}
export function mem_region_set_enabled(id: u32, on: u32): i32 {
  return regionSetEnabled(id, on != 0);
}
export function mem_region_set_readonly(id: u32, on: u32): i32 {
  return regionSetReadonly(id, on != 0);
}
export function mem_region_set_alias_offset(id: u32, lo: u32, hi: u32): i32 {
  return regionSetAliasOffset(id, u64of(lo, hi));
}
export function mem_region_set_romd(id: u32, on: u32): i32 {
  return regionSetRomd(id, on != 0);
}
/** Frees the region; inside an open transaction the release waits for the outermost commit. */
export function mem_region_free(id: u32): i32 {
  return regionFree(id);
}
/** 1 while a region freed inside the open transaction waits for the outermost commit. */
export function mem_region_pending_free(id: u32): u32 {
  return regionPendingFree(id) ? 1 : 0;
}
export function mem_region_ram(id: u32): usize {
  return regionAlive(id) ? regionRam(id) : 0;
}

/**
 * Writes a region's description to SCRATCH_INFO and returns 1 (0 if no such region):
 *   0 kind (u32)  4 state (u32)  8 priority (i32)  12 container (u32)  16 last (u64)
 *   24 addr (u64)  32 alias offset (u64)  40 alias target (u32)
 */
export function mem_region_info(id: u32): u32 {
  if (!regionAlive(id)) return 0;
  const p = regionPtr(id);
  store<u32>(INFO, <u32>load<u8>(p, R_KIND), 0);
  store<u32>(INFO, <u32>load<u8>(p, R_STATE), 4);
  store<i32>(INFO, load<i32>(p, R_PRIORITY), 8);
  store<u32>(INFO, load<u32>(p, R_CONTAINER), 12);
  store<u64>(INFO, load<u64>(p, R_LAST), 16);
  store<u64>(INFO, load<u64>(p, R_ADDR), 24);
  store<u64>(INFO, load<u64>(p, R_ALIAS_OFFSET), 32);
  store<u32>(INFO, load<u32>(p, R_ALIAS_TARGET), 40);
  return 1;
}
const INFO: usize = memory.data(48, 8);
export function mem_info_ptr(): usize {
  return INFO;
}

export function mem_transaction_begin(): void {
  transactionBegin();
}
export function mem_transaction_commit(): i32 {
  return transactionCommit();
}
export function mem_transaction_depth(): u32 {
  return getTransactionDepth();
}

export function mem_as_new(root: u32): i32 {
  return asNew(root);
}
export function mem_as_free(as: u32): i32 {
  return asFree(as);
}
/** Pointer to the flat view (records of mem_flat_record_size() bytes, see flatview.ts); count via mem_as_flat_count. */
export function mem_as_flat_ptr(as: u32): usize {
  const ap = liveAs(as);
  return ap == 0 ? 0 : <usize>load<u32>(ap, A_FLAT);
}
export function mem_as_flat_count(as: u32): u32 {
  const ap = liveAs(as);
  return ap == 0 ? 0 : load<u32>(ap, A_COUNT);
}
export function mem_flat_record_size(): u32 {
  return <u32>FLAT_SIZE;
}
/** How many flat views the address space has had rendered (commits re-render only changed trees). */
export function mem_as_render_count(as: u32): u32 {
  return asRenderCount(as);
}

/** Scratch: [0] last read value (u64), [8] high half of an 8-byte device read. */
export function mem_scratch_ptr(): usize {
  return SCRATCH;
}

/** Reads 1..8 bytes; returns MemTx bits, value at SCRATCH[0]. */
export function mem_as_read(as: u32, lo: u32, hi: u32, size: u32): u32 {
  const st = asRead(as, u64of(lo, hi), size);
  store<u64>(SCRATCH, lastValue);
  return st;
}

/** Reads 1, 2 or 4 bytes; returns the value when OK, else -(MemTx bits) with the value at SCRATCH[0]. */
export function mem_as_read32(as: u32, lo: u32, hi: u32, size: u32): f64 {
  const st = asRead(as, u64of(lo, hi), size);
  if (st == 0) return <f64><u32>lastValue;
  store<u64>(SCRATCH, lastValue);
  return -<f64>st;
}

export function mem_as_write(as: u32, lo: u32, hi: u32, size: u32, vlo: u32, vhi: u32): u32 {
  return asWrite(as, u64of(lo, hi), size, u64of(vlo, vhi));
}

export function mem_as_rw(as: u32, lo: u32, hi: u32, buf: usize, len: usize, isWrite: u32): u32 {
  return asAccessBuffer(as, u64of(lo, hi), buf, len, isWrite != 0);
}

/** Host-owned scratch buffers (bulk data, traces). */
export function mem_alloc(bytes: usize): usize {
  return heap.alloc(bytes);
}
export function mem_free(ptr: usize): void {
  heap.free(ptr);
}

export function mem_trace_record_size(): u32 {
  return <u32>TRACE_RECORD;
}
export function mem_as_replay(as: u32, records: usize, count: u32): u32 {
  return asReplay(as, records, count);
}

/** Called by the host from inside a device callback that threw (see dispatch.ts ioFailed). */
export function mem_io_fail(): void {
  setIoFailed();
}
