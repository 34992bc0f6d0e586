import { describe, expect, it } from "vitest";
import { createPciFunction, PciError, type InterruptSink, type MsiMessage, type PciFunctionSpec, type RegionOps } from "../../src/core/pci/index.js";
import { errCode } from "./helpers.js";

/** A register file that records every callback it receives. */
function recorder(size = 0x100, extra: Partial<RegionOps> = {}) {
  const mem = new Uint8Array(size);
  const calls: string[] = [];
  const ops: RegionOps = {
    read(offset, sz) {
      calls.push(`r${sz}@${offset.toString(16)}`);
      let v = 0n;
      for (let i = sz - 1; i >= 0; i--) v = (v << 8n) | BigInt(mem[offset + i] ?? 0);
      return sz === 8 ? v : Number(v);
    },
    write(offset, sz, value) {
      calls.push(`w${sz}@${offset.toString(16)}=${value.toString(16)}`);
      const v = BigInt(value);
      for (let i = 0; i < sz; i++) mem[offset + i] = Number((v >> BigInt(8 * i)) & 0xffn);
    },
    ...extra,
  };
  return { mem, calls, ops };
}

function sinkLog() {
  const events: string[] = [];
  const messages: MsiMessage[] = [];
  const sink: InterruptSink = {
    intx(a) {
      events.push(`intx:${a ? 1 : 0}`);
    },
    vector(kind, v, m) {
      events.push(`${kind}:${v}`);
      messages.push(m);
    },
  };
  return { events, messages, sink };
}

const base: PciFunctionSpec = { vendorId: 0x1234, deviceId: 0x5678, classCode: 0x020000, revision: 3, subsystemVendorId: 0x1af4, subsystemId: 0x1100, interruptPin: 1 };

