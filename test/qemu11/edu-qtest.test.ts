// QEMU 11.1's own vfio-user client (vfio-user-pci) against our server, driven through qtest
// without a guest: config space through 0xcf8/0xcfc, BAR sizing, edu's registers, and a
// second QEMU attaching to the same server after the first quits.
import { expect, it } from "vitest";
import { EDU_BAR_SIZE, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const BAR0 = 0xfe000000;

describeQemu11("QEMU 11.1 vfio-user-pci against the project's server (qtest)", () => {
  const f = useQemu11Fixture();

  it("realizes edu, sizes its BAR, and drives ident, liveness and factorial; the next QEMU attaches after one quits or is killed", async () => {
    const ends = ["quit", "killed", "quit"] as const;
    for (const [i, end] of ends.entries()) {
      const round = i + 1;
      await f.sessionEnded(); // the server takes the next client once it has seen the last one go
      const q = QtestQemu.start(f.socketPath);
      try {
        expect(await q.configRead(0x00), `round ${round}`).toBe(0x11e81234);
        expect((await q.configRead(0x08)) >>> 8).toBe(0x00ff00); // class: unclassified, as edu.c

        // BAR sizing as a firmware does it: all-ones in, size mask out, then the real address.
        await q.configWrite(0x10, 0xffffffff);
        const mask = (await q.configRead(0x10)) >>> 0;
        expect(mask & 0xfffffff0).toBe((~(EDU_BAR_SIZE - 1) >>> 0) & 0xfffffff0);
        await q.configWrite(0x10, BAR0);
        expect(((await q.configRead(0x10)) & 0xfffffff0) >>> 0).toBe(BAR0);
        await q.configWrite(0x04, 0x0006); // memory space + bus master

        expect(await q.readl(BAR0 + 0x00)).toBe(EDU_ID_VALUE);
        await q.writel(BAR0 + 0x04, 0x12345678);
        expect(await q.readl(BAR0 + 0x04)).toBe(~0x12345678 >>> 0);

        await q.writel(BAR0 + 0x08, 5);
        // The factorial runs in the device; status bit 0 clears when it is done. Bounded poll
        // over qtest round trips (each one a REGION_READ on our server).
        let status = 1;
        for (let i = 0; i < 10_000 && status & 1; i++) status = await q.readl(BAR0 + 0x20);
        expect(status & 1).toBe(0);
        expect(await q.readl(BAR0 + 0x08)).toBe(120);
      } finally {
        if (end === "killed") {
          q.child.kill("SIGKILL"); // no clean shutdown: the server only sees the socket close
          await q.exited;
        } else {
          await q.quit();
        }
      }
    }
    await f.sessionEnded();
    expect(f.server.connections).toBe(ends.length);
    expect(f.server.current).toBeNull();
  }, 120_000);
});
