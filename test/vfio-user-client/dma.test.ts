import { describe, expect, it } from "vitest";
import { DmaMemoryTable } from "../../src/vfio-user/client/dma.js";

function table() {
  const t = new DmaMemoryTable();
  const low = new Uint8Array(0x1000).map((_, i) => i & 0xff);
  const high = new Uint8Array(0x1000);
  t.add({ iova: 0x10000n, size: 0x1000n, memory: low, readable: true, writable: true, fileOffset: 0n });
  t.add({ iova: 0x11000n, size: 0x1000n, memory: high, readable: true, writable: false, fileOffset: 0n });
  return { t, low, high };
}

describe("DMA memory table", () => {
  it("reads and writes inside a mapping", () => {
    const { t, low } = table();
    const r = t.read(0x10010n, 4);
    expect(r).toEqual({ ok: true, value: Uint8Array.of(0x10, 0x11, 0x12, 0x13) });
    expect(t.write(0x10000n, Uint8Array.of(9, 9))).toEqual({ ok: true, value: 2 });
    expect([...low.subarray(0, 3)]).toEqual([9, 9, 2]);
  });

  it("reads across adjacent mappings", () => {
    const { t, high } = table();
    high[0] = 0x77;
    const r = t.read(0x10ffen, 3);
    expect(r).toEqual({ ok: true, value: Uint8Array.of(0xfe, 0xff, 0x77) });
  });

  it("refuses unmapped bytes with EFAULT and missing permission with EPERM, writing nothing", () => {
    const { t, low } = table();
    expect(t.read(0xfff0n, 0x20)).toMatchObject({ ok: false, errno: 14 });
    expect(t.read(0x11ff0n, 0x20)).toMatchObject({ ok: false, errno: 14 });
    const before = low.slice();
    expect(t.write(0x10ff0n, new Uint8Array(0x20))).toMatchObject({ ok: false, errno: 1 });
    expect(low).toEqual(before);
    expect(t.read(0xffff_ffff_ffff_fff0n, 0x20)).toMatchObject({ ok: false, errno: 14 });
  });

  it("rejects overlaps, empty ranges, short backing memory; removes only exact ranges", () => {
    const { t } = table();
    const mem = new Uint8Array(0x2000);
    expect(t.checkAdd({ iova: 0x10800n, size: 0x1000n, memory: mem, readable: true, writable: true, fileOffset: 0n })).toMatch(/overlaps/);
    expect(t.checkAdd({ iova: 0x20000n, size: 0n, memory: mem, readable: true, writable: true, fileOffset: 0n })).toMatch(/positive/);
    expect(t.checkAdd({ iova: 0x20000n, size: 0x4000n, memory: mem, readable: true, writable: true, fileOffset: 0n })).toMatch(/backed by only/);
    expect(t.remove(0x10000n, 0x800n)).toBeUndefined();
    expect(t.remove(0x10000n, 0x1000n)).toBeDefined();
    expect(t.read(0x10000n, 1)).toMatchObject({ ok: false, errno: 14 });
  });
});