describe("header", () => {
  it("lays out ids, class, revision, subsystem and the interrupt pin", () => {
    const fn = createPciFunction(base);
    expect(fn.readConfig(0, 4)).toBe(0x56781234);
    expect(fn.readConfig(8, 4)).toBe(0x02000003);
    expect(fn.readConfig(0x2c, 4)).toBe(0x11001af4);
    expect(fn.readConfig(0x3d, 1)).toBe(1);
    expect(fn.readConfig(0x0e, 1)).toBe(0);
    expect(fn.configSize).toBe(256);
  });

  it("ignores writes to read-only registers and bits (QEMU pci_init_wmask)", () => {
    const fn = createPciFunction({ ...base, capabilities: [{ kind: "pcie" }] });
    fn.writeConfig(0, 4, 0xffffffff);
    fn.writeConfig(8, 4, 0);
    fn.writeConfig(0x3d, 1, 4);
    fn.writeConfig(0x2c, 4, 0);
    expect(fn.readConfig(0, 4)).toBe(0x56781234);
    expect(fn.readConfig(8, 4)).toBe(0x02000003);
    expect(fn.readConfig(0x3d, 1)).toBe(1);
    expect(fn.readConfig(0x2c, 4)).toBe(0x11001af4);
    fn.writeConfig(0x3c, 1, 11); // interrupt line is writable
    expect(fn.readConfig(0x3c, 1)).toBe(11);
    // command: only IO, MEMORY, MASTER, SERR and INTX_DISABLE are writable
    fn.writeConfig(4, 2, 0xffff);
    expect(fn.readConfig(4, 2)).toBe(0x0507);
    fn.writeConfig(4, 2, 0);
    // status: the capability-list bit is read-only, writing ones clears nothing that is set
    fn.writeConfig(6, 2, 0xffff);
    expect(fn.readConfig(6, 2) & 0x10).toBe(0x10);
    // PCIe device control: only the error-reporting enables are writable
    const pcie = fn.readConfig(0x34, 1);
    fn.writeConfig(pcie + 8, 2, 0xffff);
    expect(fn.readConfig(pcie + 8, 2)).toBe(0x000f);
    // PCIe device status error bits are W1C and start clear: writing ones sets nothing
    fn.writeConfig(pcie + 10, 2, 0xffff);
    expect(fn.readConfig(pcie + 10, 2) & 0xf).toBe(0);
  });

  it("clears write-1-to-clear bits only where a 1 is written (QEMU w1cmask)", () => {
    // A raw capability whose first body byte holds latched W1C flags (high nibble) next to
    // read-only bits (low nibble), and whose second byte is half writable.
    const fn = createPciFunction({
      ...base,
      capabilities: [{ kind: "raw", id: 0x09, body: new Uint8Array([0xff, 0xa5]), wmask: new Uint8Array([0x00, 0x0f]), w1cmask: new Uint8Array([0xf0, 0x00]) }],
      extendedCapabilities: [{ id: 0x1, version: 1, body: new Uint8Array([0x00, 0x00, 0x33, 0x00]), w1cmask: new Uint8Array([0, 0, 0xff, 0]) }],
    });
    const cap = fn.readConfig(0x34, 1);
    expect(fn.readConfig(cap, 1)).toBe(0x09);
    const flags = cap + 2;
    fn.writeConfig(flags, 1, 0x0f); // ones on read-only bits only: nothing changes
    expect(fn.readConfig(flags, 1)).toBe(0xff);
    fn.writeConfig(flags, 1, 0x30); // clears exactly bits 4 and 5
    expect(fn.readConfig(flags, 1)).toBe(0xcf);
    fn.writeConfig(flags, 1, 0x00); // zeros clear nothing
    expect(fn.readConfig(flags, 1)).toBe(0xcf);
    fn.writeConfig(flags, 2, 0x0380); // bit 7 cleared, byte 2: low nibble written, high kept
    expect(fn.readConfig(flags, 2)).toBe(0xa34f);
    // the same rule in the extended space
    fn.writeConfig(0x106, 1, 0x11);
    expect(fn.readConfig(0x106, 1)).toBe(0x22);
    // reset brings the latched bits back as declared
    fn.reset();
    expect(fn.readConfig(flags, 2)).toBe(0xa5ff);
  });

  it("rejects config accesses out of range or crossing a dword", () => {
    const fn = createPciFunction(base);
    expect(errCode(() => fn.readConfig(0xfe, 4))).toBe("PCI_CONFIG_RANGE");
    expect(errCode(() => fn.readConfig(0x100, 1))).toBe("PCI_CONFIG_RANGE");
    expect(errCode(() => fn.readConfig(3, 2))).toBe("PCI_CONFIG_ALIGN");
    expect(errCode(() => fn.writeConfig(2, 4, 0))).toBe("PCI_CONFIG_ALIGN");
    expect(errCode(() => fn.readConfig(0, 3 as 4))).toBe("PCI_CONFIG_ALIGN");
    // The last byte of the space is accessible with every size that fits (QEMU's remote
    // fails 1-2 byte accesses at 0xfd..0xff; we do not).
    expect(fn.readConfig(0xff, 1)).toBe(0);
    expect(fn.readConfig(0xfe, 2)).toBe(0);
  });

  it("splits byte accesses of any length and alignment into register pieces", () => {
    const seen: string[] = [];
    const fn = createPciFunction({
      ...base,
      configWrite(offset, size, value) {
        seen.push(`${offset.toString(16)}/${size}=${value.toString(16)}`);
      },
    });
    const out = new Uint8Array(13);
    fn.readConfigBytes(1, out);
    expect([...out]).toEqual([...fn.configSnapshot().subarray(1, 14)]);
    fn.writeConfigBytes(0x3b, new Uint8Array([1, 2, 3, 4, 5, 6, 7]));
    expect(seen).toEqual(["3b/1=1", "3c/4=5040302", "40/2=706"]);
    expect(fn.readConfig(0x3c, 1)).toBe(2);
    expect(fn.readConfig(0x40, 2)).toBe(0x0706); // device-specific space is writable (QEMU)
    expect(errCode(() => fn.readConfigBytes(0xf0, new Uint8Array(0x11)))).toBe("PCI_CONFIG_RANGE");
  });

  it("explains invalid declarations", () => {
    const bad = (s: Partial<PciFunctionSpec>) => {
      try {
        createPciFunction({ ...base, ...s } as PciFunctionSpec);
      } catch (e) {
        return (e as PciError).field;
      }
      return "accepted";
    };
    expect(bad({ vendorId: 0x10000 })).toBe("vendorId");
    expect(bad({ bars: [{ kind: "mem32", size: 0x3000, ram: true }] })).toBe("bars[0].size");
    expect(bad({ bars: [{ kind: "io", size: 512, ram: true }] })).toBe("bars[0].size");
    expect(bad({ bars: [{ kind: "mem32", size: 0x1000 }] })).toBe("bars[0]");
    expect(bad({ bars: [{ kind: "mem64", size: 0x1000, ram: true }, { kind: "mem32", size: 16, ram: true }] })).toBe("bars[1]");
    expect(bad({ bars: [, , , , , { kind: "mem64", size: 0x1000, ram: true }] })).toBe("bars[5]");
    expect(bad({ capabilities: [{ kind: "msi", vectors: 3 }] })).toBe("capabilities[0].vectors");
    expect(bad({ capabilities: [{ kind: "msix", vectors: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800 }] })).toBe("capabilities[0].tableBar");
    expect(bad({ extendedCapabilities: [{ id: 3, body: new Uint8Array(8) }], configSize: 256 })).toBe("extendedCapabilities");
    expect(bad({ capabilities: [{ kind: "pm", offset: 0x42 }] })).toBe("capabilities[0]");
  });
});

