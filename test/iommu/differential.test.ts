// Differential property test: the wasm core and the plain-TypeScript reference
// (src/core/iommu/reference.ts) run the same random operation streams — region adds, removes,
// permission changes and scatter/gather translations — and must agree on every status, every
// output record, and the IOTLB hit/miss/fault counters (same data structure, same policy).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { IommuCore } from "../../src/core/iommu/iommu.js";
import { ReferenceIotlb } from "../../src/core/iommu/reference.js";

const M = 0xffffffffn;
type Op =
  | { op: "add"; iova: bigint; size: bigint; perm: number }
  | { op: "remove"; pick: number }
  | { op: "protect"; pick: number; perm: number }
  | { op: "xlate"; list: { iova: bigint; pick: number; inRegion: boolean; again: boolean; len: number; access: number }[]; outCap: number };

// Addresses cluster in a few windows (so lookups hit regions) with varied alignment.
const window = fc.constantFrom(0n, 0x20_0000n, 0x4000_0000n, 0xffff_fff0_0000_0000n);
const align = fc.constantFrom(1n, 0x200n, 0x1000n, 0x20_0000n);
// Half the addresses fall in a small span, so cached entries are touched again after
// evictions (that is where the victim choice shows in the counters).
const offset = fc.oneof(fc.bigInt({ min: 0n, max: 0x80_0000n }), fc.bigInt({ min: 0n, max: 0x6000n }));
const addr = fc.tuple(window, offset, align).map(([w, o, a]) => w + (o / a) * a);
// Mostly valid elements; now and then a zero length or an access outside 1..3, which must be
// rejected with the same failing index wherever it falls in a run of hits.
const lenArb = fc.oneof({ weight: 20, arbitrary: fc.integer({ min: 1, max: 0x3000 }) }, { weight: 2, arbitrary: fc.constant(0x40_0000) }, { weight: 1, arbitrary: fc.constant(0) });
const accessArb = fc.oneof({ weight: 10, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 4, 5, 0xffff_ffff) });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant("add" as const), iova: addr, size: fc.oneof(fc.bigInt({ min: 1n, max: 0x3000n }), fc.constantFrom(0x1000n, 0x20_0000n, 0x40_0000n)), perm: fc.integer({ min: 0, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("remove" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("protect" as const), pick: fc.nat(), perm: fc.integer({ min: 0, max: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("xlate" as const), list: fc.array(fc.record({ iova: addr, pick: fc.nat(), inRegion: fc.boolean(), again: fc.boolean(), len: lenArb, access: accessArb }), { minLength: 1, maxLength: 12 }), outCap: fc.oneof({ weight: 3, arbitrary: fc.constant(64) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 6 }) }) }) },
);

