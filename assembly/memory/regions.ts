// The region table and topology operations (QEMU system/memory.c: memory_region_init_*,
// memory_region_add_subregion_overlap, _del_subregion, _set_address, _set_enabled,
// _set_readonly, _set_alias_offset, transactions). Rendering lives in flatview.ts.
//
// Region record (REGION_SIZE = 80 bytes), table indexed by region id; id 0 = "unassigned":
//
//   0        1        2        3        4        5        6        7
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   | kind   | state  | ioflags| vmin   | vmax   | imin   | imax   | fast   |
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   8  priority (i32)                   12 container id (u32, 0 = none)
//   16 last = size - 1 (u64)
//   24 addr: offset inside the container (u64)
//   32 alias offset (u64)
//   40 alias target id (u32)            44 first child id (u32, priority order)
//   48 next sibling id (u32)            52 RAM/ROM pointer into linear memory (u32)
//   56 re-entrancy guard slot (u32)     60 number of aliases targeting this region (u32)
//   64 visit mark (u32, cycle checks)   68 next free id (u32, when not alive: the free list,
//                                          or the list of frees deferred to the commit)
//   72 change epoch (u32): the commit epoch of the last change that affects how the tree
//      under this region renders (see markChanged)
//   76 scan memo (u32): epoch << 1 | "tree changed", for the commit-time scan (flatview.ts)
//
// state: STATE_ALIVE | STATE_ENABLED | STATE_READONLY | STATE_ROMD (ROM devices in ROMD mode)
// | STATE_PENDING_FREE (freed, release deferred to the outermost commit).
// A ROM device (KIND_ROM_DEVICE) has both a RAM pointer and the I/O fields.
//
// Freeing inside an open transaction is deferred (QEMU frees a region only after the RCU
// grace period that retires the old flat views): the record stops being alive at once, but
// its RAM, record and id stay untouched until the outermost commit has re-rendered, because
// the flat views rendered before the transaction may still point at them.
//
// fast: bit (1 << s) set when an aligned s-byte access (s = 1, 2, 4) is one device callback
// of s bytes as it stands (valid, not split or widened, no byte swap, no accepts hook); the
// access path then skips the general splitting code (dispatch.ts fastIoRead/fastIoWrite).
import {
  KIND_ALIAS, KIND_CONTAINER, KIND_IO, KIND_RAM, KIND_ROM, KIND_ROM_DEVICE,
  IO_ACCEPTS, IO_BIG_ENDIAN, IO_IMPL_UNALIGNED, IO_UNASSIGNED, IO_VALID_UNALIGNED,
  MAX_GUARD_SLOTS, MAX_IO_REGION_LAST, MAX_RAM_REGION_SIZE, MAX_REGIONS,
  TOPO_ALREADY_MAPPED, TOPO_BAD_ACCESS_SIZES, TOPO_CYCLE, TOPO_IMPL_UNALIGNED_WITHOUT_VALID,
  TOPO_IN_USE, TOPO_IO_TOO_LARGE, TOPO_NOT_A_SUBREGION, TOPO_NO_SUCH_REGION, TOPO_NO_TRANSACTION,
  TOPO_OK, TOPO_OUT_OF_MEMORY, TOPO_OVERFLOW, TOPO_RAM_TOO_LARGE, TOPO_SIZE_ZERO, TOPO_TOO_MANY,
  TOPO_WRONG_KIND,
} from "./status";

export const REGION_SIZE: usize = 80;