describe("BAR sizing", () => {
  const sized = (fn: ReturnType<typeof createPciFunction>, reg: number) => {
    fn.writeConfig(reg, 4, 0xffffffff);
    return fn.readConfig(reg, 4);
  };

  it("sizes every BAR kind with its type bits", () => {
    const fn = createPciFunction({
      ...base,
      bars: [
        { kind: "io", size: 32, ram: true },
        { kind: "mem32", size: 0x1000, ram: true },
        { kind: "mem32", size: 0x100000, prefetchable: true, ram: true },
        undefined,
        { kind: "mem64", size: 0x4000, ops: recorder(0x4000).ops },
      ],
      rom: { bytes: new Uint8Array(3000) },
    });
    expect(sized(fn, 0x10)).toBe(0xffffffe1);
    expect(sized(fn, 0x14)).toBe(0xfffff000);
    expect(sized(fn, 0x18)).toBe(0xfff00008);
    expect(sized(fn, 0x1c)).toBe(0); // unimplemented BAR reads 0
    expect(sized(fn, 0x20)).toBe(0xffffc004); // 64-bit, non-prefetchable, 16 KiB
    expect(sized(fn, 0x24)).toBe(0xffffffff); // its upper half: all address bits writable
    expect(sized(fn, 0x30)).toBe(0xfffff001); // 4 KiB ROM, enable bit writable
    expect(fn.regionInfo(6).size).toBe(4096n);
    expect(fn.regionInfo(4)).toMatchObject({ kind: "mem64", size: 0x4000n, prefetchable: false });
    expect(fn.regionInfo(5)).toMatchObject({ size: 0n, upperHalfOf: 4 });
  });

  it("sizes a 64-bit BAR across both dwords (8 GiB, above 4 GiB)", () => {
    const fn = createPciFunction({ ...base, bars: [, , { kind: "mem64", size: 2n ** 33n, prefetchable: true, ops: recorder().ops }] });
    expect(sized(fn, 0x18)).toBe(0x0000000c);
    expect(sized(fn, 0x1c)).toBe(0xfffffffe);
    expect(fn.regionInfo(2)).toMatchObject({ kind: "mem64", size: 2n ** 33n, prefetchable: true });
    expect(fn.regionInfo(3)).toMatchObject({ size: 0n, upperHalfOf: 2 });
  });

  it("sizing a live BAR unmaps it while it reads all-ones and maps it back on restore", () => {
    const r = recorder(0x1000);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: r.ops }] });
    fn.writeConfig(0x10, 4, 0xfebf0000);
    fn.writeConfig(4, 2, 0x0002);
    const saved = fn.readConfig(0x10, 4);
    expect(sized(fn, 0x10)).toBe(0xfffff000);
    // 0xfffff000 + 0xfff reaches 0xffffffff: not a valid 32-bit placement (pci_bar_address)
    expect(fn.barAddress(0)).toBeUndefined();
    fn.writeConfig(0x10, 4, saved);
    expect(fn.barAddress(0)).toBe(0xfebf0000n);
    r.mem[0] = 0x99;
    expect(fn.busRead("mem", 0xfebf0000n, 1)).toBe(0x99n);
  });
});

describe("BAR decode and remap", () => {
  it("maps memory BARs while COMMAND.MEMORY is set and remaps on BAR writes", () => {
    const r = recorder();
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: r.ops }] });
    r.mem[4] = 0x5a;
    fn.writeConfig(0x10, 4, 0xfebf0000);
    expect(fn.barAddress(0)).toBeUndefined();
    expect(fn.busRead("mem", 0xfebf0004n, 1)).toBeUndefined();
    fn.writeConfig(4, 2, 0x0002);
    expect(fn.barAddress(0)).toBe(0xfebf0000n);
    expect(fn.busRead("mem", 0xfebf0004n, 1)).toBe(0x5an);
    fn.writeConfig(0x10, 4, 0xfe000000);
    expect(fn.busRead("mem", 0xfebf0004n, 1)).toBeUndefined();
    expect(fn.busRead("mem", 0xfe000004n, 1)).toBe(0x5an);
    expect(fn.busRead("io", 0xfe000004n, 1)).toBeUndefined();
    expect(fn.busWrite("mem", 0xfe000ffen, 4, 1n)).toBe(false); // straddles the end
    fn.writeConfig(4, 2, 0);
    expect(fn.barAddress(0)).toBeUndefined();
  });

  it("maps I/O BARs with COMMAND.IO", () => {
    const r = recorder(32);
    const fn = createPciFunction({ ...base, bars: [{ kind: "io", size: 32, ops: r.ops }] });
    fn.writeConfig(0x10, 4, 0xc000);
    fn.writeConfig(4, 2, 0x0002);
    expect(fn.barAddress(0)).toBeUndefined();
    fn.writeConfig(4, 2, 0x0001);
    expect(fn.barAddress(0)).toBe(0xc000n);
    expect(fn.busWrite("io", 0xc010n, 2, 0xbeefn)).toBe(true);
    expect(r.calls).toEqual(["w2@10=beef"]);
  });

  it("decodes a 64-bit BAR placed above 4 GiB, including an 8-byte access", () => {
    const r = recorder(0x1000, { valid: { min: 4, max: 8 }, impl: { min: 4, max: 8 } });
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem64", size: 0x1000, ops: r.ops }] });
    fn.writeConfig(0x10, 4, 0x00003000);
    fn.writeConfig(0x14, 4, 0x00000010);
    fn.writeConfig(4, 2, 0x0002);
    expect(fn.barAddress(0)).toBe(0x1000003000n);
    expect(fn.busWrite("mem", 0x1000003008n, 8, 0x1122334455667788n)).toBe(true);
    expect(fn.busRead("mem", 0x1000003008n, 8)).toBe(0x1122334455667788n);
    expect(r.calls).toEqual(["w8@8=1122334455667788", "r8@8"]);
    expect(fn.busRead("mem", 0x3008n, 4)).toBeUndefined();
  });

  it("maps the expansion ROM only with its enable bit; ROM writes are ignored", () => {
    const bytes = new Uint8Array(2048).map((_, i) => i & 0xff);
    bytes[0] = 0x55;
    bytes[1] = 0xaa;
    const fn = createPciFunction({ ...base, rom: { bytes } });
    fn.writeConfig(4, 2, 0x0002);
    fn.writeConfig(0x30, 4, 0xfeb00000);
    expect(fn.barAddress(6)).toBeUndefined();
    fn.writeConfig(0x30, 4, 0xfeb00001);
    expect(fn.barAddress(6)).toBe(0xfeb00000n);
    expect(fn.busRead("mem", 0xfeb00000n, 2)).toBe(0xaa55n);
    fn.busWrite("mem", 0xfeb00000n, 2, 0n);
    expect(fn.readRegion(6, 0, 2)).toBe(0xaa55n);
    expect(fn.regionInfo(6)).toMatchObject({ kind: "rom", writable: false });
    // the enable bit alone is not enough: COMMAND.MEMORY gates the ROM too (pci_bar_address)
    fn.writeConfig(4, 2, 0);
    expect(fn.barAddress(6)).toBeUndefined();
    expect(fn.busRead("mem", 0xfeb00000n, 2)).toBeUndefined();
    fn.writeConfig(4, 2, 0x0002);
    expect(fn.barAddress(6)).toBe(0xfeb00000n);
    // clearing the enable bit unmaps it again, the address bits stay
    fn.writeConfig(0x30, 4, 0xfeb00000);
    expect(fn.barAddress(6)).toBeUndefined();
    expect(fn.readConfig(0x30, 4)).toBe(0xfeb00000);
  });

  it("moves an enabled 64-bit BAR across 4 GiB when its upper dword is written", () => {
    const r = recorder(0x1000);
    r.mem[0x10] = 0x3c;
    const fn = createPciFunction({ ...base, bars: [, { kind: "mem64", size: 0x1000, prefetchable: true, ops: r.ops }] });
    fn.writeConfig(0x14, 4, 0xfe000000);
    fn.writeConfig(4, 2, 0x0002);
    expect(fn.barAddress(1)).toBe(0xfe000000n);
    fn.writeConfig(0x18, 4, 0x80);
    expect(fn.barAddress(1)).toBe(0x80fe000000n);
    expect(fn.busRead("mem", 0xfe000010n, 1)).toBeUndefined();
    expect(fn.busRead("mem", 0x80fe000010n, 1)).toBe(0x3cn);
    const space = fn.busAddressSpace("mem");
    expect(space.flatView().map((f) => [f.start, f.last])).toEqual([[0x80fe000000n, 0x80fe000fffn]]);
    expect(space.read(0x80fe000010n, 1)).toBe(0x3c);
    fn.writeConfig(0x18, 4, 0);
    expect(fn.barAddress(1)).toBe(0xfe000000n);
    expect(space.read(0xfe000010, 1)).toBe(0x3c);
  });
});

