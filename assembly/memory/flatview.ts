// Address spaces, flat-view rendering and the page-table lookup structure.
//
// Rendering follows QEMU system/memory.c render_memory_region + flatview_simplify: a region
// is drawn into the gaps the view has left so far, after its subregions (which come in
// priority order, so higher priority wins); containers leave holes; children are clipped to
// their parents; aliases render their target through a window. Ranges are kept in each
// region's own offset coordinates ([cs, cl] plus `delta` = address of offset 0, mod 2^64),
// so nothing overflows even for a region spanning 2^64 bytes or an alias whose target
// starts "below" address 0. After simplification the gaps are filled with region 0
// (unassigned), so every address belongs to exactly one flat range.
//
// Flat range record (FLAT_SIZE = 32 bytes: two per cache line, never straddling one),
// sorted by start, covering [0, 2^64). Everything an access needs is in the record, so the
// access path never touches the region table:
//
//   0  start (u64)              8  last, inclusive (u64)
//   16 offset in region of `start` (u64)
//   24 region id (bits 0..23)   27 mode (u8): MODE_RAM / MODE_ROM / MODE_IO / MODE_ROMD,
//                                             | FLAT_READONLY
//   28 RAM/ROM/ROMD: host pointer of `start` (u32) (a ROM device in ROMD mode: its writes
//               take the general dispatch path, dispatch.ts dispatchWrite)
//      I/O:     dispatch word: guard slot (bits 0..20), IOW_NO_GUARD (bit 23), the region's
//               R_FAST sizes (bits 24..31); copied from the region at render time
//               (regionSetIo re-renders where the region shows)
//
// Page table: a 5-level radix tree over the address, in one arena per address space
// (entries are u32 byte offsets into the arena, so growing the arena moves nothing):
//
//   level     0         1         2         3         4        page
//   bits    63..52    51..42    41..32    31..22    21..12    11..0
//   entries  4096      1024      1024      1024      1024
//
//   entry & 3 == 1 : leaf, flat index = entry >> 2 (the whole span of the entry is one range)
//   entry & 3 == 0 : child node at arena offset `entry`
//   entry & 3 == 2 : subpage (level 4 only) for a page shared by several ranges: at arena
//                    offset `entry & ~63` (64-byte aligned), (4096 >> shift) x u32 flat index,
//                    shift = (entry >> 2) & 15 is the coarsest granule that keeps every
//                    boundary in the page (QEMU uses per-byte subpages; the cost is the same
//                    single extra load).
//
// Lookup cost is at most 5 loads + 2 for a subpage, whatever the number of regions; a
// one-entry cache of the level-2 entry for the last high half (addr >> 32) skips levels 0-2
// while accesses stay inside one 4 GiB window.
//
// Address-space record (AS_SIZE = 48 bytes):
//   0 root region (0 = free)   4 flat ptr    8 flat count    12 flat capacity (records)
//   16 arena ptr              20 arena used  24 arena capacity (bytes)   28 MRU flat index
//   32 high-half key (u32)    36 level-2 entry for that key: the walk of levels 0-2 for the
//                                last 4 GiB window used, so most lookups start at level 3
//   40 render count (u32): flat views rendered for this address space so far
//   44 (reserved)
//
// A commit re-renders only the address spaces whose tree (subregions and alias targets,
// from the root down) holds a region changed since the last commit (regions.ts
// markChanged); the scan visits each region at most once per commit.
import {
  IO_NO_GUARD, IO_UNASSIGNED, KIND_ALIAS, KIND_CONTAINER, KIND_IO, KIND_ROM, KIND_ROM_DEVICE,
  MAX_ADDRESS_SPACES, TOPO_NO_SUCH_ADDRESS_SPACE, TOPO_NO_SUCH_REGION, TOPO_OK, TOPO_TOO_MANY,
} from "./status";
import {
  R_ADDR, R_ALIAS_OFFSET, R_ALIAS_TARGET, R_CHANGED, R_FAST, R_FIRST_CHILD, R_GUARD, R_IOFLAGS,
  R_KIND, R_LAST, R_NEXT_SIBLING, R_RAM, R_SCAN, R_STATE, STATE_ENABLED, STATE_READONLY, STATE_ROMD,
  initRegions, regionAlive, regionPtr, setIsRootHook, setRenderChangedHook,
} from "./regions";

