// Translation semantics of the wasm IOMMU core (QEMU address_space_translate_iommu):
// address arithmetic for every page size and offset, length clamping, chained stages,
// "not mapped" vs "no permission", IOTLB caching and invalidation, notifier cropping.
import { describe, expect, it } from "vitest";
import { IommuCore, type IommuDomain, type IommuEvent, type IommuTlbEntry } from "../../src/core/iommu/iommu.js";
import { DmaError } from "../../src/core/dma/errors.js";

const SEG = 1n << 40n;

/** A map-table domain with one region per slot: slot s covers [base_s, base_s + size). */
function mapTable(core: IommuCore, regions: [iova: bigint, size: bigint, perm: number][]): IommuDomain {
  const d = core.createDomain("map-table");
  regions.forEach(([iova, size, perm], slot) => {
    const last = iova + size - 1n;
    const st = core.x.iommu_region_add(d.id, Number(iova & 0xffffffffn), Number(iova >> 32n), Number(last & 0xffffffffn), Number(last >> 32n), slot, perm);
    expect(st).toBe(0);
  });
  return d;
}

/** A host domain answering from a list of IOMMUTLBEntry-like pages; counts callback calls. */
function hostDomain(core: IommuCore, pages: { iova: bigint; mask: bigint; to: bigint; perm: 0 | 1 | 2 | 3 }[], target: () => IommuDomain) {
  const calls: bigint[] = [];
  const d = core.createDomain("host", (iova): IommuTlbEntry | null => {
    calls.push(iova);
    const p = pages.find((p) => (iova & ~p.mask) === (p.iova & ~p.mask));
    return p ? { translatedAddr: p.to, addrMask: p.mask, perm: p.perm, target: target() } : null;
  });
  return { d, calls };
}