// @ts-ignore: decorator
@inline export const R_KIND: usize = 0;
// @ts-ignore: decorator
@inline export const R_STATE: usize = 1;
// @ts-ignore: decorator
@inline export const R_IOFLAGS: usize = 2;
// @ts-ignore: decorator
@inline export const R_VMIN: usize = 3;
// @ts-ignore: decorator
@inline export const R_VMAX: usize = 4;
// @ts-ignore: decorator
@inline export const R_IMIN: usize = 5;
// @ts-ignore: decorator
@inline export const R_IMAX: usize = 6;
// @ts-ignore: decorator
@inline export const R_FAST: usize = 7;
// @ts-ignore: decorator
@inline export const R_PRIORITY: usize = 8;
// @ts-ignore: decorator
@inline export const R_CONTAINER: usize = 12;
// @ts-ignore: decorator
@inline export const R_LAST: usize = 16;
// @ts-ignore: decorator
@inline export const R_ADDR: usize = 24;
// @ts-ignore: decorator
@inline export const R_ALIAS_OFFSET: usize = 32;
// @ts-ignore: decorator
@inline export const R_ALIAS_TARGET: usize = 40;
// @ts-ignore: decorator
@inline export const R_FIRST_CHILD: usize = 44;
// @ts-ignore: decorator
@inline export const R_NEXT_SIBLING: usize = 48;
// @ts-ignore: decorator
@inline export const R_RAM: usize = 52;
// @ts-ignore: decorator
@inline export const R_GUARD: usize = 56;
// @ts-ignore: decorator
@inline export const R_ALIAS_REFS: usize = 60;
// @ts-ignore: decorator
@inline export const R_MARK: usize = 64;
// @ts-ignore: decorator
@inline export const R_NEXT_FREE: usize = 68;
// @ts-ignore: decorator
@inline export const R_CHANGED: usize = 72;
// @ts-ignore: decorator
@inline export const R_SCAN: usize = 76;

export const STATE_ALIVE: u32 = 1;
export const STATE_ENABLED: u32 = 2;
export const STATE_READONLY: u32 = 4;
export const STATE_ROMD: u32 = 8;
/** Freed inside an open transaction; released at the outermost commit. */
export const STATE_PENDING_FREE: u32 = 16;

/** Base of the region table (moves when the table grows). */
export let regionTable: usize = 0;
let regionCapacity: u32 = 0;
/** One past the highest id ever handed out. */
export let regionCount: u32 = 0;
let freeHead: u32 = 0;
/** Regions freed inside an open transaction, released at the outermost commit. */
let pendingHead: u32 = 0;
let markEpoch: u32 = 0;

/** Re-entrancy guard flags, one byte per slot (QEMU MemReentrancyGuard.engaged_in_io). */
export let guardTable: usize = 0;
let guardCapacity: u32 = 0;

let transactionDepth: u32 = 0;
/** Set by every topology change; commit re-renders when set. */
export let topologyDirty: bool = false;
/**
 * The epoch of the pending commit: changes stamp it into the region they affect
 * (R_CHANGED); the commit re-renders the address spaces whose tree holds a region stamped
 * with it, then moves on to the next epoch. Epochs stay below 2^31 (the scan memo keeps
 * epoch << 1).
 */
let changeEpoch: u32 = 1;
const MAX_EPOCH: u32 = 0x7fffffff;

/**
 * Called at the outermost commit with the epoch of the changes to re-render the address
 * spaces they affect (set by flatview.ts).
 */
let renderChangedHook: (epoch: u32) => void = (epoch: u32) => {};
export function setRenderChangedHook(fn: (epoch: u32) => void): void {
  renderChangedHook = fn;
}
/** Asks flatview.ts whether a region is the root of a live address space. */
let isRootHook: (id: u32) => bool = (id: u32): bool => false;
export function setIsRootHook(fn: (id: u32) => bool): void {
  isRootHook = fn;
}

// @ts-ignore: decorator
@inline export function regionPtr(id: u32): usize {
  return regionTable + <usize>id * REGION_SIZE;
}

export function regionAlive(id: u32): bool {
  return id < regionCount && (load<u8>(regionPtr(id), R_STATE) & STATE_ALIVE) != 0;
}

function ensureRegionCapacity(need: u32): bool {
  if (need <= regionCapacity) return true;
  let cap = regionCapacity == 0 ? <u32>64 : regionCapacity * 2;
  while (cap < need) cap *= 2;
  const bytes = <usize>cap * REGION_SIZE;
  const p = regionTable == 0 ? heap.alloc(bytes) : heap.realloc(regionTable, bytes);
  memory.fill(p + <usize>regionCapacity * REGION_SIZE, 0, <usize>(cap - regionCapacity) * REGION_SIZE);
  regionTable = p;
  regionCapacity = cap;
  return true;
}

