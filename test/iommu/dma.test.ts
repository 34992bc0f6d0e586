// The DMA map table and the device-facing DMA API over in-process memory: table errors
// (EEXIST / ENOENT), invalidation on unmap and permission shrink, scatter/gather across
// regions and pages, little-endian helpers, zero-copy maps revoked by unmap, message regions.
import { describe, expect, it } from "vitest";
import { IommuCore, type IommuEvent } from "../../src/core/iommu/iommu.js";
import { DmaMapTable } from "../../src/core/dma/map-table.js";
import { DmaSpace } from "../../src/core/dma/space.js";
import { DmaError } from "../../src/core/dma/errors.js";
import type { DmaMapping, DmaMessageHook } from "../../src/core/dma/api.js";
import { DirtyLog, trackDirtyPages } from "../../src/vfio-user/server/dirty.js";

function setup(hook?: DmaMessageHook) {
  const core = new IommuCore();
  const table = new DmaMapTable(core, null);
  const dma = new DmaSpace({ table, hook });
  return { core, table, dma };
}

const mem = (n: number, seed = 0) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return (e as DmaError).code;
  }
  return "no error";
};

describe("DMA map table", () => {
  it("rejects overlapping and identical ranges with EEXIST, unknown and partial removal with ENOENT", () => {
    const { table } = setup();
    table.add({ iova: 0x10000n, size: 0x2000n, perm: 3, backing: { kind: "memory", bytes: mem(0x2000) } });
    for (const [iova, size] of [[0x10000n, 0x2000n], [0xf000n, 0x1001n], [0x11fffn, 1n], [0x8000n, 0x10000n]] as const) {
      const e = (() => { try { table.add({ iova, size, perm: 3, backing: { kind: "message" } }); } catch (e) { return e as DmaError; } })();
      expect(e).toMatchObject({ code: "DMA_REGION_EXISTS", errno: 17 });
    }
    // Adjacent on both sides is fine.
    table.add({ iova: 0xf000n, size: 0x1000n, perm: 3, backing: { kind: "message" } });
    table.add({ iova: 0x12000n, size: 0x1000n, perm: 3, backing: { kind: "message" } });
    for (const [iova, size] of [[0x10000n, 0x1000n], [0x11000n, 0x1000n], [0x10000n, 0x3000n], [0x20000n, 0x1000n]] as const) {
      expect(code(() => table.remove(iova, size))).toBe("DMA_REGION_NOT_FOUND");
    }
    expect(table.regions().map((r) => r.iova)).toEqual([0xf000n, 0x10000n, 0x12000n]);
    table.remove(0x10000n, 0x2000n);
    expect(code(() => table.remove(0x10000n, 0x2000n))).toBe("DMA_REGION_NOT_FOUND");
    expect(table.regions().map((r) => r.iova)).toEqual([0xf000n, 0x12000n]);
  });

  it("validates sizes, wrap-around and limits", () => {
    const { table } = setup();
    const msg = { kind: "message" } as const;
    expect(code(() => table.add({ iova: 0n, size: 0n, perm: 3, backing: msg }))).toBe("DMA_INVALID_ARGUMENT");
    expect(code(() => table.add({ iova: 0xffff_ffff_ffff_f000n, size: 0x1001n, perm: 3, backing: msg }))).toBe("DMA_INVALID_ARGUMENT");
    expect(code(() => table.add({ iova: 0n, size: (1n << 39n) + 1n, perm: 3, backing: msg }))).toBe("DMA_LIMIT");
    expect(code(() => table.add({ iova: 0n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x800) } }))).toBe("DMA_INVALID_ARGUMENT");
    expect(code(() => table.add({ iova: 0n, size: 0x1000n, perm: 3, backing: { kind: "fd", fd: 0, offset: 0n } }))).toBe("DMA_INVALID_ARGUMENT"); // no mapper
    // The very top of the address space is a valid region.
    table.add({ iova: 0xffff_ffff_ffff_f000n, size: 0x1000n, perm: 3, backing: msg });
    expect(table.regions()).toHaveLength(1);
  });

  it("removal and permission shrink invalidate cached translations", () => {
    const { table, dma } = setup();
    const a = mem(0x1000);
    table.add({ iova: 0x4000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: a } });
    dma.writeU32(0x4010n, 0x11223344);
    expect(table.domain.cachedEntries()).toBe(1);
    table.protect(0x4000n, 0x1000n, 1);
    expect(table.domain.cachedEntries()).toBe(0);
    expect(code(() => dma.writeU32(0x4010n, 1))).toBe("DMA_PERMISSION");
    expect(dma.readU32(0x4010n)).toBe(0x11223344);
    table.protect(0x4000n, 0x1000n, 3); // growth takes effect at once too
    dma.writeU32(0x4010n, 2);
    table.remove(0x4000n, 0x1000n);
    expect(code(() => dma.readU32(0x4010n))).toBe("DMA_UNMAPPED");
    // A new region at the same IOVA with other memory is seen, never the stale one.
    const b = new Uint8Array(0x1000).fill(0xee);
    table.add({ iova: 0x4000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: b } });
    expect(dma.readU32(0x4010n)).toBe(0xeeeeeeee);
  });

  it("announces adds, removals and permission changes to listeners", () => {
    const { table } = setup();
    const ev: IommuEvent[] = [];
    table.domain.listen({ map: true, unmap: true }, 0n, 0xffff_ffff_ffff_ffffn, (e) => ev.push(e));
    table.add({ iova: 0x2000n, size: 0x1000n, perm: 3, backing: { kind: "message" } });
    table.protect(0x2000n, 0x1000n, 1);
    table.remove(0x2000n, 0x1000n);
    expect(ev.map((e) => [e.type, e.first, e.last, e.perm])).toEqual([
      ["map", 0x2000n, 0x2fffn, 3],
      ["unmap", 0x2000n, 0x2fffn, 3],
      ["map", 0x2000n, 0x2fffn, 1],
      ["unmap", 0x2000n, 0x2fffn, 1],
    ]);
  });
});