describe("region dispatch (QEMU splitting rules)", () => {
  it("splits a wide access into the callback's impl size", () => {
    const r = recorder(0x100, { impl: { max: 1 } });
    r.mem.set([1, 2, 3, 4], 0x10);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x100, ops: r.ops }] });
    expect(fn.readRegion(0, 0x10, 4)).toBe(0x04030201n);
    expect(r.calls).toEqual(["r1@10", "r1@11", "r1@12", "r1@13"]);
  });

  it("widens a narrow access to impl.min (a widened write carries zero upper bytes)", () => {
    const r = recorder(0x100, { impl: { min: 4, max: 4 } });
    r.mem.set([0xaa, 0xbb, 0xcc, 0xdd], 0x20);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x100, ops: r.ops }] });
    expect(fn.readRegion(0, 0x20, 1)).toBe(0xaan);
    fn.writeRegion(0, 0x20, 1, 0x11n);
    expect(r.calls).toEqual(["r4@20", "w4@20=11"]);
  });

  it("rejects accesses outside `valid` with PCI_ACCESS_INVALID", () => {
    const r = recorder(0x100, { valid: { min: 4, max: 4 } });
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x100, ops: r.ops }] });
    expect(errCode(() => fn.readRegion(0, 0, 2))).toBe("PCI_ACCESS_INVALID");
    expect(errCode(() => fn.writeRegion(0, 2, 4, 0n))).toBe("PCI_ACCESS_INVALID"); // unaligned
    expect(r.calls).toEqual([]);
    expect(errCode(() => fn.readRegion(0, 0xfe, 4))).toBe("PCI_REGION_RANGE");
    expect(errCode(() => fn.readRegion(1, 0, 4))).toBe("PCI_REGION_INDEX");
    expect(errCode(() => fn.readRegion(0, 0, 3 as 4))).toBe("PCI_ACCESS_SIZE");
  });

  it("splits byte-array accesses like memory_access_size (alignment, max 4 by default)", () => {
    const r = recorder(0x100);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x100, ops: r.ops }] });
    fn.writeRegionBytes(0, 1, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    expect(r.calls).toEqual(["w1@1=1", "w2@2=302", "w4@4=7060504", "w4@8=b0a0908"]);
    const out = new Uint8Array(11);
    fn.readRegionBytes(0, 1, out);
    expect([...out]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  it("serves RAM-backed BARs from memory without callbacks", () => {
    const bytes = new Uint8Array(0x1000);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ram: { bytes, fd: 7, fdOffset: 0x2000n } }] });
    fn.writeRegion(0, 0x10, 8, 0x0807060504030201n);
    expect([...bytes.subarray(0x10, 0x18)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(fn.readRegion(0, 0x12, 2)).toBe(0x0403n);
    expect(fn.regionInfo(0).mmap).toEqual({ fd: 7, offset: 0x2000n });
  });

  it("serves shadow-window reads from memory while writes reach the device", () => {
    const r = recorder(0x100);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x100, ops: r.ops, shadow: [{ offset: 0x40, size: 0x10 }] }] });
    fn.shadow(0).set([0xde, 0xc0, 0xad, 0x0b], 4);
    expect(fn.readRegion(0, 0x44, 4)).toBe(0x0badc0den);
    fn.writeRegion(0, 0x44, 4, 0x12345678n);
    expect(r.calls).toEqual(["w4@44=12345678"]);
    expect(fn.readRegion(0, 0x44, 4)).toBe(0x0badc0den); // still the shadow
    // an access straddling the window edge is split at the edge
    fn.readRegionBytes(0, 0x3e, new Uint8Array(4));
    expect(r.calls.slice(1)).toEqual(["r2@3e"]);
  });
});