function ensureGuardCapacity(slot: u32): void {
  if (slot < guardCapacity) return;
  let cap = guardCapacity == 0 ? <u32>256 : guardCapacity;
  while (cap <= slot) cap *= 2;
  const p = guardTable == 0 ? heap.alloc(cap) : heap.realloc(guardTable, cap);
  memory.fill(p + guardCapacity, 0, cap - guardCapacity);
  guardTable = p;
  guardCapacity = cap;
}

/** Creates region 0, "unassigned": the I/O region every gap of a flat view dispatches to. */
export function initRegions(): void {
  if (regionCount != 0) return;
  ensureRegionCapacity(64);
  const p = regionPtr(0);
  store<u8>(p, <u8>KIND_IO, R_KIND);
  store<u8>(p, <u8>(STATE_ALIVE | STATE_ENABLED), R_STATE);
  store<u8>(p, <u8>IO_UNASSIGNED, R_IOFLAGS);
  store<u64>(p, u64.MAX_VALUE, R_LAST);
  regionCount = 1;
  ensureGuardCapacity(0);
}

// ---------------------------------------------------------------- transactions

export function transactionBegin(): void {
  transactionDepth++;
}

/**
 * QEMU memory_region_transaction_commit: re-render once the outermost commit is reached.
 * Like QEMU's address_space_update_topology, only address spaces whose tree changed get a
 * new flat view; the others (other devices' spaces, say) are not touched at all.
 */
export function transactionCommit(): i32 {
  if (transactionDepth == 0) return TOPO_NO_TRANSACTION;
  transactionDepth--;
  if (transactionDepth != 0) return TOPO_OK;
  if (topologyDirty) {
    topologyDirty = false;
    renderChangedHook(changeEpoch);
    if (++changeEpoch == MAX_EPOCH) {
      // Wrap: forget every stamp so that no old one can match a reused epoch.
      for (let i: u32 = 0; i < regionCount; i++) {
        store<u32>(regionPtr(i), 0, R_CHANGED);
        store<u32>(regionPtr(i), 0, R_SCAN);
      }
      changeEpoch = 1;
    }
  }
  // Every flat view is current now: nothing can reach the regions freed meanwhile.
  if (pendingHead != 0) releasePending();
  return TOPO_OK;
}

export function getTransactionDepth(): u32 {
  return transactionDepth;
}

/**
 * Records a change that alters how the tree under `id` renders: its own state (enabled,
 * readonly, alias window, I/O dispatch flags) or its list of subregions. Address spaces
 * whose tree reaches `id` get re-rendered at the outermost commit.
 */
function markChanged(id: u32): void {
  const p = regionPtr(id);
  // Only roots, subregions and alias targets are reachable from an address space; a region
  // that is none of these shows nowhere (mapping it later marks its new container).
  if (load<u32>(p, R_CONTAINER) == 0 && load<u32>(p, R_ALIAS_REFS) == 0 && !isRootHook(id)) return;
  topologyDirty = true;
  store<u32>(p, changeEpoch, R_CHANGED);
}

/** Every topology change runs as its own transaction (nested in the caller's, if any). */
// @ts-ignore: decorator
@inline function finish(status: i32): i32 {
  transactionCommit();
  return status;
}

// ---------------------------------------------------------------- creation

