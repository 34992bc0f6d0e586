// The client against the project's own server (#6) serving the edu device: registers, posted
// writes ordered by a later read, interrupts over eventfds, the DMA engine through a memfd,
// reset, and migrating the device state from one server to another.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { createEdu, EDU_REG, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { connectVfioUser, enableIrqs, createSharedMemory } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient, IrqEvent } from "../../src/vfio-user/client/client.js";
import { vfioUserSnapshot } from "../../src/commands/lspci.js";
import { formatLspci } from "../../src/commands/lspci-format.js";

const dirs: string[] = [];
const servers: VfioUserServer[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function serveEdu(options: Parameters<typeof createEdu>[0] = {}): Promise<{ path: string; client: VfioUserClient }> {
  const dir = mkdtempSync(join(tmpdir(), "vfu-e2e-"));
  dirs.push(dir);
  const path = join(dir, "edu.sock");
  servers.push(VfioUserServer.listen({ device: createEdu(options).fn, socketPath: path }));
  const client = await connectVfioUser(path, { timeoutMs: 5000 });
  clients.push(client);
  return { path, client };
}

describe("client against the project's server (edu)", () => {
  it("probes the function and prints it lspci-style", async () => {
    const { path, client } = await serveEdu();
    expect(client.deviceInfo?.isPci).toBe(true);
    expect(client.regions.get(0)?.size).toBe(1n << 20n);
    expect(client.postedWrites.regionSpace(0)).toBe("memory");
    expect(client.postedWrites.regionSpace(7)).toBe("config");
    const text = formatLspci(await vfioUserSnapshot(client, path));
    expect(text).toMatch(/Device 1234:11e8/);
    expect(text).toMatch(/Region 0: Memory at .*\[size=1M\]/);
  });

  it("reads the edu registers; posted writes are seen by the next read", async () => {
    const { client } = await serveEdu();
    expect(await client.readValue(0, EDU_REG.ID, 4)).toBe(BigInt(EDU_ID_VALUE));
    expect(await client.writeValue(0, EDU_REG.LIVENESS, 4, 0x12345678)).toEqual({ posted: true, viaMapping: false });
    expect(await client.readValue(0, EDU_REG.LIVENESS, 4)).toBe(BigInt(~0x12345678 >>> 0));
    // A burst of posted writes, then one read: the last value wins and nothing is lost.
    for (let i = 0; i < 100; i++) await client.writeValue(0, EDU_REG.LIVENESS, 4, i);
    expect(await client.readValue(0, EDU_REG.LIVENESS, 4)).toBe(BigInt(~99 >>> 0));
  });

  it("a server error becomes ERR_REMOTE with its errno and the session continues", async () => {
    const { client } = await serveEdu();
    client.regions.delete(0); // skip the client's own bounds check to reach the server
    const err = await client.readRegion(0, 1 << 20, 4).catch((e) => e);
    expect(err).toMatchObject({ code: "ERR_REMOTE", errno: 22 });
    expect(await client.readValue(0, EDU_REG.ID, 4)).toBe(BigInt(EDU_ID_VALUE));
  });

  it("delivers the edu interrupt over an eventfd", async () => {
    const { client } = await serveEdu();
    const irqs: IrqEvent[] = [];
    const fired = new Promise<void>((resolve) => client.on("irq", (e) => (irqs.push(e), resolve())));
    await enableIrqs(client, 0, 1); // INTx
    await client.writeValue(0, EDU_REG.IRQ_RAISE, 4, 0x1, { posted: false });
    await fired;
    expect(irqs[0]).toMatchObject({ index: 0, vector: 0 });
    expect(await client.readValue(0, EDU_REG.IRQ_STATUS, 4)).toBe(1n);
  });

  it("runs the edu DMA engine against memfd-backed client memory", async () => {
    const { client } = await serveEdu({ dmaDelayMs: 0 });
    const shm = createSharedMemory(0x10000);
    try {
      shm.memory.set([1, 2, 3, 4, 5, 6, 7, 8], 0x100);
      await client.dmaMap({ iova: 0x100000, size: 0x10000, memory: shm.memory, fd: shm.fd });
      // RAM -> device buffer (0x40000), then device buffer -> RAM at +0x800.
      await client.writeValue(0, EDU_REG.DMA_SRC, 8, 0x100100n, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_DST, 8, 0x40000n, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_CNT, 8, 8n, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_CMD, 8, 1n, { posted: false });
      await waitDmaIdle(client);
      await client.writeValue(0, EDU_REG.DMA_SRC, 8, 0x40000n, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_DST, 8, 0x100800n, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_CMD, 8, 3n, { posted: false });
      await waitDmaIdle(client);
      expect([...shm.memory.subarray(0x800, 0x808)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      await client.dmaUnmap(0x100000, 0x10000);
    } finally {
      shm.close();
    }
  });

  it("saves the device state from one server and loads it into another", async () => {
    const a = await serveEdu();
    const b = await serveEdu();
    await a.client.writeValue(0, EDU_REG.FACTORIAL, 4, 5, { posted: false });
    await waitFactorial(a.client);
    expect(await a.client.readValue(0, EDU_REG.FACTORIAL, 4)).toBe(120n);
    expect(await b.client.readValue(0, EDU_REG.FACTORIAL, 4)).toBe(0n);
    const flags = await a.client.getMigrationFlags();
    expect(flags & 1n).toBe(1n); // STOP_COPY
    const state = await a.client.saveDeviceState();
    expect(state.length).toBeGreaterThan(0);
    await b.client.loadDeviceState(state);
    expect(await b.client.getMigrationState()).toBe(2); // RUNNING
    expect(await b.client.readValue(0, EDU_REG.FACTORIAL, 4)).toBe(120n);
  });

  it("reset returns the registers to their reset values", async () => {
    const { client } = await serveEdu();
    await client.writeValue(0, EDU_REG.FACTORIAL, 4, 3, { posted: false });
    await waitFactorial(client);
    await client.reset();
    expect(await client.readValue(0, EDU_REG.FACTORIAL, 4)).toBe(0n);
  });
});

async function waitDmaIdle(client: VfioUserClient): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (((await client.readValue(0, EDU_REG.DMA_CMD, 8)) & 1n) === 0n) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("edu DMA did not finish");
}

async function waitFactorial(client: VfioUserClient): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (((await client.readValue(0, EDU_REG.STATUS, 4)) & 1n) === 0n) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("edu factorial did not finish");
}
