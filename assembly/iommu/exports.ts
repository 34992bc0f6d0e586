// Exports of the iommu subsystem (see assembly/index.ts). 64-bit addresses cross as two u32
// halves (lo, hi). Status codes: assembly/iommu/domain.ts (S_*), mirrored in
// src/core/iommu/status.ts.
import {
  domainCreate, domainDestroy, domainPtr, ioPtr, io, regionAdd, regionRemove, regionProtect,
  regionCount, regionOverlaps, translateOne, translateList, outAddr, outLen, listenerAdd, listenerRemove,
  notifyEvent, invalidate, invalidateAll, counter, resetCounters, isBusy,
  D_HITS, D_MISSES, D_FAULT_UNMAPPED, D_FAULT_PERM, S_NO_DOMAIN, S_BUSY, S_OK, S_INVALID,
  IO_ADDR, IO_LEN,
} from "./domain";
import { occupancy } from "./iotlb";

@inline function u64of(lo: u32, hi: u32): u64 {
  return (<u64>hi << 32) | <u64>lo;
}

/** Address of the 64-byte I/O block (translate results, miss entry, failing index). */
export function iommu_io(): usize {
  return ioPtr();
}

/** kind 0 = DMA map table, 1 = host callback; sets = IOTLB sets (power of two). Returns the
 *  domain id, or -status. */
export function iommu_domain_create(kind: u32, sets: u32): i32 {
  return domainCreate(kind, sets);
}

export function iommu_domain_destroy(domain: u32): i32 {
  return domainDestroy(domain);
}

export function iommu_region_add(domain: u32, iovaLo: u32, iovaHi: u32, lastLo: u32, lastHi: u32, slot: u32, perm: u32): i32 {
  return regionAdd(domain, u64of(iovaLo, iovaHi), u64of(lastLo, lastHi), slot, perm);
}

export function iommu_region_remove(domain: u32, iovaLo: u32, iovaHi: u32, lastLo: u32, lastHi: u32): i32 {
  return regionRemove(domain, u64of(iovaLo, iovaHi), u64of(lastLo, lastHi));
}

export function iommu_region_protect(domain: u32, iovaLo: u32, iovaHi: u32, lastLo: u32, lastHi: u32, perm: u32): i32 {
  return regionProtect(domain, u64of(iovaLo, iovaHi), u64of(lastLo, lastHi), perm);
}

export function iommu_region_overlaps(domain: u32, iovaLo: u32, iovaHi: u32, lastLo: u32, lastHi: u32): i32 {
  return regionOverlaps(domain, u64of(iovaLo, iovaHi), u64of(lastLo, lastHi)) ? 1 : 0;
}

export function iommu_region_count(domain: u32): i32 {
  return regionCount(domain);
}

/** Translates one access; on 0 the output segment address and usable length are in the I/O
 *  block (u64 at 0, u32 at 8). */
export function iommu_translate(domain: u32, iovaLo: u32, iovaHi: u32, len: u32, access: u32): i32 {
  if (isBusy()) return S_BUSY;
  const iova = u64of(iovaLo, iovaHi);
  if (len == 0 || access == 0 || access > 3 || <u64>(len - 1) > ~iova) return S_INVALID;
  const st = translateOne(domain, iova, len, access);
  if (st == S_OK) {
    store<u64>(io, outAddr, IO_ADDR);
    store<u32>(io, outLen, IO_LEN);
  }
  return st;
}

/** Batched scatter/gather translation; see translateList in domain.ts. */
export function iommu_translate_list(domain: u32, input: usize, count: u32, output: usize, outCap: u32): i32 {
  if (isBusy()) return -S_BUSY;
  return translateList(domain, input, count, output, outCap);
}

export function iommu_listener_add(domain: u32, flags: u32, startLo: u32, startHi: u32, endLo: u32, endHi: u32): i32 {
  return listenerAdd(domain, flags, u64of(startLo, startHi), u64of(endLo, endHi));
}

export function iommu_listener_remove(listener: u32): i32 {
  return listenerRemove(listener);
}

/** A map/unmap event from the VMM-side IOMMU over [first, last] (inclusive). */
export function iommu_notify(domain: u32, type: u32, firstLo: u32, firstHi: u32, lastLo: u32, lastHi: u32,
  translatedLo: u32, translatedHi: u32, perm: u32): i32 {
  return notifyEvent(domain, type, u64of(firstLo, firstHi), u64of(lastLo, lastHi), u64of(translatedLo, translatedHi), perm);
}

export function iommu_invalidate(domain: u32, firstLo: u32, firstHi: u32, lastLo: u32, lastHi: u32): i32 {
  if (isBusy()) return S_BUSY;
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  invalidate(d, u64of(firstLo, firstHi), u64of(lastLo, lastHi));
  return S_OK;
}

export function iommu_invalidate_all(domain: u32): i32 {
  if (isBusy()) return S_BUSY;
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  invalidateAll(d);
  return S_OK;
}

/** Counter `which` (0 hits, 1 misses, 2 faults not-mapped, 3 faults permission) as a double
 *  (exact below 2^53). */
export function iommu_counter(domain: u32, which: u32): f64 {
  const d = domainPtr(domain);
  if (!d || which > 3) return -1;
  const off = which == 0 ? D_HITS : which == 1 ? D_MISSES : which == 2 ? D_FAULT_UNMAPPED : D_FAULT_PERM;
  return <f64>counter(d, off);
}

export function iommu_counters_reset(domain: u32): i32 {
  const d = domainPtr(domain);
  if (!d) return S_NO_DOMAIN;
  resetCounters(d);
  return S_OK;
}

/** Occupied IOTLB entries of a domain (tests). */
export function iommu_tlb_occupancy(domain: u32): i32 {
  const d = domainPtr(domain);
  if (!d) return -S_NO_DOMAIN;
  return <i32>occupancy(load<usize>(d, 8), load<u32>(d, 4) + 1);
}

/** Scratch memory for scatter/gather lists (host side). */
export function iommu_alloc(bytes: usize): usize {
  return heap.alloc(bytes);
}

export function iommu_free(ptr: usize): void {
  heap.free(ptr);
}