describe("capabilities", () => {
  const spec: PciFunctionSpec = {
    ...base,
    bars: [{ kind: "mem32", size: 0x4000, ops: recorder(0x4000).ops }],
    capabilities: [
      { kind: "pm" },
      { kind: "msi", vectors: 4, address64: true, perVectorMask: true },
      { kind: "pcie" },
      { kind: "msix", vectors: 8, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000 },
      { kind: "vendor", body: new Uint8Array([0xca, 0xfe]) },
    ],
    extendedCapabilities: [
      { id: 0x3, version: 1, body: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) },
      { id: 0xb, version: 1, body: new Uint8Array(12) },
    ],
  };

  it("links a chain the guest can walk, in declaration order", () => {
    const fn = createPciFunction(spec);
    expect(fn.configSize).toBe(4096);
    expect(fn.readConfig(6, 2) & 0x10).toBe(0x10);
    const ids: number[] = [];
    const offsets: number[] = [];
    for (let p = fn.readConfig(0x34, 1), n = 0; p && n < 48; p = fn.readConfig(p + 1, 1), n++) {
      expect(p & 3).toBe(0);
      ids.push(fn.readConfig(p, 1));
      offsets.push(p);
    }
    expect(ids).toEqual([0x01, 0x05, 0x10, 0x11, 0x09]);
    expect(offsets[0]).toBe(0x40);
    expect(fn.readConfig(offsets[4] + 2, 1)).toBe(5); // vendor cap length
    const body = new Uint8Array(2);
    fn.readConfigBytes(offsets[4] + 3, body);
    expect([...body]).toEqual([0xca, 0xfe]);
    const ext: number[] = [];
    for (let p = 0x100, n = 0; p && n < 64; n++) {
      const h = fn.readConfig(p, 4);
      ext.push(h & 0xffff);
      expect((h >>> 16) & 0xf).toBe(1);
      p = h >>> 20;
    }
    expect(ext).toEqual([0x3, 0xb]);
    // capability headers are read-only
    fn.writeConfig(0x40, 2, 0xffff);
    expect(fn.readConfig(0x40, 2)).toBe(ids[0] | (offsets[1] << 8));
    fn.writeConfig(0x100, 4, 0);
    expect(fn.readConfig(0x100, 4) & 0xffff).toBe(3);
  });

  it("keeps an empty extended chain empty in a 4 KiB space", () => {
    const fn = createPciFunction({ ...base, capabilities: [{ kind: "pcie" }] });
    fn.writeConfig(0x100, 4, 0x12345678);
    expect(fn.readConfig(0x100, 4)).toBe(0);
  });

  it("lets PMCSR select D0/D3hot but not unsupported states", () => {
    const fn = createPciFunction(spec);
    const pmcsr = 0x44;
    fn.writeConfig(pmcsr, 2, 3);
    expect(fn.readConfig(pmcsr, 2) & 3).toBe(3);
    fn.writeConfig(pmcsr, 2, 1);
    expect(fn.readConfig(pmcsr, 2) & 3).toBe(3);
    fn.writeConfig(pmcsr, 2, 0);
    expect(fn.readConfig(pmcsr, 2) & 3).toBe(0);
  });
});

