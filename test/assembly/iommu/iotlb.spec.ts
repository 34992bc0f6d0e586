import {
  iotlbAlloc, insert, lookup, probe, invalidateRange, occupancy, classOfMask, setIndex, entryTranslated,
  entryMask,
} from "../../../assembly/iommu/iotlb";
import {
  domainCreate, regionAdd, regionRemove, regionProtect, regionOverlaps, translateOne, outAddr, outLen,
  crop, croppedFirst, croppedLast, domainPtr, counter, D_HITS, D_MISSES, D_FAULT_UNMAPPED, D_FAULT_PERM,
  KIND_MAP_TABLE, KIND_HOST, TERMINAL, S_OK, S_UNMAPPED, S_PERMISSION, S_EXISTS, S_NOT_FOUND, S_LIMIT,
  S_INVALID, S_BAD_ENTRY,
} from "../../../assembly/iommu/domain";

const SEG: u64 = <u64>1 << 40;

describe("IOTLB size classes", () => {
  it("files an entry of 2^k bytes in class k (whole-space entries in 63)", () => {
    expect(classOfMask(0)).toBe(0);
    expect(classOfMask(0xfff)).toBe(12);
    expect(classOfMask(0x1f_ffff)).toBe(21);
    expect(classOfMask(0x3fff_ffff)).toBe(30);
    expect(classOfMask(0xffff_ffff_ffff_ffff)).toBe(63);
  });

  it("uses one set for every address an entry covers", () => {
    const a = setIndex(0x4020_0000, 21, 255);
    expect(setIndex(0x4020_0000 + 0x1f_ffff, 21, 255)).toBe(a);
    expect(setIndex(0x4020_0000 + 0x12345, 21, 255)).toBe(a);
  });
});

describe("IOTLB probe and fill", () => {
  it("hits every address of an entry and nothing outside it, with mixed page sizes", () => {
    const tlb = iotlbAlloc(16);
    const small = insert(tlb, 15, 0, 0x1234, 0x1000, 0xfff, 0x9000, 3, TERMINAL);
    const big = insert(tlb, 15, 1, 0x4000_0000, 0x4000_0000, 0x3fff_ffff, 0x8000_0000, 1, TERMINAL);
    const classes: u64 = (<u64>1 << 12) | (<u64>1 << 30);
    expect(lookup(tlb, 15, classes, 0x1000)).toBe(small);
    expect(lookup(tlb, 15, classes, 0x1fff)).toBe(small);
    expect(lookup(tlb, 15, classes, 0x2000)).toBe(0);
    expect(lookup(tlb, 15, classes, 0xfff)).toBe(0);
    expect(lookup(tlb, 15, classes, 0x7fff_ffff)).toBe(big);
    expect(lookup(tlb, 15, classes, 0x8000_0000)).toBe(0);
    expect(entryTranslated(big)).toBe(0x8000_0000);
    // A class not announced in `classes` is not probed.
    expect(lookup(tlb, 15, <u64>1 << 12, 0x4000_0000)).toBe(0);
    expect(occupancy(tlb, 16)).toBe(2);
  });

  it("never matches an empty way, even for iova 1 or 2^64-1", () => {
    const tlb = iotlbAlloc(1);
    for (let k: u32 = 0; k < 64; k++) {
      expect(probe(tlb, 0, 1, k)).toBe(0);
      expect(probe(tlb, 0, 0xffff_ffff_ffff_ffff, k)).toBe(0);
    }
  });

  it("fills empty ways first, then evicts by the clock", () => {
    const tlb = iotlbAlloc(1);
    for (let i: u32 = 0; i < 4; i++) insert(tlb, 0, i, 0x1000 * i, 0x1000 * i, 0xfff, 0, 3, TERMINAL);
    expect(occupancy(tlb, 1)).toBe(4);
    insert(tlb, 0, 6, 0x9000, 0x9000, 0xfff, 0, 3, TERMINAL); // victim = way 6 & 3 = 2
    expect(lookup(tlb, 0, <u64>1 << 12, 0x2000)).toBe(0);
    expect(lookup(tlb, 0, <u64>1 << 12, 0x9000)).not.toBe(0);
    expect(lookup(tlb, 0, <u64>1 << 12, 0x3000)).not.toBe(0);
  });

  it("invalidates exactly the entries that meet a range", () => {
    const tlb = iotlbAlloc(8);
    insert(tlb, 7, 0, 0x1000, 0x1000, 0xfff, 0, 3, TERMINAL);
    insert(tlb, 7, 0, 0x2000, 0x2000, 0xfff, 0, 3, TERMINAL);
    insert(tlb, 7, 0, 0x20_0000, 0x20_0000, 0x1f_ffff, 0, 3, TERMINAL);
    expect(invalidateRange(tlb, 8, 0x1fff, 0x1fff)).toBe(1);
    expect(invalidateRange(tlb, 8, 0x3000, 0x1f_ffff)).toBe(0);
    expect(invalidateRange(tlb, 8, 0x3f_ffff, 0xffff_ffff_ffff_ffff)).toBe(1);
    expect(occupancy(tlb, 8)).toBe(1);
  });
});

