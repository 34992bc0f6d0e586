// Unit tests of the AssemblyScript memory core: rendering, the page table, splitting.
// I/O callbacks come from test/assembly/stubs/memory.js (byte at offset o of region r reads
// (o + r) & 0xff until written).
import {
  IO_ACCEPTS, IO_BIG_ENDIAN, IO_NO_GUARD, KIND_CONTAINER, KIND_IO, KIND_RAM, KIND_ALIAS, MEMTX_DECODE_ERROR, MEMTX_OK,
  TOPO_CYCLE, TOPO_OK, TOPO_OVERFLOW, TOPO_ALREADY_MAPPED,
} from "../../../assembly/memory/status";
import {
  R_FAST, regionNew, regionNewLast, regionAddSubregion, regionPtr, regionSetAddress, regionSetAlias,
  regionSetAliasOffset, regionSetEnabled, regionSetIo, regionRam, transactionBegin, transactionCommit,
} from "../../../assembly/memory/regions";
import {
  A_COUNT, A_FLAT, F_IO, F_LAST, F_OFFSET, F_START, FLAT_SIZE, IOW_FAST_SHIFT, IOW_GUARD_MASK, IOW_NO_GUARD,
  asNew, asPtr, asRenderCount, flatRegion, pageLookup,
} from "../../../assembly/memory/flatview";
import { asRead, asWrite, asAccessBuffer, lastValue, memoryAccessSize } from "../../../assembly/memory/dispatch";

function flatCount(as: u32): u32 {
  return load<u32>(asPtr(as), A_COUNT);
}
function flatAt(as: u32, i: u32): usize {
  return <usize>load<u32>(asPtr(as), A_FLAT) + <usize>i * FLAT_SIZE;
}

describe("render", () => {
  it("fills the gaps a higher-priority container leaves with the lower sibling (memory.rst A/B/C/D/E)", () => {
    const A = <u32>regionNew(KIND_CONTAINER, 0x8000);
    const B = <u32>regionNew(KIND_CONTAINER, 0x4000);
    const C = <u32>regionNew(KIND_IO, 0x6000);
    const D = <u32>regionNew(KIND_RAM, 0x1000);
    const E = <u32>regionNew(KIND_RAM, 0x1000);
    transactionBegin();
    expect(regionAddSubregion(A, B, 0x2000, 2)).toBe(TOPO_OK);
    expect(regionAddSubregion(A, C, 0, 1)).toBe(TOPO_OK);
    expect(regionAddSubregion(B, D, 0, 0)).toBe(TOPO_OK);
    expect(regionAddSubregion(B, E, 0x2000, 0)).toBe(TOPO_OK);
    expect(transactionCommit()).toBe(TOPO_OK);
    const as = <u32>asNew(A);
    // C D C E C, then the unassigned tail 0x6000..2^64-1
    expect(flatCount(as)).toBe(6);
    const regions: u32[] = [C, D, C, E, C, 0];
    const starts: u64[] = [0, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000];
    const offsets: u64[] = [0, 0, 0x3000, 0, 0x5000, 0x6000];
    for (let i: u32 = 0; i < 6; i++) {
      expect(flatRegion(flatAt(as, i))).toBe(regions[i]);
      expect(load<u64>(flatAt(as, i), F_START)).toBe(starts[i]);
      expect(load<u64>(flatAt(as, i), F_OFFSET)).toBe(offsets[i]);
    }
    expect(load<u64>(flatAt(as, 5), F_LAST)).toBe(u64.MAX_VALUE);
  });

  it("renders an alias through its window and hides it when the target is disabled", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const ram = <u32>regionNew(KIND_RAM, 0x1000);
    const al = <u32>regionNew(KIND_ALIAS, 0x100);
    expect(regionSetAlias(al, ram, 0x800)).toBe(TOPO_OK);
    expect(regionAddSubregion(root, al, 0xfffffffffffff000, 0)).toBe(TOPO_OK);
    const as = <u32>asNew(root);
    expect(flatCount(as)).toBe(3);
    expect(load<u64>(flatAt(as, 1), F_START)).toBe(0xfffffffffffff000);
    expect(load<u64>(flatAt(as, 1), F_OFFSET)).toBe(0x800);
    regionSetEnabled(ram, false);
    expect(flatCount(as)).toBe(1);
  });

  it("rejects cycles, double mapping and placement past 2^64", () => {
    const a = <u32>regionNew(KIND_CONTAINER, 0x1000);
    const b = <u32>regionNew(KIND_CONTAINER, 0x1000);
    expect(regionAddSubregion(a, b, 0, 0)).toBe(TOPO_OK);
    expect(regionAddSubregion(b, a, 0, 0)).toBe(TOPO_CYCLE);
    expect(regionAddSubregion(a, b, 0, 0)).toBe(TOPO_ALREADY_MAPPED);
    const c = <u32>regionNew(KIND_RAM, 0x10);
    expect(regionAddSubregion(a, c, 0xfffffffffffffff8, 0)).toBe(TOPO_OVERFLOW);
  });
});