describe("translation arithmetic", () => {
  // Terminal stage: identity-like table (slot 0 at IOVA 0, 1 GiB), so outputs read as plain numbers.
  const PAGE_SIZES: [string, bigint][] = [
    ["1 B", 1n], ["512 B", 512n], ["4 KiB", 1n << 12n], ["64 KiB", 1n << 16n], ["2 MiB", 1n << 21n],
    ["1 GiB", 1n << 30n], ["4 GiB", 1n << 32n], ["2^39 B", 1n << 39n],
  ];
  for (const [name, size] of PAGE_SIZES) {
    it(`maps every offset class of a ${name} page: (translated & ~mask) | (iova & mask), length to the page end`, () => {
      const core = new IommuCore();
      const table = mapTable(core, [[0n, 1n << 39n, 3]]);
      const mask = size - 1n;
      const pageIova = 0x1234n * (size > 1n << 20n ? size : 1n << 21n) * 4n; // aligned, far from 0
      // translatedAddr carries garbage under the mask: it must be ignored.
      const to = ((3n * size) % (1n << 39n)) | (mask & 0x5a5a5a5an);
      const { d } = hostDomain(core, [{ iova: pageIova, mask, to, perm: 3 }], () => table);
      const offsets = [0n, 1n, mask >> 1n, mask].filter((o, i, a) => o <= mask && a.indexOf(o) === i);
      for (const off of offsets) {
        const want = ((to & ~mask) | off);
        const r = d.translate(pageIova + off, 0xffffffff, 1);
        expect(r.address).toBe(want); // table slot 0 at IOVA 0: segment address == input
        const toEnd = size - off;
        expect(r.length).toBe(Number(toEnd < 0xffffffffn ? toEnd : 0xffffffffn));
        // A request shorter than the rest of the page is not clamped.
        expect(d.translate(pageIova + off, 1, 2).length).toBe(1);
      }
    });
  }

  it("picks the largest aligned block of a map-table region (4K, 2M and 1G entries side by side)", () => {
    const core = new IommuCore();
    // slot 0: 2 MiB-aligned but only 2 MiB + 4 KiB long; slot 1: 1 GiB at a 1 GiB boundary; slot 2: 4 KiB-aligned.
    const d = mapTable(core, [
      [0x20_0000n, 0x20_1000n, 3],
      [0x4000_0000n, 0x4000_0000n, 3],
      [0x8000_1000n, 0x3000n, 3],
    ]);
    expect(d.translate(0x20_0010n, 0xffffffff, 1)).toEqual({ address: 0x10n, length: 0x20_0000 - 0x10 });
    expect(d.translate(0x40_0000n, 0xffffffff, 1)).toEqual({ address: 0x20_0000n, length: 0x1000 });
    expect(d.translate(0x4000_0000n + 0x1234_5678n, 0xffffffff, 1)).toEqual({ address: SEG + 0x1234_5678n, length: 0x4000_0000 - 0x1234_5678 });
    expect(d.translate(0x8000_2ff0n, 0xffffffff, 1)).toEqual({ address: 2n * SEG + 0x1ff0n, length: 0x10 });
    expect(d.cachedEntries()).toBe(4);
  });

  it("follows chained translations and clamps the length at every stage", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0x1000_0000n, 0x1000_0000n, 3]]);
    // stage 2: 2 MiB pages IOVA2 0x4000_0000.. → table IOVA 0x1000_0000..
    const s2 = hostDomain(core, [{ iova: 0x4000_0000n, mask: 0x1f_ffffn, to: 0x1020_0000n, perm: 3 }], () => table);
    // stage 1: 4 KiB page 0xabc000 → stage-2 IOVA 0x4000_3000 (read-only)
    const s1 = hostDomain(core, [{ iova: 0xabc000n, mask: 0xfffn, to: 0x4000_3000n, perm: 1 }], () => s2.d);
    const r = s1.d.translate(0xabc123n, 0x10000, 1);
    expect(r).toEqual({ address: 0x20_3123n, length: 0x1000 - 0x123 });
    // The stage-1 permission is the limit: write fails with a permission fault, not "unmapped".
    expect(() => s1.d.translate(0xabc123n, 4, 2)).toThrow(expect.objectContaining({ code: "DMA_PERMISSION" }));
    // A stage-2 hole is reported as unmapped.
    const s1b = hostDomain(core, [{ iova: 0x1000n, mask: 0xfffn, to: 0x5000_0000n, perm: 3 }], () => s2.d);
    expect(() => s1b.d.translate(0x1000n, 4, 1)).toThrow(expect.objectContaining({ code: "DMA_UNMAPPED" }));
  });

  it("rejects cycles with DMA_CHAIN_TOO_DEEP", () => {
    const core = new IommuCore();
    let a!: IommuDomain;
    const b = hostDomain(core, [{ iova: 0n, mask: 0xfffn, to: 0n, perm: 3 }], () => a);
    a = hostDomain(core, [{ iova: 0n, mask: 0xfffn, to: 0n, perm: 3 }], () => b.d).d;
    expect(() => a.translate(0x10n, 4, 1)).toThrow(expect.objectContaining({ code: "DMA_CHAIN_TOO_DEEP" }));
  });

  it("rejects invalid entries from the callback (mask not 2^k-1)", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0n, 0x10000n, 3]]);
    const { d } = hostDomain(core, [{ iova: 0n, mask: 0xff0n, to: 0n, perm: 3 }], () => table);
    expect(() => d.translate(0n, 4, 1)).toThrow(expect.objectContaining({ code: "DMA_INVALID_ARGUMENT" }));
  });

  it("rejects zero length, bad access and ranges wrapping past 2^64", () => {
    const core = new IommuCore();
    const d = mapTable(core, [[0xffff_ffff_ffff_0000n, 0x1_0000n, 3]]);
    expect(() => d.translate(0xffff_ffff_ffff_fff0n, 0, 1)).toThrow(DmaError);
    expect(() => d.translate(0xffff_ffff_ffff_fff0n, 4, 0)).toThrow(DmaError);
    expect(() => d.translate(0xffff_ffff_ffff_fff0n, 0x11, 1)).toThrow(expect.objectContaining({ code: "DMA_INVALID_ARGUMENT" }));
    // The last byte of the address space is reachable.
    expect(d.translate(0xffff_ffff_ffff_fff0n, 0x10, 1)).toEqual({ address: 0xfff0n, length: 0x10 });
  });
});

