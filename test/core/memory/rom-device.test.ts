// ROM devices (QEMU memory_region_init_rom_device / memory_region_rom_device_set_romd): RAM
// contents plus device callbacks. In ROMD mode reads are served from the RAM (QEMU
// memory_access_is_direct) and writes go to the write callback; with ROMD mode off reads go
// to the read callback too. Every behaviour is checked on both engines.
import { describe, expect, it } from "vitest";
import { MemoryCore } from "../../../src/core/memory/index.js";
import { countingCore } from "../../support/counting-core.js";
import { ENGINES, flat, loggingDevice, newCore } from "./helpers.js";

for (const engine of ENGINES) {
  describe(`ROM device (${engine})`, () => {
    const setup = (extra = {}) => {
      const mem = newCore(engine);
      const sys = mem.container("sys", 2n ** 64n);
      const dev = loggingDevice((o) => 0xa0 + o, extra);
      const rd = mem.romDevice("flash", 0x100, dev.ops, new Uint8Array(0x100).map((_, i) => i));
      sys.addSubregion(0x1000, rd);
      const as = mem.addressSpace("as", sys);
      return { mem, sys, dev, rd, as };
    };

    it("starts in ROMD mode: reads come from its RAM, of any size, without a callback", () => {
      const { dev, rd, as } = setup({ valid: { min: 4, max: 4 } });
      expect(rd.kind).toBe("rom-device");
      expect(rd.romdMode).toBe(true);
      expect(as.read(0x1004, 4)).toBe(0x07060504);
      expect(as.read(0x1005, 1)).toBe(5); // valid.min 4 does not apply to direct reads
      expect(as.read64(0x10f8n)).toBe(0xfffefdfcfbfaf9f8n);
      expect(as.readBytes(0x10fe, 2)).toEqual(new Uint8Array([0xfe, 0xff]));
      const t = as.core.createTrace(2);
      t.read(0x1010, 4).read(0x1020, 2);
      expect(as.replay(t)).toEqual({ count: 2, failed: 0 });
      expect([t.value(0), t.value(1)]).toEqual([0x13121110, 0x2120]);
      expect(dev.calls).toEqual([]);
    });

    it("writes go to the write callback with the device's sizes and leave the RAM to the device", () => {
      const { dev, rd, as } = setup({ valid: { min: 2, max: 4 }, impl: { min: 1, max: 2 } });
      as.write(0x1010, 4, 0xdeadbeef);
      expect(dev.fmt()).toEqual(["w@16/2=0xbeef", "w@18/2=0xdead"]);
      expect(as.tryWrite(0x1011, 1, 1)).toBe(2); // valid.min 2: a decode error, never reaching the device
      expect(dev.calls.length).toBe(2);
      expect(as.read(0x1010, 4)).toBe(0x13121110); // the RAM is unchanged until the device updates it
      rd.ramBytes().set([0xef, 0xbe, 0xad, 0xde], 0x10);
      expect(as.read(0x1010, 4)).toBe(0xdeadbeef);
      // bulk writes are cut like any device's (memory_access_size): the 1-byte pieces at the
      // unaligned ends are refused (valid.min 2), the middle reaches the device
      dev.calls.length = 0;
      expect(as.tryWriteBytes(0x1021, new Uint8Array([2, 3, 4, 5, 6, 7]))).toBe(2);
      expect(dev.fmt()).toEqual(["w@34/2=0x403", "w@36/2=0x605"]);
    });

    it("writes split by memory_access_size reach the callback piece by piece", () => {
      const { dev, as } = setup();
      as.tryWriteBytes(0x1003, new Uint8Array([1, 2, 3, 4, 5, 6, 7]));
      expect(dev.fmt()).toEqual(["w@3/1=0x1", "w@4/4=0x5040302", "w@8/2=0x706"]);
      expect(as.readBytes(0x1003, 7)).toEqual(new Uint8Array([3, 4, 5, 6, 7, 8, 9]));
    });

    it("ROMD mode off sends reads to the read callback; on again serves the RAM", () => {
      const { dev, rd, as } = setup({ impl: { max: 1 } });
      const before = as.renderCount;
      rd.setRomdMode(false);
      expect(rd.romdMode).toBe(false);
      expect(as.renderCount).toBe(before + 1);
      expect(as.read(0x1004, 2)).toBe(0xa5a4);
      expect(dev.fmt()).toEqual(["r@4/1", "r@5/1"]);
      const t = as.core.createTrace(1);
      t.read(0x1008, 1);
      as.replay(t);
      expect(t.value(0)).toBe(0xa8);
      expect(dev.calls.length).toBe(3);
      rd.setRomdMode(true);
      expect(as.read(0x1004, 2)).toBe(0x0504);
      expect(dev.calls.length).toBe(3);
    });

    it("readonly above it changes nothing: reads direct, writes still reach the device", () => {
      const { dev, sys, as } = setup();
      sys.setReadonly(true);
      expect(flat(as)).toEqual(["1000-10ff flash+0 ro"]);
      as.write(0x1000, 1, 0x42);
      expect(dev.fmt()).toEqual(["w@0/1=0x42"]);
      expect(as.read(0x1000, 1)).toBe(0);
    });

    it("overlays a BAR like any region: its window shows over the device below it", () => {
      const mem = newCore(engine);
      const bar = mem.container("bar", 0x1000);
      const regs = loggingDevice(() => 0x7777);
      bar.addSubregion(0, mem.io("regs", 0x1000, regs.ops));
      const shadow = mem.romDevice("shadow", 8, loggingDevice().ops, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
      bar.addSubregion(0x40, shadow, 1);
      const view = bar.view();
      expect(view.readBytes(0x3e, 4)).toEqual(new Uint8Array([0x77, 0x77, 1, 2]));
      expect(regs.fmt()).toEqual(["r@62/2"]);
    });

    it("construction errors: size limits, romd on other kinds, bad sizes", () => {
      const mem = newCore(engine);
      const ops = loggingDevice().ops;
      expect(() => mem.romDevice("big", 2 ** 30 + 1, ops)).toThrowError(expect.objectContaining({ code: "RAM_TOO_LARGE" }));
      expect(() => mem.romDevice("zero", 0, ops)).toThrowError(expect.objectContaining({ code: "SIZE_ZERO" }));
      expect(() => mem.romDevice("x", 16, ops, new Uint8Array(17))).toThrowError(expect.objectContaining({ code: "BAD_ARGUMENT" }));
      expect(() => mem.romDevice("y", 16, { ...ops, impl: { unaligned: true } })).toThrowError(expect.objectContaining({ code: "IMPL_UNALIGNED_WITHOUT_VALID" }));
      expect(() => mem.ram("r", 16).setRomdMode(false)).toThrowError(expect.objectContaining({ code: "WRONG_KIND" }));
      expect(() => mem.io("i", 16, ops).setRomdMode(false)).toThrowError(expect.objectContaining({ code: "WRONG_KIND" }));
    });
  });
}

describe("ROM device reads never leave wasm", () => {
  it("no host import runs for ROMD reads, per call or in a replayed trace; writes cross once each", () => {
    const { core, crossings } = countingCore();
    const mem = MemoryCore.attach(core);
    const sys = mem.container("sys", 2n ** 64n);
    const dev = loggingDevice();
    const rd = mem.romDevice("status", 0x10, dev.ops, new Uint8Array([0x11, 0x22, 0x33, 0x44]));
    const io = mem.io("plain", 0x10, loggingDevice().ops);
    sys.addSubregion(0x100000000, rd);
    sys.addSubregion(0x100000010, io);
    const as = mem.addressSpace("as", sys);
    const t = mem.createTrace(1000);
    for (let i = 0; i < 1000; i++) t.read(0x100000000 + (i & 3), 1);
    expect(as.replay(t).failed).toBe(0);
    expect(t.value(999)).toBe(0x44);
    expect(as.read(0x100000000, 4)).toBe(0x44332211);
    expect(crossings).toEqual({});
    // the counter does count: a plain I/O read crosses, and so does each ROM-device write
    as.read(0x100000010, 4);
    as.write(0x100000000, 4, 5);
    t.clear();
    t.write(0x100000004, 4, 6);
    as.replay(t);
    expect(crossings).toEqual({ mem_io_read: 1, mem_io_write: 2 });
    expect(dev.fmt()).toEqual(["w@0/4=0x5", "w@4/4=0x6"]);
  });
});
