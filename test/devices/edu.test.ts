// The edu device against QEMU docs/specs/edu.rst, driven through the bus like a driver.
import { describe, expect, it } from "vitest";
import { createEdu, EDU_REG } from "../../src/devices/edu.js";
import { createDmaContext, createManualClock, DMA_PERM_RW, PciError, type InterruptSink, type ManualClock, type PciFunction } from "../../src/core/index.js";

const BAR = 0xfe000000n;

function setup(options: Parameters<typeof createEdu>[0] = {}) {
  const errors: string[] = [];
  const clock = createManualClock();
  const fn = createEdu({ clock, onGuestError: (m) => errors.push(m), ...options }).fn;
  const events: string[] = [];
  const sink: InterruptSink = {
    intx: (a) => events.push(`intx:${a ? 1 : 0}`),
    vector: (k, v, m) => events.push(`${k}:${v}:${m.address.toString(16)}:${m.data.toString(16)}`),
  };
  fn.attachInterruptSink(sink);
  fn.writeConfig(0x10, 4, Number(BAR));
  fn.writeConfig(4, 2, 0x0006); // memory + bus master
  const rd = (off: number, size: 4 | 8 = 4) => fn.busRead("mem", BAR + BigInt(off), size)!;
  const wr = (off: number, v: bigint | number, size: 4 | 8 = 4) => expect(fn.busWrite("mem", BAR + BigInt(off), size, BigInt(v))).toBe(true);
  return { fn, events, errors, rd, wr, clock };
}

/**
 * Device time runs on a manual clock: each 1 ms step runs the timers that fall due, then
 * yields to the event loop once so the DMA those timers started can settle. Fails when `cond`
 * does not hold within `maxMs` of device time.
 */
async function runUntil(clock: ManualClock, cond: () => boolean, maxMs = 1000) {
  for (let t = 0; !cond(); t++) {
    if (t >= maxMs) throw new Error(`condition not reached within ${maxMs} ms of device time`);
    clock.advance(1);
    await new Promise((r) => setImmediate(r));
  }
}

function errCode(f: () => unknown) {
  try {
    f();
  } catch (e) {
    return (e as PciError).code;
  }
  return "no error";
}

describe("edu: PCI identity", () => {
  it("matches QEMU's edu config header", () => {
    const { fn } = setup();
    expect(fn.readConfig(0, 4)).toBe(0x11e81234);
    expect(fn.readConfig(8, 4)).toBe(0x00ff0010); // class 00ff, prog-if 0, rev 0x10
    expect(fn.readConfig(0x2c, 4)).toBe(0x11001af4);
    expect(fn.readConfig(0x3d, 1)).toBe(1);
    expect(fn.readConfig(0x34, 1)).toBe(0x40);
    expect(fn.readConfig(0x40, 1)).toBe(0x05); // MSI
    expect(fn.readConfig(0x42, 2)).toBe(0x0080); // 64-bit, one vector, no masking
    const fresh = createEdu().fn;
    fresh.writeConfig(0x10, 4, 0xffffffff);
    expect(fresh.readConfig(0x10, 4)).toBe(0xfff00000); // 1 MiB, 32-bit, non-prefetchable
    expect(fresh.regionInfo(0).size).toBe(1n << 20n);
  });
});

