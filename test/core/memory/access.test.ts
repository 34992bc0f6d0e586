// Access path: splitting (memory_access_size, access_with_adjusted_size), validity, endianness,
// RAM/ROM, readonly, unassigned, re-entrancy, device errors, 64-bit addresses, traces.
import { describe, expect, it } from "vitest";
import { MemTx, MemoryError } from "../../../src/core/memory/index.js";
import { ENGINES, loggingDevice, newCore } from "./helpers.js";

for (const engine of ENGINES) {
  describe(`access path (${engine})`, () => {
    function ioSpace(extra: Parameters<typeof loggingDevice>[1] = {}, readValue?: Parameters<typeof loggingDevice>[0]) {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const dev = loggingDevice(readValue, extra);
      const io = mem.io("dev", 0x100, dev.ops);
      sys.addSubregion(0x1000, io);
      const as = mem.addressSpace("as", sys);
      return { mem, sys, io, as, dev };
    }

    it("memory_access_size: buffer access cut by alignment and the 4-byte default", () => {
      const { as, dev } = ioSpace();
      const out = as.readBytes(0x1001, 7);
      expect(dev.fmt()).toEqual(["r@1/1", "r@2/2", "r@4/4"]);
      // Bytes are stored little-endian per piece: 0x11 | 0x12,0x00 | 0x14,0,0,0
      expect([...out]).toEqual([0x11, 0x12, 0x00, 0x14, 0x00, 0x00, 0x00]);
      dev.calls.length = 0;
      as.readBytes(0x1000, 8);
      expect(dev.fmt()).toEqual(["r@0/4", "r@4/4"]);
    });

    it("memory_access_size: valid.max 8 allows one 8-byte piece; impl.unaligned ignores alignment", () => {
      const a = ioSpace({ valid: { max: 8 }, impl: { max: 8 } }, () => 0x0102030405060708n);
      expect(a.as.read64(0x1000)).toBe(0x0102030405060708n);
      expect(a.dev.fmt()).toEqual(["r@0/8"]);
      const b = ioSpace({ valid: { unaligned: true }, impl: { unaligned: true } });
      b.as.readBytes(0x1001, 7);
      expect(b.dev.fmt()).toEqual(["r@1/4", "r@5/2", "r@7/1"]);
    });

    it("access_with_adjusted_size: a byte-wide device gets four 1-byte callbacks, assembled little-endian", () => {
      const { as, dev } = ioSpace({ impl: { max: 1 } });
      expect(as.read(0x1000, 4)).toBe(0x13121110);
      expect(dev.fmt()).toEqual(["r@0/1", "r@1/1", "r@2/1", "r@3/1"]);
      dev.calls.length = 0;
      as.write(0x1004, 2, 0xbeef);
      expect(dev.fmt()).toEqual(["w@4/1=0xef", "w@5/1=0xbe"]);
    });

    it("access_with_adjusted_size: impl.min widens a 1-byte access and keeps the low byte", () => {
      const { as, dev } = ioSpace({ impl: { min: 4, max: 4 } }, () => 0xaabbccdd);
      expect(as.read(0x1002, 1)).toBe(0xdd);
      as.write(0x1002, 1, 0x5a);
      expect(dev.fmt()).toEqual(["r@2/4", "w@2/4=0x5a"]);
    });

    it("big-endian device: values are byte-swapped (adjust_endianness)", () => {
      const { as, dev } = ioSpace({ endianness: "big" }, () => 0x11223344);
      expect(as.read(0x1000, 4)).toBe(0x44332211);
      expect(as.read(0x1000, 2)).toBe(0x4433);
      as.write(0x1000, 4, 0x11223344);
      expect(dev.calls[2]).toMatchObject({ op: "w", offset: 0, size: 4, value: 0x44332211 });
      // Big-endian with byte-wide impl: byte i of the device lands at shift (size-1-i)*8 before the swap.
      const b = ioSpace({ endianness: "big", impl: { max: 1 } });
      expect(b.as.read(0x1000, 4)).toBe(0x13121110);
      b.dev.calls.length = 0;
      b.as.write(0x1000, 2, 0x1234);
      expect(b.dev.fmt()).toEqual(["w@0/1=0x34", "w@1/1=0x12"]);
    });

    it("valid sizes and alignment: refused accesses are decode errors, read 0, and never reach the device", () => {
      const { as, dev } = ioSpace({ valid: { min: 4, max: 4 } });
      expect(as.tryRead(0x1000, 1)).toBe(MemTx.DECODE_ERROR);
      expect(as.valueLo).toBe(0);
      expect(as.tryRead(0x1002, 4)).toBe(MemTx.DECODE_ERROR); // cut to 2 by alignment, 2 < min
      expect(as.tryWrite(0x1000, 2, 1)).toBe(MemTx.DECODE_ERROR);
      expect(dev.calls).toEqual([]);
      expect(as.read(0x1004, 4)).toBe(0x14);
      expect(() => as.read(0x1000, 1)).toThrowError(expect.objectContaining({ code: "DECODE_ERROR", status: 2, address: 0x1000n }));
    });

    it("valid.unaligned lets an unaligned access through as one piece", () => {
      const { as, dev } = ioSpace({ valid: { unaligned: true, max: 4 }, impl: { unaligned: true } });
      as.read(0x1001, 4);
      expect(dev.fmt()).toEqual(["r@1/4"]);
    });

    it("accepts vetoes accesses (decode error) with the region offset, size and direction", () => {
      const seen: string[] = [];
      const { as, dev } = ioSpace({
        accepts: (offset, size, isWrite) => {
          seen.push(`${offset}/${size}/${isWrite ? "w" : "r"}`);
          return offset < 4;
        },
      });
      expect(as.tryRead(0x1000, 4)).toBe(0);
      expect(as.tryWrite(0x1004, 4, 1)).toBe(MemTx.DECODE_ERROR);
      expect(seen).toEqual(["0/4/r", "4/4/w"]);
      expect(dev.fmt()).toEqual(["r@0/4"]);
    });

    it("re-entrancy guard: a callback touching its own region gets ACCESS_ERROR; the outer access completes", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      let inner = -1;
      let as!: ReturnType<typeof mem.addressSpace>;
      const io = mem.io("dev", 0x10, {
        read: (o) => {
          if (o === 0) inner = as.tryRead(0x104, 4);
          return 7;
        },
        write: () => {},
      });
      sys.addSubregion(0x100, io);
      as = mem.addressSpace("as", sys);
      expect(as.read(0x100, 4)).toBe(7);
      expect(inner).toBe(MemTx.ACCESS_ERROR);
      expect(as.read(0x104, 4)).toBe(7); // guard released
    });

    it("re-entrancy guard is per owner; reentrancyGuard:false disables it", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      const owner = {};
      let inner: number[] = [];
      let as!: ReturnType<typeof mem.addressSpace>;
      const a = mem.io("a", 0x10, { owner, read: () => { inner.push(as.tryRead(0x200, 1), as.tryRead(0x300, 1), as.tryRead(0x400, 1)); return 1; }, write: () => {} });
      const b = mem.io("b", 0x10, { owner, read: () => 2, write: () => {} });
      const c = mem.io("c", 0x10, { read: () => 3, write: () => {} });
      const d = mem.io("d", 0x10, { reentrancyGuard: false, read: () => { if (!depth++) as.tryRead(0x400, 1); return 4; }, write: () => {} });
      let depth = 0;
      mem.transaction(() => {
        sys.addSubregion(0x100, a);
        sys.addSubregion(0x200, b);
        sys.addSubregion(0x300, c);
        sys.addSubregion(0x400, d);
      });
      as = mem.addressSpace("as", sys);
      as.read(0x100, 1);
      expect(inner).toEqual([MemTx.ACCESS_ERROR, 0, 0]); // b shares a's owner; c and d do not
      depth = 0;
      inner = [];
      expect(as.tryRead(0x400, 1)).toBe(0);
      expect(depth).toBe(2); // d re-entered itself
    });

    it("a throwing callback is a device error carrying the exception; the device stays usable", () => {
      let fail = true;
      const { as } = ioSpace({}, () => {
        if (fail) throw new RangeError("register 3 is broken");
        return 5;
      });
      let err: unknown;
      try {
        as.read(0x1000, 4);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MemoryError);
      expect(err).toMatchObject({ code: "DEVICE_ERROR", status: MemTx.ERROR });
      expect((err as Error).cause).toBeInstanceOf(RangeError);
      fail = false;
      expect(as.read(0x1000, 4)).toBe(5);
    });

    it("a device error inside a nested access fails only that access; a throwing write is a device error too", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 0x10000);
      let inner = -1;
      let as!: ReturnType<typeof mem.addressSpace>;
      const broken = mem.io("broken", 0x10, {
        read: () => {
          throw new Error("broken read");
        },
        write: () => {
          throw new Error("broken write");
        },
      });
      const outer = mem.io("outer", 0x10, {
        read: () => {
          inner = as.tryRead(0x200, 4);
          return 0x5a;
        },
        write: () => {},
      });
      mem.transaction(() => {
        sys.addSubregion(0x100, outer);
        sys.addSubregion(0x200, broken);
      });
      as = mem.addressSpace("as", sys);
      expect(as.tryRead(0x100, 4)).toBe(MemTx.OK);
      expect(as.valueLo).toBe(0x5a);
      expect(inner).toBe(MemTx.ERROR);
      expect(as.tryWrite(0x200, 2, 1)).toBe(MemTx.ERROR);
      expect(String(mem.engine.takeIoError())).toContain("broken write");
      expect(as.tryWrite(0x100, 4, 1)).toBe(MemTx.OK);
    });

    it("device offsets above 4 GiB and values with bit 31 set cross exactly, in every access size", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const dev = loggingDevice((o, size) => (size === 8 ? 0xfedcba9876543210n : 0xdeadbeef), { valid: { max: 8 }, impl: { max: 8 } });
      const io = mem.io("wide", 1n << 34n, dev.ops);
      sys.addSubregion(1n << 40n, io);
      const as = mem.addressSpace("as", sys);
      const base = (1n << 40n) + (1n << 33n) + 0x10n;
      expect(as.read(base, 4)).toBe(0xdeadbeef);
      expect(as.read64(base + 8n)).toBe(0xfedcba9876543210n);
      as.write(base, 4, 0xfeedface);
      as.write(base + 8n, 8, 0x8000000000000001n);
      expect(as.read((1n << 40n) + 4n, 4)).toBe(0xdeadbeef);
      const off = Number((1n << 33n) + 0x10n);
      expect(dev.fmt()).toEqual([`r@${off}/4`, `r@${off + 8}/8`, `w@${off}/4=0xfeedface`, `w@${off + 8}/8=0x8000000000000001`, "r@4/4"]);
    });

    it("RAM reads and writes in linear memory; ROM and read-only subtrees drop writes", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 32n);
      const ram = mem.ram("ram", 0x1000);
      const rom = mem.rom("rom", 0x100, new Uint8Array([1, 2, 3, 4]));
      const locked = mem.container("locked", 0x1000);
      const ram2 = mem.ram("ram2", 0x1000);
      locked.addSubregion(0, ram2);
      mem.transaction(() => {
        sys.addSubregion(0, ram);
        sys.addSubregion(0x10000, rom);
        sys.addSubregion(0x20000, locked);
      });
      const as = mem.addressSpace("as", sys);
      as.write(0x10, 4, 0xcafef00d);
      expect([...ram.ramBytes().subarray(0x10, 0x14)]).toEqual([0x0d, 0xf0, 0xfe, 0xca]);
      expect(as.read(0x10000, 4)).toBe(0x04030201);
      as.write(0x10000, 4, 0xffffffff); // dropped, status OK
      expect(as.read(0x10000, 4)).toBe(0x04030201);
      as.write(0x20000, 1, 0x55);
      expect(as.read(0x20000, 1)).toBe(0x55);
      locked.setReadonly(true);
      as.write(0x20000, 1, 0x66);
      expect(as.read(0x20000, 1)).toBe(0x55);
      expect(as.flatView().find((r) => r.region?.name === "ram2")?.readonly).toBe(true);
      expect(ram2.ramBytes()[0]).toBe(0x55);
    });

    it("unassigned addresses: decode error, reads 0; a buffer spanning RAM and a gap keeps the RAM bytes", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const ram = mem.ram("ram", 0x10, new Uint8Array(16).fill(0xab));
      sys.addSubregion(0x100, ram);
      const as = mem.addressSpace("as", sys);
      expect(as.tryRead(0x50, 4)).toBe(MemTx.DECODE_ERROR);
      expect(as.valueLo).toBe(0);
      const buf = new Uint8Array(8).fill(0x77);
      expect(as.tryReadBytes(0x10c, buf)).toBe(MemTx.DECODE_ERROR);
      expect([...buf]).toEqual([0xab, 0xab, 0xab, 0xab, 0, 0, 0, 0]);
      expect(as.tryWriteBytes(0xfe, new Uint8Array([1, 2, 3, 4]))).toBe(MemTx.DECODE_ERROR);
      expect([...ram.ramBytes().subarray(0, 3)]).toEqual([3, 4, 0xab]);
      // A scalar read straddling the end of RAM: RAM part kept, gap part 0, status decode.
      expect(as.tryRead(0x10e, 4)).toBe(MemTx.DECODE_ERROR);
      expect(as.valueLo).toBe(0xabab);
    });

    it("64-bit addresses: regions at the top of the space, accesses wrapping past 2^64 - 1", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const top = mem.ram("top", 0x1000);
      const low = mem.ram("low", 0x1000);
      mem.transaction(() => {
        sys.addSubregion(0xfffffffffffff000n, top);
        sys.addSubregion(0, low);
      });
      const as = mem.addressSpace("as", sys);
      as.write(0xfffffffffffffff8n, 8, 0x8877665544332211n);
      expect(as.read64(0xfffffffffffffff8n)).toBe(0x8877665544332211n);
      expect(as.read(0xffffffffffffffffn, 1)).toBe(0x88);
      as.write(0, 4, 0xddccbbaa);
      expect(as.read64(0xfffffffffffffffcn)).toBe(0xddccbbaa88776655n); // wraps to address 0
      // A high address that differs only above bit 32 from a mapped low one is not aliased.
      expect(as.tryRead(0x100000000n, 4)).toBe(MemTx.DECODE_ERROR);
      expect(as.flatView().map((r) => r.region?.name)).toEqual(["low", "top"]);
    });

    it("number addresses above 4 GiB take the fast path; fractional or unsafe numbers are refused", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 64n);
      const ram = mem.ram("ram", 0x1000);
      sys.addSubregion(0x500000000n, ram);
      const as = mem.addressSpace("as", sys);
      as.write(0x500000010, 4, 0x12345678);
      expect(as.read(0x500000010, 4)).toBe(0x12345678);
      expect(as.tryRead(0x500000012, 2)).toBe(0);
      expect(as.valueLo).toBe(0x1234);
      expect(ram.ramBytes()[0x10]).toBe(0x78);
      for (const bad of [1.5, -4, 2 ** 53 + 2, NaN]) {
        expect(() => as.read(bad, 4)).toThrowError(expect.objectContaining({ code: "BAD_ARGUMENT" }));
        expect(() => as.tryWrite(bad, 4, 0)).toThrowError(expect.objectContaining({ code: "BAD_ARGUMENT" }));
      }
      expect(() => as.write(0x500000010, 4, 1.5)).toThrowError(expect.objectContaining({ code: "BAD_ARGUMENT" }));
      expect(() => as.tryRead(0, 3 as 4)).toThrowError(expect.objectContaining({ code: "BAD_ARGUMENT" }));
    });

    it("readBytes/writeBytes of any length across many regions match per-byte reads", () => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 1n << 32n);
      const regs = [];
      for (let i = 0; i < 6; i++) {
        // A device whose registers behave like bytes, so any split reads the same bytes.
        const byteAt = (o: number) => (o * 7 + i) & 0xff;
        const read = (o: number, size: number) => {
          let v = 0;
          for (let k = size - 1; k >= 0; k--) v = v * 256 + byteAt(o + k);
          return v;
        };
        const r = i % 2 ? mem.ram(`ram${i}`, 0x30) : mem.io(`io${i}`, 0x30, { read, write: () => {} });
        regs.push(r);
        sys.addSubregion(i * 0x30, r);
      }
      const as = mem.addressSpace("as", sys);
      const data = new Uint8Array(0x120).map((_, i) => i * 13);
      as.writeBytes(0, data);
      const back = as.readBytes(0, 0x120);
      for (let i = 0; i < 0x120; i++) expect(back[i]).toBe(as.read(i, 1));
      // RAM regions hold what was written; I/O regions ignored the writes.
      expect([...back.subarray(0x30, 0x60)]).toEqual([...data.subarray(0x30, 0x60)]);
      expect(back[0x61]).toBe((1 * 7 + 2) & 0xff);
    });

    it("trace replay: reads, writes, statuses and values per record, failures counted", () => {
      const { mem, sys, as } = ioSpace();
      const ram = mem.ram("ram", 0x100);
      sys.addSubregion(0, ram);
      const t = mem.createTrace(8);
      t.write(0x10, 4, 0x01020304).read(0x10, 2).read(0x1008, 4).read(0x9000, 1).write(0x18, 8, 0x1122334455667788n).read(0x18, 8);
      expect(as.replay(t)).toEqual({ count: 6, failed: 1 });
      expect([0, 1, 2, 3, 4, 5].map((i) => t.status(i))).toEqual([0, 0, 0, MemTx.DECODE_ERROR, 0, 0]);
      expect(t.value(1)).toBe(0x0304);
      expect(t.value(2)).toBe(0x18);
      expect(t.value64(5)).toBe(0x1122334455667788n);
      expect(() => t.write(0, 3 as 4, 0).write(0, 1, 0).write(0, 1, 0).write(0, 1, 0)).toThrow(MemoryError);
      expect(() => as.replay(t, 99)).toThrowError(expect.objectContaining({ code: "BAD_ARGUMENT" }));
    });

    it("region view: region-relative access through a BAR container with an overlay", () => {
      const mem = newCore(engine);
      const bar = mem.container("bar0", 0x2000);
      const regs = loggingDevice((o) => 0x100 + o);
      const table = mem.ram("msix-table", 0x100);
      bar.addSubregion(0, mem.io("bar0-regs", 0x2000, regs.ops));
      bar.addSubregion(0x1000, table, 1);
      const view = bar.view();
      expect(view.read(0x8, 4)).toBe(0x108);
      view.write(0x1004, 4, 0xabcd);
      expect(table.ramBytes()[4]).toBe(0xcd);
      expect(view.read(0x1100, 4)).toBe(0x1200); // past the table: the registers again
      expect(bar.view()).toBe(view);
    });
  });
}