describe("notifier cropping", () => {
  it("crops an inclusive range to the listener's range", () => {
    expect(crop(0x1000, 0x2fff, 0x1800, 0x27ff)).toBe(true);
    expect(croppedFirst).toBe(0x1800);
    expect(croppedLast).toBe(0x27ff);
    expect(crop(0x1000, 0x1fff, 0, 0xffff_ffff_ffff_ffff)).toBe(true);
    expect(croppedFirst).toBe(0x1000);
    expect(croppedLast).toBe(0x1fff);
    expect(crop(0x1000, 0x1fff, 0x2000, 0x2fff)).toBe(false);
    expect(crop(0x3000, 0x3fff, 0x2000, 0x2fff)).toBe(false);
    expect(crop(0x2fff, 0x2fff, 0x2000, 0x2fff)).toBe(true);
  });
});

describe("map-table domain", () => {
  it("adds, refuses overlaps, removes exactly, and translates by the largest aligned block", () => {
    const d = <u32>domainCreate(KIND_MAP_TABLE, 64);
    expect(regionAdd(d, 0x20_0000, 0x40_0fff, 0, 3)).toBe(S_OK);
    expect(regionAdd(d, 0x40_0fff, 0x40_1fff, 1, 3)).toBe(S_EXISTS);
    expect(regionAdd(d, 0x10_0000, 0x20_0000, 1, 3)).toBe(S_EXISTS);
    expect(regionAdd(d, 0x40_1000, 0x40_1fff, 1, 1)).toBe(S_OK);
    expect(regionAdd(d, 0, <u64>1 << 39, 2, 3)).toBe(S_LIMIT);
    expect(regionAdd(d, 0x10, 0x0f, 2, 3)).toBe(S_INVALID);
    expect(regionOverlaps(d, 0x40_1fff, 0x50_0000)).toBe(true);
    expect(regionOverlaps(d, 0x40_2000, 0x50_0000)).toBe(false);

    expect(translateOne(d, 0x20_0010, 0xffff_ffff, 1)).toBe(S_OK);
    expect(outAddr).toBe(0x10);
    expect(outLen).toBe(0x20_0000 - 0x10);
    expect(translateOne(d, 0x40_0800, 0xffff_ffff, 2)).toBe(S_OK);
    expect(outAddr).toBe(0x20_0800);
    expect(outLen).toBe(0x800);
    expect(translateOne(d, 0x40_1004, 4, 1)).toBe(S_OK);
    expect(outAddr).toBe(SEG + 4);
    expect(translateOne(d, 0x40_1004, 4, 2)).toBe(S_PERMISSION);
    expect(translateOne(d, 0x40_2000, 4, 1)).toBe(S_UNMAPPED);

    const p = domainPtr(d);
    expect(counter(p, D_MISSES)).toBe(4);
    expect(counter(p, D_HITS)).toBe(1);
    expect(counter(p, D_FAULT_PERM)).toBe(1);
    expect(counter(p, D_FAULT_UNMAPPED)).toBe(1);

    expect(regionRemove(d, 0x20_0000, 0x40_0000)).toBe(S_NOT_FOUND);
    expect(regionProtect(d, 0x40_1000, 0x40_1fff, 3)).toBe(S_OK);
    expect(translateOne(d, 0x40_1004, 4, 2)).toBe(S_OK);
    expect(regionRemove(d, 0x20_0000, 0x40_0fff)).toBe(S_OK);
    expect(translateOne(d, 0x20_0010, 4, 1)).toBe(S_UNMAPPED);
  });
});

describe("host domain (stub page table)", () => {
  it("chains a host stage into the map table and keeps its permissions", () => {
    const table = <u32>domainCreate(KIND_MAP_TABLE, 16);
    const host = <u32>domainCreate(KIND_HOST, 16);
    expect(host).toBe(table + 1);
    expect(regionAdd(table, 0, 0xff_ffff, 0, 3)).toBe(S_OK);
    // 2 MiB page 0x4020_0000 → 0x20_0000, clamped at the page end.
    expect(translateOne(host, 0x4021_0000, 0xffff_ffff, 3)).toBe(S_OK);
    expect(outAddr).toBe(0x21_0000);
    expect(outLen).toBe(0x1f_0000);
    // Read-only 4 KiB pages.
    expect(translateOne(host, 0x8000_1ffc, 16, 1)).toBe(S_OK);
    expect(outAddr).toBe(0x10_1ffc);
    expect(outLen).toBe(4);
    expect(translateOne(host, 0x8000_1ffc, 4, 2)).toBe(S_PERMISSION);
    expect(translateOne(host, 0x1234, 4, 1)).toBe(S_UNMAPPED);
    expect(translateOne(host, 0x9000_0000, 4, 1)).toBe(S_BAD_ENTRY);
    const p = domainPtr(host);
    expect(counter(p, D_MISSES)).toBe(4);
    expect(counter(p, D_HITS)).toBe(1);
    expect(entryMask(lookup(load<usize>(p, 8), load<u32>(p, 4), load<u64>(p, 64), 0x4020_0000))).toBe(0x1f_ffff);
  });
});