/** Creates a region of `last + 1` bytes. Returns its id (> 0) or a negated TOPO_* code. */
export function regionNewLast(kind: u32, last: u64): i32 {
  initRegions();
  if (kind > KIND_ROM_DEVICE) return -TOPO_WRONG_KIND;
  const backed = kind == KIND_RAM || kind == KIND_ROM || kind == KIND_ROM_DEVICE;
  if (backed && last >= MAX_RAM_REGION_SIZE) return -TOPO_RAM_TOO_LARGE;
  if (kind == KIND_IO && last > MAX_IO_REGION_LAST) return -TOPO_IO_TOO_LARGE;
  let id = freeHead;
  if (id != 0) {
    freeHead = load<u32>(regionPtr(id), R_NEXT_FREE);
  } else {
    if (regionCount >= MAX_REGIONS) return -TOPO_TOO_MANY;
    id = regionCount;
    ensureRegionCapacity(id + 1);
    regionCount = id + 1;
  }
  let ram: usize = 0;
  if (backed) {
    const bytes = <usize>(last + 1);
    // Refuse rather than trap when linear memory cannot hold it (4 GiB address space).
    if (<u64>memory.size() * 65536 + <u64>bytes + 65536 > <u64>0xffff0000) {
      store<u32>(regionPtr(id), freeHead, R_NEXT_FREE);
      freeHead = id;
      return -TOPO_OUT_OF_MEMORY;
    }
    ram = heap.alloc(bytes);
    memory.fill(ram, 0, bytes);
  }
  const p = regionPtr(id);
  memory.fill(p, 0, REGION_SIZE);
  store<u8>(p, <u8>kind, R_KIND);
  // QEMU memory_region_initfn: romd_mode starts true.
  store<u8>(p, <u8>(STATE_ALIVE | STATE_ENABLED | (kind == KIND_ROM_DEVICE ? STATE_ROMD : 0)), R_STATE);
  store<u64>(p, last, R_LAST);
  store<u32>(p, <u32>ram, R_RAM);
  store<u32>(p, id, R_GUARD);
  return <i32>id;
}

/** Creates a region of `size` bytes (1 .. 2^64-1; use regionNewLast for a full 2^64). */
export function regionNew(kind: u32, size: u64): i32 {
  if (size == 0) return -TOPO_SIZE_ZERO;
  return regionNewLast(kind, size - 1);
}

function isAccessSize(s: u32): bool {
  return s == 0 || s == 1 || s == 2 || s == 4 || s == 8;
}

/** QEMU MemoryRegionOps valid/impl fields; 0 = unspecified (QEMU defaults apply). */
export function regionSetIo(id: u32, flags: u32, vmin: u32, vmax: u32, imin: u32, imax: u32, guard: u32): i32 {
  if (id == 0 || !regionAlive(id)) return TOPO_NO_SUCH_REGION;
  const p = regionPtr(id);
  const kind = <u32>load<u8>(p, R_KIND);
  if (kind != KIND_IO && kind != KIND_ROM_DEVICE) return TOPO_WRONG_KIND;
  if (!isAccessSize(vmin) || !isAccessSize(vmax) || !isAccessSize(imin) || !isAccessSize(imax)) return TOPO_BAD_ACCESS_SIZES;
  if ((vmin != 0 && vmax != 0 && vmin > vmax) || (imin != 0 && imax != 0 && imin > imax)) return TOPO_BAD_ACCESS_SIZES;
  if ((flags & IO_IMPL_UNALIGNED) != 0 && (flags & IO_VALID_UNALIGNED) == 0) return TOPO_IMPL_UNALIGNED_WITHOUT_VALID;
  if (guard >= MAX_GUARD_SLOTS) return TOPO_TOO_MANY;
  ensureGuardCapacity(guard);
  // Flat ranges copy the dispatch flags and guard slot: re-render where the region is mapped.
  transactionBegin();
  store<u8>(p, <u8>(flags & ~IO_UNASSIGNED), R_IOFLAGS);
  store<u8>(p, <u8>vmin, R_VMIN);
  store<u8>(p, <u8>vmax, R_VMAX);
  store<u8>(p, <u8>imin, R_IMIN);
  store<u8>(p, <u8>imax, R_IMAX);
  store<u8>(p, <u8>fastSizes(flags, vmin, vmax, imin, imax), R_FAST);
  store<u32>(p, guard, R_GUARD);
  markChanged(id);
  return finish(TOPO_OK);
}

/**
 * The R_FAST mask: sizes s (1, 2, 4) for which an aligned s-byte access passes
 * memory_region_access_valid without a hook, is not cut by memory_access_size (s <= valid.max,
 * default 4), is not split or widened by access_with_adjusted_size (impl.min <= s <= impl.max,
 * defaults 1 and 4) and needs no byte swap.
 */
