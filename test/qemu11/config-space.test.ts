// Config space as QEMU 11.1's vfio-user-pci shows it to the guest, against what the project's
// own client reads from the same server. QEMU virtualizes part of it (hw/vfio/pci.c
// vfio_pci_config_setup marks them in emulated_config_bits; vfio_pci_read_config takes those
// bits from its own copy and the rest from the device):
//   - BARs 0x10-0x27 and the ROM BAR 0x30: QEMU's own, sized from GET_REGION_INFO. Config
//     writes still go to the device too (vfio_pci_write_config writes everything through), and
//     our function sizes its BARs as QEMU does, so the two agree for edu;
//   - the multi-function bit of the header type (0x0e): QEMU's choice (edu has none);
//   - vendor, device and subsystem ids when x-pci-vendor-id, x-pci-device-id,
//     x-pci-sub-vendor-id or x-pci-sub-device-id are given (vfio_add_emulated_word): the guest
//     sees the override, the device keeps its own;
//   - the MSI capability is re-created by QEMU at the device's offset (vfio_msi_setup ->
//     msi_init) from the device's control word, and writes reach the device as well.
// Only the first 256 bytes are compared: edu is a conventional device (no PCIe capability), its
// config region is 256 bytes, and 0xcf8/0xcfc reaches no further.
import { expect, it } from "vitest";
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import { PciRegion } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const BAR0 = 0xfe000000;
const CONFIG_SIZE = 256;

describeQemu11("QEMU 11.1: config space as the guest sees it vs our client", () => {
  const f = useQemu11Fixture();

  async function viaQemu(q: QtestQemu): Promise<Buffer> {
    const out = Buffer.alloc(CONFIG_SIZE);
    for (let o = 0; o < CONFIG_SIZE; o += 4) out.writeUInt32LE(await q.configRead(o), o);
    return out;
  }

  /** What our client reads, once QEMU has gone (the server serves one client at a time). */
  async function viaOurClient(): Promise<Buffer> {
    await f.sessionEnded();
    const c = await connectVfioUser(f.socketPath);
    try {
      return Buffer.from(await c.readRegion(PciRegion.CONFIG, 0, CONFIG_SIZE));
    } finally {
      c.close();
    }
  }

  const dwords = (b: Buffer) => Array.from({ length: CONFIG_SIZE / 4 }, (_, i) => `${(i * 4).toString(16).padStart(2, "0")}: ${b.readUInt32LE(i * 4).toString(16).padStart(8, "0")}`);

  it("at realize, all 256 bytes are the device's", async () => {
    const ours = await viaOurClient();
    const q = QtestQemu.start(f.socketPath);
    let theirs: Buffer;
    try {
      theirs = await viaQemu(q);
    } finally {
      await q.quit();
    }
    expect(ours.readUInt32LE(0)).toBe(0x11e81234);
    expect(dwords(theirs)).toEqual(dwords(ours));
  }, 30_000);

  it("after the guest programs BAR0, command, interrupt line and MSI, the device holds what the guest sees", async () => {
    const q = QtestQemu.start(f.socketPath);
    let theirs: Buffer;
    try {
      await q.placeBar32(0, BAR0);
      await q.configWrite(0x3c, 0x0000010b); // interrupt line 11 (pin is read-only)
      const msi = (await q.configRead(0x34)) & 0xff; // edu's only capability: MSI, 64-bit
      expect((await q.configRead(msi)) & 0xff).toBe(0x05);
      await q.configWrite(msi + 4, 0xfee01000);
      await q.configWrite(msi + 8, 0);
      await q.configWrite(msi + 12, 0x4041);
      await q.configWrite(msi, 0x00010000); // MSI enable (control word bit 0)
      theirs = await viaQemu(q);
    } finally {
      await q.quit();
    }
    expect(theirs.readUInt32LE(0x10)).toBe(BAR0);
    expect(theirs.readUInt16LE(0x42) & 1).toBe(1);
    // The device keeps config space across clients (spec, "Client Disconnection").
    expect(dwords(await viaOurClient())).toEqual(dwords(theirs));
  }, 30_000);

  it("id overrides are QEMU's alone: only those words differ", async () => {
    const q = QtestQemu.start(f.socketPath, {
      deviceProps: { "x-pci-vendor-id": 0x1b36, "x-pci-device-id": 0x0005, "x-pci-sub-vendor-id": 0x1af4, "x-pci-sub-device-id": 0x0042 },
    });
    let theirs: Buffer;
    try {
      theirs = await viaQemu(q);
    } finally {
      await q.quit();
    }
    const ours = await viaOurClient();
    expect(theirs.readUInt32LE(0x00)).toBe(0x00051b36);
    expect(theirs.readUInt32LE(0x2c)).toBe(0x00421af4);
    expect(ours.readUInt32LE(0x00)).toBe(0x11e81234);
    expect(ours.readUInt32LE(0x2c)).toBe(0x11001af4);
    const rest = (b: Buffer) => dwords(b).filter((l) => !l.startsWith("00:") && !l.startsWith("2c:"));
    expect(rest(theirs)).toEqual(rest(ours));
  }, 30_000);
});
