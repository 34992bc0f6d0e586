// Shadow windows are ROM devices in the memory core: guest reads are served from linear
// memory inside wasm (no host import runs), writes reach the device's ops.write, and the
// device updates the bytes through PciFunction.shadow(), whose view follows memory growth.
import { describe, expect, it } from "vitest";
import { createPciFunction, type PciFunctionSpec, type RegionOps } from "../../src/core/pci/index.js";
import { countingCore } from "../support/counting-core.js";
import { errCode } from "./helpers.js";

function device() {
  const calls: string[] = [];
  const ops: RegionOps = {
    read(offset, size) {
      calls.push(`r${size}@${offset.toString(16)}`);
      return 0xee;
    },
    write(offset, size, value) {
      calls.push(`w${size}@${offset.toString(16)}=${value.toString(16)}`);
    },
    valid: { min: 4, max: 8 },
    impl: { min: 4, max: 4 },
  };
  return { calls, ops };
}

const base: PciFunctionSpec = { vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000 };
const BAR_ADDRESS = 0xfe000000;

describe("shadow windows", () => {
  it("serve reads inside wasm — region, bus and replayed-trace reads call no host import — while writes reach ops.write", () => {
    const { core, crossings } = countingCore();
    const dev = device();
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: dev.ops, shadow: [{ offset: 0x100, size: 0x10 }] }] }, { core });
    fn.writeConfig(0x10, 4, BAR_ADDRESS);
    fn.writeConfig(0x04, 2, 0x0002); // memory decode on
    fn.shadow(0).set([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    const bus = fn.busAddressSpace("mem");
    const trace = bus.core.createTrace(4096);
    for (let i = 0; i < 4096; i++) trace.read(BAR_ADDRESS + 0x100 + (i & 7), 1);
    for (const k of Object.keys(crossings)) delete crossings[k]; // set-up done
    expect(fn.readRegion(0, 0x100, 4)).toBe(0x44332211n);
    expect(fn.readRegion(0, 0x100, 8)).toBe(0x8877665544332211n);
    expect(fn.busRead("mem", BigInt(BAR_ADDRESS + 0x104), 4)).toBe(0x88776655n);
    expect(bus.replay(trace)).toEqual({ count: 4096, failed: 0 });
    expect(trace.value(4095)).toBe(0x88);
    const bytes = new Uint8Array(16);
    fn.readRegionBytes(0, 0x100, bytes);
    expect(bytes.subarray(0, 8)).toEqual(new Uint8Array([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]));
    expect(crossings).toEqual({});
    expect(dev.calls).toEqual([]);
    // The counter counts: a read next to the window crosses once, a write in it too.
    expect(fn.readRegion(0, 0xfc, 4)).toBe(0xeen);
    fn.writeRegion(0, 0x108, 4, 0xcafen);
    expect(crossings).toEqual({ mem_io_read: 1, mem_io_write: 1 });
    expect(dev.calls).toEqual(["r4@fc", "w4@108=cafe"]);
    expect(fn.readRegion(0, 0x108, 4)).toBe(0n); // writes do not change the shadow; the device does
    fn.dispose();
  });

  it("reads of any size are served (QEMU ROMD reads are direct); writes keep the BAR's valid sizes", () => {
    const dev = device();
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: dev.ops, shadow: [{ offset: 0x40, size: 8 }] }] });
    fn.shadow(0).set([1, 2, 3, 4]);
    expect(fn.readRegion(0, 0x41, 1)).toBe(2n);
    expect(fn.readRegion(0, 0x41, 2)).toBe(0x0302n);
    expect(errCode(() => fn.writeRegion(0, 0x41, 1, 0n))).toBe("PCI_ACCESS_INVALID");
    expect(errCode(() => fn.readRegion(0, 0x81, 1))).toBe("PCI_ACCESS_INVALID"); // outside: the device's rules
    fn.writeRegion(0, 0x40, 8, 0x1_0000_0002n); // impl 4: split for the device
    expect(dev.calls).toEqual(["w4@40=2", "w4@44=1"]);
    fn.dispose();
  });

  it("views follow linear-memory growth: an old view is detached, shadow() gives the live bytes", () => {
    const { core } = countingCore();
    const dev = device();
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: dev.ops, shadow: [{ offset: 0, size: 0x10 }, { offset: 0x20, size: 4 }] }] }, { core });
    const before = fn.shadow(0, 1);
    before.set([9, 8, 7, 6]);
    expect(fn.shadow(0, 1)).toBe(before); // same memory: the same view
    const buffer = core.memory.buffer;
    // Another function on the same core with a 64 MiB RAM BAR makes linear memory grow.
    const big = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 64 << 20, ram: true }] }, { core });
    expect(core.memory.buffer).not.toBe(buffer);
    expect(before.length).toBe(0); // detached
    const after = fn.shadow(0, 1);
    expect(Array.from(after)).toEqual([9, 8, 7, 6]);
    after[0] = 0x42;
    expect(fn.readRegion(0, 0x20, 4)).toBe(0x06070842n);
    big.dispose();
    fn.dispose();
  });

  it("reset clears the windows; saveState/restoreState carry them", () => {
    const spec = (): PciFunctionSpec => ({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: device().ops, shadow: [{ offset: 0x10, size: 8 }] }] });
    const a = createPciFunction(spec());
    a.shadow(0).set([5, 6, 7, 8]);
    const b = createPciFunction(spec());
    b.restoreState(a.saveState());
    expect(b.readRegion(0, 0x10, 4)).toBe(0x08070605n);
    b.reset();
    expect(b.readRegion(0, 0x10, 4)).toBe(0n);
    expect(Array.from(b.shadow(0))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    a.dispose();
    b.dispose();
  });
});
