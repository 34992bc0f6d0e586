// End to end: the project's own vfio-user client (#7) against the server, and the
// `wasmdev serve` command as a separate process (socket mode, logs, SIGTERM, --help, errors).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { connectVfioUser, enableIrqs, createSharedMemory } from "../../src/vfio-user/client/connect.js";
import type { IrqEvent } from "../../src/vfio-user/client/client.js";
import { createEdu, EDU_REG, EDU_ID_VALUE, EDU_DMA_START } from "../../src/devices/edu.js";
import { createThroughputDevice, THROUGHPUT_REG } from "../../src/devices/throughput.js";
import { memfdCreate, mmapFd } from "../../src/transport/shm.js";
import { closeFd } from "../../src/transport/fd.js";
import { PciIrq, MigrationState } from "../../src/vfio-user/wire/index.js";
import { sleep } from "./raw-client.js";
import { connectWhenFree } from "./connect-when-free.js";
import { bundleCli } from "../support/cli-bundle.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let seq = 0;
const socketPath = () => join(tmpdir(), `wasmdev-vfu-e2e-${process.pid}-${++seq}.sock`);

describe("the project's client against the server", () => {
  it("edu: probe, registers, INTx events, DMA through a memfd, state migration to a second server", async () => {
    const pathA = socketPath();
    const pathB = socketPath();
    const a = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1 }).fn, socketPath: pathA });
    const b = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1 }).fn, socketPath: pathB });
    const client = await connectVfioUser(pathA);
    const shm = createSharedMemory(1 << 20);
    try {
      const info = await client.getDeviceInfo();
      expect(info.numRegions).toBe(9);
      expect(await client.readValue(0, EDU_REG.ID, 4)).toBe(BigInt(EDU_ID_VALUE));
      expect(await client.readValue(7, 0, 4)).toBe(0x11e81234n);
      await client.writeValue(0, EDU_REG.LIVENESS, 4, 0xcafe);
      expect(await client.readValue(0, EDU_REG.LIVENESS, 4)).toBe(BigInt(~0xcafe >>> 0));

      const events: IrqEvent[] = [];
      client.on("irq", (e) => events.push(e));
      await enableIrqs(client, PciIrq.INTX, 1);
      await client.dmaMap({ iova: 0x100000, size: 1 << 20, memory: shm.memory, fd: shm.fd });
      shm.memory.set([9, 8, 7, 6], 0x10);
      const dma = async (src: bigint, dst: bigint, cmd: number) => {
        await client.writeValue(0, EDU_REG.DMA_SRC, 8, src);
        await client.writeValue(0, EDU_REG.DMA_DST, 8, dst);
        await client.writeValue(0, EDU_REG.DMA_CNT, 8, 4n);
        await client.writeValue(0, EDU_REG.DMA_CMD, 8, BigInt(cmd));
        for (let i = 0; i < 500 && (await client.readValue(0, EDU_REG.DMA_CMD, 8)) & 1n; i++) await sleep(2);
      };
      await dma(0x100010n, BigInt(EDU_DMA_START), 1);
      await dma(BigInt(EDU_DMA_START), 0x100020n, 1 | 2 | 4);
      expect(Array.from(shm.memory.subarray(0x20, 0x24))).toEqual([9, 8, 7, 6]);
      for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
      expect(events[0]).toMatchObject({ index: PciIrq.INTX, vector: 0 });

      // Migration: save from A, load into B.
      const state = await client.saveDeviceState();
      const clientB = await connectVfioUser(pathB);
      await clientB.loadDeviceState(state);
      expect(await clientB.getMigrationState()).toBe(MigrationState.RUNNING);
      expect(await clientB.readValue(0, EDU_REG.LIVENESS, 4)).toBe(BigInt(~0xcafe >>> 0));
      clientB.close();
    } finally {
      client.close();
      shm.close();
      await a.close();
      await b.close();
    }
  });

  it("throughput device: the client maps the RAM BAR from the offered fd; posted doorbells then flush", async () => {
    const size = 1 << 16;
    const fd = memfdCreate("tp", size);
    const ram = mmapFd(fd, 0, size, { writable: true });
    const tp = createThroughputDevice({ data: { bytes: ram.bytes(), fd, fdOffset: 0n } });
    const path = socketPath();
    const server = VfioUserServer.listen({ device: tp.fn, socketPath: path });
    const client = await connectVfioUser(path);
    try {
      for (let i = 0; i < 200; i++) await client.writeValue(2, THROUGHPUT_REG.DOORBELL, 4, i);
      await client.flush();
      expect(tp.doorbells).toBe(200);
      expect(await client.readValue(2, THROUGHPUT_REG.DOORBELL_COUNT, 4)).toBe(200n);
      const areas = await client.mapRegion(0);
      expect(areas.length).toBe(1);
      ram.bytes()[0x40] = 0x77;
      expect(areas[0].view[0x40]).toBe(0x77);
    } finally {
      client.close();
      await server.close();
      ram.unmap();
      closeFd(fd);
    }
  });
});