describe("faults and counters", () => {
  it("tells 'not mapped' from 'mapped without this permission' and counts hits, misses and faults", () => {
    const core = new IommuCore();
    const d = mapTable(core, [[0x1000n, 0x1000n, 1], [0x3000n, 0x1000n, 2]]);
    expect(() => d.translate(0x2000n, 4, 1)).toThrow(expect.objectContaining({ code: "DMA_UNMAPPED", errno: 14 }));
    expect(() => d.translate(0x1000n, 4, 2)).toThrow(expect.objectContaining({ code: "DMA_PERMISSION", errno: 13 }));
    expect(() => d.translate(0x3000n, 4, 1)).toThrow(expect.objectContaining({ code: "DMA_PERMISSION" }));
    expect(() => d.translate(0x1000n, 4, 3)).toThrow(expect.objectContaining({ code: "DMA_PERMISSION" }));
    d.translate(0x1004n, 4, 1);
    d.translate(0x3004n, 4, 2);
    expect(d.counters()).toEqual({ hits: 3, misses: 3, faultsUnmapped: 1, faultsPermission: 3 });
    d.resetCounters();
    expect(d.counters()).toEqual({ hits: 0, misses: 0, faultsUnmapped: 0, faultsPermission: 0 });
  });

  it("does not cache 'not mapped' answers (IOMMU_NONE) and reports a throwing callback", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0n, 0x10000n, 3]]);
    let calls = 0;
    let answer: "none" | "throw" | "ok" = "none";
    const d = core.createDomain("host", () => {
      calls++;
      if (answer === "throw") throw new Error("VMM went away");
      return answer === "none" ? null : { translatedAddr: 0n, addrMask: 0xfffn, perm: 3, target: table };
    });
    expect(() => d.translate(0x10n, 1, 1)).toThrow(expect.objectContaining({ code: "DMA_UNMAPPED" }));
    answer = "throw";
    const err = (() => { try { d.translate(0x10n, 1, 1); } catch (e) { return e as DmaError; } })();
    expect(err?.code).toBe("DMA_UNMAPPED");
    expect((err?.cause as Error).message).toBe("VMM went away");
    answer = "ok";
    expect(d.translate(0x10n, 1, 1).address).toBe(0x10n);
    expect(d.translate(0x20n, 1, 1).address).toBe(0x20n);
    expect(calls).toBe(3); // the last lookup hit the cache
  });

  it("refuses table changes from inside a translation callback (DMA_BUSY)", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0n, 0x10000n, 3]]);
    let inner: number | undefined;
    const d = core.createDomain("host", () => {
      inner = core.x.iommu_region_add(table.id, 0x100000, 0, 0x100fff, 0, 9, 3);
      return { translatedAddr: 0n, addrMask: 0xfffn, perm: 3, target: table };
    });
    d.translate(0n, 1, 1);
    expect(inner).toBe(8); // S_BUSY
    expect(core.x.iommu_region_count(table.id)).toBe(1);
  });
});

