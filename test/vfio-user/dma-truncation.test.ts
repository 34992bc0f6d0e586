// A client that shrinks its DMA_MAP'ed memfd under the server. The server runs in a child
// process (test/vfio-user/fixtures/truncation-server.ts): before the transport's SIGBUS guard,
// the device's next DMA past the new end of the file killed it (exit by SIGBUS). Now the DMA
// fails with EFAULT (an error reply when the device made it while handling a request), the
// region is dropped and logged, the client keeps its session, and the next client is served.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ftruncateSync, readSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient } from "../../src/vfio-user/client/client.js";
import { FileSeal, addFileSeals, closeFd, fileSeals, memfdCreate } from "../../src/transport/index.js";
import { EDU_DMA_START, EDU_REG } from "../../src/devices/edu.js";
import { bundleScenario, removeScenario, root, startScenario, type RunningChild } from "../transport/child.js";
import { sleep } from "./raw-client.js";
import { connectWhenFree } from "./connect-when-free.js";

let script = "";
let seq = 0;
const socketPath = () => join(tmpdir(), `wasmdev-vfu-trunc-${process.pid}-${++seq}.sock`);
const IOVA = 0x100000n;
const SIZE = 0x10000;

beforeAll(async () => {
  script = await bundleScenario(join(root, "test", "vfio-user", "fixtures", "truncation-server.ts"), "truncation-server");
});
afterAll(() => removeScenario(script));

async function startServer(device: "edu" | "probe"): Promise<{ server: RunningChild; path: string }> {
  const path = socketPath();
  const server = startScenario(script, [path, device]);
  await server.waitFor("listening");
  return { server, path };
}

/** A memfd whose owner forbade seals, so the server cannot stop it from shrinking. */
function hostileMemfd(): number {
  const fd = memfdCreate("hostile-dma", SIZE);
  addFileSeals(fd, FileSeal.SEAL);
  return fd;
}

async function rejection(p: Promise<unknown>): Promise<{ code?: string; errno?: number }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; errno?: number };
  }
  throw new Error("expected a rejection");
}

/** Stops the server with SIGTERM; it must exit 0 holding no more memfds, sockets and mappings
 *  than before it listened. */
async function stopCleanly(server: RunningChild): Promise<void> {
  server.child.kill("SIGTERM");
  const outcome = await server.exited;
  expect(outcome.signal, outcome.stderr).toBeNull();
  expect(outcome.code, outcome.stderr).toBe(0);
  const last = JSON.parse(outcome.stdout.trim().split("\n").pop()!);
  expect(last.end).toEqual(last.baseline);
}

describe("a client shrinking its DMA_MAP'ed memfd (server in a child process)", () => {
  it("synchronous device DMA: EFAULT error replies, the region is dropped and logged, the session and the server go on", async () => {
    const { server, path } = await startServer("probe");
    const fd = hostileMemfd();
    let client: VfioUserClient | undefined;
    try {
      client = await connectVfioUser(path);
      await client.dmaMap({ iova: IOVA, size: SIZE, memory: new Uint8Array(SIZE), fd });
      await client.writeValue(0, 0, 8, IOVA + 0x8000n, { posted: false });
      await client.writeValue(0, 8, 4, 0x12345678, { posted: false });
      expect(await client.readValue(0, 8, 4)).toBe(0x12345678n);
      const seen = Buffer.alloc(4);
      readSync(fd, seen, 0, 4, 0x8000);
      expect(seen.readUInt32LE(0)).toBe(0x12345678);

      ftruncateSync(fd, 0x1000); // the DMA address is now past the end of the file
      expect(await rejection(client.readValue(0, 8, 4))).toMatchObject({ code: "ERR_REMOTE", errno: 14 });
      await server.waitFor("client shrank the file of DMA region 0x100000+0x10000");
      // The region is gone: the next access is an ordinary fault, also EFAULT, nothing mapped.
      expect(await rejection(client.writeValue(0, 8, 4, 1, { posted: false }))).toMatchObject({ code: "ERR_REMOTE", errno: 14 });
      // The session still works, and the server removed the range itself: unmapping it is ENOENT.
      expect(await client.readValue(0, 0, 4)).toBe(0n);
      expect(await rejection(client.dmaUnmap(IOVA, SIZE))).toMatchObject({ code: "ERR_REMOTE", errno: 2 });
      client.close();

      // The next client is served, its DMA works.
      client = await connectWhenFree(path);
      const good = memfdCreate("good-dma", SIZE);
      await client.dmaMap({ iova: IOVA, size: SIZE, memory: new Uint8Array(SIZE), fd: good });
      // A memfd that allows seals was sealed against shrinking by the server when it mapped it.
      expect(fileSeals(good) & FileSeal.SHRINK).toBe(FileSeal.SHRINK);
      expect(() => ftruncateSync(good, 0)).toThrow(expect.objectContaining({ code: "EPERM" }));
      await client.writeValue(0, 0, 8, IOVA + 0x10n, { posted: false });
      await client.writeValue(0, 8, 4, 0xcafef00d, { posted: false });
      readSync(good, seen, 0, 4, 0x10);
      expect(seen.readUInt32LE(0)).toBe(0xcafef00d);
      await client.dmaUnmap(IOVA, SIZE);
      closeFd(good);
      client.close();
      client = undefined;
    } finally {
      client?.close();
      closeFd(fd);
    }
    await stopCleanly(server);
  });

  it("edu's DMA engine reading past the new end: the transfer fails (logged), the server serves the next client", async () => {
    const { server, path } = await startServer("edu");
    const fd = hostileMemfd();
    let client: VfioUserClient | undefined;
    const runDma = async (c: VfioUserClient, src: bigint, dst: bigint, cmd: number) => {
      await c.writeValue(0, EDU_REG.DMA_SRC, 8, src);
      await c.writeValue(0, EDU_REG.DMA_DST, 8, dst);
      await c.writeValue(0, EDU_REG.DMA_CNT, 8, 0x100n);
      await c.writeValue(0, EDU_REG.DMA_CMD, 8, BigInt(cmd));
      for (let i = 0; i < 1000 && (await c.readValue(0, EDU_REG.DMA_CMD, 8)) & 1n; i++) await sleep(2);
    };
    try {
      client = await connectVfioUser(path);
      await client.dmaMap({ iova: IOVA, size: SIZE, memory: new Uint8Array(SIZE), fd });
      ftruncateSync(fd, 0);
      await runDma(client, IOVA + 0x4000n, BigInt(EDU_DMA_START), 1); // RAM -> device
      await server.waitFor("edu: DMA failed");
      await server.waitFor("client shrank the file of DMA region 0x100000+0x10000");
      expect(server.stderr()).toMatch(/edu: DMA failed: .*shrunk/);
      client.close();

      client = await connectWhenFree(path);
      const good = memfdCreate("good-edu", SIZE);
      const pattern = Buffer.alloc(0x100, 0x3c);
      writeSync(good, pattern, 0, 0x100, 0x2000);
      await client.dmaMap({ iova: IOVA, size: SIZE, memory: new Uint8Array(SIZE), fd: good });
      await runDma(client, IOVA + 0x2000n, BigInt(EDU_DMA_START), 1); // RAM -> device
      await runDma(client, BigInt(EDU_DMA_START), IOVA + 0x3000n, 3); // device -> RAM
      const back = Buffer.alloc(0x100);
      readSync(good, back, 0, 0x100, 0x3000);
      expect(back.equals(pattern)).toBe(true);
      closeFd(good);
      client.close();
      client = undefined;
    } finally {
      client?.close();
      closeFd(fd);
    }
    await stopCleanly(server);
  });
});