describe("page table", () => {
  it("resolves every byte of a page shared by odd-sized ranges through its subpage", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const r1 = <u32>regionNew(KIND_RAM, 0x3);
    const r2 = <u32>regionNew(KIND_RAM, 0x7fd);
    const r3 = <u32>regionNew(KIND_IO, 0x10);
    regionAddSubregion(root, r1, 0x7000, 0);
    regionAddSubregion(root, r2, 0x7003, 0);
    regionAddSubregion(root, r3, 0x7ff0, 0);
    const as = <u32>asNew(root);
    const ap = asPtr(as);
    for (let a: u64 = 0x6ff0; a < 0x8010; a++) {
      const i = pageLookup(ap, a);
      const f = flatAt(as, i);
      expect(load<u64>(f, F_START) <= a && a <= load<u64>(f, F_LAST)).toBe(true);
    }
    expect(flatRegion(flatAt(as, pageLookup(ap, 0x7002)))).toBe(r1);
    expect(flatRegion(flatAt(as, pageLookup(ap, 0x7003)))).toBe(r2);
    expect(flatRegion(flatAt(as, pageLookup(ap, 0x7fff)))).toBe(r3);
    // Same page offsets in another 4 GiB window are unassigned (region 0).
    expect(flatRegion(flatAt(as, pageLookup(ap, 0x100007002)))).toBe(0);
  });
});

describe("splitting", () => {
  it("memory_access_size: 4-byte default, bounded by alignment, rounded down to a power of two", () => {
    const io = <u32>regionNew(KIND_IO, 0x100);
    expect(memoryAccessSize(io, 8, 0)).toBe(4);
    expect(memoryAccessSize(io, 7, 1)).toBe(1);
    expect(memoryAccessSize(io, 6, 2)).toBe(2);
    expect(memoryAccessSize(io, 3, 4)).toBe(2);
    expect(regionSetIo(io, 3, 0, 8, 0, 8, io)).toBe(TOPO_OK); // valid+impl unaligned, max 8
    expect(memoryAccessSize(io, 8, 1)).toBe(8);
    expect(memoryAccessSize(io, 7, 1)).toBe(4);
  });

  it("RAM served in linear memory; I/O assembled little-endian from 1-byte callbacks", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const ram = <u32>regionNew(KIND_RAM, 0x100);
    const io = <u32>regionNew(KIND_IO, 0x100);
    regionSetIo(io, 0, 0, 0, 1, 1, io); // impl.max = 1
    regionAddSubregion(root, ram, 0x1000, 0);
    regionAddSubregion(root, io, 0x2000, 0);
    const as = <u32>asNew(root);
    expect(asWrite(as, 0x1010, 8, 0x1122334455667788)).toBe(MEMTX_OK);
    expect(load<u64>(regionRam(ram) + 0x10)).toBe(0x1122334455667788);
    expect(asRead(as, 0x1014, 4)).toBe(MEMTX_OK);
    expect(lastValue).toBe(0x11223344);
    expect(asRead(as, 0x2004, 4)).toBe(MEMTX_OK);
    const b = <u64>((4 + io) & 0xff);
    expect(lastValue).toBe(b | ((b + 1) << 8) | ((b + 2) << 16) | ((b + 3) << 24));
    // 4 bytes straddling the end of RAM into unassigned space
    expect(asRead(as, 0x10fe, 4)).toBe(MEMTX_DECODE_ERROR);
    const buf = heap.alloc(16);
    memory.fill(buf, 0xee, 16);
    expect(asAccessBuffer(as, 0x10fc, buf, 8, false)).toBe(MEMTX_DECODE_ERROR);
    expect(load<u32>(buf + 4)).toBe(0);
    heap.free(buf);
  });
});

/** The R_FAST mask of a fresh I/O region set up with these flags and valid/impl sizes. */
function fast(flags: u32, vmin: u32, vmax: u32, imin: u32, imax: u32): u32 {
  const io = <u32>regionNew(KIND_IO, 0x10);
  expect(regionSetIo(io, flags, vmin, vmax, imin, imax, io)).toBe(TOPO_OK);
  return <u32>load<u8>(regionPtr(io), R_FAST);
}
const S1: u32 = 1 << 1;
const S2: u32 = 1 << 2;
const S4: u32 = 1 << 4;

