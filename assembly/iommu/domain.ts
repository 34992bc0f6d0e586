// IOMMU domains: a translation stage with its IOTLB, its translation source, counters and
// notifier listeners. Two sources:
//   MAP_TABLE — a sorted table of DMA regions (IOVA range → region slot, permissions). Its
//               output is terminal: a "segment address" slot << 40 | offset-in-region that the
//               host turns into (backing memory, offset).
//   HOST      — a host callback answers misses with an IOMMUTLBEntry-like record (the path a
//               device process uses to ask its VMM); its output is an IOVA of another domain
//               (entry.target), so translations chain until a MAP_TABLE domain.
// translate() reproduces QEMU's address_space_translate_iommu (system/physmem.c): per stage,
// output = (translated & ~mask) | (iova & mask), the length is clamped to the entry's end,
// and a missing permission fails; we additionally tell "not mapped" from "no permission".
import {
  E_BASE, E_MASK, E_TRANSLATED, E_DENY, ENTRY_SIZE, SET_SHIFT, iotlbAlloc, iotlbClear, lookup, insert, invalidateRange, keptByLastInvalidate,
  classOfMask, entryMask, entryTranslated, entryPerm, entryTarget,
} from "./iotlb";

// ---- status codes (mirrored by src/core/iommu/status.ts) ----
export const S_OK: i32 = 0;
export const S_UNMAPPED: i32 = 1;
export const S_PERMISSION: i32 = 2;
export const S_EXISTS: i32 = 3;
export const S_NOT_FOUND: i32 = 4;
export const S_INVALID: i32 = 5;
export const S_LIMIT: i32 = 6;
export const S_CHAIN_TOO_DEEP: i32 = 7;
export const S_BUSY: i32 = 8;
export const S_NO_DOMAIN: i32 = 9;
export const S_OUT_FULL: i32 = 10;
export const S_BAD_ENTRY: i32 = 11;

export const KIND_MAP_TABLE: u32 = 0;
export const KIND_HOST: u32 = 1;

export const PERM_READ: u32 = 1;
export const PERM_WRITE: u32 = 2;

export const NOTIFY_MAP: u32 = 1;
export const NOTIFY_UNMAP: u32 = 2;

/** entry.target of a terminal (segment address) output. */
export const TERMINAL: u32 = 0xffff_ffff;
export const MAX_DOMAINS: u32 = 64;
export const MAX_REGIONS: u32 = 65536;
export const MAX_LISTENERS: u32 = 256;
export const MAX_CHAIN: u32 = 8;
/** A region's offset field in a segment address (regions are at most 2^40 bytes). */
export const SEGMENT_SHIFT: u64 = 40;
export const MAX_REGION_MASK: u64 = (<u64>1 << SEGMENT_SHIFT) - 1;
/** Largest region: 2^39 bytes, so offset + length < 2^40 and a segment address plus a
 *  length never carries into the slot bits (contiguity is one 64-bit compare). */
export const MAX_REGION_SIZE: u64 = <u64>1 << 39;
export const MAX_SLOT: u32 = 0xff_ffff;

@external("host", "iommu_miss")
declare function hostMiss(domain: u32, iovaLo: u32, iovaHi: u32, access: u32, entry: usize): i32;

@external("host", "iommu_notify")
declare function hostNotify(
  listener: u32, type: u32, firstLo: u32, firstHi: u32, lastLo: u32, lastHi: u32,
  translatedLo: u32, translatedHi: u32, perm: u32,
): void;

