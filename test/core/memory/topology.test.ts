// Region tree and rendering: QEMU docs/devel/memory.rst worked examples, priorities,
// aliases, transactions, construction errors.
import { describe, expect, it } from "vitest";
import { MemTx, MemoryError, type AddressSpace, type MemoryCore, type MemoryRegion } from "../../../src/core/memory/index.js";
import { ENGINES, flat, loggingDevice, newCore } from "./helpers.js";

for (const engine of ENGINES) {
  describe(`memory.rst worked examples (${engine})`, () => {
    // A (0x8000) holds B (0x4000 at 0x2000, priority 2; D at 0 and E at 0x2000 inside it)
    // over C (0x6000 at 0, priority 1).
    function overlappingRegions(mem: MemoryCore, B: MemoryRegion): AddressSpace {
      const A = mem.container("A", 0x8000);
      const C = mem.io("C", 0x6000, loggingDevice().ops);
      const D = mem.ram("D", 0x1000);
      const E = mem.ram("E", 0x1000);
      mem.transaction(() => {
        A.addSubregion(0x2000, B, 2);
        A.addSubregion(0, C, 1);
        B.addSubregion(0, D);
        B.addSubregion(0x2000, E);
      });
      return mem.addressSpace("A", A);
    }

    it("overlapping regions: B (prio 2, container with D, E) over C (prio 1): C shows through B's holes", () => {
      const mem = newCore(engine);
      const as = overlappingRegions(mem, mem.container("B", 0x4000));
      // [CCCCCCCCCCCC][DDDDD][CCCCC][EEEEE][CCCCC]
      expect(flat(as)).toEqual([
        "0-1fff C+0",
        "2000-2fff D+0",
        "3000-3fff C+3000",
        "4000-4fff E+0",
        "5000-5fff C+5000",
      ]);
    });

    it("overlapping regions: if B is not a pure container its own ops fill the holes", () => {
      const mem = newCore(engine);
      const as = overlappingRegions(mem, mem.io("B", 0x4000, loggingDevice().ops));
      // [CCCCCCCCCCCC][DDDDD][BBBBB][EEEEE][BBBBB]
      expect(flat(as)).toEqual([
        "0-1fff C+0",
        "2000-2fff D+0",
        "3000-3fff B+1000",
        "4000-4fff E+0",
        "5000-5fff B+3000",
      ]);
    });

    it("example memory map: lomem/himem aliases of RAM, PCI hole, VGA window with vram aliases", () => {
      const mem = newCore(engine);
      const system = mem.container("system_memory", 1n << 48n);
      // 4 GiB of "RAM": modelled as an I/O region so the test needs no 4 GiB allocation;
      // rendering does not depend on the kind.
      const ramDev = loggingDevice((o) => o & 0xff);
      const ram = mem.io("ram", 0x100000000n, ramDev.ops);
      const pci = mem.container("pci", 0x100000000n);
      const vram = mem.ram("vram", 0x1000000);
      const vgaMmio = mem.io("vga-mmio", 0x10000, loggingDevice().ops);
      const vgaArea = mem.container("vga-area", 0x20000);
      mem.transaction(() => {
        system.addSubregion(0, mem.alias("lomem", ram, 0, 0xe0000000));
        system.addSubregion(0x100000000n, mem.alias("himem", ram, 0xe0000000, 0x20000000));
        system.addSubregion(0xa0000, mem.alias("vga-window", pci, 0xa0000, 0x20000), 1);
        system.addSubregion(0xe0000000, mem.alias("pci-hole", pci, 0xe0000000, 0x20000000));
        pci.addSubregion(0xa0000, vgaArea);
        vgaArea.addSubregion(0, mem.alias("vga-lo", vram, 0x10000, 0x8000));
        vgaArea.addSubregion(0x8000, mem.alias("vga-hi", vram, 0x20000, 0x8000));
        pci.addSubregion(0xe1000000, vram);
        pci.addSubregion(0xe2000000, vgaMmio);
      });
      const as = mem.addressSpace("memory", system);
      expect(flat(as)).toEqual([
        "0-9ffff ram+0",
        "a0000-a7fff vram+10000",
        "a8000-affff vram+20000",
        // 0xb0000-0xbffff: the VGA window only covers what vga-area maps, so lomem shows
        // through and merges with the rest of lomem (same region, contiguous offsets).
        "b0000-dfffffff ram+b0000",
        "e1000000-e1ffffff vram+0",
        "e2000000-e200ffff vga-mmio+0",
        "100000000-11fffffff ram+e0000000",
      ]);
      // Accesses land where the map says.
      as.read(0x100000010n, 1);
      expect(ramDev.calls.at(-1)).toMatchObject({ offset: 0xe0000010 });
      as.write(0xe1000000 + 0x10004, 1, 0x5a);
      expect(as.read(0xa0004, 1)).toBe(0x5a); // same vram byte through the vga-lo alias
      expect(as.tryRead(0xe0000000, 4)).toBe(MemTx.DECODE_ERROR); // pci hole: nothing at 0xe0000000
    });
  });

  describe(`region tree (${engine})`, () => {
    it("disabled regions and subtrees are not rendered; enabling brings them back", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      const low = mem.ram("low", 0x10000);
      const bar = mem.container("bar", 0x1000);
      bar.addSubregion(0x100, mem.ram("inner", 0x100));
      mem.transaction(() => {
        sys.addSubregion(0, low);
        sys.addSubregion(0x4000, bar, 1);
      });
      const as = mem.addressSpace("as", sys);
      expect(flat(as)).toEqual(["0-40ff low+0", "4100-41ff inner+0", "4200-ffff low+4200"]);
      bar.setEnabled(false);
      expect(flat(as)).toEqual(["0-ffff low+0"]);
      bar.setEnabled(true);
      expect(flat(as)).toHaveLength(3);
    });

    it("subregions are clipped to their container; negative priorities sit below the default", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x3000);
      const small = mem.container("small", 0x1000);
      small.addSubregion(0x800, mem.ram("big", 0x4000)); // sticks out of `small`
      const bg = mem.ram("bg", 0x3000);
      mem.transaction(() => {
        sys.addSubregion(0x1000, small);
        sys.addSubregion(0, bg, -5);
      });
      expect(flat(mem.addressSpace("as", sys))).toEqual(["0-17ff bg+0", "1800-1fff big+0", "2000-2fff bg+2000"]);
    });

    it("equal priorities: the most recently added wins; setAddress re-adds (QEMU readd_subregion)", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      const x = mem.ram("x", 0x2000);
      const y = mem.ram("y", 0x2000);
      mem.transaction(() => {
        sys.addSubregion(0, x);
        sys.addSubregion(0x1000, y);
      });
      const as = mem.addressSpace("as", sys);
      expect(flat(as)).toEqual(["0-fff x+0", "1000-2fff y+0"]);
      x.setAddress(0); // same address: no change
      expect(flat(as)).toEqual(["0-fff x+0", "1000-2fff y+0"]);
      x.setAddress(0x800);
      expect(flat(as)).toEqual(["800-27ff x+0", "2800-2fff y+1800"]);
      expect(x.address).toBe(0x800n);
    });

    it("aliases chain, clip to their target, and follow setAliasOffset; a disabled target hides them", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x100000);
      const ram = mem.ram("ram", 0x1000);
      const a1 = mem.alias("a1", ram, 0x100, 0x800);
      const a2 = mem.alias("a2", a1, 0x700, 0x400); // only 0x100 bytes of a1 remain
      sys.addSubregion(0x10000, a2);
      const as = mem.addressSpace("as", sys);
      expect(flat(as)).toEqual(["10000-100ff ram+800"]);
      a2.setAliasOffset(0);
      expect(flat(as)).toEqual(["10000-103ff ram+100"]);
      ram.setEnabled(false);
      expect(flat(as)).toEqual([]);
      expect(a2.aliasOffset).toBe(0n);
    });

    it("readonly is inherited through aliases and containers, and shows in the flat view", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x100000);
      const ram = mem.ram("ram", 0x1000);
      const ro = mem.alias("ro-window", ram, 0, 0x1000);
      ro.setReadonly(true);
      mem.transaction(() => {
        sys.addSubregion(0, ram);
        sys.addSubregion(0x8000, ro);
      });
      const as = mem.addressSpace("as", sys);
      expect(flat(as)).toEqual(["0-fff ram+0", "8000-8fff ram+0 ro"]);
      as.write(0x8000, 1, 9);
      expect(as.read(0, 1)).toBe(0);
      as.write(0, 1, 9);
      expect(as.read(0x8000, 1)).toBe(9);
    });

    it("neighbouring pieces of one region merge (flatview_simplify)", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      const ram = mem.ram("ram", 0x4000);
      const hole = mem.container("hole", 0x1000); // an empty container leaves no mark
      mem.transaction(() => {
        sys.addSubregion(0, ram);
        sys.addSubregion(0x1000, hole, 1);
      });
      expect(flat(mem.addressSpace("as", sys))).toEqual(["0-3fff ram+0"]);
    });

    it("transactions nest: address spaces keep the old view until the outermost commit", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      const ram = mem.ram("ram", 0x1000);
      const as = mem.addressSpace("as", sys);
      mem.begin();
      sys.addSubregion(0, ram);
      mem.begin();
      ram.setAddress(0x2000);
      mem.commit();
      expect(flat(as)).toEqual([]);
      expect(as.tryRead(0x2000, 1)).toBe(MemTx.DECODE_ERROR);
      mem.commit();
      expect(flat(as)).toEqual(["2000-2fff ram+0"]);
      expect(() => mem.commit()).toThrowError(expect.objectContaining({ code: "NO_TRANSACTION" }));
      // transaction() commits even when the callback throws
      expect(() => mem.transaction(() => { ram.setAddress(0x3000); throw new Error("boom"); })).toThrow("boom");
      expect(flat(as)).toEqual(["3000-3fff ram+0"]);
    });

    it("a PCI BAR lifecycle: map, move, disable, unmap inside transactions", () => {
      const mem = newCore(engine);
      const bus = mem.container("pci-mem", 1n << 64n);
      const io = mem.container("pci-io", 0x10000);
      const dev = loggingDevice();
      const bar = mem.io("bar0", 0x1000, dev.ops);
      const memAs = mem.addressSpace("memory", bus);
      const ioAs = mem.addressSpace("io", io);
      mem.transaction(() => bus.addSubregion(0xfebf0000, bar, 1));
      expect(memAs.read(0xfebf0008, 4)).toBe(0x18);
      mem.transaction(() => bar.setAddress(0x800000000n)); // 64-bit BAR above 4 GiB
      expect(memAs.tryRead(0xfebf0008, 4)).toBe(MemTx.DECODE_ERROR);
      expect(memAs.read(0x800000008n, 4)).toBe(0x18);
      bar.setEnabled(false);
      expect(memAs.tryRead(0x800000008n, 4)).toBe(MemTx.DECODE_ERROR);
      bar.setEnabled(true);
      bus.removeSubregion(bar);
      expect(flat(memAs)).toEqual([]);
      io.addSubregion(0xc000, bar);
      expect(ioAs.read(0xc004, 2)).toBe(0x14);
      expect(dev.fmt().at(-1)).toBe("r@4/2");
    });
  });

  describe(`construction errors (${engine})`, () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(MemoryError);
        return (e as MemoryError).code;
      }
      return "no error";
    };

    it("sizes: zero, past 2^64, RAM over 1 GiB, I/O over 2^53, bad access sizes", () => {
      const mem = newCore(engine);
      expect(code(() => mem.ram("r", 0))).toBe("SIZE_ZERO");
      expect(code(() => mem.container("c", (1n << 64n) + 1n))).toBe("BAD_ARGUMENT");
      expect(code(() => mem.ram("r", 2 ** 31))).toBe("RAM_TOO_LARGE");
      expect(code(() => mem.io("i", 1n << 60n, loggingDevice().ops))).toBe("IO_TOO_LARGE");
      expect(code(() => mem.io("i", 8, { ...loggingDevice().ops, valid: { min: 8, max: 4 } }))).toBe("BAD_ACCESS_SIZES");
      expect(code(() => mem.io("i", 8, { ...loggingDevice().ops, impl: { max: 3 as 4 } }))).toBe("BAD_ACCESS_SIZES");
      expect(code(() => mem.io("i", 8, { ...loggingDevice().ops, impl: { unaligned: true } }))).toBe("IMPL_UNALIGNED_WITHOUT_VALID");
      expect(code(() => mem.container("c", -1))).toBe("BAD_ARGUMENT");
      expect(mem.container("all", 1n << 64n).size).toBe(1n << 64n);
    });

    it("placement: overflow past 2^64, double mapping, wrong parent, subregions of an alias", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const r = mem.ram("r", 0x1000);
      expect(code(() => sys.addSubregion(0xfffffffffffff800n, r))).toBe("OVERFLOW");
      sys.addSubregion(0xfffffffffffff000n, r); // ends exactly at 2^64 - 1
      expect(code(() => r.setAddress(0xfffffffffffff001n))).toBe("OVERFLOW");
      expect(code(() => sys.addSubregion(0, r))).toBe("ALREADY_MAPPED");
      const other = mem.container("other", 0x1000);
      expect(code(() => other.removeSubregion(r))).toBe("NOT_A_SUBREGION");
      const al = mem.alias("al", other, 0, 0x10);
      expect(code(() => al.addSubregion(0, mem.ram("x", 1)))).toBe("WRONG_KIND");
      expect(code(() => mem.alias("far", other, 0xfffffffffffffff8n, 0x10))).toBe("OVERFLOW");
      expect(code(() => sys.addSubregion(-1, mem.ram("y", 1)))).toBe("BAD_ARGUMENT");
      expect(code(() => sys.addSubregion(0, mem.ram("z", 1), 2 ** 31))).toBe("BAD_ARGUMENT");
    });

    it("errors are MemoryErrors naming the region and saying what is wrong", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const a = mem.container("outer", 0x1000);
      const b = mem.container("inner", 0x1000);
      a.addSubregion(0, b);
      const cases: [() => unknown, string, RegExp][] = [
        [() => mem.ram("empty", 0), "SIZE_ZERO", /"empty".*size is 0/],
        [() => mem.container("huge", (1n << 64n) + 1n), "BAD_ARGUMENT", /"huge".*2\^64.*18446744073709551617/],
        [() => mem.io("dev", 8, { ...loggingDevice().ops, impl: { unaligned: true } }), "IMPL_UNALIGNED_WITHOUT_VALID", /"dev".*impl\.unaligned.*valid\.unaligned/],
        [() => b.addSubregion(0, a), "CYCLE", /"outer".*"inner".*reachable from itself/],
        [() => sys.addSubregion(0xfffffffffffff800n, mem.ram("tail", 0x1000)), "OVERFLOW", /"tail".*"sys".*past 2\^64/],
      ];
      for (const [fn, code, message] of cases) {
        expect(fn).toThrowError(MemoryError);
        expect(fn).toThrowError(expect.objectContaining({ code, message: expect.stringMatching(message) }));
      }
    });

    it("cycles through subregions and aliases are rejected", () => {
      const mem = newCore(engine);
      const a = mem.container("a", 0x1000);
      const b = mem.container("b", 0x1000);
      a.addSubregion(0, b);
      expect(code(() => b.addSubregion(0, a))).toBe("CYCLE");
      expect(code(() => a.addSubregion(0, a))).toBe("CYCLE");
      const toA = mem.alias("to-a", a, 0, 0x100);
      expect(code(() => b.addSubregion(0x100, toA))).toBe("CYCLE");
      const chain = mem.alias("chain", toA, 0, 0x10);
      expect(code(() => b.addSubregion(0x200, chain))).toBe("CYCLE");
      const c = mem.container("c", 0x1000);
      c.addSubregion(0, chain); // fine: c is not reachable from a
      expect(flat(mem.addressSpace("c", c))).toEqual([]);
    });

    it("destroy: refused while mapped, aliased, a root or holding subregions; then frees", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      const ram = mem.ram("ram", 0x100);
      sys.addSubregion(0, ram);
      const al = mem.alias("al", ram, 0, 0x10);
      const as = mem.addressSpace("as", sys);
      expect(code(() => ram.destroy())).toBe("IN_USE");
      sys.removeSubregion(ram);
      expect(code(() => ram.destroy())).toBe("IN_USE"); // aliased
      al.destroy();
      ram.destroy();
      expect(code(() => ram.ramBytes())).toBe("DESTROYED");
      expect(code(() => sys.destroy())).toBe("IN_USE"); // root of `as`
      as.destroy();
      expect(code(() => as.read(0, 1))).toBe("DESTROYED");
      sys.destroy();
      // ids are reused safely
      const again = mem.ram("again", 0x10);
      expect(again.ramBytes()).toHaveLength(0x10);
    });
  });
}

