// `wasmdev serve --device nvme`: the option parsing and a served controller's namespace size.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectVfioUser, createSharedMemory } from "../../../src/vfio-user/client/connect.js";
import { bundleCli } from "../../support/cli-bundle.js";
import { until } from "./driver.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
// The bundle finds build/core.wasm relative to itself, so it lives under build/.
const outDir = join(root, "build", "test-nvme-cli");
const cli = join(outDir, "cli.mjs");
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "nvme-cli-"));
  await bundleCli(cli);
}, 120_000);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(outDir, { recursive: true, force: true });
});

function runCli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, out, err })));
}

describe("wasmdev serve --device nvme", () => {
  it("documents the device and its options in --help", async () => {
    const r = await runCli(["serve", "--help"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--device NAME[\s\S]*nvme/);
    expect(r.out).toContain("--size BYTES");
    expect(r.out).toContain("--lba-size N");
    expect(r.out).toContain("--disk FILE");
  }, 60_000);

  it("refuses bad option values with exit status 2", async () => {
    for (const args of [["--lba-size", "1000"], ["--size", "12Q"], ["--size", "0"], ["--disk", ""]]) {
      const r = await runCli(["serve", "--device", "nvme", ...args]);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toContain("usage:");
    }
    const r = await runCli(["serve", "--device", "nvme", "--size", "1000", "--socket", join(dir, "x.sock")]);
    expect(r.code).toBe(1); // not a multiple of the LBA size
    expect(r.err).toContain("LBA size");
  }, 60_000);

  it("serves a namespace of the asked size and LBA format backed by --disk", async () => {
    const socket = join(dir, "nvme.sock");
    const disk = join(dir, "disk.img");
    const child = spawn(process.execPath, [cli, "serve", "--device", "nvme", "--size", "8M", "--lba-size", "4096", "--disk", disk, "--socket", socket], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    let started = false;
    try {
      await until(() => err.includes("listening on") || child.exitCode !== null, 30_000, () => `serve did not start: ${err}`);
      expect(err).toContain("listening on");
      started = true;
      expect(statSync(disk).size).toBe(8 << 20);
      const client = await connectVfioUser(socket);
      const shm = createSharedMemory(1 << 20);
      try {
        expect(Number(await client.readValue(7, 0x08, 4)) >>> 8).toBe(0x010802);
        await client.dmaMap({ iova: 0, size: 1 << 20, memory: shm.memory, fd: shm.fd });
        const dv = new DataView(shm.memory.buffer, shm.memory.byteOffset);
        await client.writeValue(0, 0x24, 4, (3 << 16) | 3);
        await client.writeValue(0, 0x28, 8, 0x1000);
        await client.writeValue(0, 0x30, 8, 0x2000);
        await client.writeValue(0, 0x14, 4, 1 | (6 << 16) | (4 << 20));
        // Identify namespace 1 into 0x3000.
        dv.setUint8(0x1000, 0x06);
        dv.setUint16(0x1002, 7, true);
        dv.setUint32(0x1004, 1, true);
        dv.setBigUint64(0x1018, 0x3000n, true);
        await client.writeValue(0, 0x1000, 4, 1);
        await until(() => (dv.getUint16(0x2000 + 14, true) & 1) === 1);
        expect(dv.getUint16(0x2000 + 14, true) >>> 1).toBe(0);
        expect(dv.getBigUint64(0x3000, true)).toBe(2048n); // 8 MiB of 4 KiB blocks
        expect(shm.memory[0x3000 + 130]).toBe(12);
      } finally {
        client.close();
        shm.close();
      }
    } finally {
      child.kill("SIGTERM");
      const code = await exit;
      if (started) expect(code).toBe(0);
    }
  }, 60_000);
});