// Domain record (72 bytes):
//   ┌──────┬────────┬──────┬───────┬────────┬──────┬─────────┬────────┬─────────┬──────┐
//   │kind  │setMask │tlb   │clock  │ (free) │nReg  │regions  │regCap  │ counters (4×u64)│
//   │u32 0 │u32 4   │u32 8 │u32 12 │u32 16  │u32 20│u32 24   │u32 28  │ 32 40 48 56     │
//   └──────┴────────┴──────┴───────┴────────┴──────┴─────────┴────────┴─────────────────┘
//   counters: hits, misses, faults "not mapped", faults "no permission";
//   then classes: u64 at 64 (bit k set when the IOTLB holds entries of 2^k bytes).
@inline const D_KIND: usize = 0;
@inline const D_SETMASK: usize = 4;
@inline const D_TLB: usize = 8;
@inline const D_CLOCK: usize = 12;
@inline const D_CLASSES: usize = 64;
@inline const D_NREG: usize = 20;
@inline const D_REGIONS: usize = 24;
@inline const D_REGCAP: usize = 28;
@inline export const D_HITS: usize = 32;
@inline export const D_MISSES: usize = 40;
@inline export const D_FAULT_UNMAPPED: usize = 48;
@inline export const D_FAULT_PERM: usize = 56;
const DOMAIN_SIZE: usize = 72;

// Region (map table) record, sorted by iova, non-overlapping (24 bytes):
//   ┌────────────┬────────────┬──────────┬──────────┐
//   │ iova: u64  │ last: u64  │ slot:u32 │ perm:u32 │
//   └────────────┴────────────┴──────────┴──────────┘
@inline const R_IOVA: usize = 0;
@inline const R_LAST: usize = 8;
@inline const R_SLOT: usize = 16;
@inline const R_PERM: usize = 20;
const REGION_SIZE: usize = 24;

// Listener record (32 bytes): domain u32, flags u32, start u64, end u64 (inclusive), live u32.
const LISTENER_SIZE: usize = 32;

// I/O block shared with the host (64 bytes, address from iommu_io_ptr()):
//   0 u64 output address of translate   8 u32 usable length   12 u32 perm (intersection)
//  16 u32 failing sgl index             20 u32 last slot removed / found
//  32..56 miss entry written by the host: translated u64 @32, mask u64 @40, perm u32 @48, target u32 @52
@inline export const IO_ADDR: usize = 0;
@inline export const IO_LEN: usize = 8;
@inline export const IO_PERM: usize = 12;
@inline export const IO_INDEX: usize = 16;
@inline export const IO_SLOT: usize = 20;
@inline export const IO_MISS: usize = 32;

let domains: usize = 0; // MAX_DOMAINS pointers (0 = free)
let listeners: usize = 0; // MAX_LISTENERS records
/** Listener slots [0, listenerEnd) may be in use: the loops over listeners stop there (an
 *  event is delivered on every DMA map and unmap, with a handful of listeners in use). */
let listenerEnd: u32 = 0;
export let io: usize = 0;
/** Set while a host callback runs: tables must not change under a translation. */
let busy: bool = false;

function init(): void {
  if (domains) return;
  domains = heap.alloc(<usize>MAX_DOMAINS << 2);
  memory.fill(domains, 0, <usize>MAX_DOMAINS << 2);
  listeners = heap.alloc(<usize>MAX_LISTENERS * LISTENER_SIZE);
  memory.fill(listeners, 0, <usize>MAX_LISTENERS * LISTENER_SIZE);
  io = heap.alloc(64);
  memory.fill(io, 0, 64);
}

export function ioPtr(): usize {
  init();
  return io;
}

export function isBusy(): bool {
  return busy;
}

@inline export function domainPtr(id: u32): usize {
  if (id >= MAX_DOMAINS || !domains) return 0;
  return load<usize>(domains + (<usize>id << 2));
}

/** Creates a domain; returns its id, or -S_LIMIT / -S_INVALID. `sets` is a power of two. */
export function domainCreate(kind: u32, sets: u32): i32 {
  init();
  if (kind > KIND_HOST || sets == 0 || (sets & (sets - 1)) != 0 || sets > 65536) return -S_INVALID;
  for (let id: u32 = 0; id < MAX_DOMAINS; id++) {
    if (load<usize>(domains + (<usize>id << 2)) == 0) {
      const d = heap.alloc(DOMAIN_SIZE);
      memory.fill(d, 0, DOMAIN_SIZE);
      store<u32>(d, kind, D_KIND);
      store<u32>(d, sets - 1, D_SETMASK);
      store<usize>(d, iotlbAlloc(sets), D_TLB);
      store<usize>(domains + (<usize>id << 2), d);
      return <i32>id;
    }
  }
  return -S_LIMIT;
}