// QEMU re-renders at memory_region_transaction_commit only what the change can affect
// (address_space_update_topology per address space); the wasm core re-renders exactly the
// address spaces whose tree holds a changed region. renderCount observes that; the flat
// views are checked too, so a skipped re-render that should have happened shows as well.
describe("commit re-renders only the address spaces whose tree changed (wasm)", () => {
  function world() {
    const mem = newCore("wasm");
    // Two devices' spaces, each with its own BAR container; a third space that sees
    // device A's BAR container through an alias; and A's BAR as its own address space.
    const sysA = mem.container("sysA", 1n << 64n);
    const sysB = mem.container("sysB", 1n << 64n);
    const sysC = mem.container("sysC", 1n << 32n);
    const barA = mem.container("barA", 0x1000);
    const regsA = mem.io("regsA", 0x100, loggingDevice().ops);
    const barB = mem.io("barB", 0x1000, loggingDevice().ops);
    const ramB = mem.ram("ramB", 0x1000);
    const winA = mem.alias("winA", barA, 0, 0x1000);
    mem.transaction(() => {
      barA.addSubregion(0, regsA);
      sysA.addSubregion(0xfe000000, barA);
      sysB.addSubregion(0xfd000000, barB);
      sysB.addSubregion(0, ramB);
      sysC.addSubregion(0x10000, winA);
    });
    const asA = mem.addressSpace("A", sysA);
    const asB = mem.addressSpace("B", sysB);
    const asC = mem.addressSpace("C", sysC);
    const viewA = barA.view();
    const spaces = { asA, asB, asC, viewA };
    const counts = () => Object.fromEntries(Object.entries(spaces).map(([k, s]) => [k, s.renderCount]));
    return { mem, sysA, sysB, barA, regsA, barB, ramB, winA, asA, asB, asC, viewA, counts };
  }

  it("a BAR move re-renders the spaces that contain it and leaves the others untouched", () => {
    const w = world();
    const before = w.counts();
    expect(before).toEqual({ asA: 1, asB: 1, asC: 1, viewA: 1 });
    const flatB = flat(w.asB);
    w.mem.transaction(() => {
      w.barA.setEnabled(false);
      w.barA.setAddress(0xfe100000);
      w.barA.setEnabled(true);
    });
    // barA's own view: it was disabled and re-enabled (its own state) -> re-rendered once.
    expect(w.counts()).toEqual({ asA: 2, asB: 1, asC: 2, viewA: 2 });
    expect(flat(w.asA)).toEqual(["fe100000-fe1000ff regsA+0"]);
    expect(flat(w.asB)).toEqual(flatB);
    // Moving barA inside its container again changes nothing under barA itself.
    w.barA.setAddress(0xfe200000);
    expect(w.counts()).toEqual({ asA: 3, asB: 1, asC: 2, viewA: 2 });
    expect(flat(w.asA)).toEqual(["fe200000-fe2000ff regsA+0"]);
  });

  it("changes deep in a shared subtree reach every space that sees it, through aliases too", () => {
    const w = world();
    const extra = w.mem.ram("extraA", 0x100);
    w.barA.addSubregion(0x800, extra);
    expect(w.counts()).toEqual({ asA: 2, asB: 1, asC: 2, viewA: 2 });
    expect(flat(w.asC)).toEqual(["10000-100ff regsA+0", "10800-108ff extraA+0"]);
    w.regsA.setReadonly(true);
    expect(w.counts()).toEqual({ asA: 3, asB: 1, asC: 3, viewA: 3 });
    w.winA.setAliasOffset(0x800);
    expect(w.counts()).toEqual({ asA: 3, asB: 1, asC: 4, viewA: 3 });
    expect(flat(w.asC)).toEqual(["10000-100ff extraA+0"]);
    w.barB.setEnabled(false);
    expect(w.counts()).toEqual({ asA: 3, asB: 2, asC: 4, viewA: 3 });
    expect(flat(w.asB)).toEqual(["0-fff ramB+0"]);
  });

  it("no-op changes, unmapped regions and empty transactions render nothing", () => {
    const w = world();
    w.barA.setAddress(0xfe000000); // same address
    w.barB.setEnabled(true); // already enabled
    const loose = w.mem.container("loose", 0x1000);
    const inner = w.mem.ram("inner", 0x10);
    loose.addSubregion(0, inner); // not reachable from any address space
    inner.setEnabled(false);
    w.mem.io("new", 0x10, loggingDevice().ops);
    w.mem.transaction(() => {});
    expect(w.counts()).toEqual({ asA: 1, asB: 1, asC: 1, viewA: 1 });
    // ...until the loose tree is mapped: only then does it show (and render).
    w.sysB.addSubregion(0x5000, loose);
    expect(w.counts()).toEqual({ asA: 1, asB: 2, asC: 1, viewA: 1 });
    inner.setEnabled(true);
    expect(w.counts()).toEqual({ asA: 1, asB: 3, asC: 1, viewA: 1 });
    expect(flat(w.asB)).toEqual(["0-fff ramB+0", "5000-500f inner+0", "fd000000-fd000fff barB+0"]);
  });

  it("one commit renders each affected space once, however many changes it holds", () => {
    const w = world();
    w.mem.transaction(() => {
      for (let i = 0; i < 10; i++) w.barA.setAddress(0xfe000000 + i * 0x1000);
      w.ramB.setReadonly(true);
      w.mem.transaction(() => w.barB.setAddress(0xfc000000));
    });
    expect(w.counts()).toEqual({ asA: 2, asB: 2, asC: 1, viewA: 1 });
    expect(flat(w.asA)).toEqual(["fe009000-fe0090ff regsA+0"]);
    expect(flat(w.asB)).toEqual(["0-fff ramB+0 ro", "fc000000-fc000fff barB+0"]);
  });

  it("re-setting a mapped region's device flags re-renders where it shows (the ranges cache them)", () => {
    const w = world();
    const dev = loggingDevice(() => 0x11223344);
    const r = w.mem.engine;
    // Reconfigure regsA as a big-endian device through the engine (MemoryCore.io does this at creation).
    expect(r.regionSetIo(w.regsA.id, 4 /* BIG_ENDIAN */, 0, 0, 0, 0, w.regsA.id)).toBe(0);
    r.setIoOps(w.regsA.id, dev.ops);
    expect(w.counts()).toEqual({ asA: 2, asB: 1, asC: 2, viewA: 2 });
    expect(w.asA.read(0xfe000000, 4)).toBe(0x44332211);
  });
});