describe("DMA copies", () => {
  it("reads and writes any length across regions and page boundaries, in order", () => {
    const { table, dma } = setup();
    // Three regions back to back at odd alignments: 4 KiB-aligned, then 1 byte-aligned pieces.
    const a = new Uint8Array(0x1800), b = new Uint8Array(0x7), c = new Uint8Array(0x3000);
    table.add({ iova: 0x1_0000_1000n, size: 0x1800n, perm: 3, backing: { kind: "memory", bytes: a } });
    table.add({ iova: 0x1_0000_2800n, size: 0x7n, perm: 3, backing: { kind: "memory", bytes: b } });
    table.add({ iova: 0x1_0000_2807n, size: 0x3000n, perm: 3, backing: { kind: "memory", bytes: c } });
    const src = mem(0x1800 + 7 + 0x3000, 3);
    dma.writeSync(0x1_0000_1000n, src);
    expect(a).toEqual(src.subarray(0, 0x1800));
    expect(b).toEqual(src.subarray(0x1800, 0x1807));
    expect(c).toEqual(src.subarray(0x1807));
    for (const [off, len] of [[0, src.length], [0x17ff, 2], [0x17fe, 12], [0x1000, 0x1000], [0x1806, 0x2000], [src.length - 1, 1]]) {
      const out = new Uint8Array(len);
      dma.readSync(0x1_0000_1000n + BigInt(off), out);
      expect(out).toEqual(src.subarray(off, off + len));
    }
    const segs = dma.translateList([{ iova: 0x1_0000_17f0n, length: 0x20 }, { iova: 0x1_0000_2806n, length: 2 }], "to-device");
    expect(segs).toEqual([
      { region: 0, offset: 0x7f0, length: 0x20, iova: 0x1_0000_17f0n },
      { region: 1, offset: 6, length: 1, iova: 0x1_0000_2806n },
      { region: 2, offset: 0, length: 1, iova: 0x1_0000_2807n },
    ]);
  });

  it("keeps working after the core's linear memory grows (views of the old buffer are refreshed)", () => {
    const { core, table, dma } = setup();
    const a = mem(0x3000, 5);
    table.add({ iova: 0x10_0000n, size: 0x3000n, perm: 3, backing: { kind: "memory", bytes: a } });
    const out = new Uint8Array(0x10);
    dma.readSync(0x10_0800n, out);
    expect(out).toEqual(a.subarray(0x800, 0x810));
    expect(core.mem32().length).toBeGreaterThan(0);
    for (let round = 0; round < 3; round++) {
      const before = core.ref.memory.buffer.byteLength;
      // Another user of the core allocates: the memory grows and its old buffer is detached.
      core.x.iommu_alloc(before);
      expect(core.ref.memory.buffer.byteLength).toBeGreaterThan(before);
      dma.readSync(0x10_0900n + BigInt(round), out);
      expect(out).toEqual(a.subarray(0x900 + round, 0x910 + round));
      dma.writeU32(0x10_2000n, 0x1234_5678 + round);
      expect(dma.readU32(0x10_2000n)).toBe(0x1234_5678 + round);
      // A failing translation reads its failing index through the refreshed view.
      core.x.iommu_alloc(core.ref.memory.buffer.byteLength);
      expect(code(() => dma.translateList([{ iova: 0x10_0000n, length: 4 }, { iova: 0x20_0000n, length: 4 }], "to-device"))).toBe("DMA_UNMAPPED");
      expect(core.ioWord(16)).toBe(1);
    }
  });

  it("merges contiguous pieces of one region across IOTLB entries", () => {
    const { table, dma } = setup();
    // 4 KiB-aligned start: every IOTLB entry is 4 KiB, but the region is one piece of memory.
    table.add({ iova: 0x3000n, size: 0x10000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x10000) } });
    expect(dma.translateList([{ iova: 0x3800n, length: 0x8000 }, { iova: 0xb800n, length: 0x10 }], "bidirectional"))
      .toEqual([{ region: 0, offset: 0x800, length: 0x8010, iova: 0x3800n }]);
    expect(table.domain.cachedEntries()).toBeGreaterThan(4);
  });

  it("fails a read or write that touches a hole or lacks permission, and writes nothing", () => {
    const { table, dma } = setup();
    const a = new Uint8Array(0x1000), ro = new Uint8Array(0x1000).fill(9);
    table.add({ iova: 0x1000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: a } });
    table.add({ iova: 0x3000n, size: 0x1000n, perm: 1, backing: { kind: "memory", bytes: ro } });
    table.add({ iova: 0x4000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x1000) } });
    const e = (() => { try { dma.writeSync(0x1ff0n, new Uint8Array(0x20).fill(1)); } catch (e) { return e as DmaError; } })()!;
    expect(e).toMatchObject({ code: "DMA_UNMAPPED", iova: 0x1ff0n, length: 0x20, index: 0 });
    expect(a.every((x) => x === 0)).toBe(true);
    expect(code(() => dma.writeSync(0x3ff0n, new Uint8Array(0x20)))).toBe("DMA_PERMISSION");
    expect(ro.every((x) => x === 9)).toBe(true);
    expect(code(() => dma.readSync(0x2ffcn, new Uint8Array(8)))).toBe("DMA_UNMAPPED");
    expect(code(() => dma.translateList([{ iova: 0x1000n, length: 4 }, { iova: 0x3000n, length: 4 }], "from-device"))).toBe("DMA_PERMISSION");
    const e2 = (() => { try { dma.translateList([{ iova: 0x1000n, length: 4 }, { iova: 0x3000n, length: 4 }], "from-device"); } catch (e) { return e as DmaError; } })()!;
    expect(e2.index).toBe(1);
    expect(code(() => dma.readSync(-1n, new Uint8Array(1)))).toBe("DMA_INVALID_ARGUMENT");
    expect(code(() => dma.readSync(1n << 64n, new Uint8Array(1)))).toBe("DMA_INVALID_ARGUMENT");
    dma.readSync(0x1000n, new Uint8Array(0)); // empty transfers are no-ops
  });

  it("copies a scatter/gather list in order across regions; a faulting range copies nothing; a list must cover the buffer exactly", () => {
    const { table, dma } = setup();
    const a = new Uint8Array(0x2000), b = new Uint8Array(0x1000), ro = new Uint8Array(0x1000).fill(9);
    table.add({ iova: 0x1000n, size: 0x2000n, perm: 3, backing: { kind: "memory", bytes: a } });
    table.add({ iova: 0x8000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: b } });
    table.add({ iova: 0x9000n, size: 0x1000n, perm: 1, backing: { kind: "memory", bytes: ro } });
    table.add({ iova: 0xa000n, size: 0x1000n, perm: 3, backing: { kind: "message" } });
    // A PRP-like list: an offset first page, a page in another region, a page straddling a's two.
    const list = { iova: [0x1f00n, 0x8000n, 0x1800n, 0n], length: [0x100, 0x1000, 0x1000, 0], count: 3 };
    const src = mem(0x2100, 1);
    dma.writeListSync(list, src);
    expect(a.subarray(0xf00, 0x1000)).toEqual(src.subarray(0, 0x100));
    expect(b).toEqual(src.subarray(0x100, 0x1100));
    expect(a.subarray(0x800, 0x1800)).toEqual(src.subarray(0x1100, 0x2100)); // overwrites the first range's bytes
    const back = new Uint8Array(0x2100);
    dma.readListSync(list, back);
    expect(back.subarray(0x100)).toEqual(src.subarray(0x100)); // the last range wins where they overlap
    expect(back.subarray(0, 0x100)).toEqual(src.subarray(0x1100 + 0x700, 0x1100 + 0x800));

    // All-or-nothing: range 1 is read-only (writes) or a hole; the fault names its index.
    a.fill(0);
    const bad = { iova: [0x1000n, 0x9000n], length: [0x10, 0x10], count: 2 };
    const e = (() => { try { dma.writeListSync(bad, new Uint8Array(0x20).fill(5)); } catch (e) { return e as DmaError; } })()!;
    expect(e).toMatchObject({ code: "DMA_PERMISSION", index: 1 });
    expect(a.every((x) => x === 0) && ro.every((x) => x === 9)).toBe(true);
    expect(code(() => dma.readListSync({ iova: [0x1000n, 0x5000n], length: [4, 4], count: 2 }, new Uint8Array(8)))).toBe("DMA_UNMAPPED");
    expect(code(() => dma.readListSync({ iova: [0x1000n, 0xa000n], length: [4, 4], count: 2 }, new Uint8Array(8)))).toBe("DMA_NO_SHARED_MEMORY");
    expect(code(() => dma.readListSync({ iova: [0x1000n], length: [8], count: 1 }, new Uint8Array(4)))).toBe("DMA_INVALID_ARGUMENT");
    expect(code(() => dma.readListSync({ iova: [0x1000n], length: [0], count: 1 }, new Uint8Array(0)))).toBe("DMA_INVALID_ARGUMENT");
    expect(code(() => dma.readListSync({ iova: [0x1000n], length: [4], count: 2 }, new Uint8Array(4)))).toBe("DMA_INVALID_ARGUMENT");
    dma.readListSync({ iova: [], length: [], count: 0 }, new Uint8Array(0)); // an empty list is a no-op
    // Lists longer than the scratch records at first grow it.
    const many = { iova: Array.from({ length: 600 }, (_, i) => 0x1000n + BigInt(i * 8)), length: Array(600).fill(8), count: 600 };
    const big = mem(600 * 8, 2);
    dma.writeListSync(many, big);
    expect(a.subarray(0, 600 * 8)).toEqual(big);
  });

  it("list writes through the dirty-page tracker mark every page of every range; list reads mark none", () => {
    const { table, dma } = setup();
    table.add({ iova: 0x10000n, size: 0x10000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x10000) } });
    const log = new DirtyLog();
    log.start(4096n, []);
    const tracked = trackDirtyPages(dma, log);
    const list = { iova: [0x10ff0n, 0x14000n, 0x1a000n], length: [0x20, 0x1000, 0x10], count: 3 };
    tracked.readListSync(list, new Uint8Array(0x1030));
    expect(log.report(0x10000n, 0x10000n, 4096n, 2).every((x) => x === 0)).toBe(true);
    tracked.writeListSync(list, new Uint8Array(0x1030));
    // Pages 0 and 1 (the first range straddles them), 4, and 10 of the 16 from 0x10000.
    expect(Array.from(log.report(0x10000n, 0x10000n, 4096n, 2))).toEqual([0b0001_0011, 0b0000_0100]);
    expect(code(() => tracked.writeListSync({ iova: [0x10000n, 0x30000n], length: [4, 4], count: 2 }, new Uint8Array(8)))).toBe("DMA_UNMAPPED");
    expect(log.report(0x10000n, 0x10000n, 4096n, 2).every((x) => x === 0)).toBe(true); // a failed write marks nothing
  });

  it("little-endian loads and stores of 8/16/32/64 bits, also straddling regions", () => {
    const { table, dma } = setup();
    const a = new Uint8Array(0x1000), b = new Uint8Array(0x1000);
    table.add({ iova: 0x1000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: a } });
    table.add({ iova: 0x2000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: b } });
    dma.writeU64(0x1ffcn, 0x0102030405060708n);
    expect([...a.subarray(0xffc), ...b.subarray(0, 4)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(dma.readU64(0x1ffcn)).toBe(0x0102030405060708n);
    expect(dma.readU32(0x1ffen)).toBe(0x03040506);
    expect(dma.readU16(0x1fffn)).toBe(0x0405);
    expect(dma.readU8(0x2000n)).toBe(4);
    dma.writeU16(0x1010n, 0xbeef);
    dma.writeU32(0x1020n, 0xdeadbeef);
    dma.writeU8(0x1030n, 0x1ff);
    dma.writeU64(0x1040n, -1n);
    expect([...a.subarray(0x10, 0x12)]).toEqual([0xef, 0xbe]);
    expect(dma.readU32(0x1020n)).toBe(0xdeadbeef);
    expect(a[0x30]).toBe(0xff);
    expect(dma.readU64(0x1040n)).toBe(0xffff_ffff_ffff_ffffn);
  });
});

