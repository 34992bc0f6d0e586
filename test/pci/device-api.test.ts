// The device-author surface: callbacks get a context (the function, its interrupts, DMA and
// clock), register callbacks see plain numbers for accesses of up to 4 bytes (bigint only in
// read64/write64), the byte-oriented access() form, shadow window accessors that survive
// linear-memory growth, and the manual clock tests drive device timers with.
import { describe, expect, it } from "vitest";
import { createPciFunction, type DeviceContext, type PciFunctionSpec } from "../../src/core/pci/index.js";
import { createManualClock, realClock } from "../../src/core/clock.js";
import { createDmaContext } from "../../src/core/dma/index.js";
import { countingCore } from "../support/counting-core.js";
import { errCode } from "./helpers.js";

const base: PciFunctionSpec = { vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000 };

describe("register callbacks (BarSpec.registers)", () => {
  it("pass numbers for 1/2/4-byte accesses and split 8-byte ones without read64/write64", () => {
    const seen: string[] = [];
    const fn = createPciFunction({
      ...base,
      bars: [
        {
          kind: "mem32",
          size: 0x1000,
          registers: {
            read(offset, size) {
              seen.push(`r${size}@${offset.toString(16)}`);
              return 0x11223344 + offset;
            },
            write(offset, size, value) {
              seen.push(`w${size}@${offset.toString(16)}=${typeof value}:${value.toString(16)}`);
            },
            valid: { min: 1, max: 8 },
          },
        },
      ],
    });
    expect(fn.readRegion(0, 0x10, 4)).toBe(0x11223354n);
    expect(fn.readRegion(0, 0x12, 2)).toBe(BigInt((0x11223344 + 0x12) & 0xffff));
    fn.writeRegion(0, 0x20, 1, 0xabn);
    fn.writeRegion(0, 0x24, 4, 0xfedcba98n);
    // default impl 1..4: an 8-byte access is two 4-byte calls, low half first (QEMU order)
    expect(fn.readRegion(0, 0x40, 8)).toBe((BigInt(0x11223344 + 0x44) << 32n) | BigInt(0x11223344 + 0x40));
    fn.writeRegion(0, 0x48, 8, 0x0102030405060708n);
    expect(seen).toEqual([
      "r4@10",
      "r2@12",
      "w1@20=number:ab",
      "w4@24=number:fedcba98",
      "r4@40",
      "r4@44",
      "w4@48=number:5060708",
      "w4@4c=number:1020304",
    ]);
    fn.dispose();
  });

  it("send 8-byte accesses whole to read64/write64 as bigint, smaller ones to read/write as numbers", () => {
    const seen: string[] = [];
    const fn = createPciFunction({
      ...base,
      bars: [
        {
          kind: "mem64",
          size: 0x1000,
          registers: {
            read: (offset, size) => (seen.push(`r${size}@${offset}`), 7),
            write: (offset, size, value) => void seen.push(`w${size}@${offset}=${typeof value}`),
            read64: (offset) => (seen.push(`r64@${offset}`), 0x8877665544332211n),
            write64: (offset, value) => void seen.push(`w64@${offset}=${typeof value}:${value.toString(16)}`),
            valid: { min: 4, max: 8 },
          },
        },
      ],
    });
    expect(fn.readRegion(0, 8, 8)).toBe(0x8877665544332211n);
    expect(fn.readRegion(0, 8, 4)).toBe(7n);
    fn.writeRegion(0, 16, 8, 0xffffffff00000001n);
    fn.writeRegion(0, 16, 4, 1n);
    expect(seen).toEqual(["r64@8", "r4@8", "w64@16=bigint:ffffffff00000001", "w4@16=number"]);
    fn.dispose();
  });

  it("refuses inconsistent declarations with the field named", () => {
    const read = () => 0;
    const write = () => {};
    const bar = (registers: object, extra: object = {}) => ({ ...base, bars: [{ kind: "mem32" as const, size: 0x1000, registers: registers as never, ...extra }] });
    expect(errCode(() => createPciFunction(bar({ read, write, impl: { max: 8 } })))).toBe("PCI_INVALID_SPEC"); // 8 bytes, no read64
    expect(errCode(() => createPciFunction(bar({ read, write, read64: () => 0n })))).toBe("PCI_INVALID_SPEC"); // read64 without write64
    expect(errCode(() => createPciFunction(bar({ read })))).toBe("PCI_INVALID_SPEC"); // no write
    expect(errCode(() => createPciFunction(bar({ read, write }, { ops: { read, write } })))).toBe("PCI_INVALID_SPEC"); // two callback forms
    expect(errCode(() => createPciFunction(bar({ read, write }, { ram: true })))).toBe("PCI_INVALID_SPEC");
    expect(errCode(() => createPciFunction(bar({ access: 5 })))).toBe("PCI_INVALID_SPEC");
    expect(errCode(() => createPciFunction(bar({ access: () => {}, read, write })))).toBe("PCI_INVALID_SPEC");
  });
});

