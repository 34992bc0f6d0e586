// QEMU 11.1 never puts more fds in one message than the server's max_msg_fds: enabling 8 MSI
// vectors with a server that offers max_msg_fds 3 arrives as SET_IRQS for vectors 0-2, 3-5 and
// 6-7 (hw/vfio-user/device.c vfio_user_device_io_set_irqs splits the eventfd array). Our
// server must stitch the groups into one vector table: every vector then reaches the guest.
import { expect, it } from "vitest";
import { Command, HeaderFlag, IrqSetFlag, PciIrq } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";
import { createVectorDevice, VECTOR_DEVICE_MSI_VECTORS } from "../support/vector-device.js";

const BAR0 = 0xfe000000;
const MSI_TARGET = 0x300000;
const MSI_DATA = 0x40; // multi-message MSI: QEMU ORs the vector number into the low bits
const MAX_MSG_FDS = 3;

describeQemu11("QEMU 11.1: SET_IRQS eventfds in groups of max_msg_fds", () => {
  const f = useQemu11Fixture({ proxy: true, device: createVectorDevice, server: { maxMsgFds: MAX_MSG_FDS } });

  it(`8 MSI vectors come as groups of at most ${MAX_MSG_FDS} fds and each vector is delivered`, async () => {
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
    const sets = f.proxy!.of(Command.DEVICE_SET_IRQS, "client")
      .filter((m) => (m.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND)
      .map((m) => {
        const b = Buffer.from(m.body); // argsz, flags, index, start, count
        return { flags: b.readUInt32LE(4), index: b.readUInt32LE(8), start: b.readUInt32LE(12), count: b.readUInt32LE(16), fds: m.fds };
      })
      .filter((s) => s.index === PciIrq.MSI && s.flags === (IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER) && s.fds > 0);
    expect(sets.every((s) => s.fds <= MAX_MSG_FDS && s.fds === s.count)).toBe(true);
    // The last enable covered all 8 vectors in consecutive groups.
    const last = sets.slice(-3);
    expect(last.map((s) => [s.start, s.count])).toEqual([[0, 3], [3, 3], [6, 2]]);
    expect(f.proxy!.messages.filter((m) => m.from === "server" && m.error !== 0)).toEqual([]);
  }, 30_000);
});