describe("batched translation (iommu_translate_list)", () => {
  // Records as the host writes them: iova u64, length u32, access u32; results: segment
  // address u64, length u32, 0.
  function list(core: IommuCore, d: IommuDomain, recs: [iova: bigint, len: number, access: number][], outCap: number) {
    const inPtr = core.x.iommu_alloc(16 * recs.length + 16);
    const outPtr = core.x.iommu_alloc(16 * outCap + 32);
    const m = core.mem32();
    recs.forEach(([iova, len, access], i) => m.set([Number(iova & 0xffffffffn), Number(iova >> 32n), len, access], (inPtr >>> 2) + i * 4));
    // A canary after the output capacity: the core never writes past outCap records.
    m.fill(0xdeadbeef, (outPtr >>> 2) + outCap * 4, (outPtr >>> 2) + outCap * 4 + 8);
    const n: number = core.x.iommu_translate_list(d.id, inPtr, recs.length, outPtr, outCap);
    const mem = core.mem32();
    const canary = [...mem.subarray((outPtr >>> 2) + outCap * 4, (outPtr >>> 2) + outCap * 4 + 8)];
    expect(canary).toEqual(Array(8).fill(0xdeadbeef));
    const segs: [bigint, number][] = [];
    for (let i = 0; i < Math.max(n, 0); i++) {
      const w = (outPtr >>> 2) + i * 4;
      segs.push([(BigInt(mem[w + 1]) << 32n) | BigInt(mem[w]), mem[w + 2]]);
    }
    return { n, segs, failIndex: core.ioWord(16) };
  }

  it("translates runs of hits, stopping for misses, entry ends and faults with the failing index", () => {
    const core = new IommuCore();
    // Slot 0: 64 KiB at 0x10000 (one 64 KiB entry); slot 1: 8 KiB read-only at 0x40000.
    const d = mapTable(core, [[0x10000n, 0x10000n, 3], [0x40000n, 0x2000n, 1]]);
    const warm = list(core, d, [[0x10000n, 1, 1], [0x40000n, 1, 1]], 4);
    expect(warm.n).toBe(2);
    d.resetCounters();
    // A record whose tail leaves the region: its first piece hits, the rest is not mapped.
    const r = list(core, d, [[0x10100n, 0x100, 1], [0x40010n, 0x10, 1], [0x41ff0n, 0x20, 1]], 8);
    expect(r).toMatchObject({ n: -1, failIndex: 2 });
    const ok = list(core, d, [
      [0x10100n, 0x100, 1],
      [0x10200n, 0x100, 2], // contiguous: merged
      [0x40010n, 0x10, 1], // another region
      [0x1fff0n, 0x10, 3], // the last bytes of slot 0
      [0x1fff8n, 0x8, 1], // overlapping the previous piece: a new record
    ], 8);
    expect(ok.segs).toEqual([[0x100n, 0x200], [SEG + 0x10n, 0x10], [0xfff0n, 0x10], [0xfff8n, 0x8]]);
    // Faults and invalid records inside a run of hits report their own index.
    expect(list(core, d, [[0x10000n, 4, 1], [0x40000n, 4, 2]], 8)).toMatchObject({ n: -2, failIndex: 1 });
    for (const [len, access] of [[0, 1], [4, 0], [4, 4], [4, 0xffffffff]]) {
      expect(list(core, d, [[0x10000n, 4, 1], [0x10010n, 4, 1], [0x10020n, len, access]], 8)).toMatchObject({ n: -5, failIndex: 2 });
    }
    // Every lookup is counted once: 3 + 5 + 2 + 4 * 2 hits; the tail's miss; the faults.
    expect(d.counters()).toEqual({ hits: 18, misses: 1, faultsUnmapped: 1, faultsPermission: 1 });
  });

  it("fills the output exactly to its capacity (merges need no room) and reports S_OUT_FULL past it", () => {
    const core = new IommuCore();
    const d = mapTable(core, [[0x10000n, 0x10000n, 3]]);
    list(core, d, [[0x10000n, 1, 1]], 1);
    // Three separate pieces, the second merging two records: 3 outputs fit 3 slots.
    const recs: [bigint, number, number][] = [[0x10000n, 0x10, 1], [0x10100n, 0x10, 1], [0x10110n, 0x10, 1], [0x10400n, 0x10, 1]];
    expect(list(core, d, recs, 3).segs).toEqual([[0n, 0x10], [0x100n, 0x20], [0x400n, 0x10]]);
    expect(list(core, d, recs, 2)).toMatchObject({ n: -10, failIndex: 3 });
    expect(list(core, d, recs, 1)).toMatchObject({ n: -10, failIndex: 1 });
    expect(list(core, d, recs, 0)).toMatchObject({ n: -10, failIndex: 0 });
  });

  it("merges contiguous pieces up to 2^32 - 1 bytes, then starts a new output record", () => {
    const core = new IommuCore();
    // One 16 GiB region: a single 2^34-byte entry.
    const d = mapTable(core, [[0x4_0000_0000n, 0x4_0000_0000n, 3]]);
    const G = 0x4000_0000; // 1 GiB
    const base = 0x4_0000_0000n;
    const recs: [bigint, number, number][] = [[base, 3 * G, 1], [base + 3n * BigInt(G), G - 1, 1], [base + 4n * BigInt(G) - 1n, 1, 1], [base + 4n * BigInt(G), 5, 1]];
    list(core, d, [[base, 1, 1]], 1);
    d.resetCounters();
    const r = list(core, d, recs, 4);
    // 3 GiB + (1 GiB - 1) = 2^32 - 1 merged; one more byte does not fit the u32 length.
    expect(r.segs).toEqual([[0n, 0xffff_ffff], [0xffff_ffffn, 6]]);
    expect(d.counters()).toMatchObject({ hits: 4, misses: 0 });
  });
});