function fastSizes(flags: u32, vmin: u32, vmax: u32, imin: u32, imax: u32): u32 {
  if ((flags & (IO_UNASSIGNED | IO_ACCEPTS)) != 0) return 0;
  const cap = vmax == 0 ? <u32>4 : vmax;
  const lo = imin == 0 ? <u32>1 : imin;
  const hi = imax == 0 ? <u32>4 : imax;
  let mask: u32 = 0;
  for (let s: u32 = 1; s <= 4; s <<= 1) {
    if (s > cap || (vmax != 0 && s < vmin) || s < lo || s > hi) continue;
    if (s > 1 && (flags & IO_BIG_ENDIAN) != 0) continue;
    mask |= <u32>1 << s;
  }
  return mask;
}

/** Makes `id` (an alias region) a window onto `target` at `offset` (QEMU memory_region_init_alias). */
export function regionSetAlias(id: u32, target: u32, offset: u64): i32 {
  if (id == 0 || !regionAlive(id) || target == 0 || !regionAlive(target)) return TOPO_NO_SUCH_REGION;
  const p = regionPtr(id);
  if (<u32>load<u8>(p, R_KIND) != KIND_ALIAS) return TOPO_WRONG_KIND;
  if (load<u32>(p, R_ALIAS_TARGET) != 0) return TOPO_IN_USE;
  if (offset > u64.MAX_VALUE - load<u64>(p, R_LAST)) return TOPO_OVERFLOW;
  if (target == id || reaches(target, id)) return TOPO_CYCLE;
  transactionBegin();
  store<u32>(p, target, R_ALIAS_TARGET);
  store<u64>(p, offset, R_ALIAS_OFFSET);
  const t = regionPtr(target);
  store<u32>(t, load<u32>(t, R_ALIAS_REFS) + 1, R_ALIAS_REFS);
  markChanged(id);
  return finish(TOPO_OK);
}

// ---------------------------------------------------------------- cycle check

function reachesFrom(from: u32, to: u32): bool {
  if (from == to) return true;
  const p = regionPtr(from);
  if (load<u32>(p, R_MARK) == markEpoch) return false;
  store<u32>(p, markEpoch, R_MARK);
  const t = load<u32>(p, R_ALIAS_TARGET);
  if (t != 0 && reachesFrom(t, to)) return true;
  let c = load<u32>(p, R_FIRST_CHILD);
  while (c != 0) {
    if (reachesFrom(c, to)) return true;
    c = load<u32>(regionPtr(c), R_NEXT_SIBLING);
  }
  return false;
}

/** True when `to` is reachable from `from` through subregion and alias edges. */
export function reaches(from: u32, to: u32): bool {
  markEpoch++;
  if (markEpoch == 0) {
    for (let i: u32 = 0; i < regionCount; i++) store<u32>(regionPtr(i), 0, R_MARK);
    markEpoch = 1;
  }
  return reachesFrom(from, to);
}

// ---------------------------------------------------------------- subregions

/** Links child into parent's list in priority order (QEMU memory_region_update_container_subregions:
 * before the first sibling whose priority is <= the child's, so among equals the newest wins). */
function linkChild(parent: u32, child: u32): void {
  const cp = regionPtr(child);
  const prio = load<i32>(cp, R_PRIORITY);
  const pp = regionPtr(parent);
  let prev: u32 = 0;
  let cur = load<u32>(pp, R_FIRST_CHILD);
  while (cur != 0 && prio < load<i32>(regionPtr(cur), R_PRIORITY)) {
    prev = cur;
    cur = load<u32>(regionPtr(cur), R_NEXT_SIBLING);
  }
  store<u32>(cp, cur, R_NEXT_SIBLING);
  if (prev == 0) store<u32>(pp, child, R_FIRST_CHILD);
  else store<u32>(regionPtr(prev), child, R_NEXT_SIBLING);
  store<u32>(cp, parent, R_CONTAINER);
}