describe("MSI", () => {
  function msiFn(perVectorMask: boolean, address64 = true) {
    const fn = createPciFunction({ ...base, capabilities: [{ kind: "msi", vectors: 4, address64, perVectorMask }] });
    const log = sinkLog();
    fn.attachInterruptSink(log.sink);
    return { fn, ...log, cap: fn.readConfig(0x34, 1) };
  }

  it("composes messages with the vector in the low data bits (msi_get_message)", () => {
    const { fn, events, messages, cap } = msiFn(false);
    expect(fn.readConfig(cap + 2, 2)).toBe(0x0084); // 64-bit, 4 vectors capable
    fn.irq.notifyMsi(0);
    expect(events).toEqual([]); // disabled: dropped
    fn.writeConfig(cap + 4, 4, 0xfee00003); // low two bits are read-only
    fn.writeConfig(cap + 8, 4, 0x1);
    fn.writeConfig(cap + 12, 2, 0x4920);
    fn.writeConfig(cap + 2, 2, 0x0021); // enable, 4 vectors
    expect(fn.irq.msiEnabled).toBe(true);
    fn.irq.notifyMsi(3);
    fn.irq.notifyMsi(4); // beyond the enabled vectors: ignored
    expect(events).toEqual(["msi:3"]);
    expect(messages[0]).toEqual({ address: 0x1fee00000n, data: 0x4923 });
  });

  it("clamps an over-large multiple-message-enable to the capable count", () => {
    const { fn, cap } = msiFn(false);
    fn.writeConfig(cap + 2, 2, 0x0051); // asks for 32
    expect((fn.readConfig(cap + 2, 2) >> 4) & 7).toBe(2);
  });

  it("sets pending bits for masked vectors and fires them on unmask", () => {
    const { fn, events, cap } = msiFn(true, false);
    // 32-bit layout: flags, addr, data @8, mask @0x0c, pending @0x10
    fn.writeConfig(cap + 4, 4, 0xfee00000);
    fn.writeConfig(cap + 8, 2, 0x30);
    fn.writeConfig(cap + 0x0c, 4, 0xffffffff);
    expect(fn.readConfig(cap + 0x0c, 4)).toBe(0xf); // only implemented vectors' bits
    fn.writeConfig(cap + 2, 2, 0x0021);
    fn.irq.notifyMsi(2);
    expect(events).toEqual([]);
    expect(fn.readConfig(cap + 0x10, 4)).toBe(0b100);
    fn.writeConfig(cap + 0x10, 4, 0); // pending bits are read-only
    expect(fn.readConfig(cap + 0x10, 4)).toBe(0b100);
    fn.writeConfig(cap + 0x0c, 4, 0b1011);
    expect(events).toEqual(["msi:2"]);
    expect(fn.readConfig(cap + 0x10, 4)).toBe(0);
  });

  it("deasserts INTx when MSI is enabled", () => {
    const { fn, events, cap } = msiFn(false);
    fn.irq.setIntx(true);
    fn.writeConfig(cap + 2, 2, 0x0001);
    expect(events).toEqual(["intx:1", "intx:0"]);
    expect(fn.irq.intxLevel).toBe(false);
  });
});

describe("MSI-X", () => {
  function msixFn() {
    const dev = recorder(0x4000);
    const fn = createPciFunction({
      ...base,
      bars: [{ kind: "mem32", size: 0x4000, ops: dev.ops }, { kind: "mem32", size: 0x1000, ram: true }],
      capabilities: [{ kind: "msix", vectors: 70, tableBar: 0, tableOffset: 0x1000, pbaBar: 1, pbaOffset: 0x800 }],
    });
    const log = sinkLog();
    fn.attachInterruptSink(log.sink);
    return { fn, dev, ...log, cap: fn.readConfig(0x34, 1) };
  }

  it("describes table and PBA in the capability and starts with every vector masked", () => {
    const { fn, cap } = msixFn();
    expect(fn.readConfig(cap + 2, 2)).toBe(69);
    expect(fn.readConfig(cap + 4, 4)).toBe(0x1000);
    expect(fn.readConfig(cap + 8, 4)).toBe(0x801);
    for (const v of [0, 69]) expect(fn.readRegion(0, 0x1000 + v * 16 + 12, 4)).toBe(1n);
    expect(fn.interruptInfo).toEqual({ intx: true, msiVectors: 0, msixVectors: 70 });
  });

  it("serves the table itself (device ops never see it) with 4- and 8-byte accesses", () => {
    const { fn, dev } = msixFn();
    fn.writeRegion(0, 0x1000 + 5 * 16, 8, 0x00000001fee01000n);
    fn.writeRegion(0, 0x1000 + 5 * 16 + 8, 4, 0x4455n);
    expect(fn.readRegion(0, 0x1000 + 5 * 16, 8)).toBe(0x00000001fee01000n);
    expect(errCode(() => fn.readRegion(0, 0x1000, 2))).toBe("PCI_ACCESS_INVALID");
    expect(dev.calls).toEqual([]);
    fn.readRegion(0, 0xffc, 4);
    expect(dev.calls).toEqual(["r4@ffc"]);
  });

  it("latches masked vectors in the PBA and delivers them when unmasked", () => {
    const { fn, events, messages, cap } = msixFn();
    const entry = 0x1000 + 66 * 16;
    fn.writeRegion(0, entry, 4, 0xfee00000n);
    fn.writeRegion(0, entry + 8, 4, 0x41n);
    fn.irq.notifyMsix(66); // MSI-X disabled: pending
    expect(fn.readRegion(1, 0x808, 4)).toBe(1n << 2n);
    fn.writeConfig(cap + 2, 2, 0xc000); // enable + function mask
    fn.writeRegion(0, entry + 12, 4, 0n); // entry unmasked, function still masked
    expect(events).toEqual([]);
    fn.writeConfig(cap + 3, 1, 0x80); // drop the function mask
    expect(events).toEqual(["msix:66"]);
    expect(messages[0]).toEqual({ address: 0xfee00000n, data: 0x41 });
    expect(fn.readRegion(1, 0x808, 4)).toBe(0n);
    fn.irq.notifyMsix(66);
    expect(events).toEqual(["msix:66", "msix:66"]);
    fn.writeRegion(0, entry + 12, 4, 1n);
    fn.irq.notifyMsix(66);
    expect(fn.readRegion(1, 0x808, 4)).toBe(4n);
    fn.writeRegion(1, 0x808, 4, 0n); // PBA is read-only
    expect(fn.readRegion(1, 0x808, 4)).toBe(4n);
    fn.writeRegion(0, entry + 12, 4, 0n);
    expect(events.length).toBe(3);
    expect(fn.irq.notify(1)).toBe(true); // MSI-X preferred
  });
});

