// QEMU 11.1 posts MMIO writes to a vfio-user server (REGION_WRITE with NO_REPLY) unless
// x-no-posted-writes=on: either way a read after many writes sees the last one, in order.
// A recording proxy shows which kind of write QEMU sent.
import { expect, it } from "vitest";
import { EDU_REG } from "../../src/devices/edu.js";
import { Command } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const BAR0 = 0xfe000000;
const WRITES = 2000;

describeQemu11("QEMU 11.1: many MMIO writes then a read", () => {
  const f = useQemu11Fixture({ proxy: true });

  for (const noPosted of [false, true]) {
    it(`${noPosted ? "with x-no-posted-writes=on (every write answered)" : "posted (no replies)"}: the read after ${WRITES} writes sees the last`, async () => {
      const proxy = f.proxy!;
      proxy.messages.length = 0;
      const q = QtestQemu.start(f.socketPath, noPosted ? { deviceProps: { "x-no-posted-writes": true } } : {});
      try {
        await q.placeBar32(0, BAR0);
        // Issued back to back; qtest runs them in order and each returns once QEMU sent it.
        const writes: Promise<void>[] = [];
        for (let i = 1; i <= WRITES; i++) writes.push(q.writel(BAR0 + EDU_REG.LIVENESS, i));
        const last = q.readl(BAR0 + EDU_REG.LIVENESS);
        await Promise.all(writes);
        expect(await last).toBe(~WRITES >>> 0);
      } finally {
        await q.quit();
      }
      // Writes to BAR0's liveness register, in the order the server received them. A loaded
      // server lets QEMU's queue grow past its mark and part of them come as WRITE_MULTI.
      const toLiveness = proxy.clientWrites().filter((w) => w.region === 0 && w.offset === BigInt(EDU_REG.LIVENESS));
      expect(toLiveness.map((w) => w.data.readUInt32LE(0))).toEqual(Array.from({ length: WRITES }, (_, i) => i + 1));
      expect(toLiveness.filter((w) => w.posted).length).toBe(noPosted ? 0 : WRITES);
      if (noPosted) expect(toLiveness.filter((w) => w.multi)).toEqual([]); // only posted writes are packed
      // Every write QEMU did not post was answered; the posted ones were not.
      const answered = new Set(proxy.of(Command.REGION_WRITE, "server").map((m) => m.msgId));
      expect(toLiveness.filter((w) => !w.multi && answered.has(w.msgId)).length).toBe(noPosted ? WRITES : 0);
    }, 120_000);
  }
});