describe("IOTLB", () => {
  it("caches host answers per entry, across page sizes, until invalidated by range or globally", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0n, 1n << 39n, 3]]);
    const { d, calls } = hostDomain(core, [
      { iova: 0x1000n, mask: 0xfffn, to: 0x9000n, perm: 3 },
      { iova: 0x20_0000n, mask: 0x1f_ffffn, to: 0x60_0000n, perm: 3 },
      { iova: 0x4000_0000n, mask: 0x3fff_ffffn, to: 0x8000_0000n, perm: 3 },
    ], () => table);
    const probeAll = () => [0x1008n, 0x20_0008n, 0x3f_fff8n, 0x4000_0008n, 0x7fff_fff8n].map((a) => d.translate(a, 8, 1).address);
    expect(probeAll()).toEqual([0x9008n, 0x60_0008n, 0x7f_fff8n, 0x8000_0008n, 0xbfff_fff8n]);
    expect(calls.length).toBe(3);
    probeAll();
    expect(calls.length).toBe(3);
    expect(d.counters().hits).toBe(7);
    // Range invalidation drops exactly the entries that meet the range.
    d.invalidate(0x3f_ffffn, 0x3f_ffffn);
    probeAll();
    expect(calls.length).toBe(4);
    expect(calls[3]).toBe(0x20_0008n);
    d.invalidateAll();
    expect(d.cachedEntries()).toBe(0);
    probeAll();
    expect(calls.length).toBe(7);
  });

  it("stays correct when sets overflow (more pages than ways map to the cache)", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0n, 1n << 39n, 3]]);
    const d = core.createDomain("host", (iova) => ({ translatedAddr: (iova ^ 0x5555_5000n) & ~0xfffn, addrMask: 0xfffn, perm: 3, target: table }), 2);
    for (let round = 0; round < 3; round++) {
      for (let p = 0n; p < 64n; p++) {
        const iova = p * 0x1000n + 0x10n;
        expect(d.translate(iova, 8, 1).address).toBe(((iova ^ 0x5555_5000n) & ~0xfffn) | 0x10n);
      }
    }
    expect(d.cachedEntries()).toBe(8); // 2 sets × 4 ways
  });

  it("a MAP or UNMAP notification purges cached entries over its range (permission change)", () => {
    const core = new IommuCore();
    const table = mapTable(core, [[0n, 1n << 39n, 3]]);
    let perm: 1 | 3 = 3;
    const d = core.createDomain("host", () => ({ translatedAddr: 0x7000n, addrMask: 0xfffn, perm, target: table }));
    d.translate(0x1000n, 4, 2);
    perm = 1;
    expect(d.translate(0x1000n, 4, 2).address).toBe(0x7000n); // stale until the VMM says so
    d.notify({ type: "map", first: 0x1000n, last: 0x1fffn, translatedAddr: 0x7000n, perm: 1 });
    expect(() => d.translate(0x1000n, 4, 2)).toThrow(expect.objectContaining({ code: "DMA_PERMISSION" }));
    perm = 3;
    d.notify({ type: "unmap", first: 0n, last: 0xffffn, translatedAddr: 0n, perm: 0 });
    expect(d.translate(0x1000n, 4, 2).address).toBe(0x7000n);
  });
});