function unlinkChild(parent: u32, child: u32): void {
  const pp = regionPtr(parent);
  let prev: u32 = 0;
  let cur = load<u32>(pp, R_FIRST_CHILD);
  while (cur != 0 && cur != child) {
    prev = cur;
    cur = load<u32>(regionPtr(cur), R_NEXT_SIBLING);
  }
  const next = load<u32>(regionPtr(child), R_NEXT_SIBLING);
  if (prev == 0) store<u32>(pp, next, R_FIRST_CHILD);
  else store<u32>(regionPtr(prev), next, R_NEXT_SIBLING);
  store<u32>(regionPtr(child), 0, R_NEXT_SIBLING);
  store<u32>(regionPtr(child), 0, R_CONTAINER);
}

/** QEMU memory_region_add_subregion_overlap(parent, addr, child, priority). */
export function regionAddSubregion(parent: u32, child: u32, addr: u64, priority: i32): i32 {
  if (parent == 0 || child == 0 || !regionAlive(parent) || !regionAlive(child)) return TOPO_NO_SUCH_REGION;
  const pp = regionPtr(parent);
  if (<u32>load<u8>(pp, R_KIND) == KIND_ALIAS) return TOPO_WRONG_KIND;
  const cp = regionPtr(child);
  if (load<u32>(cp, R_CONTAINER) != 0) return TOPO_ALREADY_MAPPED;
  if (addr > u64.MAX_VALUE - load<u64>(cp, R_LAST)) return TOPO_OVERFLOW;
  if (parent == child || reaches(child, parent)) return TOPO_CYCLE;
  transactionBegin();
  store<u64>(cp, addr, R_ADDR);
  store<i32>(cp, priority, R_PRIORITY);
  linkChild(parent, child);
  markChanged(parent);
  return finish(TOPO_OK);
}

/** QEMU memory_region_del_subregion. */
export function regionDelSubregion(parent: u32, child: u32): i32 {
  if (parent == 0 || child == 0 || !regionAlive(parent) || !regionAlive(child)) return TOPO_NO_SUCH_REGION;
  if (load<u32>(regionPtr(child), R_CONTAINER) != parent) return TOPO_NOT_A_SUBREGION;
  transactionBegin();
  unlinkChild(parent, child);
  markChanged(parent);
  return finish(TOPO_OK);
}

/** QEMU memory_region_set_address: re-adds the region to its container, so among
 * equal-priority siblings it becomes the newest (and wins). Same address: no change. */
export function regionSetAddress(id: u32, addr: u64): i32 {
  if (id == 0 || !regionAlive(id)) return TOPO_NO_SUCH_REGION;
  const p = regionPtr(id);
  if (addr > u64.MAX_VALUE - load<u64>(p, R_LAST)) return TOPO_OVERFLOW;
  if (load<u64>(p, R_ADDR) == addr) return TOPO_OK;
  transactionBegin();
  const parent = load<u32>(p, R_CONTAINER);
  if (parent != 0) unlinkChild(parent, id);
  store<u64>(p, addr, R_ADDR);
  if (parent != 0) {
    // The region's own rendering does not depend on its address; its container's does.
    linkChild(parent, id);
    markChanged(parent);
  }
  return finish(TOPO_OK);
}

function setStateBit(id: u32, bit: u32, on: bool): i32 {
  if (id == 0 || !regionAlive(id)) return TOPO_NO_SUCH_REGION;
  const p = regionPtr(id);
  const s = <u32>load<u8>(p, R_STATE);
  const n = on ? s | bit : s & ~bit;
  if (n == s) return TOPO_OK;
  transactionBegin();
  store<u8>(p, <u8>n, R_STATE);
  markChanged(id);
  return finish(TOPO_OK);
}

/** QEMU memory_region_set_enabled. */
export function regionSetEnabled(id: u32, enabled: bool): i32 {
  return setStateBit(id, STATE_ENABLED, enabled);
}

/** QEMU memory_region_set_readonly (inherited by everything rendered below the region). */
export function regionSetReadonly(id: u32, readonly: bool): i32 {
  return setStateBit(id, STATE_READONLY, readonly);
}