describe("I/O fast path", () => {

  it("lists the sizes an aligned access reaches the device unchanged in", () => {
    expect(fast(0, 0, 0, 0, 0)).toBe(S1 | S2 | S4); // defaults: valid any, impl 1..4
    expect(fast(0, 0, 2, 0, 0)).toBe(S1 | S2); // valid.max 2: 4 bytes are split
    expect(fast(0, 2, 4, 0, 0)).toBe(S2 | S4); // valid.min 2: 1 byte is invalid
    expect(fast(0, 0, 0, 2, 0)).toBe(S2 | S4); // impl.min 2: 1 byte is widened
    expect(fast(0, 0, 0, 0, 1)).toBe(S1); // impl.max 1: 2 and 4 bytes are split
    expect(fast(IO_BIG_ENDIAN, 0, 0, 0, 0)).toBe(S1); // swapped above 1 byte
    expect(fast(IO_ACCEPTS, 0, 0, 0, 0)).toBe(0); // the hook must see every access
  });

  it("flat ranges carry the dispatch word: fast sizes, guard slot, no-guard flag", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const a = <u32>regionNew(KIND_IO, 0x100);
    const b = <u32>regionNew(KIND_IO, 0x100);
    regionSetIo(a, 0, 0, 2, 0, 0, 0x123456);
    regionSetIo(b, IO_NO_GUARD, 0, 0, 0, 0, b);
    regionAddSubregion(root, a, 0x1000, 0);
    regionAddSubregion(root, b, 0x2000, 0);
    const as = <u32>asNew(root);
    const ap = asPtr(as);
    const wa = load<u32>(flatAt(as, pageLookup(ap, 0x1000)), F_IO);
    expect(wa & IOW_GUARD_MASK).toBe(0x123456);
    expect(wa & IOW_NO_GUARD).toBe(0);
    expect(wa >>> IOW_FAST_SHIFT).toBe(S1 | S2);
    const wb = load<u32>(flatAt(as, pageLookup(ap, 0x2000)), F_IO);
    expect(wb & IOW_NO_GUARD).toBe(IOW_NO_GUARD);
    // Reconfiguring a mapped region re-renders the ranges that copy its flags.
    regionSetIo(a, 0, 0, 0, 0, 0, a);
    const wa2 = load<u32>(flatAt(as, pageLookup(ap, 0x1000)), F_IO);
    expect(wa2 & IOW_GUARD_MASK).toBe(a);
    expect(wa2 >>> IOW_FAST_SHIFT).toBe(S1 | S2 | S4);
  });
});

describe("commit", () => {
  it("re-renders only the address spaces whose tree holds a changed region", () => {
    const sysA = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const sysB = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const sysC = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const bar = <u32>regionNew(KIND_IO, 0x1000);
    const ramB = <u32>regionNew(KIND_RAM, 0x1000);
    const win = <u32>regionNew(KIND_ALIAS, 0x1000);
    regionAddSubregion(sysA, bar, 0xfe000000, 0);
    regionAddSubregion(sysB, ramB, 0, 0);
    expect(regionSetAlias(win, sysA, 0xfe000000)).toBe(TOPO_OK);
    regionAddSubregion(sysC, win, 0x10000, 0);
    const asA = <u32>asNew(sysA);
    const asB = <u32>asNew(sysB);
    const asC = <u32>asNew(sysC);
    const asBar = <u32>asNew(bar);
    expect(regionSetAddress(bar, 0xfe001000)).toBe(TOPO_OK);
    expect(asRenderCount(asA)).toBe(2);
    expect(asRenderCount(asB)).toBe(1);
    expect(asRenderCount(asC)).toBe(2); // sees sysA through the alias
    expect(asRenderCount(asBar)).toBe(1); // the BAR's own contents did not change
    transactionBegin();
    regionSetEnabled(ramB, false);
    regionSetAliasOffset(win, 0);
    regionSetEnabled(ramB, true);
    expect(transactionCommit()).toBe(TOPO_OK);
    expect(asRenderCount(asA)).toBe(2);
    expect(asRenderCount(asB)).toBe(2); // changed and changed back: still re-rendered, once
    expect(asRenderCount(asC)).toBe(3);
    expect(asRenderCount(asBar)).toBe(1);
  });
});