describe("wasmdev serve (separate process)", () => {
  const outDir = join(root, "build", "test-vfio-user");
  const cli = join(outDir, "cli.mjs");

  beforeAll(async () => {
    await bundleCli(cli);
  });

  afterAll(() => rmSync(outDir, { recursive: true, force: true }));

  function startServe(args: string[]): { child: ChildProcess; stderr: () => string; listening: Promise<void> } {
    const child = spawn(process.execPath, [cli, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    const listening = new Promise<void>((resolve, reject) => {
      child.stderr!.on("data", (d) => {
        err += d.toString();
        if (err.includes("listening on")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`serve exited early with ${code}: ${err}`)));
    });
    return { child, stderr: () => err, listening };
  }

  it("serves edu on a 0600 socket, logs connections, refuses a second client, and stops cleanly on SIGTERM", async () => {
    const path = socketPath();
    const s = startServe(["--socket", path]);
    await s.listening;
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const c1 = await connectVfioUser(path);
    expect(await c1.readValue(0, EDU_REG.ID, 4)).toBe(BigInt(EDU_ID_VALUE));
    await expect(connectVfioUser(path, { connectTimeoutMs: 100 })).rejects.toMatchObject({ code: "ERR_BUSY", errno: 16 });
    c1.close();
    const c2 = await connectWhenFree(path);
    expect(await c2.readValue(0, EDU_REG.ID, 4)).toBe(BigInt(EDU_ID_VALUE));
    c2.close();
    await sleep(50);
    const exit = new Promise<number | null>((r) => s.child.once("exit", (code) => r(code)));
    s.child.kill("SIGTERM");
    expect(await exit).toBe(0);
    expect(existsSync(path)).toBe(false);
    const log = s.stderr();
    expect(log).toMatch(/client 1 connected/);
    expect(log).toMatch(/refused a second client/);
    expect(log).toMatch(/client 2 connected/);
    expect(log).toMatch(/stopping on SIGTERM/);
  });

  it("stops on SIGINT too, replacing a stale socket at the path", async () => {
    const path = socketPath();
    // A stale socket left by a killed server.
    const first = startServe(["--socket", path, "--device", "throughput"]);
    await first.listening;
    first.child.kill("SIGKILL");
    await new Promise((r) => first.child.once("exit", r));
    expect(existsSync(path)).toBe(true);
    const s = startServe(["--socket", path, "--device", "throughput"]);
    await s.listening;
    const c = await connectVfioUser(path);
    expect(await c.readValue(2, THROUGHPUT_REG.ID, 4)).toBe(0x77647470n);
    c.close();
    const exit = new Promise<number | null>((r) => s.child.once("exit", (code) => r(code)));
    s.child.kill("SIGINT");
    expect(await exit).toBe(0);
    expect(existsSync(path)).toBe(false);
  });

  it("--help documents every flag; bad flags exit 2; a non-socket file at the path is left alone (exit 1)", () => {
    const help = spawnSync(process.execPath, [cli, "serve", "--help"], { encoding: "utf8" });
    expect(help.status).toBe(0);
    for (const flag of ["--protocol", "--socket", "--device", "--max-xfer", "--quiet", "--help"]) expect(help.stdout).toContain(flag);
    expect(help.stdout).toContain("./wasmdev.sock");

    const bad = spawnSync(process.execPath, [cli, "serve", "--device", "nonesuch"], { encoding: "utf8" });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("unknown device");
    const bad2 = spawnSync(process.execPath, [cli, "serve", "--bogus"], { encoding: "utf8" });
    expect(bad2.status).toBe(2);

    const file = join(tmpdir(), `wasmdev-vfu-notasocket-${process.pid}`);
    writeFileSync(file, "keep me");
    const r = spawnSync(process.execPath, [cli, "serve", "--socket", file], { encoding: "utf8", timeout: 10000 });
    expect(r.status).toBe(1);
    expect(readFileSync(file, "utf8")).toBe("keep me");
    rmSync(file);
  });

  it("the default socket is ./wasmdev.sock in the working directory", async () => {
    const dir = join(tmpdir(), `wasmdev-vfu-cwd-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    const child = spawn(process.execPath, [cli, "serve"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on("data", (d) => {
        err += d.toString();
        if (err.includes("listening on")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    expect(existsSync(join(dir, "wasmdev.sock"))).toBe(true);
    const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exit).toBe(0);
    expect(existsSync(join(dir, "wasmdev.sock"))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });
});