export function domainDestroy(id: u32): i32 {
  if (busy) return S_BUSY;
  const d = domainPtr(id);
  if (!d) return S_NO_DOMAIN;
  heap.free(load<usize>(d, D_TLB));
  const regions = load<usize>(d, D_REGIONS);
  if (regions) heap.free(regions);
  heap.free(d);
  store<usize>(domains + (<usize>id << 2), 0);
  for (let i: u32 = 0; i < listenerEnd; i++) {
    const l = listeners + <usize>i * LISTENER_SIZE;
    if (load<u32>(l, 24) && load<u32>(l, 0) == id) store<u32>(l, 0, 24);
  }
  trimListenerEnd();
  return S_OK;
}

export function counter(d: usize, which: usize): u64 {
  return load<u64>(d + which);
}

export function resetCounters(d: usize): void {
  memory.fill(d + D_HITS, 0, 32);
}

// ---------------------------------------------------------------- invalidation

export function invalidate(d: usize, first: u64, last: u64): u32 {
  // No class bit means nothing was inserted since the cache was last emptied: skip the scan of
  // every way (DMA_MAP / DMA_UNMAP with a cold cache cost no walk of the IOTLB).
  if (load<u64>(d, D_CLASSES) == 0) return 0;
  const sets = load<u32>(d, D_SETMASK) + 1;
  const dropped = invalidateRange(load<usize>(d, D_TLB), sets, first, last);
  if (keptByLastInvalidate == 0) store<u64>(d, 0, D_CLASSES);
  return dropped;
}

export function invalidateAll(d: usize): void {
  iotlbClear(load<usize>(d, D_TLB), load<u32>(d, D_SETMASK) + 1);
  store<u64>(d, 0, D_CLASSES);
}

// ---------------------------------------------------------------- notifiers

/** Crops [first, last] to [start, end]; returns false when they do not meet. The cropped
 *  range is left in croppedFirst / croppedLast (QEMU memory_region_notify_iommu_one crops
 *  device-IOTLB unmaps the same way; we crop every event). */
export let croppedFirst: u64 = 0;
export let croppedLast: u64 = 0;
export function crop(first: u64, last: u64, start: u64, end: u64): bool {
  if (start > last || end < first) return false;
  croppedFirst = first > start ? first : start;
  croppedLast = last < end ? last : end;
  return true;
}

export function listenerAdd(domain: u32, flags: u32, start: u64, end: u64): i32 {
  init();
  if (busy) return -S_BUSY;
  if (!domainPtr(domain)) return -S_NO_DOMAIN;
  if (flags == 0 || flags > (NOTIFY_MAP | NOTIFY_UNMAP) || start > end) return -S_INVALID;
  for (let i: u32 = 0; i < MAX_LISTENERS; i++) {
    const l = listeners + <usize>i * LISTENER_SIZE;
    if (!load<u32>(l, 24)) {
      store<u32>(l, domain, 0);
      store<u32>(l, flags, 4);
      store<u64>(l, start, 8);
      store<u64>(l, end, 16);
      store<u32>(l, 1, 24);
      if (i >= listenerEnd) listenerEnd = i + 1;
      return <i32>i;
    }
  }
  return -S_LIMIT;
}

export function listenerRemove(id: u32): i32 {
  if (!listeners || id >= MAX_LISTENERS) return S_NOT_FOUND;
  const l = listeners + <usize>id * LISTENER_SIZE;
  if (!load<u32>(l, 24)) return S_NOT_FOUND;
  store<u32>(l, 0, 24);
  trimListenerEnd();
  return S_OK;
}

