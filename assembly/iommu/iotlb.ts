// IOTLB: a set-associative cache of IOMMU entries in linear memory, one per domain.
//
// Mixed page sizes: an entry of 2^k bytes (any k; 4 KiB, 2 MiB, 1 GiB are k = 12, 21, 30)
// belongs to size class k and sits in the set hash(iova >> k, k) — the same set for every
// address it covers, so each entry is cached once. The domain keeps a 64-bit mask of the
// classes that currently hold entries; a lookup probes only those, smallest first, so the
// common case of one page size is a single set probe and mixed sizes cost one probe each.
// (Class 64, a whole-space entry, is filed as class 63.)
//
// Cache (WAYS entries per set, sets × WAYS × 32 bytes):
//   ┌──────────── set 0 ─────────────┬──────────── set 1 ────...
//   │ way0 │ way1 │ way2 │ way3     │ way0 │ ...
//   └──────┴──────┴──────┴──────────┴──────...
// Entry (32 bytes):
//   ┌─────────────┬─────────────┬──────────────────┬────────┬─────────┐
//   │ base: u64   │ mask: u64   │ translated: u64  │deny:u32│target:u32│
//   │ iova&~mask  │ 2^k - 1     │ output & ~mask   │ ~perm  │ domain  │
//   └─────────────┴─────────────┴──────────────────┴────────┴─────────┘
//   0             8             16                 24       28
// deny is the complement of the permissions (R=1, W=2): an access is allowed when
// (access & deny) == 0 and access != 0 — one test, which also rejects accesses above 3.
// An empty way has base = 1 and mask = ~0, which no IOVA can match ((iova & 0) != 1).

export const WAYS: u32 = 4;
export const ENTRY_SIZE: u32 = 32;
export const SET_SHIFT: u32 = 7; // WAYS * ENTRY_SIZE = 128 bytes per set

@inline export const E_BASE: usize = 0;
@inline export const E_MASK: usize = 8;
@inline export const E_TRANSLATED: usize = 16;
@inline export const E_DENY: usize = 24;
@inline export const E_TARGET: usize = 28;

const EMPTY_BASE: u64 = 1;
const EMPTY_MASK: u64 = 0xffff_ffff_ffff_ffff;

/** Size class of an entry with mask 2^k - 1: k (at most 63). */
@inline export function classOfMask(mask: u64): u32 {
  const k = <u32>popcnt<u64>(mask);
  return k > 63 ? 63 : k;
}

/** The set of `iova` in size class `k`: a multiplicative hash, so strided layouts spread. */
@inline export function setIndex(iova: u64, k: u32, setMask: u32): u32 {
  return (((<u32>(iova >> k) + k) * 0x9e3779b1) >>> 16) & setMask;
}

@inline export function entryBase(e: usize): u64 { return load<u64>(e, E_BASE); }
@inline export function entryMask(e: usize): u64 { return load<u64>(e, E_MASK); }
@inline export function entryTranslated(e: usize): u64 { return load<u64>(e, E_TRANSLATED); }
@inline export function entryPerm(e: usize): u32 { return ~load<u32>(e, E_DENY) & 3; }
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

/** Probes one set of class `k`; returns the matching entry or 0. */
@inline export function probe(tlb: usize, setMask: u32, iova: u64, k: u32): usize {
  const set = tlb + (<usize>setIndex(iova, k, setMask) << SET_SHIFT);
  if ((iova & ~load<u64>(set, E_MASK)) == load<u64>(set, E_BASE)) return set;
  if ((iova & ~load<u64>(set, 32 + E_MASK)) == load<u64>(set, 32 + E_BASE)) return set + 32;
  if ((iova & ~load<u64>(set, 64 + E_MASK)) == load<u64>(set, 64 + E_BASE)) return set + 64;
  if ((iova & ~load<u64>(set, 96 + E_MASK)) == load<u64>(set, 96 + E_BASE)) return set + 96;
  return 0;
}

/** Looks `iova` up in the classes present (bit k of `classes`), smallest first; returns the
 *  entry or 0 (miss). */
@inline export function lookup(tlb: usize, setMask: u32, classes: u64, iova: u64): usize {
  let m = classes;
  while (m) {
    const e = probe(tlb, setMask, iova, <u32>ctz<u64>(m));
    if (e) return e;
    m &= m - 1;
  }
  return 0;
}

/**
 * Inserts an entry; `clock` picks the victim when the set is full. Returns the entry.
 * The caller ORs (1 << classOfMask(mask)) into the domain's `classes`.
 */
export function insert(
  tlb: usize, setMask: u32, clock: u32, iova: u64,
  base: u64, mask: u64, translated: u64, perm: u32, target: u32,
): usize {
  // Filed by the requesting iova: the same set as base for k <= 63, and for a whole-space
  // entry (filed as class 63) the set that iova's lookups probe.
  const set = tlb + (<usize>setIndex(iova, classOfMask(mask), setMask) << SET_SHIFT);
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
  store<u32>(e, ~perm, E_DENY);
  store<u32>(e, target, E_TARGET);
  return e;
}

/** Drops every entry whose range [base, base | mask] meets [first, last]. Returns how many. */
export function invalidateRange(tlb: usize, sets: u32, first: u64, last: u64): u32 {
  const end = tlb + (<usize>sets << SET_SHIFT);
  let dropped: u32 = 0;
  let kept: u32 = 0;
  for (let e = tlb; e < end; e += ENTRY_SIZE) {
    const mask = load<u64>(e, E_MASK);
    const base = load<u64>(e, E_BASE);
    if (mask == EMPTY_MASK && base == EMPTY_BASE) continue;
    if (base <= last && (base | mask) >= first) {
      store<u64>(e, EMPTY_BASE, E_BASE);
      store<u64>(e, EMPTY_MASK, E_MASK);
      dropped++;
    } else kept++;
  }
  keptByLastInvalidate = kept;
  return dropped;
}

/** Entries left occupied by the last invalidateRange() (0: the cache is empty). */
export let keptByLastInvalidate: u32 = 0;

/** Number of occupied entries (tests, statistics). */
export function occupancy(tlb: usize, sets: u32): u32 {
  const end = tlb + (<usize>sets << SET_SHIFT);
  let n: u32 = 0;
  for (let e = tlb; e < end; e += ENTRY_SIZE) {
    if (!(load<u64>(e, E_MASK) == EMPTY_MASK && load<u64>(e, E_BASE) == EMPTY_BASE)) n++;
  }
  return n;
}