describe("notifiers", () => {
  it("delivers map/unmap events over inclusive ranges, cropped to each listener's range", () => {
    const core = new IommuCore();
    const table = mapTable(core, []);
    const d = core.createDomain("host", () => ({ translatedAddr: 0n, addrMask: 0xfffn, perm: 3, target: table }));
    const a: IommuEvent[] = [], b: IommuEvent[] = [], c: IommuEvent[] = [];
    d.listen({ map: true, unmap: true }, 0x1800n, 0x27ffn, (e) => a.push(e));
    d.listen({ unmap: true }, 0n, 0xffff_ffff_ffff_ffffn, (e) => b.push(e));
    const stop = d.listen({ map: true }, 0x3000n, 0x3fffn, (e) => c.push(e));
    d.notify({ type: "map", first: 0x1000n, last: 0x2fffn, translatedAddr: 0x10_0000n, perm: 3 });
    d.notify({ type: "unmap", first: 0x1000n, last: 0x1fffn, translatedAddr: 0x10_0000n, perm: 3 });
    d.notify({ type: "unmap", first: 0x2800n, last: 0x2fffn, translatedAddr: 0n, perm: 0 });
    expect(a).toEqual([
      { type: "map", first: 0x1800n, last: 0x27ffn, translatedAddr: 0x10_0800n, perm: 3 },
      { type: "unmap", first: 0x1800n, last: 0x1fffn, translatedAddr: 0x10_0800n, perm: 3 },
    ]);
    expect(b.map((e) => [e.first, e.last])).toEqual([[0x1000n, 0x1fffn], [0x2800n, 0x2fffn]]);
    expect(c).toEqual([]);
    stop();
    d.notify({ type: "map", first: 0x3000n, last: 0x3fffn, translatedAddr: 0n, perm: 1 });
    expect(c).toEqual([]);
  });

  it("crops at the ends of the 64-bit space", () => {
    const core = new IommuCore();
    const d = mapTable(core, []);
    const got: IommuEvent[] = [];
    d.listen({ map: true, unmap: true }, 0xffff_ffff_ffff_f000n, 0xffff_ffff_ffff_ffffn, (e) => got.push(e));
    d.notify({ type: "unmap", first: 0n, last: 0xffff_ffff_ffff_ffffn, translatedAddr: 0n, perm: 0 });
    expect(got).toEqual([{ type: "unmap", first: 0xffff_ffff_ffff_f000n, last: 0xffff_ffff_ffff_ffffn, translatedAddr: 0xffff_ffff_ffff_f000n, perm: 0 }]);
  });

  it("listeners removed from the top or the middle and added again still get every event", () => {
    const core = new IommuCore();
    const d = mapTable(core, []);
    const got: string[] = [];
    const ev = (n: number) => d.notify({ type: "map", first: BigInt(n) * 0x1000n, last: BigInt(n) * 0x1000n + 0xfffn, translatedAddr: 0n, perm: 3 });
    const stops = ["a", "b", "c", "d"].map((name) => d.listen({ map: true }, 0n, 0xffff_ffffn, () => got.push(name)));
    stops[3](); // the top slot
    stops[1](); // a middle one
    ev(1);
    expect(got.splice(0)).toEqual(["a", "c"]);
    stops[2](); // now the top two are free
    const e = d.listen({ map: true }, 0n, 0xffff_ffffn, () => got.push("e")); // takes the lowest free slot
    const f = d.listen({ map: true }, 0n, 0xffff_ffffn, () => got.push("f"));
    const g = d.listen({ map: true }, 0n, 0xffff_ffffn, () => got.push("g")); // above the old end
    ev(2);
    expect(got.splice(0).sort()).toEqual(["a", "e", "f", "g"]);
    stops[0]();
    e();
    f();
    ev(3);
    expect(got.splice(0)).toEqual(["g"]);
    g();
    ev(4);
    expect(got).toEqual([]);
  });

  it("rejects inverted ranges and unknown event types", () => {
    const core = new IommuCore();
    const d = mapTable(core, []);
    expect(() => d.listen({ map: true }, 0x2000n, 0x1000n, () => {})).toThrow(DmaError);
    expect(() => d.listen({}, 0n, 1n, () => {})).toThrow(DmaError);
    expect(() => d.notify({ type: "unmap", first: 2n, last: 1n, translatedAddr: 0n, perm: 0 })).toThrow(DmaError);
  });
});