/** Lowers listenerEnd past the free slots at the top. */
function trimListenerEnd(): void {
  while (listenerEnd > 0 && !load<u32>(listeners + <usize>(listenerEnd - 1) * LISTENER_SIZE, 24)) listenerEnd--;
}

/** Delivers a map/unmap event of `domain` over [first, last] to every listener that asked
 *  for this type and whose range meets it, cropped to the listener's range. */
export function deliver(domain: u32, type: u32, first: u64, last: u64, translated: u64, perm: u32): void {
  for (let i: u32 = 0; i < listenerEnd; i++) {
    const l = listeners + <usize>i * LISTENER_SIZE;
    if (!load<u32>(l, 24) || load<u32>(l, 0) != domain || !(load<u32>(l, 4) & type)) continue;
    if (!crop(first, last, load<u64>(l, 8), load<u64>(l, 16))) continue;
    const t = translated + (croppedFirst - first);
    hostNotify(i, type, <u32>croppedFirst, <u32>(croppedFirst >> 32), <u32>croppedLast,
      <u32>(croppedLast >> 32), <u32>t, <u32>(t >> 32), perm);
  }
}

/** A map/unmap event from the VMM side's IOMMU (the device side purges its cache): any
 *  event invalidates cached entries over the range (a MAP may change permissions), then it is
 *  delivered to listeners. */
export function notifyEvent(domain: u32, type: u32, first: u64, last: u64, translated: u64, perm: u32): i32 {
  if (busy) return S_BUSY;
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  if ((type != NOTIFY_MAP && type != NOTIFY_UNMAP) || first > last || perm > 3) return S_INVALID;
  invalidate(d, first, last);
  deliver(domain, type, first, last, translated, perm);
  return S_OK;
}

// ---------------------------------------------------------------- map table

