// QMP system_reset on a QEMU 11.1 with our edu attached: QEMU resets the vfio-user device with
// DEVICE_RESET (GET_INFO advertises RESET; hw/vfio-user/pci.c vfio_user_pci_reset), our
// server resets edu, and the guest finds it in its power-on state.
import { join } from "node:path";
import { expect, it } from "vitest";
import { EDU_ID_VALUE, EDU_REG } from "../../src/devices/edu.js";
import { Command, HeaderFlag } from "../../src/vfio-user/wire/constants.js";
import { Qmp } from "../support/qmp.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const BAR0 = 0xfe000000;

describeQemu11("QEMU 11.1: system_reset", () => {
  const f = useQemu11Fixture({ proxy: true });

  it("reaches the server as DEVICE_RESET and edu's registers read their reset values", async () => {
    const proxy = f.proxy!;
    const qmpPath = join(f.dir, "qmp.sock");
    const q = QtestQemu.start(f.socketPath, { extraArgs: ["-qmp", `unix:${qmpPath},server=on,wait=off`] });
    const resets = () => proxy.of(Command.DEVICE_RESET, "client").filter((m) => (m.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND);
    let qmp: Qmp | undefined;
    try {
      await q.placeBar32(0, BAR0); // answered once QEMU is up, QMP socket included
      await q.writel(BAR0 + EDU_REG.LIVENESS, 0x12345678);
      await q.writel(BAR0 + EDU_REG.FACTORIAL, 5);
      expect(await q.readl(BAR0 + EDU_REG.LIVENESS)).toBe(~0x12345678 >>> 0);
      const before = resets().length;

      qmp = await Qmp.connect(qmpPath);
      const reset = qmp.nextEvent("RESET");
      await qmp.execute("system_reset");
      await reset;
      // QEMU waited for the reply to DEVICE_RESET before finishing the reset.
      expect(resets().length).toBe(before + 1);
      const reply = proxy.of(Command.DEVICE_RESET, "server").at(-1)!;
      expect(reply.error).toBe(0);

      // The PCI reset cleared the BAR: place it again, then edu is as at power-on.
      expect(await q.configRead(0x10)).toBe(0);
      await q.placeBar32(0, BAR0);
      expect(await q.readl(BAR0 + EDU_REG.ID)).toBe(EDU_ID_VALUE);
      expect(await q.readl(BAR0 + EDU_REG.LIVENESS)).toBe(0);
      expect(await q.readl(BAR0 + EDU_REG.FACTORIAL)).toBe(0);
      expect(await q.readl(BAR0 + EDU_REG.STATUS)).toBe(0);
    } finally {
      qmp?.close();
      await q.quit();
    }
  }, 30_000);
});