export const FLAT_SIZE: usize = 32;
// @ts-ignore: decorator
@inline export const F_START: usize = 0;
// @ts-ignore: decorator
@inline export const F_LAST: usize = 8;
// @ts-ignore: decorator
@inline export const F_OFFSET: usize = 16;
// @ts-ignore: decorator
@inline export const F_REGION: usize = 24;
// @ts-ignore: decorator
@inline export const F_MODE: usize = 27;
// @ts-ignore: decorator
@inline export const F_PTR: usize = 28;
// @ts-ignore: decorator
@inline export const F_IO: usize = 28;
export const FLAT_REGION_MASK: u32 = 0xffffff;
// Dispatch word of I/O ranges (F_IO).
export const IOW_GUARD_MASK: u32 = 0x1fffff;
export const IOW_NO_GUARD: u32 = 1 << 23;
export const IOW_FAST_SHIFT: u32 = 24;
// Scratch records while rendering use the same size: region id at 24, readonly flag at 28.
// @ts-ignore: decorator
@inline const T_REGION: usize = 24;
// @ts-ignore: decorator
@inline const T_READONLY: usize = 28;

export const MODE_RAM: u32 = 1; // read and write in linear memory
export const MODE_ROM: u32 = 2; // read in linear memory, writes dropped
export const MODE_IO: u32 = 3; // device callbacks (or unassigned)
export const MODE_ROMD: u32 = 4; // ROM device in ROMD mode: read in linear memory, writes to the device
export const FLAT_READONLY: u32 = 16;
export const MODE_MASK: u32 = 15;

export const AS_SIZE: usize = 48;
// @ts-ignore: decorator
@inline export const A_ROOT: usize = 0;
// @ts-ignore: decorator
@inline export const A_FLAT: usize = 4;
// @ts-ignore: decorator
@inline export const A_COUNT: usize = 8;
// @ts-ignore: decorator
@inline export const A_FLAT_CAP: usize = 12;
// @ts-ignore: decorator
@inline export const A_ARENA: usize = 16;
// @ts-ignore: decorator
@inline export const A_ARENA_USED: usize = 20;
// @ts-ignore: decorator
@inline export const A_ARENA_CAP: usize = 24;
// @ts-ignore: decorator
@inline export const A_MRU: usize = 28;
// @ts-ignore: decorator
@inline export const A_HI_KEY: usize = 32;
// @ts-ignore: decorator
@inline export const A_HI_ENTRY: usize = 36;
// @ts-ignore: decorator
@inline export const A_RENDERS: usize = 40;

const ROOT_ENTRIES: u32 = 4096;
const NODE_ENTRIES: u32 = 1024;
const PAGE_SHIFT: u64 = 12;

export let asTable: usize = 0;
let asCapacity: u32 = 0;
export let asCount: u32 = 0; // one past the highest id handed out; id 0 unused

// Scratch view used while rendering (records in FLAT_SIZE layout, mode = readonly flag only).
let tmpPtr: usize = 0;
let tmpCount: u32 = 0;
let tmpCap: u32 = 0;

// @ts-ignore: decorator
@inline export function asPtr(id: u32): usize {
  return asTable + <usize>id * AS_SIZE;
}

/** Region id of a flat record. */
// @ts-ignore: decorator
@inline export function flatRegion(f: usize): u32 {
  return load<u32>(f, F_REGION) & FLAT_REGION_MASK;
}

/** MODE_RAM / MODE_ROM / MODE_IO of a flat record. */
// @ts-ignore: decorator
@inline export function flatMode(f: usize): u32 {
  return <u32>load<u8>(f, F_MODE) & MODE_MASK;
}

/** The address-space record of a live id, or 0. */
export function liveAs(id: u32): usize {
  if (id == 0 || id >= asCount) return 0;
  const p = asPtr(id);
  return load<u32>(p, A_ROOT) != 0 ? p : 0;
}

// ---------------------------------------------------------------- rendering

function tmpEnsure(n: u32): void {
  if (n <= tmpCap) return;
  let cap = tmpCap == 0 ? <u32>64 : tmpCap * 2;
  while (cap < n) cap *= 2;
  tmpPtr = tmpPtr == 0 ? heap.alloc(<usize>cap * FLAT_SIZE) : heap.realloc(tmpPtr, <usize>cap * FLAT_SIZE);
  tmpCap = cap;
}