/** Index of the last region with iova <= addr, or -1. */
function findFloor(regions: usize, n: u32, addr: u64): i32 {
  let lo: i32 = 0;
  let hi: i32 = <i32>n - 1;
  let found: i32 = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (load<u64>(regions + <usize>mid * REGION_SIZE, R_IOVA) <= addr) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

/** Adds [iova, last] → slot. Overlap with any region → S_EXISTS (vfio-user: EEXIST). */
export function regionAdd(domain: u32, iova: u64, last: u64, slot: u32, perm: u32): i32 {
  if (busy) return S_BUSY;
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  if (load<u32>(d, D_KIND) != KIND_MAP_TABLE || last < iova || perm > 3 || slot > MAX_SLOT) return S_INVALID;
  if (last - iova >= MAX_REGION_SIZE) return S_LIMIT;
  const n = load<u32>(d, D_NREG);
  let regions = load<usize>(d, D_REGIONS);
  const at = findFloor(regions, n, iova);
  if (at >= 0 && load<u64>(regions + <usize>at * REGION_SIZE, R_LAST) >= iova) return S_EXISTS;
  const next = <u32>(at + 1);
  if (next < n && load<u64>(regions + <usize>next * REGION_SIZE, R_IOVA) <= last) return S_EXISTS;
  if (n >= MAX_REGIONS) return S_LIMIT;
  const cap = load<u32>(d, D_REGCAP);
  if (n == cap) {
    const newCap: u32 = cap ? cap << 1 : 16;
    regions = regions ? heap.realloc(regions, <usize>newCap * REGION_SIZE) : heap.alloc(<usize>newCap * REGION_SIZE);
    store<usize>(d, regions, D_REGIONS);
    store<u32>(d, newCap, D_REGCAP);
  }
  const p = regions + <usize>next * REGION_SIZE;
  memory.copy(p + REGION_SIZE, p, <usize>(n - next) * REGION_SIZE);
  store<u64>(p, iova, R_IOVA);
  store<u64>(p, last, R_LAST);
  store<u32>(p, slot, R_SLOT);
  store<u32>(p, perm, R_PERM);
  store<u32>(d, n + 1, D_NREG);
  // No cached entry can cover a range that had no mapping, but a host may have raced: be safe.
  invalidate(d, iova, last);
  deliver(domain, NOTIFY_MAP, iova, last, (<u64>slot << SEGMENT_SHIFT), perm);
  return S_OK;
}

/** True when [iova, last] meets any region of the table. */
export function regionOverlaps(domain: u32, iova: u64, last: u64): bool {
  const d = domainPtr(domain);
  if (!d) return false;
  const regions = load<usize>(d, D_REGIONS);
  const n = load<u32>(d, D_NREG);
  const at = findFloor(regions, n, iova);
  if (at >= 0 && load<u64>(regions + <usize>at * REGION_SIZE, R_LAST) >= iova) return true;
  const next = <u32>(at + 1);
  return next < n && load<u64>(regions + <usize>next * REGION_SIZE, R_IOVA) <= last;
}

function findExact(d: usize, iova: u64, last: u64): i32 {
  const regions = load<usize>(d, D_REGIONS);
  const at = findFloor(regions, load<u32>(d, D_NREG), iova);
  if (at < 0) return -1;
  const p = regions + <usize>at * REGION_SIZE;
  if (load<u64>(p, R_IOVA) != iova || load<u64>(p, R_LAST) != last) return -1;
  return at;
}

/** Removes exactly [iova, last]; unknown or partial → S_NOT_FOUND (vfio-user: ENOENT). The
 *  removed slot is left in io[IO_SLOT]. Invalidates the IOTLB and notifies UNMAP listeners. */
export function regionRemove(domain: u32, iova: u64, last: u64): i32 {
  if (busy) return S_BUSY;
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  if (load<u32>(d, D_KIND) != KIND_MAP_TABLE || last < iova) return S_INVALID;
  const at = findExact(d, iova, last);
  if (at < 0) return S_NOT_FOUND;
  const n = load<u32>(d, D_NREG);
  const p = load<usize>(d, D_REGIONS) + <usize>at * REGION_SIZE;
  const slot = load<u32>(p, R_SLOT);
  const perm = load<u32>(p, R_PERM);
  memory.copy(p, p + REGION_SIZE, <usize>(n - 1 - <u32>at) * REGION_SIZE);
  store<u32>(d, n - 1, D_NREG);
  store<u32>(io, slot, IO_SLOT);
  invalidate(d, iova, last);
  deliver(domain, NOTIFY_UNMAP, iova, last, (<u64>slot << SEGMENT_SHIFT), perm);
  return S_OK;
}

/** Sets the permissions of exactly [iova, last]. Any change drops cached entries (a stale
 *  entry would grant a lost permission, or deny a new one); a shrink is announced as UNMAP
 *  then MAP with the remaining permissions, a pure growth as MAP. */
export function regionProtect(domain: u32, iova: u64, last: u64, perm: u32): i32 {
  if (busy) return S_BUSY;
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  if (load<u32>(d, D_KIND) != KIND_MAP_TABLE || last < iova || perm > 3) return S_INVALID;
  const at = findExact(d, iova, last);
  if (at < 0) return S_NOT_FOUND;
  const p = load<usize>(d, D_REGIONS) + <usize>at * REGION_SIZE;
  const old = load<u32>(p, R_PERM);
  const slot = load<u32>(p, R_SLOT);
  store<u32>(io, slot, IO_SLOT);
  if (old == perm) return S_OK;
  store<u32>(p, perm, R_PERM);
  invalidate(d, iova, last);
  const base = <u64>slot << SEGMENT_SHIFT;
  if (old & ~perm) deliver(domain, NOTIFY_UNMAP, iova, last, base, old);
  if (perm) deliver(domain, NOTIFY_MAP, iova, last, base, perm);
  return S_OK;
}

export function regionCount(domain: u32): i32 {
  const d = domainPtr(domain);
  return d ? <i32>load<u32>(d, D_NREG) : -S_NO_DOMAIN;
}

// ---------------------------------------------------------------- translation

/** Largest k with the 2^k block around iova inside [r.iova, r.last] and r.iova 2^k-aligned,
 *  so (slot << 40 | offset) & ~mask stays the same for the whole block. */
@inline function blockMask(iova: u64, regionIova: u64, regionLast: u64): u64 {
  let k = regionIova ? ctz<u64>(regionIova) : 64;
  if (k > <u64>SEGMENT_SHIFT) k = SEGMENT_SHIFT;
  let mask: u64 = k >= 64 ? 0xffff_ffff_ffff_ffff : (<u64>1 << k) - 1;
  while ((iova | mask) > regionLast) mask >>= 1;
  return mask;
}

/** Fills the IOTLB of `d` for `iova`; returns the entry, or 0 when not mapped (status in
 *  missStatus). */
let missStatus: i32 = S_OK;
function fill(d: usize, domain: u32, iova: u64, access: u32): usize {
  let translated: u64, mask: u64, perm: u32, target: u32;
  if (load<u32>(d, D_KIND) == KIND_MAP_TABLE) {
    const regions = load<usize>(d, D_REGIONS);
    const at = findFloor(regions, load<u32>(d, D_NREG), iova);
    if (at < 0) { missStatus = S_UNMAPPED; return 0; }
    const r = regions + <usize>at * REGION_SIZE;
    const rIova = load<u64>(r, R_IOVA);
    const rLast = load<u64>(r, R_LAST);
    if (iova > rLast) { missStatus = S_UNMAPPED; return 0; }
    perm = load<u32>(r, R_PERM);
    if (perm == 0) { missStatus = S_UNMAPPED; return 0; }
    mask = blockMask(iova, rIova, rLast);
    translated = (<u64>load<u32>(r, R_SLOT) << SEGMENT_SHIFT) + ((iova & ~mask) - rIova);
    target = TERMINAL;
  } else {
    busy = true;
    const rc = hostMiss(domain, <u32>iova, <u32>(iova >> 32), access, io + IO_MISS);
    busy = false;
    if (rc != 0) { missStatus = S_UNMAPPED; return 0; }
    translated = load<u64>(io, IO_MISS);
    mask = load<u64>(io, IO_MISS + 8);
    perm = load<u32>(io, IO_MISS + 16);
    target = load<u32>(io, IO_MISS + 20);
    if ((mask & (mask + 1)) != 0 || perm > 3 || !domainPtr(target)) { missStatus = S_BAD_ENTRY; return 0; }
    if (perm == 0) { missStatus = S_UNMAPPED; return 0; } // IOMMU_NONE: QEMU's "no translation"
    translated &= ~mask;
  }
  const setMask = load<u32>(d, D_SETMASK);
  const clock = load<u32>(d, D_CLOCK);
  store<u32>(d, clock + 1, D_CLOCK);
  const e = insert(load<usize>(d, D_TLB), setMask, clock, iova, iova & ~mask, mask, translated, perm, target);
  store<u64>(d, load<u64>(d, D_CLASSES) | (<u64>1 << classOfMask(mask)), D_CLASSES);
  return e;
}

/** Result of translateOne (kept in globals: no allocation on the hot path). */
export let outAddr: u64 = 0;
export let outLen: u32 = 0;

/**
 * Translates [iova, iova + len) (len >= 1) for `access` (1 read, 2 write, 3 both) through
 * `domain` and every chained stage. On S_OK, outAddr is the segment address and outLen the
 * usable length (clamped at every stage's entry end).
 */
export function translateOne(domain: u32, iova: u64, len: u32, access: u32): i32 {
  let id = domain;
  let addr = iova;
  let avail = len;
  for (let depth: u32 = 0; depth < MAX_CHAIN; depth++) {
    const d = domainPtr(id);
    if (!d) return S_NO_DOMAIN;
    let e = lookup(load<usize>(d, D_TLB), load<u32>(d, D_SETMASK), load<u64>(d, D_CLASSES), addr);
    if (e) {
      store<u64>(d, load<u64>(d, D_HITS) + 1, D_HITS);
    } else {
      store<u64>(d, load<u64>(d, D_MISSES) + 1, D_MISSES);
      e = fill(d, id, addr, access);
      if (!e) {
        if (missStatus == S_UNMAPPED) store<u64>(d, load<u64>(d, D_FAULT_UNMAPPED) + 1, D_FAULT_UNMAPPED);
        return missStatus;
      }
    }
    if ((entryPerm(e) & access) != access) {
      store<u64>(d, load<u64>(d, D_FAULT_PERM) + 1, D_FAULT_PERM);
      return S_PERMISSION;
    }
    const mask = entryMask(e);
    const rest = mask - (addr & mask); // bytes to the entry's end, minus one
    if (<u64>(avail - 1) > rest) avail = <u32>rest + 1;
    addr = entryTranslated(e) | (addr & mask);
    const target = entryTarget(e);
    if (target == TERMINAL) {
      outAddr = addr;
      outLen = avail;
      return S_OK;
    }
    id = target;
  }
  return S_CHAIN_TOO_DEEP;
}

// Hand-over between translateList and fastRun: the classes fastRun probes after the smallest
// one (at a fixed address, so the loop keeps no register for it) and the run's output state
// (globals: written once per run).
const RUN_OTHER_CLASSES: usize = memory.data(8, 8);
let runOut: usize = 0;
let runPrevEnd: u64 = 0;

/**
 * The hit path of translateList, for a map-table domain (whose entries are all terminal).
 * Translates records from `rec` while each one hits a cached entry that grants the access and
 * holds the whole record, and stops at the first one that needs more (a miss, a fault, an entry
 * end inside it, invalid input, a merge that would overflow) or at `limit`. Returns that record;
 * leaves the output end in runOut and the segment address after the last piece in runPrevEnd.
 * Every record it consumed was one IOTLB hit.
 *
 * Kept lean for the register allocator: no calls, few live values, the set offset mask
 * precomputed, the smallest cached class (k) probed inline, the others only after a miss.
 * A record yields at most one output record, so `limit` also bounds the output.
 */
function fastRun(tlb: usize, setBytes: u32, k: u64, rec: usize, limit: usize, out: usize, prevEnd: u64): usize {
  for (; rec < limit; rec += 16) {
    const iova = load<u64>(rec, 0);
    // setIndex(iova, k, setMask) << SET_SHIFT, as one mask of the shifted hash.
    let e = tlb + ((((<u32>(iova >> k) + <u32>k) * 0x9e3779b1) >>> (16 - SET_SHIFT)) & setBytes);
    let mask = load<u64>(e, E_MASK);
    if ((iova & ~mask) != load<u64>(e, E_BASE)) {
      e += ENTRY_SIZE;
      mask = load<u64>(e, E_MASK);
      if ((iova & ~mask) != load<u64>(e, E_BASE)) {
        e += ENTRY_SIZE;
        mask = load<u64>(e, E_MASK);
        if ((iova & ~mask) != load<u64>(e, E_BASE)) {
          e += ENTRY_SIZE;
          mask = load<u64>(e, E_MASK);
          if ((iova & ~mask) != load<u64>(e, E_BASE)) {
            e = lookup(tlb, setBytes >> SET_SHIFT, load<u64>(RUN_OTHER_CLASSES), iova);
            if (!e) break;
            mask = load<u64>(e, E_MASK);
          }
        }
      }
    }
    const len = load<u32>(rec, 8);
    const access = load<u32>(rec, 12);
    if (load<u32>(e, E_DENY) & access) break;
    if (!access) break;
    const offset = iova & mask;
    // len - 1 as u64: a zero length becomes 2^64 - 1 and never fits. Fitting inside the entry
    // also rules out iova + len overflowing.
    if (<u64>len - 1 > mask - offset) break;
    const addr = load<u64>(e, E_TRANSLATED) | offset;
    if (addr == prevEnd) {
      const merged = <u64>load<u32>(out - 16, 8) + len;
      if (merged > 0xffff_ffff) break;
      store<u32>(out - 16, <u32>merged, 8);
    } else {
      store<u64>(out, addr, 0);
      store<u64>(out, <u64>len, 8);
      out += 16;
    }
    prevEnd = addr + len;
  }
  runOut = out;
  runPrevEnd = prevEnd;
  return rec;
}

/**
 * Translates a scatter/gather list. Input records (16 bytes): iova u64, length u32, access u32.
 * Output records (16 bytes): segment address u64 (slot << 40 | offset), length u32, 0 —
 * contiguous pieces of the same region are merged. Returns the number of output records, or
 * -status; on failure io[IO_INDEX] holds the failing input index. S_OUT_FULL means outCap was
 * too small.
 *
 * Runs of records that hit (map-table domains) go through fastRun; each other record (misses,
 * faults, pieces crossing an entry end, invalid input, host domains) is translated piece by
 * piece through translateOne, then the next run starts.
 */
export function translateList(domain: u32, input: usize, count: u32, output: usize, outCap: u32): i32 {
  const d = domainPtr(domain);
  if (!d) return -S_NO_DOMAIN;
  const mapTable = load<u32>(d, D_KIND) == KIND_MAP_TABLE;
  const tlb = load<usize>(d, D_TLB);
  const setBytes = load<u32>(d, D_SETMASK) << SET_SHIFT;
  const inEnd = input + (<usize>count << 4);
  const outEnd = output + (<usize>outCap << 4);
  let hits: u64 = 0;
  let out = output;
  let prevEnd: u64 = 0xffff_ffff_ffff_ffff; // segment address after the last output piece
  let rec = input;
  while (rec < inEnd) {
    if (mapTable) {
      const classes = load<u64>(d, D_CLASSES);
      store<u64>(RUN_OTHER_CLASSES, classes & (classes - 1));
      const room = outEnd - out;
      const limit = inEnd - rec > room ? rec + room : inEnd;
      // An empty cache (classes 0) probes class 0: every way is empty and misses.
      const stop = fastRun(tlb, setBytes, ctz<u64>(classes) & 63, rec, limit, out, prevEnd);
      hits += (stop - rec) >> 4;
      rec = stop;
      out = runOut;
      prevEnd = runPrevEnd;
      if (rec == inEnd) break;
    }
    let iova = load<u64>(rec, 0);
    let len = load<u32>(rec, 8);
    const access = load<u32>(rec, 12);
    let st = S_OK;
    if (len == 0 || access - 1 > 2 || <u64>(len - 1) > ~iova) st = S_INVALID;
    while (st == S_OK && len) {
      st = translateOne(domain, iova, len, access);
      if (st != S_OK) break;
      const addr = outAddr;
      const piece = outLen;
      if (addr == prevEnd && <u64>load<u32>(out - 16, 8) + piece <= 0xffff_ffff) {
        store<u32>(out - 16, load<u32>(out - 16, 8) + piece, 8);
      } else if (out == outEnd) {
        st = S_OUT_FULL;
        break;
      } else {
        store<u64>(out, addr, 0);
        store<u64>(out, <u64>piece, 8);
        out += 16;
      }
      prevEnd = addr + piece;
      len -= piece;
      iova += piece;
    }
    if (st != S_OK) {
      store<u32>(io, <u32>((rec - input) >> 4), IO_INDEX);
      store<u64>(d, load<u64>(d, D_HITS) + hits, D_HITS);
      return -st;
    }
    rec += 16;
  }
  store<u64>(d, load<u64>(d, D_HITS) + hits, D_HITS);
  return <i32>((out - output) >> 4);
}