describe("zero-copy maps", () => {
  it("returns views aliasing guest memory, one per contiguous piece", () => {
    const { table, dma } = setup();
    const a = new Uint8Array(0x1000), b = new Uint8Array(0x1000);
    table.add({ iova: 0x1000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: a } });
    table.add({ iova: 0x2000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: b } });
    const m = dma.map(0x1ff0n, 0x20, "from-device", () => {});
    expect(m.views.map((v) => v.length)).toEqual([0x10, 0x10]);
    m.views[0][0] = 0xaa;
    m.views[1][0xf] = 0xbb;
    expect(a[0xff0]).toBe(0xaa);
    expect(b[0xf]).toBe(0xbb);
    expect(dma.liveMappings).toBe(1);
    m.release();
    m.release();
    expect(m.live).toBe(false);
    expect(dma.liveMappings).toBe(0);
    expect(code(() => dma.map(0x1000n, 4, "from-device", undefined as never))).toBe("DMA_INVALID_ARGUMENT");
  });

  it("unmapping a region while a map is live fires the callback and revokes only maps over it", () => {
    const { table, dma } = setup();
    table.add({ iova: 0x1000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x1000) } });
    table.add({ iova: 0x2000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x1000) } });
    const fired: DmaMapping[] = [];
    const over = dma.map(0x1f00n, 0x200, "to-device", (m) => fired.push(m));
    const inA = dma.map(0x1000n, 0x10, "to-device", (m) => fired.push(m));
    const inB = dma.map(0x2800n, 0x10, "to-device", (m) => fired.push(m));
    table.remove(0x2000n, 0x1000n);
    expect(fired).toEqual([over, inB]);
    expect(over.live).toBe(false);
    expect(inB.live).toBe(false);
    expect(inA.live).toBe(true);
    expect(dma.liveMappings).toBe(1);
    over.release(); // releasing after invalidation is allowed
    // Permission shrink revokes maps too.
    table.protect(0x1000n, 0x1000n, 1);
    expect(fired).toEqual([over, inB, inA]);
    expect(dma.liveMappings).toBe(0);
  });

  it("a throwing invalidation callback does not stop the unmap", () => {
    const { table, dma } = setup();
    table.add({ iova: 0x1000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x1000) } });
    const other: DmaMapping[] = [];
    dma.map(0x1000n, 4, "to-device", () => { throw new Error("device bug"); });
    dma.map(0x1004n, 4, "to-device", (m) => other.push(m));
    expect(() => table.remove(0x1000n, 0x1000n)).toThrow("device bug");
    expect(other).toHaveLength(1);
    expect(table.regions()).toHaveLength(0);
    expect(dma.liveMappings).toBe(0);
  });
});

