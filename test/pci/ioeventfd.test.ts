// ioeventfds of a PCI function: declaration rules, eventfds owned by the library, and each
// wake-up delivered to the device's ordinary write callback (IoEventFdSpec in api.ts).
import { readdirSync, writeSync, existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { createPciFunction, PciError, PCI_MAX_IOEVENTFDS_PER_BAR, type PciFunction, type PciFunctionSpec, type RegionOps, type BarSpec } from "../../src/core/pci/index.js";
import { hostEventFds } from "../../src/host/index.js";

const base: PciFunctionSpec = { vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000 };

/** Signals an eventfd the way a peer does: an 8-byte little-endian add to its counter. */
function signal(fd: number, value = 1n): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  expect(writeSync(fd, b)).toBe(8);
}

/** Resolves once `cond()` holds, turning the event loop meanwhile; fails after 10 s (a
 *  deadline for a loaded machine, not a timing assertion). */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not reached within 10 s");
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Lets the loop run a few turns (for "nothing happened" checks). */
const settle = () => new Promise((r) => setTimeout(r, 20));

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

function recorder(): { writes: string[]; ops: RegionOps } {
  const writes: string[] = [];
  return {
    writes,
    ops: {
      read: () => 0,
      write: (offset, size, value) => void writes.push(`w${size}@${offset.toString(16)}=${value.toString(16)}`),
      valid: { min: 1, max: 8 },
      impl: { min: 1, max: 8 },
    },
  };
}

const made: PciFunction[] = [];
function build(bar: Partial<BarSpec>, extra: Partial<PciFunctionSpec> = {}): PciFunction {
  const fn = createPciFunction({ ...base, ...extra, bars: [{ kind: "mem32", size: 0x1000, ...bar } as BarSpec] });
  made.push(fn);
  return fn;
}
afterEach(() => {
  for (const fn of made.splice(0)) fn.dispose();
});

function specError(bar: Partial<BarSpec>, extra: Partial<PciFunctionSpec> = {}): PciError {
  try {
    build(bar, extra);
  } catch (e) {
    expect(e).toBeInstanceOf(PciError);
    expect((e as PciError).code).toBe("PCI_INVALID_SPEC");
    return e as PciError;
  }
  throw new Error("the declaration was accepted");
}

