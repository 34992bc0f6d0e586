// destroy() of a region that is still in use must fail without side effects — in particular
// it must not first tear down the region's own view() (an address space rooted at it, which
// the engine counts as a use) and then report IN_USE.
import { describe, expect, it } from "vitest";
import { ENGINES, newCore } from "./helpers.js";

for (const engine of ENGINES) {
  describe(`destroy of a region in use (${engine})`, () => {
    const cases = [
      {
        why: "mapped in a container",
        setup: (mem: ReturnType<typeof newCore>, r: ReturnType<ReturnType<typeof newCore>["ram"]>) => {
          const sys = mem.container("sys", 0x10000);
          sys.addSubregion(0x1000, r);
          return () => sys.removeSubregion(r);
        },
      },
      {
        why: "aliased",
        setup: (mem: ReturnType<typeof newCore>, r: ReturnType<ReturnType<typeof newCore>["ram"]>) => {
          const a = mem.alias("a", r, 0, 0x10);
          return () => a.destroy();
        },
      },
      {
        why: "the root of another address space",
        setup: (mem: ReturnType<typeof newCore>, r: ReturnType<ReturnType<typeof newCore>["ram"]>) => {
          const as = mem.addressSpace("other", r);
          return () => as.destroy();
        },
      },
    ];
    for (const c of cases) {
      it(`keeps the region and its view when it is ${c.why}`, () => {
        const mem = newCore(engine);
        const r = mem.ram("bar", 0x100, new Uint8Array(0x100).fill(0x42));
        const view = r.view();
        const release = c.setup(mem, r);
        expect(() => r.destroy()).toThrowError(expect.objectContaining({ code: "IN_USE" }));
        // Still the same, working view; the region is alive.
        expect(r.view()).toBe(view);
        expect(view.read(0x10, 4)).toBe(0x42424242);
        view.write(0x10, 1, 0x7);
        expect(r.ramBytes()[0x10]).toBe(7);
        // Once released, destroy succeeds and takes the view with it.
        release();
        r.destroy();
        expect(() => view.read(0, 1)).toThrowError(expect.objectContaining({ code: "DESTROYED" }));
        expect(() => r.view()).toThrowError(expect.objectContaining({ code: "DESTROYED" }));
      });
    }

    it("a region with subregions keeps its view", () => {
      const mem = newCore(engine);
      const bar = mem.container("bar", 0x1000);
      const reg = mem.ram("reg", 0x10, new Uint8Array(0x10).fill(0x11));
      bar.addSubregion(0x100, reg);
      const view = bar.view();
      expect(() => bar.destroy()).toThrowError(expect.objectContaining({ code: "IN_USE" }));
      expect(bar.view()).toBe(view);
      expect(view.read(0x100, 2)).toBe(0x1111);
      bar.removeSubregion(reg);
      bar.destroy();
      reg.destroy();
    });

    it("an alias destroyed before the target no longer blocks it (also inside a transaction)", () => {
      const mem = newCore(engine);
      const r = mem.ram("bar", 0x100);
      r.view();
      const a = mem.alias("a", r, 0, 0x10);
      mem.begin();
      a.destroy();
      r.destroy();
      mem.commit();
      expect(() => r.view()).toThrowError(expect.objectContaining({ code: "DESTROYED" }));
    });
  });
}