describe("regions without shared memory", () => {
  function hooked() {
    const backing = new Uint8Array(0x2000);
    const log: string[] = [];
    const hook: DmaMessageHook = {
      async read(iova, length) {
        log.push(`read ${iova.toString(16)} ${length}`);
        return backing.slice(Number(iova - 0x10000n), Number(iova - 0x10000n) + length);
      },
      async write(iova, data) {
        log.push(`write ${iova.toString(16)} ${data.length}`);
        backing.set(data, Number(iova - 0x10000n));
      },
    };
    return { backing, log, hook };
  }

  it("route through the message hook with the table's IOVA, mixed with shared memory", async () => {
    const { backing, log, hook } = hooked();
    const { table, dma } = setup(hook);
    const shared = new Uint8Array(0x1000);
    table.add({ iova: 0xf000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: shared } });
    table.add({ iova: 0x10000n, size: 0x2000n, perm: 3, backing: { kind: "message" } });
    const src = mem(0x100, 5);
    await dma.write(0xff80n, src);
    expect(shared.subarray(0xf80)).toEqual(src.subarray(0, 0x80));
    expect(backing.subarray(0, 0x80)).toEqual(src.subarray(0x80));
    const out = new Uint8Array(0x100);
    await dma.read(0xff80n, out);
    expect(out).toEqual(src);
    expect(log).toEqual(["write 10000 128", "read 10000 128"]);
    // Synchronous and zero-copy calls cannot reach message regions.
    expect(code(() => dma.readSync(0x10000n, new Uint8Array(4)))).toBe("DMA_NO_SHARED_MEMORY");
    expect(code(() => dma.map(0x10000n, 4, "to-device", () => {}))).toBe("DMA_NO_SHARED_MEMORY");
    expect(code(() => dma.writeSync(0xfff0n, new Uint8Array(0x20)))).toBe("DMA_NO_SHARED_MEMORY");
    expect(shared[0xff0]).toBe(src[0x70]); // the failed sync write changed nothing
    expect(dma.readU32(0xff80n)).toBe(src[0] | (src[1] << 8) | (src[2] << 16) | ((src[3] << 24) >>> 0));
  });

  it("fail clearly without a hook, and when the hook answers short", async () => {
    const { table, dma } = setup();
    table.add({ iova: 0x10000n, size: 0x1000n, perm: 3, backing: { kind: "message" } });
    await expect(dma.read(0x10000n, new Uint8Array(4))).rejects.toMatchObject({ code: "DMA_NO_SHARED_MEMORY" });
    const short = setup({ read: async () => new Uint8Array(2), write: async () => {} });
    short.table.add({ iova: 0x10000n, size: 0x1000n, perm: 3, backing: { kind: "message" } });
    await expect(short.dma.read(0x10000n, new Uint8Array(4))).rejects.toBeInstanceOf(DmaError);
  });
});