describe("INTx", () => {
  it("is level-triggered: the sink hears changes only, and INTX_DISABLE gates the pin", () => {
    const fn = createPciFunction(base);
    const { sink, events } = sinkLog();
    fn.attachInterruptSink(sink);
    fn.irq.setIntx(true);
    fn.irq.setIntx(true);
    expect(events).toEqual(["intx:1"]);
    expect(fn.readConfig(6, 2) & 0x8).toBe(0x8);
    fn.writeConfig(4, 2, 0x0400);
    expect(events).toEqual(["intx:1", "intx:0"]);
    expect(fn.readConfig(6, 2) & 0x8).toBe(0x8); // status still shows the device's level
    fn.writeConfig(4, 2, 0);
    expect(events).toEqual(["intx:1", "intx:0", "intx:1"]);
    fn.irq.setIntx(false);
    expect(events).toEqual(["intx:1", "intx:0", "intx:1", "intx:0"]);
    expect(fn.readConfig(6, 2) & 0x8).toBe(0);
    expect(fn.irq.notify(0)).toBe(false);
  });

  it("tells a newly attached sink about an asserted line; functions without a pin stay quiet", () => {
    const fn = createPciFunction(base);
    fn.irq.setIntx(true);
    const { sink, events } = sinkLog();
    fn.attachInterruptSink(sink);
    expect(events).toEqual(["intx:1"]);
    const nopin = createPciFunction({ ...base, interruptPin: 0 });
    const l2 = sinkLog();
    nopin.attachInterruptSink(l2.sink);
    nopin.irq.setIntx(true);
    expect(l2.events).toEqual([]);
  });
});

describe("peer delivery (vfio-user: the VMM emulates MSI/MSI-X)", () => {
  it("routes vectors to the sink as the peer enabled them, ignoring device-side masks", () => {
    const fn = createPciFunction({
      ...base,
      bars: [{ kind: "mem32", size: 0x1000, ram: true }],
      capabilities: [{ kind: "msix", vectors: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800 }],
    });
    const { sink, events } = sinkLog();
    fn.attachInterruptSink(sink, "peer");
    expect(fn.irq.msixEnabled).toBe(false);
    fn.setPeerInterrupts("msix", 2);
    expect(fn.irq.msixEnabled).toBe(true);
    fn.irq.notify(1);
    fn.irq.notify(3); // beyond what the peer enabled
    expect(events).toEqual(["msix:1"]);
  });
});

describe("reset and migration", () => {
  const spec = (): PciFunctionSpec => ({
    ...base,
    bars: [{ kind: "mem32", size: 0x1000, ram: true }, { kind: "mem32", size: 0x100, ops: recorder().ops, shadow: [{ offset: 0, size: 8 }] }],
    capabilities: [{ kind: "msix", vectors: 2, tableBar: 0, tableOffset: 0x800, pbaBar: 0, pbaOffset: 0xc00 }],
  });

  it("reset restores declared config, unmaps BARs, remasks MSI-X and calls the hook", () => {
    let resets = 0;
    const fn = createPciFunction({ ...spec(), reset: () => resets++ });
    const initial = fn.configSnapshot();
    fn.writeConfig(0x10, 4, 0xfe000000);
    fn.writeConfig(4, 2, 0x0006);
    fn.writeConfig(0x3c, 1, 9);
    fn.writeRegion(0, 0x800 + 12, 4, 0n);
    expect(fn.barAddress(0)).toBe(0xfe000000n);
    fn.reset();
    expect(fn.configSnapshot()).toEqual(initial);
    expect(fn.barAddress(0)).toBeUndefined();
    expect(fn.readRegion(0, 0x800 + 12, 4)).toBe(1n);
    expect(resets).toBe(1);
  });

  it("round-trips state into a fresh function built from the same spec", () => {
    const a = createPciFunction(spec());
    a.writeConfig(0x10, 4, 0xfe000000);
    a.writeConfig(4, 2, 0x0002);
    a.writeRegion(0, 0x10, 4, 0xcafef00dn);
    a.writeRegion(0, 0x800, 4, 0xfee00000n);
    a.shadow(1).set([9, 8, 7]);
    a.irq.setIntx(true);
    const state = a.saveState();
    const b = createPciFunction(spec());
    const { sink, events } = sinkLog();
    b.attachInterruptSink(sink);
    b.restoreState(state);
    expect(b.configSnapshot()).toEqual(a.configSnapshot());
    expect(b.barAddress(0)).toBe(0xfe000000n);
    expect(b.readRegion(0, 0x10, 4)).toBe(0xcafef00dn);
    expect(b.readRegion(0, 0x800, 4)).toBe(0xfee00000n);
    expect(b.readRegion(1, 0, 2)).toBe(0x0809n);
    expect(b.irq.intxLevel).toBe(true);
    expect(events).toEqual(["intx:1"]);
  });

  it("refuses state from a different function and stays unchanged", () => {
    const a = createPciFunction(spec());
    const state = a.saveState();
    const other = createPciFunction({ ...spec(), deviceId: 0x9999 });
    const before = other.configSnapshot();
    expect(errCode(() => other.restoreState(state))).toBe("PCI_STATE_FORMAT");
    expect(other.configSnapshot()).toEqual(before);
    expect(errCode(() => a.restoreState(state.subarray(0, state.length - 1)))).toBe("PCI_STATE_FORMAT");
    expect(errCode(() => a.restoreState(new Uint8Array(3)))).toBe("PCI_STATE_FORMAT");
  });
});