describe("ioeventfd declarations", () => {
  it("lists the declared sub-regions with one library-owned eventfd each, stable across calls", () => {
    const { ops } = recorder();
    const fn = build({ ops, ioeventfds: [{ offset: 0x10, size: 4 }, { offset: 0x20, size: 2, datamatch: 7 }, { offset: 0x20, size: 2, datamatch: 9n }] });
    const list = fn.ioEventFds(0, hostEventFds);
    expect(list.map(({ fd: _fd, ...rest }) => rest)).toEqual([
      { region: 0, offset: 0x10, size: 4, datamatch: undefined, space: "mem" },
      { region: 0, offset: 0x20, size: 2, datamatch: 7n, space: "mem" },
      { region: 0, offset: 0x20, size: 2, datamatch: 9n, space: "mem" },
    ]);
    const fds = list.map((e) => e.fd);
    expect(new Set(fds).size).toBe(3);
    for (const fd of fds) expect(existsSync(`/proc/self/fd/${fd}`)).toBe(true);
    expect(fn.ioEventFds(0, hostEventFds).map((e) => e.fd)).toEqual(fds);
  });

  it("answers [] for regions without ioeventfds and refuses indices past the ROM", () => {
    const { ops } = recorder();
    const fn = build({ ops }, { rom: { bytes: new Uint8Array(16) } });
    expect(fn.ioEventFds(0, hostEventFds)).toEqual([]);
    expect(fn.ioEventFds(3, hostEventFds)).toEqual([]);
    expect(fn.ioEventFds(6, hostEventFds)).toEqual([]);
    expect(() => fn.ioEventFds(7, hostEventFds)).toThrow(expect.objectContaining({ code: "PCI_REGION_INDEX" }));
  });

  it("marks I/O BAR sub-regions as port I/O", () => {
    const { ops } = recorder();
    const fn = createPciFunction({ ...base, bars: [{ kind: "io", size: 32, ops, ioeventfds: [{ offset: 4, size: 2 }] }] });
    made.push(fn);
    expect(fn.ioEventFds(0, hostEventFds)).toMatchObject([{ offset: 4, size: 2, space: "io" }]);
  });

  it("refuses declarations the rules exclude, naming the field", () => {
    const { ops } = recorder();
    expect(specError({ ram: true, ioeventfds: [{ offset: 0, size: 4 }] }).field).toBe("bars[0].ioeventfds");
    expect(specError({ ops, ioeventfds: [{ offset: 2, size: 4 }] }).field).toBe("bars[0].ioeventfds[0].offset");
    expect(specError({ ops, ioeventfds: [{ offset: 0xffc, size: 8 }] }).field).toBe("bars[0].ioeventfds[0].offset");
    expect(specError({ ops, ioeventfds: [{ offset: 0x1000, size: 4 }] }).field).toBe("bars[0].ioeventfds[0].offset");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 3 as 4 }] }).field).toBe("bars[0].ioeventfds[0].size");
    expect(specError({ ops: { ...ops, valid: { min: 4, max: 4 } }, ioeventfds: [{ offset: 0, size: 2 }] }).field).toBe("bars[0].ioeventfds[0].size");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 1, datamatch: 256 }] }).field).toBe("bars[0].ioeventfds[0].datamatch");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 1, datamatch: -1 }] }).field).toBe("bars[0].ioeventfds[0].datamatch");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 4, datamatch: 1.5 }] }).field).toBe("bars[0].ioeventfds[0].datamatch");
    const tooMany = Array.from({ length: PCI_MAX_IOEVENTFDS_PER_BAR + 1 }, (_, i) => ({ offset: i * 4, size: 4 as const }));
    expect(specError({ ops, ioeventfds: tooMany }).field).toBe("bars[0].ioeventfds");
    expect(() => build({ ops, ioeventfds: tooMany.slice(1) })).not.toThrow();
  });

  it("applies KVM's collision rule: one register, several distinct datamatch values only", () => {
    const { ops } = recorder();
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 4 }, { offset: 0, size: 4 }] }).field).toBe("bars[0].ioeventfds[1]");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 4, datamatch: 1 }, { offset: 0, size: 4 }] }).field).toBe("bars[0].ioeventfds[1]");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 4, datamatch: 1 }, { offset: 0, size: 4, datamatch: 1n }] }).field).toBe("bars[0].ioeventfds[1]");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 4, datamatch: 1 }, { offset: 0, size: 2, datamatch: 2 }] }).field).toBe("bars[0].ioeventfds[1]");
    expect(specError({ ops, ioeventfds: [{ offset: 0, size: 8 }, { offset: 4, size: 4 }] }).field).toBe("bars[0].ioeventfds[1]");
    expect(() => build({ ops, ioeventfds: [{ offset: 0, size: 4, datamatch: 1 }, { offset: 0, size: 4, datamatch: 2 }, { offset: 4, size: 4 }] })).not.toThrow();
  });

  it("refuses ioeventfds in the MSI-X table or PBA (their writes never reach the device)", () => {
    const { ops } = recorder();
    const msix = { capabilities: [{ kind: "msix" as const, vectors: 2, tableBar: 0, tableOffset: 0x800, pbaBar: 0, pbaOffset: 0xc00 }] };
    expect(specError({ ops, ioeventfds: [{ offset: 0x810, size: 4 }] }, msix).field).toBe("bars[0].ioeventfds[0]");
    expect(specError({ ops, ioeventfds: [{ offset: 0xc00, size: 8 }] }, msix).field).toBe("bars[0].ioeventfds[0]");
    expect(() => build({ ops, ioeventfds: [{ offset: 0x7fc, size: 4 }] }, msix)).not.toThrow();
  });
});