/**
 * QEMU memory_region_rom_device_set_romd: with ROMD mode on, reads of a ROM device are
 * served from its RAM; off, they go to its read callback. Writes always go to the callback.
 */
export function regionSetRomd(id: u32, romd: bool): i32 {
  if (id == 0 || !regionAlive(id)) return TOPO_NO_SUCH_REGION;
  if (<u32>load<u8>(regionPtr(id), R_KIND) != KIND_ROM_DEVICE) return TOPO_WRONG_KIND;
  return setStateBit(id, STATE_ROMD, romd);
}

/** QEMU memory_region_set_alias_offset. */
export function regionSetAliasOffset(id: u32, offset: u64): i32 {
  if (id == 0 || !regionAlive(id)) return TOPO_NO_SUCH_REGION;
  const p = regionPtr(id);
  if (<u32>load<u8>(p, R_KIND) != KIND_ALIAS) return TOPO_WRONG_KIND;
  if (offset > u64.MAX_VALUE - load<u64>(p, R_LAST)) return TOPO_OVERFLOW;
  if (load<u64>(p, R_ALIAS_OFFSET) == offset) return TOPO_OK;
  transactionBegin();
  store<u64>(p, offset, R_ALIAS_OFFSET);
  markChanged(id);
  return finish(TOPO_OK);
}

/**
 * Frees a region that nothing refers to any more (unmapped, no subregions, not aliased, not a
 * root). Inside an open transaction the release waits for the outermost commit (see the top
 * of this file); the id is dead to every topology call at once either way.
 */
export function regionFree(id: u32): i32 {
  if (id == 0 || !regionAlive(id)) return TOPO_NO_SUCH_REGION;
  const p = regionPtr(id);
  if (load<u32>(p, R_CONTAINER) != 0 || load<u32>(p, R_FIRST_CHILD) != 0 || load<u32>(p, R_ALIAS_REFS) != 0 || isRootHook(id)) {
    return TOPO_IN_USE;
  }
  const target = load<u32>(p, R_ALIAS_TARGET);
  if (target != 0) {
    const t = regionPtr(target);
    store<u32>(t, load<u32>(t, R_ALIAS_REFS) - 1, R_ALIAS_REFS);
  }
  if (transactionDepth != 0) {
    store<u8>(p, <u8>((<u32>load<u8>(p, R_STATE) & ~STATE_ALIVE) | STATE_PENDING_FREE), R_STATE);
    store<u32>(p, pendingHead, R_NEXT_FREE);
    pendingHead = id;
    return TOPO_OK;
  }
  release(id);
  return TOPO_OK;
}

/** Gives back a region's RAM and id (its record is not alive any more, or is about to go). */
function release(id: u32): void {
  const p = regionPtr(id);
  const ram = <usize>load<u32>(p, R_RAM);
  if (ram != 0) heap.free(ram);
  memory.fill(p, 0, REGION_SIZE);
  store<u32>(p, freeHead, R_NEXT_FREE);
  freeHead = id;
}

/** Releases the frees deferred during the transaction that just committed. */
function releasePending(): void {
  let id = pendingHead;
  pendingHead = 0;
  while (id != 0) {
    const next = load<u32>(regionPtr(id), R_NEXT_FREE);
    release(id);
    id = next;
  }
}

/** True while a freed region waits for the outermost commit (its RAM is still allocated). */
export function regionPendingFree(id: u32): bool {
  if (id == 0 || id >= regionCount) return false;
  return (<u32>load<u8>(regionPtr(id), R_STATE) & STATE_PENDING_FREE) != 0;
}

// ---------------------------------------------------------------- accessors

export function regionKind(id: u32): u32 {
  return <u32>load<u8>(regionPtr(id), R_KIND);
}
export function regionLast(id: u32): u64 {
  return load<u64>(regionPtr(id), R_LAST);
}
export function regionRam(id: u32): usize {
  return <usize>load<u32>(regionPtr(id), R_RAM);
}
