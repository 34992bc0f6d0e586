// Destroying a region inside an open transaction: until the outermost commit re-renders, the
// address spaces keep the flat view rendered before the transaction, and that view may still
// reach the region. Its RAM, device callbacks and id are therefore released only by that
// commit (QEMU frees a region after the RCU grace period retiring the old flat views).
import { describe, expect, it } from "vitest";
import { ENGINES, flat, loggingDevice, newCore } from "./helpers.js";

for (const engine of ENGINES) {
  describe(`deferred free (${engine})`, () => {
    it("accesses during the transaction reach the old RAM, never memory reused by a new region", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 2n ** 64n);
      const old = mem.ram("old", 0x1000, new Uint8Array(0x1000).fill(0x5a));
      sys.addSubregion(0x10000, old);
      const as = mem.addressSpace("as", sys);
      mem.begin();
      mem.begin(); // nested: only the outermost commit releases
      sys.removeSubregion(old);
      old.destroy();
      expect(mem.engine.regionPendingFree(old.id)).toBe(true);
      expect(() => old.ramBytes()).toThrowError(expect.objectContaining({ code: "DESTROYED" }));
      // Allocated right after the free (the smaller ones would land in the freed block if it
      // were given back now): none may get the old region's bytes or id.
      const fresh = [0x1000, 0x800, 0x400].map((n, i) => mem.ram(`fresh${i}`, n, new Uint8Array(n).fill(0xee)));
      const intact = () => fresh.every((r) => r.ramBytes().every((b) => b === 0xee));
      for (const r of fresh) expect(r.id).not.toBe(old.id);
      // The old view still maps [0x10000, 0x10fff] to the old region.
      expect(as.read(0x10010, 4)).toBe(0x5a5a5a5a);
      as.write(0x10010, 4, 0x11223344);
      as.writeBytes(0x10800, new Uint8Array(0x100).fill(0x77));
      const t = mem.createTrace(2);
      t.write(0x10020, 4, 0x99999999).read(0x10010, 4);
      as.replay(t);
      expect(t.value(1)).toBe(0x11223344);
      expect(as.readBytes(0x10800, 4)).toEqual(new Uint8Array(4).fill(0x77));
      expect(intact()).toBe(true);
      mem.commit();
      expect(mem.engine.regionPendingFree(old.id)).toBe(true);
      mem.commit();
      expect(mem.engine.regionPendingFree(old.id)).toBe(false);
      expect(as.tryRead(0x10010, 4)).toBe(2); // unmapped now
      expect(intact()).toBe(true);
      // The id is handed out again only now.
      const next = mem.ram("next", 0x10);
      expect(next.id).toBe(old.id);
    });

    it("a destroyed device keeps answering through the old view until the commit, then never again", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 2n ** 64n);
      const dev = loggingDevice((o) => 0x40 + o);
      const io = mem.io("dev", 0x100, dev.ops);
      sys.addSubregion(0x2000, io);
      const as = mem.addressSpace("as", sys);
      mem.transaction(() => {
        sys.removeSubregion(io);
        io.destroy();
        expect(as.read(0x2004, 1)).toBe(0x44);
        as.write(0x2008, 1, 9);
      });
      expect(dev.fmt()).toEqual(["r@4/1", "w@8/1=0x9"]);
      // its id is reused by a new device mapped elsewhere; the old one is never called again
      const other = loggingDevice(() => 0x99);
      const io2 = mem.io("dev2", 0x100, other.ops);
      expect(io2.id).toBe(io.id);
      sys.addSubregion(0x3000, io2);
      expect(as.tryRead(0x2004, 1)).toBe(2);
      expect(as.read(0x3000, 1)).toBe(0x99);
      expect(dev.calls.length).toBe(2);
    });

    it("an alias and its target destroyed together; the view re-renders without them", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 2n ** 64n);
      const ram = mem.ram("ram", 0x1000, new Uint8Array(0x1000).fill(3));
      const win = mem.alias("win", ram, 0x800, 0x100);
      sys.addSubregion(0x8000, win);
      const as = mem.addressSpace("as", sys);
      mem.transaction(() => {
        sys.removeSubregion(win);
        expect(() => ram.destroy()).toThrowError(expect.objectContaining({ code: "IN_USE" })); // still aliased
        win.destroy();
        ram.destroy(); // no alias left
        expect(as.read(0x8000, 1)).toBe(3);
        // still the old view (its region handle is gone, hence no name)
        expect(flat(as)).toEqual(["8000-80ff undefined+800"]);
      });
      expect(flat(as)).toEqual([]);
      expect(mem.engine.regionPendingFree(ram.id)).toBe(false);
    });

    it("outside a transaction, destroy releases at once", () => {
      const mem = newCore(engine);
      const r = mem.ram("r", 0x10);
      r.destroy();
      expect(mem.engine.regionPendingFree(r.id)).toBe(false);
      expect(mem.ram("again", 0x10).id).toBe(r.id);
    });
  });
}
