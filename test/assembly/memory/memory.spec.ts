// Unit tests of the AssemblyScript memory core: rendering, the page table, splitting.
// I/O callbacks come from test/assembly/stubs/memory.js (byte at offset o of region r reads
// (o + r) & 0xff until written).
import {
  IO_ACCEPTS, IO_BIG_ENDIAN, IO_NO_GUARD, KIND_CONTAINER, KIND_IO, KIND_RAM, KIND_ALIAS, KIND_ROM_DEVICE,
  MEMTX_DECODE_ERROR, MEMTX_OK, TOPO_CYCLE, TOPO_OK, TOPO_OVERFLOW, TOPO_ALREADY_MAPPED, TOPO_NO_SUCH_REGION,
  TOPO_WRONG_KIND,
} from "../../../assembly/memory/status";
import {
  R_FAST, regionNew, regionNewLast, regionAddSubregion, regionDelSubregion, regionFree, regionPendingFree,
  regionPtr, regionSetAddress, regionSetAlias, regionSetAliasOffset, regionSetEnabled, regionSetIo,
  regionSetReadonly, regionSetRomd, regionRam, transactionBegin, transactionCommit,
} from "../../../assembly/memory/regions";
import {
  A_COUNT, A_FLAT, F_IO, F_LAST, F_OFFSET, F_PTR, F_START, FLAT_SIZE, IOW_FAST_SHIFT, IOW_GUARD_MASK, IOW_NO_GUARD,
  MODE_IO, MODE_ROMD, asNew, asPtr, asRenderCount, flatMode, flatRegion, pageLookup,
} from "../../../assembly/memory/flatview";
import { asRead, asWrite, asAccessBuffer, asReplay, lastValue, memoryAccessSize, TRACE_RECORD } from "../../../assembly/memory/dispatch";

// Callback log of the host stubs (test/assembly/stubs/memory.js).
// @ts-ignore: decorator
@external("host", "test_mem_log_length")
declare function logLength(): i32;
// @ts-ignore: decorator
@external("host", "test_mem_log_is")
declare function logIs(i: i32, isWrite: i32, region: u32, offset: u32, size: u32): i32;

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