describe("edu: registers", () => {
  it("identifies itself as 0x010000ed", () => {
    const { rd } = setup();
    expect(rd(EDU_REG.ID)).toBe(0x010000edn);
  });

  it("allows only 4-byte accesses below 0x80", () => {
    const { fn, rd } = setup();
    expect(errCode(() => fn.busRead("mem", BAR, 1))).toBe("PCI_ACCESS_INVALID");
    expect(errCode(() => fn.busRead("mem", BAR, 2))).toBe("PCI_ACCESS_INVALID");
    expect(rd(EDU_REG.ID, 8)).toBe(0xffffffffffffffffn); // valid on the bus, refused by edu
    expect(rd(0x10)).toBe(0xffffffffn); // unknown register
  });

  it("ignores writes to its read-only registers; write-only ones read as all-ones", () => {
    const { rd, wr, events } = setup();
    wr(EDU_REG.ID, 0);
    expect(rd(EDU_REG.ID)).toBe(0x010000edn);
    wr(EDU_REG.IRQ_RAISE, 0x4);
    wr(EDU_REG.IRQ_STATUS, 0); // 0x24 is RO: the raised bit stays
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(4n);
    expect(events).toEqual(["intx:1"]);
    expect(rd(EDU_REG.IRQ_RAISE)).toBe(0xffffffffn);
    expect(rd(EDU_REG.IRQ_ACK)).toBe(0xffffffffn);
    // status bit 0x01 (computing) is RO: writing it starts nothing
    wr(EDU_REG.STATUS, 0x01);
    expect(rd(EDU_REG.STATUS)).toBe(0n);
  });

  it("inverts the liveness value", () => {
    const { rd, wr } = setup();
    wr(EDU_REG.LIVENESS, 0x12345678);
    expect(rd(EDU_REG.LIVENESS)).toBe(0xedcba987n);
    wr(EDU_REG.LIVENESS, 0x12345678n, 8); // 8-byte write below 0x80 is ignored
    expect(rd(EDU_REG.LIVENESS)).toBe(0xedcba987n);
  });

  it("computes factorials asynchronously behind the busy bit, ignoring writes while busy", () => {
    const { rd, wr, clock } = setup({ factorialDelayMs: 5 });
    wr(EDU_REG.FACTORIAL, 5);
    expect(rd(EDU_REG.STATUS) & 1n).toBe(1n);
    expect(rd(EDU_REG.FACTORIAL)).toBe(5n); // the operand until the result replaces it
    wr(EDU_REG.FACTORIAL, 7); // busy: ignored
    clock.advance(4);
    expect(rd(EDU_REG.STATUS) & 1n).toBe(1n); // not before its delay
    clock.advance(1);
    expect(rd(EDU_REG.STATUS) & 1n).toBe(0n);
    expect(rd(EDU_REG.FACTORIAL)).toBe(120n);
    // status bit 0x80 was not set: no interrupt
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0n);
    wr(EDU_REG.FACTORIAL, 13);
    clock.advance(5);
    expect(rd(EDU_REG.FACTORIAL)).toBe(6227020800n % 2n ** 32n); // 32-bit arithmetic
    wr(EDU_REG.FACTORIAL, 0);
    clock.advance(5);
    expect(rd(EDU_REG.STATUS) & 1n).toBe(0n);
    expect(rd(EDU_REG.FACTORIAL)).toBe(1n);
  });

  // Found by the vfio-user session fuzz target: a factorial of 0xffffffff looped 2^32 times on
  // the event loop and stalled the whole server. The result is still n! mod 2^32 (0 from 34!
  // on). The test's deadline is the regression's detector: looping to the operand again takes
  // seconds per write.
  it("gives n! mod 2^32 for every operand, large ones at once", () => {
    const { rd, wr, clock } = setup();
    let reference = 1n;
    const operands: [number, bigint][] = [];
    for (let n = 1; n <= 40; n++) operands.push([n, (reference = (reference * BigInt(n)) % 2n ** 32n)]);
    for (const n of [0xffffffff, 0x80000000, 1_000_000_000, 0xfffffffe, 0x7fffffff, 65536, 34, 33]) operands.push([n, n >= 34 ? 0n : 2147483648n]);
    for (const [n, expected] of operands) {
      wr(EDU_REG.FACTORIAL, n);
      clock.advance(0); // default delay 0: the factorial ends at the next tick
      expect(rd(EDU_REG.STATUS) & 1n).toBe(0n);
      expect(rd(EDU_REG.FACTORIAL), `${n}!`).toBe(expected);
    }
  }, 3000);

  it("raises interrupt 0x1 after a factorial when status bit 0x80 is set", () => {
    const { rd, wr, events, clock } = setup();
    wr(EDU_REG.STATUS, 0x81); // bit 0 is read-only
    expect(rd(EDU_REG.STATUS)).toBe(0x80n);
    wr(EDU_REG.FACTORIAL, 4);
    expect(events).toEqual([]);
    clock.advance(0); // default delay 0: the next tick of the clock
    expect(events).toEqual(["intx:1"]);
    expect(rd(EDU_REG.FACTORIAL)).toBe(24n);
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(1n);
    expect(events).toEqual(["intx:1"]);
    wr(EDU_REG.IRQ_ACK, 1);
    expect(events).toEqual(["intx:1", "intx:0"]);
    wr(EDU_REG.STATUS, 0);
    expect(rd(EDU_REG.STATUS)).toBe(0n);
  });

  it("raises and acknowledges interrupts over INTx with level semantics", () => {
    const { fn, rd, wr, events } = setup();
    wr(EDU_REG.IRQ_RAISE, 0x10);
    wr(EDU_REG.IRQ_RAISE, 0x02);
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0x12n);
    expect(events).toEqual(["intx:1"]);
    expect(fn.readConfig(6, 2) & 0x8).toBe(0x8);
    wr(EDU_REG.IRQ_ACK, 0x10);
    expect(events).toEqual(["intx:1"]); // still 0x02 pending: line stays up
    wr(EDU_REG.IRQ_ACK, 0x02);
    expect(events).toEqual(["intx:1", "intx:0"]);
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0n);
  });

  it("uses MSI once the driver enables it", () => {
    const { fn, rd, wr, events } = setup();
    fn.writeConfig(0x44, 4, 0xfee00000);
    fn.writeConfig(0x48, 4, 0);
    fn.writeConfig(0x4c, 2, 0x4041);
    fn.writeConfig(0x42, 2, 0x0001);
    wr(EDU_REG.IRQ_RAISE, 0x100);
    expect(events).toEqual(["msi:0:fee00000:4041"]);
    wr(EDU_REG.IRQ_ACK, 0x100); // MSI: nothing to lower
    expect(events.length).toBe(1);
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0n);
  });

  it("resets its registers with the function", () => {
    const { fn, rd, wr } = setup();
    wr(EDU_REG.LIVENESS, 0);
    wr(EDU_REG.IRQ_RAISE, 4);
    fn.reset();
    expect(fn.barAddress(0)).toBeUndefined();
    expect(fn.readRegion(0, EDU_REG.LIVENESS, 4)).toBe(0n);
    expect(fn.readRegion(0, EDU_REG.IRQ_STATUS, 4)).toBe(0n);
    expect(fn.irq.intxLevel).toBe(false);
    void rd;
  });
});