function tmpInsert(at: u32, start: u64, last: u64, offset: u64, region: u32, readonly: bool): void {
  tmpEnsure(tmpCount + 1);
  const p = tmpPtr + <usize>at * FLAT_SIZE;
  if (at < tmpCount) memory.copy(p + FLAT_SIZE, p, <usize>(tmpCount - at) * FLAT_SIZE);
  store<u64>(p, start, F_START);
  store<u64>(p, last, F_LAST);
  store<u64>(p, offset, F_OFFSET);
  store<u32>(p, region, T_REGION);
  store<u32>(p, readonly ? 1 : 0, T_READONLY);
  tmpCount++;
}

/** Draws [start, last] (offset `offset` in `region`) into the gaps of the scratch view. */
function fillGaps(region: u32, start: u64, last: u64, offset: u64, readonly: bool): void {
  // First range that ends at or after `start` (binary search; ranges are sorted and disjoint).
  let lo: u32 = 0;
  let hi: u32 = tmpCount;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (load<u64>(tmpPtr + <usize>mid * FLAT_SIZE, F_LAST) < start) lo = mid + 1;
    else hi = mid;
  }
  let i = lo;
  let cursor = start;
  while (i < tmpCount) {
    const p = tmpPtr + <usize>i * FLAT_SIZE;
    const rs = load<u64>(p, F_START);
    const rl = load<u64>(p, F_LAST);
    if (cursor < rs) {
      const gapLast = last < rs - 1 ? last : rs - 1;
      tmpInsert(i, cursor, gapLast, offset + (cursor - start), region, readonly);
      i++;
      if (gapLast == last) return;
    }
    // cursor is inside range i now: skip it.
    if (rl >= last) return;
    cursor = rl + 1;
    i++;
  }
  tmpInsert(i, cursor, last, offset + (cursor - start), region, readonly);
}

/**
 * QEMU render_memory_region, in the region's own coordinates: offsets [cs, cl] of `id` are
 * visible, offset o is at address o + delta.
 */
function renderRegion(id: u32, cs: u64, cl: u64, delta: u64, readonly: bool): void {
  const p = regionPtr(id);
  const state = <u32>load<u8>(p, R_STATE);
  if ((state & STATE_ENABLED) == 0) return;
  const ro = readonly || (state & STATE_READONLY) != 0;
  const kind = <u32>load<u8>(p, R_KIND);
  if (kind == KIND_ALIAS) {
    const target = load<u32>(p, R_ALIAS_TARGET);
    if (target == 0) return;
    const aoff = load<u64>(p, R_ALIAS_OFFSET);
    const ts = cs + aoff; // no overflow: aoff + last <= 2^64 - 1 is checked at construction
    let tl = cl + aoff;
    const tLast = load<u64>(regionPtr(target), R_LAST);
    if (ts > tLast) return;
    if (tl > tLast) tl = tLast;
    renderRegion(target, ts, tl, delta - aoff, ro);
    return;
  }
  let c = load<u32>(p, R_FIRST_CHILD);
  while (c != 0) {
    const cp = regionPtr(c);
    const ca = load<u64>(cp, R_ADDR);
    const cLast = ca + load<u64>(cp, R_LAST); // no overflow: checked when mapped
    const s = cs > ca ? cs : ca;
    const l = cl < cLast ? cl : cLast;
    if (s <= l) renderRegion(c, s - ca, l - ca, delta + ca, ro);
    c = load<u32>(cp, R_NEXT_SIBLING);
  }
  if (kind == KIND_CONTAINER) return;
  fillGaps(id, cs + delta, cl + delta, cs, ro);
}

/** QEMU flatview_simplify: merge neighbours that continue the same region. */
function simplify(): void {
  if (tmpCount == 0) return;
  let w: u32 = 0;
  for (let r: u32 = 1; r < tmpCount; r++) {
    const a = tmpPtr + <usize>w * FLAT_SIZE;
    const b = tmpPtr + <usize>r * FLAT_SIZE;
    const aLast = load<u64>(a, F_LAST);
    if (
      load<u32>(a, T_REGION) == load<u32>(b, T_REGION) &&
      load<u32>(a, T_READONLY) == load<u32>(b, T_READONLY) &&
      aLast != u64.MAX_VALUE && aLast + 1 == load<u64>(b, F_START) &&
      load<u64>(a, F_OFFSET) + (aLast - load<u64>(a, F_START) + 1) == load<u64>(b, F_OFFSET)
    ) {
      store<u64>(a, load<u64>(b, F_LAST), F_LAST);
    } else {
      w++;
      if (w != r) memory.copy(tmpPtr + <usize>w * FLAT_SIZE, b, FLAT_SIZE);
    }
  }
  tmpCount = w + 1;
}