describe("wasm IOMMU core vs TypeScript reference", () => {
  it("agree on statuses, segments and counters for random tables and access lists", () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), fc.constantFrom(1, 4, 256), (ops, sets) => {
        const core = new IommuCore();
        const d = core.createDomain("map-table", undefined, sets);
        const ref = new ReferenceIotlb(sets);
        const live: { iova: bigint; last: bigint }[] = [];
        const inPtr = core.x.iommu_alloc(16 * 12);
        const outPtr = core.x.iommu_alloc(16 * 64);
        let slot = 0;
        for (const o of ops) {
          if (o.op === "add") {
            const last = o.iova + o.size - 1n;
            if (last > 0xffff_ffff_ffff_ffffn) continue;
            const a = core.x.iommu_region_add(d.id, Number(o.iova & M), Number(o.iova >> 32n), Number(last & M), Number(last >> 32n), slot, o.perm);
            const b = ref.addRegion(o.iova, last, slot, o.perm);
            expect(a).toBe(b);
            if (a === 0) live.push({ iova: o.iova, last });
            slot++;
          } else if (o.op === "remove" || o.op === "protect") {
            // Mostly existing regions, sometimes a partial range (must be ENOENT in both).
            const r = live.length ? live[o.pick % live.length] : { iova: 0x1000n, last: 0x1fffn };
            const last = o.pick % 5 === 0 && r.last > r.iova ? r.last - 1n : r.last;
            const a = o.op === "remove"
              ? core.x.iommu_region_remove(d.id, Number(r.iova & M), Number(r.iova >> 32n), Number(last & M), Number(last >> 32n))
              : core.x.iommu_region_protect(d.id, Number(r.iova & M), Number(r.iova >> 32n), Number(last & M), Number(last >> 32n), o.perm);
            const b = o.op === "remove" ? ref.removeRegion(r.iova, last) : ref.protectRegion(r.iova, last, o.perm);
            expect(a).toBe(b);
            if (a === 0 && o.op === "remove") live.splice(live.indexOf(r), 1);
          } else {
            const input = new Uint32Array(o.list.length * 4);
            let prevStart = 0n;
            let prevEnd = 0n;
            o.list.forEach((e, i) => {
              // Mostly inside a live region (so lookups hit, fill and evict), else anywhere; half
              // the time right after the previous element, so runs of IOTLB hits (the batched
              // fast path) and contiguous pieces (merging) are common.
              let iova = e.iova;
              if (e.again && i > 0) {
                // Right after it (contiguous), on it again, or a little further.
                iova = [prevEnd, prevStart, prevEnd + BigInt(e.pick % 0x2000)][e.pick % 3];
              } else if (e.inRegion && live.length) {
                const r = live[e.pick % live.length];
                iova = r.iova + (e.iova % (r.last - r.iova + 1n));
              }
              if (iova > 0xffff_ffff_ffff_ffffn) iova = e.iova;
              prevStart = iova;
              prevEnd = iova + BigInt(e.len);
              const len = Math.min(e.len, Number(0xffff_ffff_ffff_ffffn - iova) + 1);
              input.set([Number(iova & M), Number(iova >> 32n), len, e.access], i * 4);
            });
            new Uint32Array(core.ref.memory.buffer).set(input, inPtr >>> 2);
            const refOut = new Uint32Array(64 * 4);
            const a = core.x.iommu_translate_list(d.id, inPtr, o.list.length, outPtr, o.outCap);
            const b = ref.translateList(input, o.list.length, refOut, o.outCap);
            expect(a).toBe(b);
            if (a >= 0) {
              expect([...new Uint32Array(core.ref.memory.buffer, outPtr, a * 4)]).toEqual([...refOut.subarray(0, a * 4)]);
            } else {
              expect(new Uint32Array(core.ref.memory.buffer)[(core.ioPtr + 16) >>> 2]).toBe(ref.failIndex);
            }
          }
          const c = d.counters();
          expect([c.hits, c.misses, c.faultsUnmapped, c.faultsPermission]).toEqual([ref.hits, ref.misses, ref.faultsUnmapped, ref.faultsPermission]);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("matches a brute-force oracle of which region holds each byte", () => {
    // Brute force: the region containing the byte decides; nothing about IOTLB structure.
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 64 * 0x800 - 1 }), fc.integer({ min: 1, max: 0x2000 })), { minLength: 1, maxLength: 30 }),
        (blocks, probes) => {
          const core = new IommuCore();
          const d = core.createDomain("map-table", undefined, 4);
          // Regions: 0x800-byte blocks (odd alignment), slot = index, perm RW.
          const regions = blocks.map((b, slot) => ({ iova: BigInt(b * 0x800 + 0x1000_0000), slot }));
          for (const r of regions) {
            const last = r.iova + 0x7ffn;
            expect(core.x.iommu_region_add(d.id, Number(r.iova), 0, Number(last), 0, r.slot, 3)).toBe(0);
          }
          for (const [off, len] of probes) {
            const iova = 0x1000_0000n + BigInt(off);
            const end = iova + BigInt(len);
            // Expected: the list of (slot, offset, length) pieces, or the first unmapped byte.
            const want: [number, number, number][] = [];
            let ok = true;
            for (let a = iova; a < end; ) {
              const r = regions.find((r) => a >= r.iova && a < r.iova + 0x800n);
              if (!r) { ok = false; break; }
              const take = Number((r.iova + 0x800n < end ? r.iova + 0x800n : end) - a);
              const prev = want[want.length - 1];
              if (prev && prev[0] === r.slot && prev[1] + prev[2] === Number(a - r.iova)) prev[2] += take;
              else want.push([r.slot, Number(a - r.iova), take]);
              a += BigInt(take);
            }
            let got: [number, number, number][] | "fault";
            try {
              const space = d;
              got = [];
              let a = iova;
              let left = len;
              while (left > 0) {
                const t = space.translate(a, left, 1);
                const slot = Number(t.address >> 40n), offset = Number(t.address & 0xff_ffff_ffffn);
                const prev = got[got.length - 1];
                if (prev && prev[0] === slot && prev[1] + prev[2] === offset) prev[2] += t.length;
                else got.push([slot, offset, t.length]);
                a += BigInt(t.length);
                left -= t.length;
              }
            } catch {
              got = "fault";
            }
            expect(got).toEqual(ok ? want : "fault");
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("agree on the victim choice when a set overflows (same counters under cyclic and random reuse)", () => {
    for (const sets of [1, 2]) {
      const core = new IommuCore();
      const d = core.createDomain("map-table", undefined, sets);
      const ref = new ReferenceIotlb(sets);
      for (let i = 0; i < 12; i++) {
        const a = BigInt(0x10000 + i * 0x1000);
        expect(core.x.iommu_region_add(d.id, Number(a), 0, Number(a) + 0xfff, 0, i, 3)).toBe(0);
        ref.addRegion(a, a + 0xfffn, i, 3);
      }
      let s = 12345;
      const order = [0, 1, 2, 3, 4, 0, 1, 5, 6, 2, 0];
      for (let k = 0; k < 200; k++) order.push((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % 12);
      for (const i of order) {
        const a = 0x10000 + i * 0x1000;
        d.translate(BigInt(a), 1, 1);
        ref.translate(a, 0, 1, 1);
        const c = d.counters();
        expect([c.hits, c.misses]).toEqual([ref.hits, ref.misses]);
      }
      expect(ref.hits).toBeGreaterThan(0);
      expect(ref.misses).toBeGreaterThan(12);
    }
  });
});
