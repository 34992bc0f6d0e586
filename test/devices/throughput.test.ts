import { writeSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createThroughputDevice, THROUGHPUT_REG as REG } from "../../src/devices/throughput.js";
import type { InterruptSink } from "../../src/core/index.js";
import { MemoryCore } from "../../src/core/memory/index.js";
import { instantiateCore, type HostImportFactory } from "../../src/core/wasm.js";
import { hostEventFds } from "../../src/host/index.js";

describe("throughput device", () => {
  it("serves its data BAR from memory the caller can see", () => {
    const bytes = new Uint8Array(1 << 16);
    const { fn } = createThroughputDevice({ data: { bytes, fd: 42 } });
    const chunk = new Uint8Array(4096).map((_, i) => i * 13);
    fn.writeRegionBytes(0, 0x1000, chunk);
    expect(bytes.subarray(0x1000, 0x2000)).toEqual(chunk);
    const back = new Uint8Array(4096);
    fn.readRegionBytes(0, 0x1000, back);
    expect(back).toEqual(chunk);
    expect(fn.regionInfo(0)).toMatchObject({ size: 1n << 16n, mmap: { fd: 42, offset: 0n } });
  });

  it("counts doorbells, mirrors count and value into a side-effect-free shadow", () => {
    const seen: number[] = [];
    const dev = createThroughputDevice({ onDoorbell: (v) => seen.push(v) });
    const { fn } = dev;
    expect(fn.readRegion(2, REG.ID, 4)).toBe(0x77647470n);
    for (let i = 1; i <= 5; i++) fn.writeRegion(2, REG.DOORBELL, 4, BigInt(i * 100));
    expect(dev.doorbells).toBe(5);
    expect(seen).toEqual([100, 200, 300, 400, 500]);
    expect(fn.readRegion(2, REG.DOORBELL_COUNT, 8)).toBe((500n << 32n) | 5n);
    fn.writeRegion(2, REG.SCRATCH, 4, 0xabcdn);
    expect(fn.readRegion(2, REG.SCRATCH, 4)).toBe(0xabcdn);
    fn.reset();
    expect(fn.readRegion(2, REG.DOORBELL_COUNT, 4)).toBe(0n);
  });

  it("serves its doorbell count and sum inside wasm: polling them in a replayed trace runs no host call", () => {
    const crossings: string[] = [];
    const counted: HostImportFactory = (ref) =>
      Object.fromEntries(
        Object.entries(MemoryCore.hostImports(ref)).map(([name, fn]) => [name, (...args: unknown[]) => (crossings.push(name), (fn as (...a: unknown[]) => unknown)(...args))]),
      );
    const dev = createThroughputDevice({ dataSize: 4096, core: instantiateCore([counted]) });
    const { fn } = dev;
    fn.writeConfig(0x18, 4, 0xfe000000); // BAR 2
    fn.writeConfig(0x04, 2, 0x0002);
    for (let i = 1; i <= 3; i++) fn.writeRegion(2, REG.DOORBELL, 4, BigInt(i));
    expect(crossings).toEqual(["mem_io_write", "mem_io_write", "mem_io_write"]);
    const bus = fn.busAddressSpace("mem");
    const poll = bus.core.createTrace(3000);
    for (let i = 0; i < 1000; i++) poll.read(0xfe000000 + REG.DOORBELL_COUNT, 4).read(0xfe000000 + REG.LAST_DOORBELL, 4).read(0xfe000000 + REG.DOORBELL_SUM, 4);
    expect(bus.replay(poll).failed).toBe(0);
    expect([poll.value(2997), poll.value(2998), poll.value(2999)]).toEqual([3, 3, 6]);
    expect(crossings.length).toBe(3); // the polls added none
    fn.dispose();
  });

  it("interrupts on doorbell through MSI-X when enabled, else INTx", () => {
    const { fn } = createThroughputDevice({ dataSize: 4096 });
    const events: string[] = [];
    const sink: InterruptSink = { intx: (a) => events.push(`intx:${+a}`), vector: (k, v) => events.push(`${k}:${v}`) };
    fn.attachInterruptSink(sink);
    fn.writeRegion(2, REG.CONTROL, 4, 1n);
    fn.writeRegion(2, REG.DOORBELL, 4, 1n);
    fn.writeRegion(2, REG.IRQ_ACK, 4, 0n);
    expect(events).toEqual(["intx:1", "intx:0"]);
    const cap = fn.readConfig(0x34, 1);
    fn.writeRegion(2, 0x800, 4, 0xfee00000n);
    fn.writeRegion(2, 0x80c, 4, 0n);
    fn.writeConfig(cap + 2, 2, 0x8000);
    fn.writeRegion(2, REG.DOORBELL, 4, 2n);
    expect(events).toEqual(["intx:1", "intx:0", "msix:0"]);
  });

  it("sums doorbell values in a side-effect-free register, cleared by reset", () => {
    const dev = createThroughputDevice({ dataSize: 4096 });
    const { fn } = dev;
    fn.writeRegion(2, REG.DOORBELL, 4, 0xffff_fff0n);
    fn.writeRegion(2, REG.DOORBELL, 4, 0x20n);
    expect(fn.readRegion(2, REG.DOORBELL_SUM, 4)).toBe(0x10n); // mod 2^32
    expect(dev.doorbells).toBe(2);
    fn.reset();
    expect(fn.readRegion(2, REG.DOORBELL_SUM, 4)).toBe(0n);
    fn.dispose();
  });

  it("offers its doorbell as an ioeventfd without datamatch; rings reach the same handler", async () => {
    const seen: number[] = [];
    const dev = createThroughputDevice({ dataSize: 4096, onDoorbell: (v) => seen.push(v) });
    const { fn } = dev;
    expect(fn.ioEventFds(0, hostEventFds)).toEqual([]);
    const [bell] = fn.ioEventFds(2, hostEventFds);
    expect(bell).toMatchObject({ region: 2, offset: REG.DOORBELL, size: 4, datamatch: undefined, space: "mem" });
    const ring = Buffer.alloc(8);
    ring.writeBigUInt64LE(1n);
    for (let i = 0; i < 5; i++) writeSync(bell.fd, ring);
    const deadline = Date.now() + 10_000; // a deadline for a loaded machine, not a timing check
    while (fn.readRegion(2, REG.DOORBELL_SUM, 4) < 5n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
    expect(fn.readRegion(2, REG.DOORBELL_SUM, 4)).toBe(5n);
    expect(seen.reduce((a, b) => a + b, 0)).toBe(5);
    expect(dev.doorbells).toBe(seen.length); // one handler call per wake-up, 1..5 of them
    fn.dispose();
  });
});
