// Property tests: random region trees and random access streams run on the wasm core and
// on the reference model must agree byte for byte, status for status, callback for callback.
// Topologies include ROM devices (ROMD mode toggled; their writes update their RAM as a device
// would) and regions unmapped and destroyed inside an open transaction, probed through the
// flat view that is still current until the commit (their release is deferred to it).
// The rendered flat view is also checked against a brute-force resolver (world.ts) written from
// the memory.rst rules (highest priority first, newest first among equals, containers
// transparent, aliases windowed, readonly inherited), independent of both engines.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AddressSpace } from "../../../src/core/memory/index.js";
import { U64, build, flatNames, resolve, runAccesses } from "./world.js";

const topoArb = fc.array(fc.tuple(fc.nat(12), fc.nat(), fc.nat(), fc.nat(), fc.integer({ min: -2, max: 2 })), { minLength: 1, maxLength: 28 });
const accessArb = fc.array(fc.tuple(fc.nat(4), fc.nat(), fc.nat(3), fc.nat(0xffff)), { minLength: 1, maxLength: 80 });

describe("wasm core vs reference model", () => {
  it("same topology errors, same flat view, same bytes, statuses and device callbacks", () => {
    fc.assert(
      fc.property(topoArb, accessArb, (topo, accesses) => {
        const a = build("wasm", topo);
        const b = build("reference", topo);
        expect(a.errors).toEqual(b.errors);
        expect(flatNames(a.w.as)).toEqual(flatNames(b.w.as));
        expect(a.w.snapshots).toEqual(b.w.snapshots);
        expect(a.w.probes).toEqual(b.w.probes);
        const ra = runAccesses(a.w, a.descs, accesses);
        const rb = runAccesses(b.w, b.descs, accesses);
        expect(ra).toEqual(rb);
        expect(a.w.log).toEqual(b.w.log);
        // RAM contents agree afterwards.
        a.w.regions.forEach((r, i) => {
          if (a.w.destroyed.has(i)) return;
          if (r.kind === "ram" || r.kind === "rom" || r.kind === "rom-device") expect(Buffer.from(r.ramBytes()).equals(Buffer.from(b.w.regions[i].ramBytes()))).toBe(true);
        });
      }),
      { numRuns: 150 },
    );
  });

  it("the rendered flat view matches a brute-force resolver at every boundary", () => {
    fc.assert(
      fc.property(topoArb, (topo) => {
        const { w, root, descs } = build("wasm", topo);
        const view = w.as.flatView();
        const probes = new Set<bigint>([0n, U64 - 1n]);
        for (const r of view) for (const p of [r.start - 1n, r.start, r.last, r.last + 1n]) if (p >= 0n && p < U64) probes.add(p);
        for (const d of descs) for (const p of [d.addr, d.addr + d.size - 1n, d.addr + d.size]) if (p < U64) probes.add(p);
        for (const addr of probes) {
          const expected = resolve(root, addr, false);
          const hit = view.find((r) => r.start <= addr && addr <= r.last);
          const got = hit ? { name: hit.region!.name, offset: hit.offsetInRegion + (addr - hit.start), readonly: hit.readonly } : null;
          expect(got, `address 0x${addr.toString(16)}`).toEqual(expected);
        }
        // The views (address spaces rooted at inner regions) resolve like their subtree.
        for (const v of w.views) {
          const d = descs[v.index];
          let vview: ReturnType<AddressSpace["flatView"]>;
          try {
            vview = v.as.flatView();
          } catch (e) {
            // destroy() takes a region's own view down first (even when the region then
            // turns out to be in use)
            expect((e as { code?: string }).code).toBe("DESTROYED");
            continue;
          }
          const vprobes = new Set<bigint>([0n, d.size - 1n]);
          for (const r of vview) for (const p of [r.start - 1n, r.start, r.last, r.last + 1n]) if (p >= 0n && p < d.size) vprobes.add(p);
          for (const c of d.children) for (const p of [c.addr, c.addr + c.size - 1n, c.addr + c.size]) if (p < d.size) vprobes.add(p);
          for (const addr of vprobes) {
            const expected = resolve(d, addr, false);
            const hit = vview.find((r) => r.start <= addr && addr <= r.last);
            const got = hit ? { name: hit.region!.name, offset: hit.offsetInRegion + (addr - hit.start), readonly: hit.readonly } : null;
            expect(got, `view of ${d.name} at 0x${addr.toString(16)}`).toEqual(expected);
          }
        }
        // adjacent ranges never continue each other (flatview_simplify ran)
        for (let i = 1; i < view.length; i++) {
          const [p, q] = [view[i - 1], view[i]];
          const continues = p.region === q.region && p.last + 1n === q.start && p.offsetInRegion + (p.last - p.start + 1n) === q.offsetInRegion && p.readonly === q.readonly;
          expect(continues).toBe(false);
        }
      }),
      { numRuns: 200 },
    );
  });
});