describe("byte-oriented access(offset, bytes, isWrite)", () => {
  it("serves a register file: reads fill zeroed bytes of the access's size, writes carry them little-endian", () => {
    const file = new Uint8Array(64);
    const calls: string[] = [];
    const fn = createPciFunction({
      ...base,
      bars: [
        {
          kind: "mem32",
          size: 0x1000,
          registers: {
            access(offset, bytes, isWrite) {
              calls.push(`${isWrite ? "w" : "r"}${bytes.length}@${offset}`);
              if (isWrite) file.set(bytes, offset);
              else {
                expect(bytes.every((b) => b === 0)).toBe(true);
                bytes.set(file.subarray(offset, offset + bytes.length));
              }
            },
            valid: { min: 1, max: 8 },
          },
        },
      ],
    });
    fn.writeRegion(0, 8, 8, 0x0807060504030201n);
    expect([...file.subarray(8, 16)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    fn.writeRegion(0, 2, 2, 0xbeefn);
    expect([file[2], file[3]]).toEqual([0xef, 0xbe]);
    expect(fn.readRegion(0, 8, 4)).toBe(0x04030201n);
    expect(fn.readRegion(0, 12, 1)).toBe(5n);
    expect(fn.readRegion(0, 8, 8)).toBe(0x0807060504030201n);
    expect(fn.readRegion(0, 2, 2)).toBe(0xbeefn);
    expect(calls).toEqual(["w8@8", "w2@2", "r4@8", "r1@12", "r8@8", "r2@2"]);
    fn.dispose();
  });
});

describe("device context", () => {
  it("every callback gets the function, its interrupts, the bound DMA API and the clock", () => {
    const clock = createManualClock();
    const contexts: [string, DeviceContext][] = [];
    const fn = createPciFunction(
      {
        ...base,
        interruptPin: 1,
        bars: [
          {
            kind: "mem32",
            size: 0x1000,
            registers: {
              read: (_o, _s, ctx) => (contexts.push(["read", ctx]), 0),
              write: (_o, _s, _v, ctx) => void contexts.push(["write", ctx]),
            },
          },
          { kind: "mem32", size: 0x1000, ops: { read: (_o, _s, ctx) => (contexts.push(["ops.read", ctx]), 0), write: () => {} } },
        ],
        reset: (ctx) => void contexts.push(["reset", ctx]),
        configWrite: (_o, _s, _v, ctx) => void contexts.push(["configWrite", ctx]),
        configRead: (_o, _s, v, ctx) => (contexts.push(["configRead", ctx]), v),
        saveState: (ctx) => (contexts.push(["saveState", ctx]), new Uint8Array(0)),
        dispose: (ctx) => void contexts.push(["dispose", ctx]),
      },
      { clock },
    );
    const dma = createDmaContext({ mapFd: () => { throw new Error("no fds"); } });
    fn.readRegion(0, 0, 4);
    expect(contexts[0][1].dma).toBeNull();
    fn.attachDma(dma.dma);
    fn.writeRegion(0, 0, 4, 1n);
    fn.readRegion(1, 0, 4);
    fn.writeConfig(0x3c, 1, 5);
    fn.readConfig(0, 4);
    fn.saveState();
    contexts[0][1].irq.setIntx(true);
    expect(fn.irq.intxLevel).toBe(true);
    expect(contexts[0][1].dma).toBe(dma.dma);
    fn.reset();
    fn.dispose();
    expect(contexts.map(([name]) => name)).toEqual(["read", "write", "ops.read", "configWrite", "configRead", "saveState", "reset", "dispose"]);
    const ctx = contexts[1][1];
    for (const [, c] of contexts) expect(c).toBe(ctx); // one context per function
    expect(ctx.fn).toBe(fn);
    expect(ctx.irq).toBe(fn.irq);
    expect(ctx.clock).toBe(clock);
    expect(ctx.dma).toBeNull(); // dispose() detached it
    dma.close();
  });

  it("uses real time unless given a clock", () => {
    let clock;
    createPciFunction({ ...base, reset: (ctx) => void (clock = ctx.clock) }).reset();
    expect(clock).toBe(realClock);
  });
});

describe("manual clock", () => {
  it("runs due timers in due-time order (ties in the order set), including ones set while advancing; cancel stops one", () => {
    const clock = createManualClock(1000);
    const ran: string[] = [];
    clock.setTimeout(() => ran.push(`b@${clock.now()}`), 20);
    clock.setTimeout(() => {
      ran.push(`a@${clock.now()}`);
      clock.setTimeout(() => ran.push(`c@${clock.now()}`), 5);
    }, 10);
    clock.setTimeout(() => ran.push(`b2@${clock.now()}`), 20);
    const cancelled = clock.setTimeout(() => ran.push("never"), 1);
    cancelled.cancel();
    cancelled.cancel();
    expect(clock.pending).toBe(3);
    clock.advance(9);
    expect(ran).toEqual([]);
    clock.advance(11);
    expect(ran).toEqual(["a@1010", "c@1015", "b@1020", "b2@1020"]);
    expect(clock.now()).toBe(1020);
    expect(clock.pending).toBe(0);
    expect(() => clock.advance(-1)).toThrow(RangeError);
    expect(() => clock.setTimeout(() => {}, Number.NaN)).toThrow(RangeError);
  });
});

describe("shadowWindow()", () => {
  it("stays valid across linear-memory growth, where a shadow() view detaches", () => {
    const { core } = countingCore();
    const registers = { read: () => 0, write: () => {}, valid: { min: 4, max: 4 } as const };
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, registers, shadow: [{ offset: 0x20, size: 8 }] }] }, { core });
    const win = fn.shadowWindow(0);
    const view = fn.shadow(0);
    win.setUint32(0, 0xcafef00d);
    const buffer = core.memory.buffer;
    // A 64 MiB RAM BAR on the same core makes linear memory grow.
    const big = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 64 << 20, ram: true }] }, { core });
    expect(core.memory.buffer).not.toBe(buffer);
    expect(view.length).toBe(0); // the old view detached
    expect(win.getUint32(0)).toBe(0xcafef00d);
    win.setBigUint64(0, 0x1122334455667788n);
    expect(fn.readRegion(0, 0x20, 4)).toBe(0x55667788n);
    expect(fn.readRegion(0, 0x24, 4)).toBe(0x11223344n);
    expect(win.size).toBe(8);
    expect(() => win.setUint32(6, 1)).toThrow(RangeError); // never past the window
    expect(errCode(() => fn.shadowWindow(0, 1))).toBe("PCI_REGION_INDEX");
    big.dispose();
    fn.dispose();
  });
});