function flatEnsure(ap: usize, n: u32): usize {
  let cap = load<u32>(ap, A_FLAT_CAP);
  let ptr = <usize>load<u32>(ap, A_FLAT);
  if (n > cap) {
    let c = cap == 0 ? <u32>16 : cap;
    while (c < n) c *= 2;
    ptr = ptr == 0 ? heap.alloc(<usize>c * FLAT_SIZE) : heap.realloc(ptr, <usize>c * FLAT_SIZE);
    store<u32>(ap, <u32>ptr, A_FLAT);
    store<u32>(ap, c, A_FLAT_CAP);
  }
  return ptr;
}

/** Dispatch word of an I/O region or ROM device (see F_IO). */
// @ts-ignore: decorator
@inline export function ioWord(region: u32): u32 {
  const rp = regionPtr(region);
  let word = (load<u32>(rp, R_GUARD) & IOW_GUARD_MASK) | (<u32>load<u8>(rp, R_FAST) << IOW_FAST_SHIFT);
  if ((<u32>load<u8>(rp, R_IOFLAGS) & IO_NO_GUARD) != 0) word |= IOW_NO_GUARD;
  return word;
}

function emit(ap: usize, i: u32, start: u64, last: u64, offset: u64, region: u32, readonly: bool): void {
  const p = <usize>load<u32>(ap, A_FLAT) + <usize>i * FLAT_SIZE;
  store<u64>(p, start, F_START);
  store<u64>(p, last, F_LAST);
  store<u64>(p, offset, F_OFFSET);
  const rp = regionPtr(region);
  const kind = <u32>load<u8>(rp, R_KIND);
  let mode: u32 = MODE_IO;
  let word: u32 = 0;
  if (kind == KIND_ROM_DEVICE) {
    // QEMU memory_access_is_direct: a ROM device in ROMD mode reads directly; its writes,
    // and every access with ROMD mode off, go to the device (readonly changes neither).
    if ((<u32>load<u8>(rp, R_STATE) & STATE_ROMD) != 0) {
      mode = MODE_ROMD;
      word = load<u32>(rp, R_RAM) + <u32>offset;
    } else {
      word = ioWord(region);
    }
  } else if (kind != KIND_IO) {
    mode = kind == KIND_ROM || readonly ? MODE_ROM : MODE_RAM;
    word = load<u32>(rp, R_RAM) + <u32>offset;
  } else {
    word = ioWord(region);
  }
  if (readonly) mode |= FLAT_READONLY;
  store<u32>(p, region | (mode << 24), F_REGION);
  store<u32>(p, word, F_IO);
}

/** Renders one address space: flat view, gaps, page table. */
export function renderAddressSpace(id: u32): void {
  const ap = asPtr(id);
  const root = load<u32>(ap, A_ROOT);
  tmpCount = 0;
  renderRegion(root, 0, load<u64>(regionPtr(root), R_LAST), 0, false);
  simplify();
  // Copy with gaps filled by region 0 (offset = address, so alignment checks see the address).
  flatEnsure(ap, tmpCount * 2 + 1);
  let n: u32 = 0;
  let cursor: u64 = 0;
  let covered = false; // true once the last range reached 2^64 - 1
  for (let i: u32 = 0; i < tmpCount; i++) {
    const t = tmpPtr + <usize>i * FLAT_SIZE;
    const s = load<u64>(t, F_START);
    const l = load<u64>(t, F_LAST);
    if (s > cursor) emit(ap, n++, cursor, s - 1, cursor, 0, false);
    emit(ap, n++, s, l, load<u64>(t, F_OFFSET), load<u32>(t, T_REGION), load<u32>(t, T_READONLY) != 0);
    if (l == u64.MAX_VALUE) covered = true;
    else cursor = l + 1;
  }
  if (!covered) emit(ap, n++, cursor, u64.MAX_VALUE, cursor, 0, false);
  store<u32>(ap, n, A_COUNT);
  store<u32>(ap, 0, A_MRU);
  buildPageTable(ap);
  store<u32>(ap, load<u32>(ap, A_RENDERS) + 1, A_RENDERS);
}