describe("ioeventfd delivery", () => {
  it("without datamatch: one write per wake-up whose value counts the rings folded into it", async () => {
    const { ops, writes } = recorder();
    const fn = build({ ops, ioeventfds: [{ offset: 0x10, size: 4 }] });
    const [e] = fn.ioEventFds(0, hostEventFds);
    signal(e.fd);
    signal(e.fd);
    signal(e.fd);
    expect(writes).toEqual([]); // delivered on the loop, never synchronously
    await until(() => writes.length > 0);
    await settle();
    expect(writes).toEqual(["w4@10=3"]);
    signal(e.fd);
    await until(() => writes.length === 2);
    expect(writes[1]).toBe("w4@10=1");
  });

  it("saturates the ring count at the register's width instead of wrapping", async () => {
    const { ops, writes } = recorder();
    const fn = build({ ops, ioeventfds: [{ offset: 3, size: 1 }] });
    signal(fn.ioEventFds(0, hostEventFds)[0].fd, 300n);
    await until(() => writes.length === 1);
    expect(writes).toEqual(["w1@3=ff"]);
  });

  it("with datamatch: the device sees a write of the matched value on the shared register", async () => {
    const { ops, writes } = recorder();
    const fn = build({ ops, ioeventfds: [{ offset: 0x20, size: 2, datamatch: 7 }, { offset: 0x20, size: 2, datamatch: 9 }, { offset: 0x40, size: 8, datamatch: 0x1122334455667788n }] });
    const [seven, nine, wide] = fn.ioEventFds(0, hostEventFds);
    signal(nine.fd);
    await until(() => writes.length === 1);
    signal(seven.fd, 5n); // five rings before the loop ran: one write, the value is the match
    await until(() => writes.length === 2);
    signal(wide.fd);
    await until(() => writes.length === 3);
    await settle();
    expect(writes).toEqual(["w2@20=9", "w2@20=7", "w8@40=1122334455667788"]);
  });

  it("delivers through the region's access path (impl splitting, shadow windows)", async () => {
    const writes: string[] = [];
    const ops: RegionOps = {
      read: () => 0,
      write: (offset, size, value) => void writes.push(`w${size}@${offset.toString(16)}=${value.toString(16)}`),
      valid: { min: 4, max: 8 },
      impl: { min: 4, max: 4 },
    };
    const fn = build({ ops, shadow: [{ offset: 0x100, size: 0x10 }], ioeventfds: [{ offset: 0x18, size: 8, datamatch: 0xaaaabbbb_ccccddddn }, { offset: 0x104, size: 4 }] });
    const [split, shadowed] = fn.ioEventFds(0, hostEventFds);
    signal(split.fd);
    await until(() => writes.length === 2);
    signal(shadowed.fd, 2n);
    await until(() => writes.length === 3);
    expect(writes).toEqual(["w4@18=ccccdddd", "w4@1c=aaaabbbb", "w4@104=2"]);
  });

  it("hands a failing write to the error handler, or to a process warning without one", async () => {
    const fn = build({
      ops: {
        read: () => 0,
        write: () => {
          throw new Error("doorbell jammed");
        },
      },
      ioeventfds: [{ offset: 0, size: 4 }],
    });
    const errors: PciError[] = [];
    fn.setIoEventFdErrorHandler((e) => errors.push(e));
    const [e] = fn.ioEventFds(0, hostEventFds);
    signal(e.fd);
    await until(() => errors.length === 1);
    expect(errors[0]).toMatchObject({ code: "PCI_DEVICE_ERROR", region: 0, offset: 0, size: 4, errno: 5 });
    expect((errors[0].cause as Error).message).toBe("doorbell jammed");

    fn.setIoEventFdErrorHandler(null);
    const warned = new Promise<Error>((resolve) => process.once("warning", resolve));
    signal(e.fd);
    expect((await warned).message).toMatch(/ioeventfd write of 4 bytes at region 0 offset 0x0 failed/);
  });

  it("keeps the eventfds across a function reset", async () => {
    const { ops, writes } = recorder();
    const fn = build({ ops, ioeventfds: [{ offset: 0x10, size: 4 }] });
    const [e] = fn.ioEventFds(0, hostEventFds);
    fn.reset();
    expect(fn.ioEventFds(0, hostEventFds)[0].fd).toBe(e.fd);
    signal(e.fd);
    await until(() => writes.length === 1);
  });

  it("release delivers what is pending, closes the fds, and the next call makes fresh ones", async () => {
    const { ops, writes } = recorder();
    const fn = build({ ops, ioeventfds: [{ offset: 0x10, size: 4 }, { offset: 0x14, size: 4, datamatch: 1 }] });
    const before = openFds();
    const first = fn.ioEventFds(0, hostEventFds).map((e) => e.fd);
    expect(openFds()).toBe(before + 2);
    signal(first[0], 4n);
    fn.releaseIoEventFds(); // synchronously: the pending rings are not lost
    expect(writes).toEqual(["w4@10=4"]);
    expect(openFds()).toBe(before);
    for (let cycle = 0; cycle < 20; cycle++) {
      fn.ioEventFds(0, hostEventFds);
      fn.releaseIoEventFds();
    }
    expect(openFds()).toBe(before);
    const again = fn.ioEventFds(0, hostEventFds);
    signal(again[1].fd);
    await until(() => writes.length === 2);
    expect(writes[1]).toBe("w4@14=1");
  });

  it("dispose closes the eventfds without calling the device", async () => {
    const { ops, writes } = recorder();
    const before = openFds();
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops, ioeventfds: [{ offset: 0, size: 4 }] }] });
    const [e] = fn.ioEventFds(0, hostEventFds);
    signal(e.fd);
    fn.dispose();
    expect(openFds()).toBe(before);
    await settle();
    expect(writes).toEqual([]);
    expect(() => fn.ioEventFds(0, hostEventFds)).toThrow(expect.objectContaining({ code: "PCI_REGION_INDEX" }));
    fn.releaseIoEventFds(); // harmless after dispose
  });
});
