// IOTLB: a set-associative cache of IOMMU entries in linear memory, one per domain.
//
// Mixed page sizes: an entry of size 2^k is indexed at granule 12 (4 KiB), 21 (2 MiB) or
// 30 (1 GiB) — the largest granule not above its size (entries below 4 KiB use granule 12
// and match only their own bytes through the tag). A lookup probes only the granule classes
// that currently hold entries (bit set in `classes`), largest first, so the common case of
// one page size is a single set probe. Entries larger than 1 GiB are indexed per 1 GiB
// granule (a lookup elsewhere in them misses and refills another set; range invalidation
// scans the whole cache, so every copy is dropped).
//
// Cache (WAYS entries per set, sets × WAYS × 32 bytes):
//   ┌──────────── set 0 ─────────────┬──────────── set 1 ────...
//   │ way0 │ way1 │ way2 │ way3     │ way0 │ ...
//   └──────┴──────┴──────┴──────────┴──────...
// Entry (32 bytes):
//   ┌─────────────┬─────────────┬──────────────────┬────────┬─────────┐
//   │ base: u64   │ mask: u64   │ translated: u64  │perm:u32│target:u32│
//   │ iova&~mask  │ 2^k - 1     │ output & ~mask   │ R=1 W=2│ domain  │
//   └─────────────┴─────────────┴──────────────────┴────────┴─────────┘
//   0             8             16                 24       28
// An empty way has base = 1 and mask = ~0, which no IOVA can match ((iova & 0) != 1).

export const WAYS: u32 = 4;
export const ENTRY_SIZE: u32 = 32;
const SET_SHIFT: u32 = 7; // WAYS * ENTRY_SIZE = 128 bytes per set

@inline export const E_BASE: usize = 0;
@inline export const E_MASK: usize = 8;
@inline export const E_TRANSLATED: usize = 16;
@inline export const E_PERM: usize = 24;
@inline export const E_TARGET: usize = 28;

const EMPTY_BASE: u64 = 1;
const EMPTY_MASK: u64 = 0xffff_ffff_ffff_ffff;

/** Granule shift of a size class. */
@inline export function classShift(cls: u32): u64 {
  return cls == 2 ? 30 : cls == 1 ? 21 : 12;
}

/** Size class of an entry with mask 2^k - 1. */
@inline export function classOfMask(mask: u64): u32 {
  return mask >= 0x3fff_ffff ? 2 : mask >= 0x1f_ffff ? 1 : 0;
}

/** The set holding `iova` for size class `cls`. Classes are spread to different sets. */
@inline export function setIndex(iova: u64, cls: u32, setMask: u32): u32 {
  return (<u32>(iova >> classShift(cls)) + cls * 0x9e37) & setMask;
}

@inline export function entryBase(e: usize): u64 { return load<u64>(e, E_BASE); }
@inline export function entryMask(e: usize): u64 { return load<u64>(e, E_MASK); }
@inline export function entryTranslated(e: usize): u64 { return load<u64>(e, E_TRANSLATED); }
@inline export function entryPerm(e: usize): u32 { return load<u32>(e, E_PERM); }
@inline export function entryTarget(e: usize): u32 { return load<u32>(e, E_TARGET); }

/** Allocates a cache of `sets` sets (power of two), all ways empty. */
export function iotlbAlloc(sets: u32): usize {
  const bytes = <usize>sets << SET_SHIFT;
  const tlb = heap.alloc(bytes);
  iotlbClear(tlb, sets);
  return tlb;
}

export function iotlbClear(tlb: usize, sets: u32): void {
  const end = tlb + (<usize>sets << SET_SHIFT);
  for (let e = tlb; e < end; e += ENTRY_SIZE) {
    store<u64>(e, EMPTY_BASE, E_BASE);
    store<u64>(e, EMPTY_MASK, E_MASK);
  }
}

/** Probes one set of class `cls`; returns the matching entry or 0. */
@inline export function probe(tlb: usize, setMask: u32, iova: u64, cls: u32): usize {
  const set = tlb + (<usize>setIndex(iova, cls, setMask) << SET_SHIFT);
  if ((iova & ~load<u64>(set, E_MASK)) == load<u64>(set, E_BASE)) return set;
  if ((iova & ~load<u64>(set, 32 + E_MASK)) == load<u64>(set, 32 + E_BASE)) return set + 32;
  if ((iova & ~load<u64>(set, 64 + E_MASK)) == load<u64>(set, 64 + E_BASE)) return set + 64;
  if ((iova & ~load<u64>(set, 96 + E_MASK)) == load<u64>(set, 96 + E_BASE)) return set + 96;
  return 0;
}

/** Looks `iova` up in the classes present; returns the entry or 0 (miss). */
@inline export function lookup(tlb: usize, setMask: u32, classes: u32, iova: u64): usize {
  let e: usize = 0;
  if (classes & 4) {
    e = probe(tlb, setMask, iova, 2);
    if (e) return e;
  }
  if (classes & 2) {
    e = probe(tlb, setMask, iova, 1);
    if (e) return e;
  }
  if (classes & 1) e = probe(tlb, setMask, iova, 0);
  return e;
}

/**
 * Inserts an entry; `clock` picks the victim when the set is full. Returns the entry.
 * The caller ORs (1 << classOfMask(mask)) into the domain's `classes`.
 */
export function insert(
  tlb: usize, setMask: u32, clock: u32,
  base: u64, mask: u64, translated: u64, perm: u32, target: u32,
): usize {
  const set = tlb + (<usize>setIndex(base, classOfMask(mask), setMask) << SET_SHIFT);
  let e: usize = 0;
  for (let w: u32 = 0; w < WAYS; w++) {
    const c = set + (<usize>w << 5);
    if (load<u64>(c, E_BASE) == EMPTY_BASE && load<u64>(c, E_MASK) == EMPTY_MASK) {
      e = c;
      break;
    }
  }
  if (!e) e = set + (<usize>(clock & (WAYS - 1)) << 5);
  store<u64>(e, base, E_BASE);
  store<u64>(e, mask, E_MASK);
  store<u64>(e, translated, E_TRANSLATED);
  store<u32>(e, perm, E_PERM);
  store<u32>(e, target, E_TARGET);
  return e;
}

/** Drops every entry whose range [base, base | mask] meets [first, last]. Returns how many. */
export function invalidateRange(tlb: usize, sets: u32, first: u64, last: u64): u32 {
  const end = tlb + (<usize>sets << SET_SHIFT);
  let dropped: u32 = 0;
  for (let e = tlb; e < end; e += ENTRY_SIZE) {
    const mask = load<u64>(e, E_MASK);
    const base = load<u64>(e, E_BASE);
    if (mask == EMPTY_MASK && base == EMPTY_BASE) continue;
    if (base <= last && (base | mask) >= first) {
      store<u64>(e, EMPTY_BASE, E_BASE);
      store<u64>(e, EMPTY_MASK, E_MASK);
      dropped++;
    }
  }
  return dropped;
}

/** Number of occupied entries (tests, statistics). */
export function occupancy(tlb: usize, sets: u32): u32 {
  const end = tlb + (<usize>sets << SET_SHIFT);
  let n: u32 = 0;
  for (let e = tlb; e < end; e += ENTRY_SIZE) {
    if (!(load<u64>(e, E_MASK) == EMPTY_MASK && load<u64>(e, E_BASE) == EMPTY_BASE)) n++;
  }
  return n;
}
