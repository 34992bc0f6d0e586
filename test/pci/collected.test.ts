// A PCI function dropped without dispose() gives its core regions and function block back to
// the shared wasm core once it is garbage-collected: the core's dispatch table holds the
// device callbacks, so they must not lead back to the function (DeviceContext reaches it
// weakly), and a FinalizationRegistry releases what dispose() would have.
import { describe, expect, it } from "vitest";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createEdu, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { createPciFunction, defaultPciCore } from "../../src/core/pci/function.js";
import type { DeviceContext } from "../../src/core/pci/api.js";
import { PciError } from "../../src/core/pci/errors.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Collects until `done()` holds; finalizers run as tasks after a collection, so yield between. */
async function collectUntil(done: () => boolean): Promise<void> {
  const settle = async () => {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  };
  for (let i = 0; i < 50 && !done(); i++) await settle();
  // The library's own registry runs its cleanup in tasks of its own: give them their turn too.
  for (let i = 0; i < 3; i++) await settle();
}

const MiB = 1024 * 1024;

/** Makes `n` edus, uses each (its BAR mapped on its own bus, its callbacks in the core's
 *  table), watches it, and keeps no reference (a separate frame: no local outlives it). */
function dropEdus(n: number, dispose: boolean, watch: FinalizationRegistry<void>): void {
  for (let i = 0; i < n; i++) {
    const { fn } = createEdu();
    fn.writeConfig(0x10, 4, 0xfe000000);
    fn.writeConfig(0x04, 2, 0x0002);
    expect(fn.busRead("mem", 0xfe000000n, 4)).toBe(BigInt(EDU_ID_VALUE));
    if (dispose) fn.dispose();
    watch.register(fn);
  }
}

describe("a PCI function that is never disposed", () => {
  it("is garbage-collected, and the shared core reuses its regions: many rounds of dropped edus do not grow the core's memory", async () => {
    const core = defaultPciCore();
    const ROUNDS = 12;
    const PER_ROUND = 150; // ~130 KiB of core memory each: a leak would need ~230 MiB
    let finalized = 0;
    const watch = new FinalizationRegistry<void>(() => finalized++);
    const sizes: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      dropEdus(PER_ROUND, false, watch);
      const want = (round + 1) * PER_ROUND;
      await collectUntil(() => finalized >= want);
      expect(finalized, `round ${round}: functions collected`).toBe(want);
      sizes.push(core.memory.buffer.byteLength);
    }
    console.log(`core memory after each round of ${PER_ROUND} dropped edus: ${sizes.map((b) => (b / MiB).toFixed(0)).join(", ")} MiB`);
    // Later rounds fit in the space the earlier ones gave back (linear memory only grows, by
    // doubling: leaking, the 12 rounds would need 256 MiB).
    expect(sizes.at(-1)).toBeLessThanOrEqual(2 * sizes[0]);
    // The core still works: a fresh function reads its registers.
    const { fn } = createEdu();
    fn.writeConfig(0x10, 4, 0xfe000000);
    fn.writeConfig(0x04, 2, 0x0002);
    expect(fn.busRead("mem", 0xfe000000n, 4)).toBe(BigInt(EDU_ID_VALUE));
    fn.dispose();
  }, 120_000);

  it("disposed functions are not released a second time when collected", async () => {
    let finalized = 0;
    const watch = new FinalizationRegistry<void>(() => finalized++);
    dropEdus(50, true, watch);
    await collectUntil(() => finalized >= 50);
    expect(finalized).toBe(50);
    // A double free would corrupt the core's tables: functions made now must all work.
    const live = Array.from({ length: 20 }, () => createEdu().fn);
    live.forEach((fn, i) => {
      fn.writeConfig(0x10, 4, 0xfe000000 + i * 0x100000);
      fn.writeConfig(0x04, 2, 0x0002);
    });
    live.forEach((fn, i) => expect(fn.busRead("mem", BigInt(0xfe000000 + i * 0x100000), 4)).toBe(BigInt(EDU_ID_VALUE)));
    for (const fn of live) fn.dispose();
  });

  it("a callback that outlives its collected function (a stray timer) gets a detached context: no-op interrupts, no DMA, and fn throws PciError", async () => {
    let kept: DeviceContext | undefined;
    let finalized = 0;
    const watch = new FinalizationRegistry<void>(() => finalized++);
    (() => {
      const fn = createPciFunction({
        vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000, interruptPin: 1,
        bars: [{ kind: "mem32", size: 4096, registers: { read: (_o, _s, ctx) => ((kept = ctx), 0), write() {} } }],
      });
      fn.readRegion(0, 0, 4);
      watch.register(fn);
    })();
    await collectUntil(() => finalized >= 1);
    expect(finalized).toBe(1);
    const ctx = kept!;
    expect(ctx.dma).toBe(null);
    expect(ctx.irq.notify(0)).toBe(false);
    expect(() => ctx.irq.setIntx(true)).not.toThrow();
    expect(() => ctx.fn).toThrow(PciError);
  });
});