/**
 * True when the tree under `id` (its subregions and alias target, recursively, enabled or
 * not) holds a region stamped with `epoch`. Memoized per region and epoch, so one commit
 * visits each region at most once however many address spaces share it.
 */
function treeChanged(id: u32, epoch: u32): bool {
  const p = regionPtr(id);
  if (load<u32>(p, R_CHANGED) == epoch) return true;
  const memo = load<u32>(p, R_SCAN);
  if (memo >>> 1 == epoch) return (memo & 1) != 0;
  const target = load<u32>(p, R_ALIAS_TARGET);
  let hit = target != 0 && treeChanged(target, epoch);
  let c = load<u32>(p, R_FIRST_CHILD);
  while (!hit && c != 0) {
    // Leaves (most regions: RAM, BARs) are checked here rather than by a call.
    const cp = regionPtr(c);
    if (load<u32>(cp, R_CHANGED) == epoch) hit = true;
    else if (load<u32>(cp, R_FIRST_CHILD) != 0 || load<u32>(cp, R_ALIAS_TARGET) != 0) hit = treeChanged(c, epoch);
    c = load<u32>(cp, R_NEXT_SIBLING);
  }
  store<u32>(p, (epoch << 1) | (hit ? 1 : 0), R_SCAN);
  return hit;
}

/** QEMU address_space_update_topology for the commit of `epoch`: new flat views where needed. */
function renderChanged(epoch: u32): void {
  for (let i: u32 = 1; i < asCount; i++) {
    const root = load<u32>(asPtr(i), A_ROOT);
    if (root != 0 && treeChanged(root, epoch)) renderAddressSpace(i);
  }
}

/** How many flat views address space `id` has had rendered (0 if it is not live). */
export function asRenderCount(id: u32): u32 {
  const ap = liveAs(id);
  return ap == 0 ? 0 : load<u32>(ap, A_RENDERS);
}

function isRoot(region: u32): bool {
  for (let i: u32 = 1; i < asCount; i++) {
    if (load<u32>(asPtr(i), A_ROOT) == region) return true;
  }
  return false;
}

// ---------------------------------------------------------------- page table

/** Reserves `bytes` in the arena; returns the arena offset (the arena may move). */
function arenaAlloc(ap: usize, bytes: u32): u32 {
  const used = load<u32>(ap, A_ARENA_USED);
  let cap = load<u32>(ap, A_ARENA_CAP);
  if (used + bytes > cap) {
    let c = cap == 0 ? <u32>65536 : cap * 2;
    while (used + bytes > c) c *= 2;
    const old = <usize>load<u32>(ap, A_ARENA);
    const p = old == 0 ? heap.alloc(c) : heap.realloc(old, c);
    store<u32>(ap, <u32>p, A_ARENA);
    store<u32>(ap, c, A_ARENA_CAP);
  }
  store<u32>(ap, used + bytes, A_ARENA_USED);
  return used;
}

/**
 * A node of `entries` entries. Its contents are only a placeholder tag (0x01010101: a leaf,
 * so never taken for a child node or a subpage): the ranges cover [0, 2^64) between them,
 * so mapping them all overwrites every entry of every node (a node is created by the first
 * range that only partly covers its parent entry, and the ranges after it cover the rest).
 */
function newNode(ap: usize, entries: u32): u32 {
  const off = arenaAlloc(ap, entries << 2);
  memory.fill(<usize>load<u32>(ap, A_ARENA) + off, 0x01, <usize>entries << 2);
  return off;
}

// @ts-ignore: decorator
@inline function levelShift(level: u32): u64 {
  return level == 0 ? 52 : <u64>(52 - 10 * level);
}