describe("BARs in the memory core", () => {
  it("maps each enabled BAR into the bus address space, moves and unmaps it on config writes", () => {
    const r = recorder(0x1000);
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x1000, ops: r.ops }, { kind: "io", size: 16, ram: true }] });
    const memSpace = fn.busAddressSpace("mem");
    const ioSpace = fn.busAddressSpace("io");
    const mapped = () => memSpace.flatView().map((f) => [f.start, f.last]);
    expect(mapped()).toEqual([]);
    fn.writeConfig(0x10, 4, 0xfebf0000);
    fn.writeConfig(0x14, 4, 0xc000);
    fn.writeConfig(4, 2, 0x0003);
    expect(mapped()).toEqual([[0xfebf0000n, 0xfebf0fffn]]);
    r.mem[8] = 0x77;
    expect(memSpace.read(0xfebf0008, 1)).toBe(0x77);
    ioSpace.write(0xc004, 2, 0x1234);
    expect(fn.readRegion(1, 4, 2)).toBe(0x1234n);
    fn.writeConfig(0x10, 4, 0xfe800000);
    expect(mapped()).toEqual([[0xfe800000n, 0xfe800fffn]]);
    fn.writeConfig(4, 2, 0x0001);
    expect(mapped()).toEqual([]);
    expect(ioSpace.flatView().map((f) => f.start)).toEqual([0xc000n]);
    fn.dispose();
    expect(errCode(() => fn.readRegion(0, 0, 4))).toBe("PCI_REGION_INDEX");
    expect(fn.busRead("io", 0xc004n, 2)).toBeUndefined();
  });

  it("maps into containers the caller provides (a VMM's shared bus)", async () => {
    const { MemoryCore, MemTx } = await import("../../src/core/memory/index.js");
    const { defaultPciCore } = await import("../../src/core/pci/index.js");
    const mem = MemoryCore.attach(defaultPciCore());
    const system = mem.container("system", 2n ** 64n);
    const io = mem.container("io", 0x10000);
    const ram = mem.ram("guest-ram", 0x100000);
    system.addSubregion(0, ram);
    const as = mem.addressSpace("system", system);
    const a = createPciFunction({ ...base, name: "a", bars: [{ kind: "mem32", size: 0x1000, ram: true }] }, { bus: { memory: system, io } });
    const b = createPciFunction({ ...base, name: "b", bars: [{ kind: "mem32", size: 0x1000, ram: true }] }, { bus: { memory: system, io } });
    a.writeConfig(0x10, 4, 0xfe000000);
    b.writeConfig(0x10, 4, 0xfe001000);
    a.writeConfig(4, 2, 2);
    b.writeConfig(4, 2, 2);
    as.write(0xfe000010, 4, 0xaaaa5555);
    as.write(0xfe001010, 4, 0x12345678);
    as.write(0x10, 4, 0x99);
    expect(a.readRegion(0, 0x10, 4)).toBe(0xaaaa5555n);
    expect(b.readRegion(0, 0x10, 4)).toBe(0x12345678n);
    expect(as.read(0x10, 4)).toBe(0x99);
    a.dispose();
    expect(as.tryRead(0xfe000010, 4)).toBe(MemTx.DECODE_ERROR); // unmapped
    expect(as.read(0xfe001010, 4)).toBe(0x12345678);
    b.dispose();
  });

  it("reports a throwing device callback as PCI_DEVICE_ERROR with the cause", () => {
    const boom = new Error("device on fire");
    const fn = createPciFunction({ ...base, bars: [{ kind: "mem32", size: 0x100, ops: { read: () => { throw boom; }, write: () => {} } }] });
    try {
      fn.readRegion(0, 0, 4);
      expect.unreachable();
    } catch (e) {
      expect((e as PciError).code).toBe("PCI_DEVICE_ERROR");
      expect((e as PciError).errno).toBe(5);
      let c: unknown = e;
      while (c instanceof Error && c !== boom) c = c.cause;
      expect(c).toBe(boom);
    }
  });

  it("frees its core memory: creating and disposing many functions does not grow the core", async () => {
    const { defaultPciCore } = await import("../../src/core/pci/index.js");
    let warm = 0;
    for (let i = 0; i < 120; i++) {
      if (i === 30) warm = defaultPciCore().memory.buffer.byteLength;
      const fn = createPciFunction({
        ...base,
        bars: [{ kind: "mem32", size: 0x1000, ram: true }, { kind: "mem32", size: 0x1000, ops: recorder(0x1000).ops, shadow: [{ offset: 0, size: 8 }] }],
        capabilities: [{ kind: "msix", vectors: 2, tableBar: 0, tableOffset: 0x800, pbaBar: 0, pbaOffset: 0xc00 }],
        rom: { bytes: new Uint8Array(16) },
      });
      fn.writeConfig(0x10, 4, 0xfe000000);
      fn.writeConfig(4, 2, 2);
      fn.busRead("mem", 0xfe000000n, 4);
      fn.dispose();
    }
    expect(defaultPciCore().memory.buffer.byteLength).toBe(warm);
  });
});
