// QEMU 11.1's REGION_WRITE_MULTI path: QEMU packs posted writes into WRITE_MULTI messages once
// more than 1024 messages wait in its send queue (hw/vfio-user/device.c
// vfio_user_device_io_region_write, VFIO_USER_OUT_HIGH) and the server offered
// write_multiple in VERSION. The queue only grows while the server does not read, so the
// recording proxy holds QEMU's messages while the writes are issued, then lets them through.
import { expect, it } from "vitest";
import { Command } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";
import { createWriteLogDevice, type LoggedWrite } from "../support/write-log-device.js";

const BAR0 = 0xfe000000;
const WRITES = 4000;

describeQemu11("QEMU 11.1: REGION_WRITE_MULTI", () => {
  let log: LoggedWrite[] = [];
  const f = useQemu11Fixture({
    proxy: true,
    device: () => {
      const d = createWriteLogDevice();
      log = d.writes;
      return d.fn;
    },
  });

  it(`${WRITES} posted writes behind a stalled socket arrive partly as WRITE_MULTI and every one is applied, in order`, async () => {
    const proxy = f.proxy!;
    const q = QtestQemu.start(f.socketPath);
    const issued: LoggedWrite[] = Array.from({ length: WRITES }, (_, i) => ({ offset: (i % 256) * 4, size: 4, value: (i * 2654435761) >>> 0 }));
    try {
      await q.placeBar32(0, BAR0);
      log.length = 0;
      proxy.holdClients();
      // Posted: each qtest write returns once QEMU queued the message, so all complete while held.
      await Promise.all(issued.map((w) => q.writel(BAR0 + w.offset, w.value)));
      proxy.release();
      expect(await q.readl(BAR0 + issued.at(-1)!.offset)).toBe(issued.at(-1)!.value);
    } finally {
      await q.quit();
    }

    // Our server offered write_multiple in its VERSION reply.
    const version = proxy.of(Command.VERSION, "server")[0]!;
    const json = JSON.parse(Buffer.from(version.body.subarray(4, version.body.length - 1)).toString());
    expect(json.capabilities.write_multiple).toBe(true);

    // The write stream rebuilt from the wire (REGION_WRITE and the entries of every
    // REGION_WRITE_MULTI, in arrival order) is the issued one; the packed ones are posted.
    const onWire = proxy.clientWrites().filter((w) => w.region === 0);
    const multis = new Set(onWire.filter((w) => w.multi).map((w) => w.msgId));
    expect(multis.size).toBeGreaterThan(0);
    expect(onWire.filter((w) => w.multi).every((w) => w.posted)).toBe(true);
    expect(onWire.map((w) => ({ offset: Number(w.offset), size: w.data.length, value: w.data.readUInt32LE(0) }))).toEqual(issued);
    // The device saw the same stream (placeBar32 wrote nothing to BAR0), none refused.
    expect(log).toEqual(issued);
    expect(proxy.messages.filter((m) => m.from === "server" && m.error !== 0)).toEqual([]);
  }, 60_000);
});