describe("device behind a vIOMMU", () => {
  it("translates through the host stage into the DMA table, and revokes maps on a vIOMMU unmap", () => {
    const core = new IommuCore();
    const table = new DmaMapTable(core, null);
    const guest = new Uint8Array(0x10000);
    table.add({ iova: 0x4000_0000n, size: 0x10000n, perm: 3, backing: { kind: "memory", bytes: guest } });
    // The guest's IOMMU maps device IOVA 0xfeed_0000 + 4 KiB pages in reverse order.
    const viommu = core.createDomain("host", (iova) => {
      const page = (iova - 0xfeed_0000n) >> 12n;
      if (page < 0n || page >= 16n) return null;
      return { translatedAddr: 0x4000_0000n + (15n - page) * 0x1000n, addrMask: 0xfffn, perm: 3, target: table.domain };
    });
    const dma = new DmaSpace({ table, iommu: viommu });
    dma.writeSync(0xfeed_0ff8n, mem(16, 1));
    expect(guest.subarray(0xfff8, 0x10000)).toEqual(mem(16, 1).subarray(0, 8));
    expect(guest.subarray(0xe000, 0xe008)).toEqual(mem(16, 1).subarray(8));
    const fired: DmaMapping[] = [];
    const m = dma.map(0xfeed_0000n, 0x100, "to-device", (x) => fired.push(x));
    const keep = dma.map(0xfeed_5000n, 0x100, "to-device", (x) => fired.push(x));
    viommu.notify({ type: "unmap", first: 0xfeed_0000n, last: 0xfeed_0fffn, translatedAddr: 0n, perm: 0 });
    expect(fired).toEqual([m]);
    expect(keep.live).toBe(true);
    // And the guest-RAM region going away revokes what is left.
    table.remove(0x4000_0000n, 0x10000n);
    expect(fired).toEqual([m, keep]);
    expect(code(() => dma.readU8(0xfeed_5000n))).toBe("DMA_UNMAPPED");
  });
});