describe("ROM device", () => {
  it("ROMD mode: reads come from its RAM without a callback; writes reach the device only", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const dev = <u32>regionNew(KIND_ROM_DEVICE, 0x100);
    expect(regionSetIo(dev, 0, 4, 4, 4, 4, dev)).toBe(TOPO_OK); // valid and impl: 4 bytes only
    regionAddSubregion(root, dev, 0x3000, 0);
    const as = <u32>asNew(root);
    const f = flatAt(as, pageLookup(asPtr(as), 0x3000));
    expect(flatMode(f)).toBe(MODE_ROMD);
    expect(load<u32>(f, F_PTR)).toBe(<u32>regionRam(dev));
    store<u64>(regionRam(dev) + 8, 0x8877665544332211);
    const logged = logLength();
    expect(asRead(as, 0x3008, 8)).toBe(MEMTX_OK);
    expect(lastValue).toBe(0x8877665544332211);
    expect(asRead(as, 0x3009, 1)).toBe(MEMTX_OK); // direct: valid sizes do not apply
    expect(lastValue).toBe(0x22);
    // a trace of reads replayed inside the core: still no callback
    const rec = heap.alloc(TRACE_RECORD);
    store<u32>(rec, 4);
    store<u64>(rec, 0x300c, 4);
    expect(asReplay(as, rec, 1)).toBe(0);
    expect(load<u64>(rec, 12)).toBe(0x88776655);
    heap.free(rec);
    expect(logLength()).toBe(logged);
    // writes: the device's callback with its sizes; the RAM is the device's business
    expect(asWrite(as, 0x3010, 4, 0xdeadbeef)).toBe(MEMTX_OK);
    expect(asWrite(as, 0x3011, 1, 0x55)).toBe(MEMTX_DECODE_ERROR);
    expect(logLength()).toBe(logged + 1);
    expect(logIs(logged, 1, dev, 16, 4)).toBe(1);
    expect(load<u32>(regionRam(dev) + 0x10)).toBe(0);
    // readonly does not make writes direct or drop them (QEMU memory_access_is_direct)
    expect(regionSetReadonly(root, true)).toBe(TOPO_OK);
    expect(asWrite(as, 0x3014, 4, 1)).toBe(MEMTX_OK);
    expect(logLength()).toBe(logged + 2);
  });

  it("ROMD mode off: reads go to the callback under the device's sizes; on again: the RAM", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const dev = <u32>regionNew(KIND_ROM_DEVICE, 0x100);
    regionSetIo(dev, 0, 0, 0, 1, 1, dev); // byte-wide callbacks
    regionAddSubregion(root, dev, 0x4000, 0);
    const as = <u32>asNew(root);
    store<u32>(regionRam(dev) + 4, 0xa1b2c3d4);
    expect(regionSetRomd(dev, false)).toBe(TOPO_OK);
    expect(asRenderCount(as)).toBe(2);
    expect(flatMode(flatAt(as, pageLookup(asPtr(as), 0x4000)))).toBe(MODE_IO);
    const logged = logLength();
    expect(asRead(as, 0x4004, 2)).toBe(MEMTX_OK);
    expect(logLength()).toBe(logged + 2);
    expect(logIs(logged, 0, dev, 4, 1)).toBe(1);
    const b = <u64>((4 + dev) & 0xff); // the stub's byte at offset 4
    expect(lastValue).toBe(b | ((b + 1) << 8));
    expect(regionSetRomd(dev, true)).toBe(TOPO_OK);
    expect(asRead(as, 0x4004, 4)).toBe(MEMTX_OK);
    expect(lastValue).toBe(0xa1b2c3d4);
    expect(logLength()).toBe(logged + 2);
    const io = <u32>regionNew(KIND_IO, 0x10);
    expect(regionSetRomd(io, false)).toBe(TOPO_WRONG_KIND);
  });

  it("buffer accesses: reads copied from the RAM, writes cut into device pieces", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const dev = <u32>regionNew(KIND_ROM_DEVICE, 0x20);
    regionAddSubregion(root, dev, 0x5000, 0);
    const as = <u32>asNew(root);
    for (let i: u32 = 0; i < 0x20; i++) store<u8>(regionRam(dev) + i, <u8>(0x40 + i));
    const buf = heap.alloc(0x20);
    const logged = logLength();
    expect(asAccessBuffer(as, 0x5003, buf, 0x1d, false)).toBe(MEMTX_OK);
    expect(load<u8>(buf)).toBe(0x43);
    expect(load<u8>(buf + 0x1c)).toBe(0x5f);
    expect(logLength()).toBe(logged);
    expect(asAccessBuffer(as, 0x5003, buf, 7, true)).toBe(MEMTX_OK);
    // memory_access_size: 1 byte at 3, then 4 at 4, then 2 at 8 (default valid.max 4)
    expect(logLength()).toBe(logged + 3);
    expect(logIs(logged, 1, dev, 3, 1)).toBe(1);
    expect(logIs(logged + 1, 1, dev, 4, 4)).toBe(1);
    expect(logIs(logged + 2, 1, dev, 8, 2)).toBe(1);
    heap.free(buf);
  });
});

describe("deferred free", () => {
  it("a region freed inside a transaction keeps its RAM until the outermost commit", () => {
    const root = <u32>regionNewLast(KIND_CONTAINER, u64.MAX_VALUE);
    const ram = <u32>regionNew(KIND_RAM, 0x1000);
    regionAddSubregion(root, ram, 0x6000, 0);
    const as = <u32>asNew(root);
    expect(asWrite(as, 0x6010, 4, 0x600df00d)).toBe(MEMTX_OK);
    const bytes = regionRam(ram);
    transactionBegin();
    transactionBegin();
    expect(regionDelSubregion(root, ram)).toBe(TOPO_OK);
    expect(regionFree(ram)).toBe(TOPO_OK);
    expect(regionPendingFree(ram)).toBe(true);
    expect(regionSetEnabled(ram, false)).toBe(TOPO_NO_SUCH_REGION); // dead to topology calls
    // a new region of the same size gets other memory and another id
    const other = <u32>regionNew(KIND_RAM, 0x1000);
    expect(other).not.toBe(ram);
    expect(regionRam(other)).not.toBe(bytes);
    memory.fill(regionRam(other), 0xee, 0x1000);
    // the old view still reaches the old bytes
    expect(asRead(as, 0x6010, 4)).toBe(MEMTX_OK);
    expect(lastValue).toBe(0x600df00d);
    expect(transactionCommit()).toBe(TOPO_OK);
    expect(regionPendingFree(ram)).toBe(true); // inner commit: still pending
    expect(transactionCommit()).toBe(TOPO_OK);
    expect(regionPendingFree(ram)).toBe(false);
    expect(asRead(as, 0x6010, 4)).toBe(MEMTX_DECODE_ERROR);
    expect(load<u32>(regionRam(other) + 0x10)).toBe(0xeeeeeeee);
    expect(<u32>regionNew(KIND_RAM, 0x10)).toBe(ram); // the id is free again
  });
});
