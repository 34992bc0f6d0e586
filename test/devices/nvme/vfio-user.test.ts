// The NVMe controller served over vfio-user and driven by the project's client: guest memory
// is a memfd the client DMA_MAPs, doorbells are posted REGION_WRITEs, completions arrive as
// MSI-X eventfd signals. A client that leaves mid-I/O leaves nothing behind, and the next
// client gets a working controller.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createNvme } from "../../../src/devices/nvme/index.js";
import { VfioUserServer } from "../../../src/vfio-user/server/server.js";
import { connectVfioUser, createSharedMemory, enableIrqs } from "../../../src/vfio-user/client/connect.js";
import { PciIrq } from "../../../src/vfio-user/wire/constants.js";
import type { VfioUserClient } from "../../../src/vfio-user/client/client.js";
import { processHoldings } from "../../support/process-holdings.js";
import { until } from "./driver.js";

const MEM = 4 << 20;

/** A minimal async driver over a vfio-user client: admin queue at 0x10000, I/O pair 1. */
async function bringUp(client: VfioUserClient, mem: Uint8Array) {
  const dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  mem.fill(0);
  const q = {
    0: { sq: 0x10000, cq: 0x20000, size: 16, tail: 0, head: 0, phase: 1 },
    1: { sq: 0x30000, cq: 0x40000, size: 64, tail: 0, head: 0, phase: 1 },
  } as Record<number, { sq: number; cq: number; size: number; tail: number; head: number; phase: number }>;
  let cid = 0;
  const submit = (qid: number, op: number, nsid: number, prp1: number, prp2: number, cdw: number[]) => {
    const s = q[qid];
    const at = s.sq + s.tail * 64;
    mem.fill(0, at, at + 64);
    dv.setUint8(at, op);
    dv.setUint16(at + 2, ++cid, true);
    dv.setUint32(at + 4, nsid, true);
    dv.setBigUint64(at + 24, BigInt(prp1), true);
    dv.setBigUint64(at + 32, BigInt(prp2), true);
    cdw.forEach((v, i) => dv.setUint32(at + 40 + i * 4, v >>> 0, true));
    s.tail = (s.tail + 1) % s.size;
    client.post(0, 0x1000 + qid * 8, 4, s.tail);
  };
  const complete = async (qid: number) => {
    const s = q[qid];
    const at = s.cq + s.head * 16;
    await until(() => (dv.getUint16(at + 14, true) & 1) === s.phase);
    const status = dv.getUint16(at + 14, true) >>> 1;
    s.head = (s.head + 1) % s.size;
    if (s.head === 0) s.phase ^= 1;
    client.post(0, 0x1000 + qid * 8 + 4, 4, s.head);
    return status;
  };
  const cmd = async (qid: number, op: number, nsid: number, prp1: number, prp2: number, cdw: number[]) => {
    submit(qid, op, nsid, prp1, prp2, cdw);
    return complete(qid);
  };
  await client.writeValue(0, 0x14, 4, 0);
  await client.writeValue(0, 0x24, 4, (15 << 16) | 15);
  await client.writeValue(0, 0x28, 8, q[0].sq);
  await client.writeValue(0, 0x30, 8, q[0].cq);
  await client.writeValue(0, 0x14, 4, 1 | (6 << 16) | (4 << 20));
  expect(Number(await client.readValue(0, 0x1c, 4)) & 3).toBe(1);
  expect(await cmd(0, 0x06, 0, 0x50000, 0, [1])).toBe(0);
  expect(await cmd(0, 0x05, 0, q[1].cq, 0, [(63 << 16) | 1, (1 << 16) | 3])).toBe(0);
  expect(await cmd(0, 0x01, 0, q[1].sq, 0, [(63 << 16) | 1, (1 << 16) | 1])).toBe(0);
  return { cmd, submit, dv };
}

describe("nvme over vfio-user", () => {
  it("serves a client that maps a memfd as guest memory: identify, 64 KiB PRP-list I/O, MSI-X", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nvme-vfu-"));
    const path = join(dir, "nvme.sock");
    const ctrl = createNvme({ size: 8 << 20 });
    const server = VfioUserServer.listen({ device: ctrl.fn, socketPath: path });
    const baseline = processHoldings();
    try {
      const client = await connectVfioUser(path);
      const shm = createSharedMemory(MEM);
      const irqs: number[] = [];
      client.on("irq", (e: { index: number; vector: number }) => e.index === PciIrq.MSIX && irqs.push(e.vector));
      await enableIrqs(client, PciIrq.MSIX, 17);
      await client.dmaMap({ iova: 0, size: MEM, memory: shm.memory, fd: shm.fd });
      const { cmd, dv } = await bringUp(client, shm.memory);
      expect(new TextDecoder().decode(shm.memory.subarray(0x50000 + 24, 0x50000 + 47))).toBe("wasmdev NVMe controller");
      // 64 KiB at 0x100000 with a PRP list at 0x60000.
      for (let i = 0; i < 65536; i++) shm.memory[0x100000 + i] = (i * 7 + 3) & 0xff;
      for (let p = 1; p < 16; p++) dv.setBigUint64(0x60000 + (p - 1) * 8, BigInt(0x100000 + p * 4096), true);
      expect(await cmd(1, 0x01, 1, 0x100000, 0x60000, [64, 0, 127])).toBe(0);
      for (let p = 1; p < 16; p++) dv.setBigUint64(0x60000 + (p - 1) * 8, BigInt(0x200000 + p * 4096), true);
      expect(await cmd(1, 0x02, 1, 0x200000, 0x60000, [64, 0, 127])).toBe(0);
      expect(shm.memory.subarray(0x200000, 0x210000)).toEqual(shm.memory.subarray(0x100000, 0x110000));
      await until(() => irqs.includes(1));
      expect(irqs).toContain(0);
      // The client leaves with I/O queued; the server releases its mappings.
      const { submit } = await bringUp(client, shm.memory);
      for (let i = 0; i < 20; i++) submit(1, 0x02, 1, 0x200000, 0, [i, 0, 7]);
      client.close();
      shm.close();
      await until(() => {
        const now = processHoldings();
        return now.memfds === baseline.memfds && now.mappings === baseline.mappings;
      });
      // The next client resets and uses the controller.
      const client2 = await connectVfioUser(path);
      const shm2 = createSharedMemory(MEM);
      await enableIrqs(client2, PciIrq.MSIX, 17);
      await client2.dmaMap({ iova: 0, size: MEM, memory: shm2.memory, fd: shm2.fd });
      const second = await bringUp(client2, shm2.memory);
      expect(await second.cmd(1, 0x02, 1, 0x200000, 0, [64, 0, 7])).toBe(0);
      // The data the first client wrote is still there.
      expect(shm2.memory.subarray(0x200000, 0x201000)).toEqual(Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff));
      client2.close();
      shm2.close();
    } finally {
      await server.close();
      ctrl.fn.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
