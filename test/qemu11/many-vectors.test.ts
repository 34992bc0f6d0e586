// A device with many vectors under QEMU 11.1, with a server that offers max_msg_fds 3.
//  - MSI: QEMU enables all vectors at once and never puts more fds in one message than
//    max_msg_fds: 8 vectors arrive as SET_IRQS for vectors 0-2, 3-5 and 6-7
//    (hw/vfio-user/device.c vfio_user_device_io_set_irqs splits the eventfd array, one run of
//    valid or of absent fds per message). Our server stitches the groups into one table.
//  - MSI-X: our GET_IRQ_INFO has no NORESIZE flag, so QEMU adds vectors one at a time as the
//    guest unmasks table entries (hw/vfio/pci.c vfio_msix_vector_do_use), after a first
//    SET_IRQS for vector 0 without an fd when MSI-X is enabled.
// Either way every vector must reach the guest with its own message.
import { expect, it } from "vitest";
import { Command, HeaderFlag, IrqSetFlag, PciIrq } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import type { RecordingProxy } from "../support/recording-proxy.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";
import { createVectorDevice, VECTOR_DEVICE_MSI_VECTORS, VECTOR_DEVICE_MSIX_TABLE, VECTOR_DEVICE_MSIX_VECTORS } from "../support/vector-device.js";

const BAR0 = 0xfe000000;
const MSI_TARGET = 0x300000;
const MSI_DATA = 0x40; // multi-message MSI: QEMU ORs the vector number into the low bits
const MAX_MSG_FDS = 3;

/** SET_IRQS requests QEMU sent: argsz, flags, index, start, count, and how many fds came along. */
function setIrqs(proxy: RecordingProxy) {
  return proxy.of(Command.DEVICE_SET_IRQS, "client")
    .filter((m) => (m.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND)
    .map((m) => {
      const b = Buffer.from(m.body);
      return { flags: b.readUInt32LE(4), index: b.readUInt32LE(8), start: b.readUInt32LE(12), count: b.readUInt32LE(16), fds: m.fds };
    });
}

describeQemu11("QEMU 11.1: many vectors, max_msg_fds 3", () => {
  const f = useQemu11Fixture({ proxy: true, device: createVectorDevice, server: { maxMsgFds: MAX_MSG_FDS } });

  it(`8 MSI vectors come as groups of at most ${MAX_MSG_FDS} fds and each vector is delivered`, async () => {
    await f.sessionEnded();
    f.proxy!.messages.length = 0;
    const q = QtestQemu.start(f.socketPath);
    try {
      await q.placeBar32(0, BAR0);
      const msi = (await q.configRead(0x34)) & 0xff;
      const header = await q.configRead(msi);
      expect(header & 0xff).toBe(0x05);
      expect((header >>> 16) & 0x000e).toBe(3 << 1); // multiple message capable: 8
      await q.configWrite(msi + 4, MSI_TARGET);
      await q.configWrite(msi + 8, 0);
      await q.configWrite(msi + 12, MSI_DATA);
      // Multiple message enable = 8 (bits 6:4 = 3) and MSI enable.
      await q.configWrite(msi, ((((header >>> 16) | 0x0001 | (3 << 4)) << 16) | (header & 0xffff)) >>> 0);
      for (let v = 0; v < VECTOR_DEVICE_MSI_VECTORS; v++) {
        await q.memWrite(MSI_TARGET, new Uint8Array(4));
        await q.writel(BAR0, v);
        // Bounded poll over qtest round trips until QEMU wrote the message.
        let landed = 0;
        for (let i = 0; i < 10_000 && landed === 0; i++) landed = (await q.memRead(MSI_TARGET, 4)).readUInt32LE(0);
        expect(landed, `vector ${v}`).toBe(MSI_DATA | v);
      }
    } finally {
      await q.quit();
    }
    const sets = setIrqs(f.proxy!).filter((s) => s.index === PciIrq.MSI && s.flags === (IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER) && s.fds > 0);
    expect(sets.every((s) => s.fds <= MAX_MSG_FDS && s.fds === s.count)).toBe(true);
    // The last enable covered all 8 vectors in consecutive groups.
    const last = sets.slice(-3);
    expect(last.map((s) => [s.start, s.count])).toEqual([[0, 3], [3, 3], [6, 2]]);
    expect(f.proxy!.messages.filter((m) => m.from === "server" && m.error !== 0)).toEqual([]);
  }, 30_000);

  it("MSI-X: vectors 9, 5 and 0 set up one by one as the guest unmasks them, each delivered to its own address", async () => {
    await f.sessionEnded();
    f.proxy!.messages.length = 0;
    const q = QtestQemu.start(f.socketPath);
    const used = [0, 5, 9];
    const target = (v: number) => MSI_TARGET + 4 * v;
    try {
      await q.placeBar32(0, BAR0);
      let cap = (await q.configRead(0x34)) & 0xff;
      while (cap && ((await q.configRead(cap)) & 0xff) !== 0x11) cap = ((await q.configRead(cap)) >>> 8) & 0xff;
      expect(cap).not.toBe(0);
      const header = await q.configRead(cap);
      expect(((header >>> 16) & 0x7ff) + 1).toBe(VECTOR_DEVICE_MSIX_VECTORS);
      expect(await q.configRead(cap + 4)).toBe(VECTOR_DEVICE_MSIX_TABLE); // BIR 0
      await q.configWrite(cap, (header | 0xc0000000) >>> 0); // MSI-X enable + function mask
      for (const v of used) {
        const entry = BAR0 + VECTOR_DEVICE_MSIX_TABLE + 16 * v;
        await q.writel(entry, target(v));
        await q.writel(entry + 4, 0);
        await q.writel(entry + 8, 0x100 + v);
        await q.memWrite(target(v), new Uint8Array(4));
      }
      await q.configWrite(cap, ((header | 0x80000000) & ~0x40000000) >>> 0); // function mask off
      for (const v of [...used].reverse()) await q.writel(BAR0 + VECTOR_DEVICE_MSIX_TABLE + 16 * v + 12, 0); // unmask
      for (const v of used) {
        await q.writel(BAR0, v);
        let landed = 0;
        for (let i = 0; i < 10_000 && landed === 0; i++) landed = (await q.memRead(target(v), 4)).readUInt32LE(0);
        expect(landed, `vector ${v}`).toBe(0x100 + v);
      }
    } finally {
      await q.quit();
    }
    const triggers = setIrqs(f.proxy!).filter((s) => s.index === PciIrq.MSIX && s.flags === (IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER) && s.fds === 1);
    expect(triggers.every((s) => s.count === 1)).toBe(true);
    expect(new Set(triggers.map((s) => s.start))).toEqual(new Set(used));
    expect(f.proxy!.messages.filter((m) => m.from === "server" && m.error !== 0)).toEqual([]);
  }, 30_000);
});
