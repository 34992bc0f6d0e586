import { describe, expect, it } from "vitest";
import { formatConfigSpace, describeFunction, formatBarSize } from "../../src/commands/config-space.js";
import { createEdu } from "../../src/devices/edu.js";
import { createPciFunction } from "../../src/core/pci/index.js";

/** Config bytes built by hand (independently of the function model). */
function config(size: number, writes: [number, number, number][]): Uint8Array {
  const b = new Uint8Array(size);
  for (const [at, n, v] of writes) for (let i = 0; i < n; i++) b[at + i] = Number((BigInt(v) >> BigInt(8 * i)) & 0xffn);
  return b;
}

describe("lspci -vv style dump", () => {
  it("decodes the edu device as QEMU presents it", () => {
    const fn = createEdu().fn;
    fn.writeConfig(0x10, 4, 0xfea00000);
    fn.writeConfig(0x04, 2, 0x0007);
    fn.writeConfig(0x3c, 1, 11);
    expect(describeFunction(fn, "00:04.0")).toBe(
      [
        "00:04.0 Unclassified device [00ff]: Device 1234:11e8 (rev 10)",
        "\tSubsystem: Device 1af4:1100",
        "\tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- FastB2B- DisINTx-",
        "\tStatus: Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast >TAbort- <TAbort- <MAbort- >SERR- <PERR- INTx-",
        "\tLatency: 0",
        "\tInterrupt: pin A routed to IRQ 11",
        "\tRegion 0: Memory at fea00000 (32-bit, non-prefetchable) [size=1M]",
        "\tCapabilities: [40] MSI: Enable- Count=1/1 Maskable- 64bit+",
        "\t\tAddress: 0000000000000000  Data: 0000",
      ].join("\n"),
    );
  });

  it("decodes hand-built bytes: I/O, 64-bit prefetchable BAR above 4 GiB, ROM, capabilities", () => {
    const cfg = config(4096, [
      [0x00, 4, 0x100e8086],
      [0x04, 2, 0x0103],
      [0x06, 2, 0x0010 | 0x2000],
      [0x08, 4, 0x02000003],
      [0x10, 4, 0xc001],
      [0x14, 4, 0x0000000c],
      [0x18, 4, 0x00000008],
      [0x30, 4, 0xfeb80001],
      [0x34, 1, 0x50],
      [0x3d, 1, 2],
      // PM at 0x50 -> MSI-X at 0x60 -> PCIe at 0x70 -> vendor at 0xb0
      [0x50, 4, 0x0003_6001],
      [0x54, 2, 0x0008],
      [0x60, 4, 0x8007_7011],
      [0x64, 4, 0x00002000 | 3],
      [0x68, 4, 0x00003000 | 3],
      [0x70, 4, 0x0002_b010],
      [0x74, 4, 0x00008000],
      [0x78, 2, 0x000f],
      [0x7a, 2, 0x0001],
      [0x7c, 4, 0x00000411],
      [0x82, 2, 0x0011],
      [0xb0, 4, 0x0004_0009],
      // DSN at 0x100 -> vendor ext at 0x110 -> end
      [0x100, 4, 0x1101_0003],
      [0x104, 4, 0x04030201],
      [0x108, 4, 0x08070605],
      [0x110, 4, 0x0001_000b],
      [0x114, 4, 0x0101_abcd],
    ]);
    const text = formatConfigSpace(cfg, { address: "01:00.0", barSizes: [32, 1n << 33n, undefined, undefined, undefined, undefined, 0x40000] });
    expect(text.split("\n")).toEqual([
      "01:00.0 Ethernet controller [0200]: Device 8086:100e (rev 03)",
      "\tSubsystem: Device 0000:0000",
      "\tControl: I/O+ Mem+ BusMaster- SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR+ FastB2B- DisINTx-",
      "\tStatus: Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast >TAbort- <TAbort- <MAbort+ >SERR- <PERR- INTx-",
      "\tInterrupt: pin B routed to IRQ 0",
      "\tRegion 0: I/O ports at c000 [size=32]",
      "\tRegion 1: Memory at 800000000 (64-bit, prefetchable) [size=8G]",
      "\tExpansion ROM at feb80000 [size=256K]",
      "\tCapabilities: [50] Power Management version 3",
      "\t\tFlags: PMEClk- DSI- D1- D2- AuxCurrent=0mA PME(D0-,D1-,D2-,D3hot-,D3cold-)",
      "\t\tStatus: D0 NoSoftRst+ PME-Enable- DSel=0 DScale=0 PME-",
      "\tCapabilities: [60] MSI-X: Enable+ Count=8 Masked-",
      "\t\tVector table: BAR=3 offset=00002000",
      "\t\tPBA: BAR=3 offset=00003000",
      "\tCapabilities: [70] Express (v2) Endpoint, MSI 00",
      "\t\tDevCap:\tMaxPayload 128 bytes, PhantFunc 0, ExtTag- RBE+ FLReset-",
      "\t\tDevCtl:\tCorrErr+ NonFatalErr+ FatalErr+ UnsupReq+",
      "\t\t\tRlxdOrd- ExtTag- NoSnoop-",
      "\t\t\tMaxPayload 128 bytes, MaxReadReq 128 bytes",
      "\t\tDevSta:\tCorrErr+ NonFatalErr- FatalErr- UnsupReq- AuxPwr- TransPend-",
      "\t\tLnkCap:\tPort #0, Speed 2.5GT/s, Width x1, ASPM L0s",
      "\t\tLnkSta:\tSpeed 2.5GT/s, Width x1",
      "\tCapabilities: [b0] Vendor Specific Information: Len=04 <?>",
      "\tCapabilities: [100 v1] Device Serial Number 08-07-06-05-04-03-02-01",
      "\tCapabilities: [110 v1] Vendor Specific Information: ID=abcd Rev=1 Len=010 <?>",
    ]);
  });

  it("reports broken, looping and truncated structures instead of failing", () => {
    const loop = config(256, [[0, 4, 0x00011234], [6, 2, 0x10], [0x34, 1, 0x40], [0x40, 2, 0x4009], [0x42, 1, 3]]);
    expect(formatConfigSpace(loop)).toContain("\tCapabilities: [40] <chain looped>");
    const broken = config(256, [[0, 4, 0x00011234], [6, 2, 0x10], [0x34, 1, 0x20]]);
    expect(formatConfigSpace(broken)).toContain("\tCapabilities: [20] <chain broken>");
    const extLoop = config(4096, [[0, 4, 0x00011234], [0x100, 4, 0x10010003]]);
    expect(formatConfigSpace(extLoop)).toContain("\tCapabilities: [100] <chain looped>");
    expect(formatConfigSpace(new Uint8Array(10))).toContain("truncated");
    expect(formatConfigSpace(new Uint8Array(64).fill(0xff))).toContain("no device");
    // a capability pointer past the end of a short (64-byte) space
    const short = config(64, [[0, 4, 0x00011234], [6, 2, 0x10], [0x34, 1, 0x80]]);
    expect(formatConfigSpace(short)).toContain("<chain broken>");
  });

  it("shows disabled and unassigned BARs and sizes in lspci notation", () => {
    const fn = createPciFunction({ vendorId: 1, deviceId: 2, classCode: 0x010802, bars: [{ kind: "mem32", size: 0x4000, ram: true }, { kind: "io", size: 8, ram: true }] });
    const text = describeFunction(fn);
    expect(text).toContain("Non-Volatile memory controller [0108]: Device 0001:0002 (prog-if 02)");
    expect(text).toContain("\tRegion 0: Memory at <unassigned> (32-bit, non-prefetchable) [disabled] [size=16K]");
    expect(text).toContain("\tRegion 1: I/O ports at <unassigned> [disabled] [size=8]");
    expect(formatBarSize(1536n)).toBe("1536");
    expect(formatBarSize(1n << 40n)).toBe("1T");
  });
});