function flatIndexAt(ap: usize, addr: u64): u32 {
  const flat = <usize>load<u32>(ap, A_FLAT);
  let lo: u32 = 0;
  let hi: u32 = load<u32>(ap, A_COUNT) - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (load<u64>(flat + <usize>mid * FLAT_SIZE, F_START) <= addr) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Builds the subpage of the page at `page` from every flat range overlapping it. */
function buildSubpage(ap: usize, page: u64): u32 {
  const flat = <usize>load<u32>(ap, A_FLAT);
  const count = load<u32>(ap, A_COUNT);
  const pageLast = page + 4095;
  const first = flatIndexAt(ap, page);
  // Coarsest granule: the lowest set bit among the in-page boundaries.
  let shift: u32 = 12;
  let i = first;
  while (i < count) {
    const p = flat + <usize>i * FLAT_SIZE;
    const s = load<u64>(p, F_START);
    if (s > pageLast) break;
    if (s > page) {
      const z = <u32>ctz<u64>(s - page);
      if (z < shift) shift = z;
    }
    i++;
  }
  const entries: u32 = 4096 >>> shift;
  // 64-byte alignment leaves the low 6 bits of the entry for the tag and the shift.
  const pad = (64 - (load<u32>(ap, A_ARENA_USED) & 63)) & 63;
  const off = arenaAlloc(ap, pad + (entries << 2)) + pad;
  const base = <usize>load<u32>(ap, A_ARENA) + off;
  i = first;
  while (i < count) {
    const p = flat + <usize>i * FLAT_SIZE;
    const s = load<u64>(p, F_START);
    if (s > pageLast) break;
    const l = load<u64>(p, F_LAST);
    const from: u32 = s <= page ? 0 : <u32>((s - page) >> shift);
    const to: u32 = l >= pageLast ? entries - 1 : <u32>((l - page) >> shift);
    for (let j = from; j <= to; j++) store<u32>(base + (<usize>j << 2), i);
    i++;
  }
  return off | (shift << 2) | 2;
}

/** Maps flat range `idx` = [start, last] into the node at arena offset `node` (level `level`). */
function mapRange(ap: usize, node: u32, level: u32, nodeBase: u64, start: u64, last: u64, idx: u32): void {
  const shift = levelShift(level);
  const spanLast: u64 = (<u64>1 << shift) - 1;
  const i0 = <i32>((start - nodeBase) >> shift);
  const i1 = <i32>((last - nodeBase) >> shift);
  let from = i0;
  const firstBase = nodeBase + (<u64>i0 << shift);
  if (start != firstBase || last < firstBase + spanLast) {
    mapPartial(ap, node, level, i0, firstBase, start, last, idx);
    from = i0 + 1;
  }
  if (from > i1) return;
  const lastBase = nodeBase + (<u64>i1 << shift);
  const partialLast = last < lastBase + spanLast;
  const to = partialLast ? i1 - 1 : i1;
  // Entries wholly inside the range: leaves, in one run.
  const leaf = (idx << 2) | 1;
  const base = <usize>load<u32>(ap, A_ARENA) + <usize>node;
  for (let i = from; i <= to; i++) store<u32>(base + (<usize>i << 2), leaf);
  if (partialLast) mapPartial(ap, node, level, i1, lastBase, start, last, idx);
}

/** Entry `i` (span from eBase) of the node is only partly inside [start, last]. */
function mapPartial(ap: usize, node: u32, level: u32, i: i32, eBase: u64, start: u64, last: u64, idx: u32): void {
  const eLast = eBase + ((<u64>1 << levelShift(level)) - 1);
  const slot = <usize>node + (<usize>i << 2);
  const e = load<u32>(<usize>load<u32>(ap, A_ARENA) + slot);
  if (level < 4) {
    let child = e;
    if ((e & 3) != 0) {
      child = newNode(ap, NODE_ENTRIES); // may move the arena
      store<u32>(<usize>load<u32>(ap, A_ARENA) + slot, child);
    }
    mapRange(ap, child, level + 1, eBase, start > eBase ? start : eBase, last < eLast ? last : eLast, idx);
  } else if ((e & 3) != 2) {
    const sp = buildSubpage(ap, eBase); // may move the arena
    store<u32>(<usize>load<u32>(ap, A_ARENA) + slot, sp);
  }
}

function buildPageTable(ap: usize): void {
  store<u32>(ap, 0, A_ARENA_USED);
  const root = newNode(ap, ROOT_ENTRIES);
  const count = load<u32>(ap, A_COUNT);
  for (let i: u32 = 0; i < count; i++) {
    const p = <usize>load<u32>(ap, A_FLAT) + <usize>i * FLAT_SIZE;
    mapRange(ap, root, 0, 0, load<u64>(p, F_START), load<u64>(p, F_LAST), i);
  }
  store<u32>(ap, 0, A_HI_KEY);
  store<u32>(ap, walkTop(<usize>load<u32>(ap, A_ARENA), 0), A_HI_ENTRY);
}

/** Levels 0-2 of the walk: the entry covering the 4 GiB window of `addr` (leaf or level-3 node). */
// @ts-ignore: decorator
@inline function walkTop(arena: usize, addr: u64): u32 {
  let e = load<u32>(arena + (<usize>(addr >> 52) << 2));
  if ((e & 3) == 0) {
    e = load<u32>(arena + <usize>e + (<usize>((addr >> 42) & 1023) << 2));
    if ((e & 3) == 0) e = load<u32>(arena + <usize>e + (<usize>((addr >> 32) & 1023) << 2));
  }
  return e;
}

/** Flat index of `addr`: the page-table walk (cost independent of the number of regions). */
// @ts-ignore: decorator
@inline export function pageLookup(ap: usize, addr: u64): u32 {
  const arena = <usize>load<u32>(ap, A_ARENA);
  const hi = <u32>(addr >> 32);
  let e: u32;
  if (hi == load<u32>(ap, A_HI_KEY)) {
    e = load<u32>(ap, A_HI_ENTRY);
  } else {
    e = walkTop(arena, addr);
    store<u32>(ap, hi, A_HI_KEY);
    store<u32>(ap, e, A_HI_ENTRY);
  }
  if ((e & 3) == 0) {
    e = load<u32>(arena + <usize>e + (<usize>((<u32>addr >>> 22) & 1023) << 2));
    if ((e & 3) == 0) {
      e = load<u32>(arena + <usize>e + (<usize>((<u32>addr >>> 12) & 1023) << 2));
    }
  }
  if ((e & 3) == 2) {
    return load<u32>(arena + <usize>(e & ~63) + (<usize>((<u32>addr & 4095) >>> ((e >>> 2) & 15)) << 2));
  }
  return e >>> 2;
}

/** Flat record of `addr`, trying the most recently used range first (QEMU mru_section). */
// @ts-ignore: decorator
@inline export function flatFor(ap: usize, addr: u64): usize {
  const flat = <usize>load<u32>(ap, A_FLAT);
  const mru = flat + <usize>load<u32>(ap, A_MRU) * FLAT_SIZE;
  const s = load<u64>(mru, F_START);
  if (addr - s <= load<u64>(mru, F_LAST) - s) return mru;
  const idx = pageLookup(ap, addr);
  store<u32>(ap, idx, A_MRU);
  return flat + <usize>idx * FLAT_SIZE;
}

// ---------------------------------------------------------------- address spaces

/** Creates an address space rendering `root`. Returns its id (> 0) or a negated TOPO_* code. */
export function asNew(root: u32): i32 {
  initRegions();
  if (root == 0 || !regionAlive(root)) return -TOPO_NO_SUCH_REGION;
  let id: u32 = 0;
  for (let i: u32 = 1; i < asCount; i++) {
    if (load<u32>(asPtr(i), A_ROOT) == 0) { id = i; break; }
  }
  if (id == 0) {
    if (asCount == 0) asCount = 1;
    if (asCount >= MAX_ADDRESS_SPACES) return -TOPO_TOO_MANY;
    id = asCount;
    if (id >= asCapacity) {
      const cap = asCapacity == 0 ? <u32>8 : asCapacity * 2;
      const p = asTable == 0 ? heap.alloc(<usize>cap * AS_SIZE) : heap.realloc(asTable, <usize>cap * AS_SIZE);
      memory.fill(p + <usize>asCapacity * AS_SIZE, 0, <usize>(cap - asCapacity) * AS_SIZE);
      asTable = p;
      asCapacity = cap;
    }
    asCount = id + 1;
  }
  store<u32>(asPtr(id), root, A_ROOT);
  renderAddressSpace(id);
  return <i32>id;
}

export function asFree(id: u32): i32 {
  const ap = liveAs(id);
  if (ap == 0) return TOPO_NO_SUCH_ADDRESS_SPACE;
  const flat = <usize>load<u32>(ap, A_FLAT);
  const arena = <usize>load<u32>(ap, A_ARENA);
  if (flat != 0) heap.free(flat);
  if (arena != 0) heap.free(arena);
  memory.fill(ap, 0, AS_SIZE);
  return TOPO_OK;
}

export function initFlatviews(): void {
  setRenderChangedHook(renderChanged);
  setIsRootHook(isRoot);
}
initFlatviews();