describe("edu: DMA engine", () => {
  function withMemory(fn: PciFunction, size = 0x10000, iova = 0x100000n) {
    const ctx = createDmaContext({ mapFd: () => { throw new Error("no fds in this test"); } });
    const guest = new Uint8Array(size);
    ctx.table.add({ iova, size: BigInt(size), perm: DMA_PERM_RW, backing: { kind: "memory", bytes: guest } });
    fn.attachDma(ctx.dma);
    return { guest, ctx };
  }

  it("runs the spec's example: RAM → buffer, then buffer → RAM, with interrupt 0x100", async () => {
    const { fn, rd, wr, events, clock } = setup();
    const { guest, ctx } = withMemory(fn);
    for (let i = 0; i < 100; i++) guest[0x200 + i] = (i * 7 + 3) & 0xff;
    const addr = 0x100200n;
    wr(EDU_REG.DMA_SRC, addr, 8);
    wr(EDU_REG.DMA_DST, 0x40000n, 8);
    wr(EDU_REG.DMA_CNT, 100);
    wr(EDU_REG.DMA_CMD, 1);
    expect(rd(EDU_REG.DMA_CMD) & 1n).toBe(1n);
    wr(EDU_REG.DMA_CNT, 5); // frozen while the transfer runs
    expect(rd(EDU_REG.DMA_CNT)).toBe(100n);
    clock.advance(99); // QEMU's 100 ms timer
    await new Promise((r) => setImmediate(r));
    expect(rd(EDU_REG.DMA_CMD) & 1n).toBe(1n);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n, 1);
    wr(EDU_REG.DMA_SRC, 0x40000);
    wr(EDU_REG.DMA_DST, addr + 100n, 8);
    wr(EDU_REG.DMA_CNT, 100);
    wr(EDU_REG.DMA_CMD, 3 | 4);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    expect([...guest.subarray(0x200 + 100, 0x200 + 200)]).toEqual([...guest.subarray(0x200, 0x200 + 100)]);
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0x100n);
    expect(events).toEqual(["intx:1"]);
    expect(rd(EDU_REG.DMA_SRC, 8)).toBe(0x40000n);
    ctx.close();
  });

  it("ignores a command write without the start bit", () => {
    const { rd, wr } = setup();
    wr(EDU_REG.DMA_CMD, 4);
    expect(rd(EDU_REG.DMA_CMD)).toBe(0n);
  });

  it("holds 64-bit DMA registers: 8-byte accesses whole, a 4-byte write replaces, a 4-byte read gives the low half", () => {
    const { rd, wr } = setup();
    wr(EDU_REG.DMA_DST, 0x8123_4567_9abc_def0n, 8);
    expect(rd(EDU_REG.DMA_DST, 8)).toBe(0x8123_4567_9abc_def0n);
    expect(rd(EDU_REG.DMA_DST)).toBe(0x9abc_def0n);
    wr(EDU_REG.DMA_DST, 0x40000); // 4-byte write: the value zero-extended (QEMU dma_rw)
    expect(rd(EDU_REG.DMA_DST, 8)).toBe(0x40000n);
    // the upper dword's offset is not a register
    wr(EDU_REG.DMA_DST + 4, 0x5);
    expect(rd(EDU_REG.DMA_DST, 8)).toBe(0x40000n);
    expect(rd(EDU_REG.DMA_DST + 4)).toBe(0xffffffffn);
    wr(EDU_REG.DMA_CNT, 0x1234_5678_0000_0010n, 8);
    expect(rd(EDU_REG.DMA_CNT, 8)).toBe(0x1234_5678_0000_0010n);
  });

  it("ignores every DMA register write, the command included, while a transfer runs", async () => {
    const { fn, rd, wr, events, clock } = setup({ dmaDelayMs: 5 });
    const { guest, ctx } = withMemory(fn);
    guest.fill(0x6b, 0, 16);
    wr(EDU_REG.DMA_SRC, 0x100000);
    wr(EDU_REG.DMA_DST, 0x40000);
    wr(EDU_REG.DMA_CNT, 16);
    wr(EDU_REG.DMA_CMD, 1);
    wr(EDU_REG.DMA_SRC, 0x100100);
    wr(EDU_REG.DMA_DST, 0x40100, 8);
    wr(EDU_REG.DMA_CMD, 1 | 2 | 4); // would reverse the direction and add an interrupt
    expect([rd(EDU_REG.DMA_SRC, 8), rd(EDU_REG.DMA_DST, 8), rd(EDU_REG.DMA_CMD, 8)]).toEqual([0x100000n, 0x40000n, 1n]);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    expect(events).toEqual([]); // the interrupt bit never got in
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0n);
    // RAM was the source: it is unchanged; the buffer got the bytes (read them back out)
    wr(EDU_REG.DMA_SRC, 0x40000);
    wr(EDU_REG.DMA_DST, 0x100800);
    wr(EDU_REG.DMA_CNT, 16);
    wr(EDU_REG.DMA_CMD, 3);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    expect([...guest.subarray(0x800, 0x810)]).toEqual(new Array(16).fill(0x6b));
    ctx.close();
  });

  it("refuses transfers outside its 4 KiB buffer and clamps addresses to the DMA mask", async () => {
    const { fn, rd, wr, errors, clock } = setup();
    const { guest, ctx } = withMemory(fn);
    guest.fill(0xee);
    wr(EDU_REG.DMA_SRC, 0x40f00);
    wr(EDU_REG.DMA_DST, 0x100000);
    wr(EDU_REG.DMA_CNT, 0x200); // runs past 0x41000
    wr(EDU_REG.DMA_CMD, 3);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    expect(guest[0]).toBe(0xee);
    expect(errors.some((m) => m.includes("outside the buffer"))).toBe(true);
    // 0x10100000 & (2^28 - 1) = 0x100000: the write lands at the clamped address
    wr(EDU_REG.DMA_SRC, 0x40000);
    wr(EDU_REG.DMA_DST, 0x10100000);
    wr(EDU_REG.DMA_CNT, 4);
    wr(EDU_REG.DMA_CMD, 3);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    expect([...guest.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
    expect(errors.some((m) => m.includes("clamping"))).toBe(true);
    ctx.close();
  });

  it("completes (without data) when the address is not mapped, and reports it", async () => {
    const { rd, wr, errors, clock } = setup();
    wr(EDU_REG.DMA_SRC, 0x1000);
    wr(EDU_REG.DMA_DST, 0x40000);
    wr(EDU_REG.DMA_CNT, 16);
    wr(EDU_REG.DMA_CMD, 1 | 4);
    await runUntil(clock, () => (rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    expect(errors.some((m) => m.includes("DMA failed"))).toBe(true);
    expect(rd(EDU_REG.IRQ_STATUS)).toBe(0x100n);
  });
});

describe("edu: migration", () => {
  it("carries registers and the DMA buffer to a new instance", async () => {
    const a = setup();
    const { ctx } = (() => {
      const c = createDmaContext({ mapFd: () => { throw new Error("no fds"); } });
      const g = new Uint8Array(0x1000).fill(0x5c);
      c.table.add({ iova: 0x100000n, size: 0x1000n, perm: DMA_PERM_RW, backing: { kind: "memory", bytes: g } });
      a.fn.attachDma(c.dma);
      return { ctx: c };
    })();
    a.wr(EDU_REG.LIVENESS, 1);
    a.wr(EDU_REG.DMA_SRC, 0x100000);
    a.wr(EDU_REG.DMA_DST, 0x40010);
    a.wr(EDU_REG.DMA_CNT, 8);
    a.wr(EDU_REG.DMA_CMD, 1);
    await runUntil(a.clock, () => (a.rd(EDU_REG.DMA_CMD) & 1n) === 0n);
    a.wr(EDU_REG.IRQ_RAISE, 0x8);
    const state = a.fn.saveState();
    const clockB = createManualClock();
    const b = createEdu({ clock: clockB }).fn;
    b.restoreState(state);
    expect(b.barAddress(0)).toBe(BAR);
    expect(b.busRead("mem", BAR + 4n, 4)).toBe(0xfffffffen);
    expect(b.busRead("mem", BAR + 0x24n, 4)).toBe(8n);
    expect(b.irq.intxLevel).toBe(true);
    // the buffer travelled: DMA it back out of b into fresh memory
    const c2 = createDmaContext({ mapFd: () => { throw new Error("no fds"); } });
    const g2 = new Uint8Array(0x100);
    c2.table.add({ iova: 0x200000n, size: 0x100n, perm: DMA_PERM_RW, backing: { kind: "memory", bytes: g2 } });
    b.attachDma(c2.dma);
    b.busWrite("mem", BAR + 0x80n, 4, 0x40010n);
    b.busWrite("mem", BAR + 0x88n, 4, 0x200000n);
    b.busWrite("mem", BAR + 0x90n, 4, 8n);
    b.busWrite("mem", BAR + 0x98n, 4, 3n);
    await runUntil(clockB, () => ((b.busRead("mem", BAR + 0x98n, 4) ?? 1n) & 1n) === 0n);
    expect([...g2.subarray(0, 8)]).toEqual(new Array(8).fill(0x5c));
    ctx.close();
    c2.close();
  });
});

describe("edu: dispose", () => {
  it("stops pending work: a started DMA never completes into a disposed function", async () => {
    const { fn, wr, events, clock } = setup({ dmaDelayMs: 5 });
    wr(EDU_REG.DMA_SRC, 0x40000);
    wr(EDU_REG.DMA_DST, 0x1000);
    wr(EDU_REG.DMA_CNT, 4);
    wr(EDU_REG.DMA_CMD, 1 | 2 | 4);
    wr(EDU_REG.FACTORIAL, 3);
    expect(clock.pending).toBe(2);
    fn.dispose();
    expect(clock.pending).toBe(0); // both timers cancelled
    clock.advance(1000);
    await new Promise((r) => setImmediate(r));
    expect(events).toEqual([]);
    expect(fn.busRead("mem", BAR, 4)).toBeUndefined();
  });
});
