// Runs every program in examples/ as a user would (`node examples/….mjs`, importing "wasmdev"
// through the package's own exports, so against the build in dist/), and checks what they print
// and that they exit.
import { afterAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { trixie, trixieSkipReason } from "../support/trixie.js";

const examples = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "examples");
const dir = mkdtempSync(join(tmpdir(), "wasmdev-examples-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Resolves with the first stdout line, rejects if the process exits before printing one. */
function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", resolve);
    child.once("exit", (code) => reject(new Error(`exited (${code}) before printing`)));
  });
}

describe("examples/", () => {
  it("doorbell-device.mjs serves; client.mjs reads config, the BARs, and gets the doorbell's MSI", async () => {
    const socketPath = join(dir, "doorbell.sock");
    const device = spawn(process.execPath, [join(examples, "doorbell-device.mjs"), socketPath], { stdio: ["ignore", "pipe", "pipe"] });
    const exit = new Promise<number | null>((resolve) => device.once("exit", (code) => resolve(code)));
    try {
      expect(await firstLine(device)).toBe(`serving the doorbell device on ${socketPath} (Ctrl-C stops it)`);

      const client = spawnSync(process.execPath, [join(examples, "client.mjs"), socketPath], { encoding: "utf8", timeout: 20_000 });
      expect(client.stderr).toBe("");
      expect(client.stdout.split("\n")).toEqual([
        "device 1234:be11 class ff0000",
        "BAR 0: 65536 bytes rw-",
        "BAR 2: 4096 bytes rw-",
        "BAR 0 @0: 00000000 00000000 00000000 00000000",
        "BAR 0 @0x100: hello, device",
        "MSI vector 0 after the doorbell; rung 1 time(s)",
        "",
      ]);
      expect(client.status).toBe(0);
    } finally {
      device.kill("SIGTERM");
    }
    // SIGTERM closes the server: the process exits by itself and its socket is gone.
    expect(await exit).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
  });

  it.skipIf(!trixie)(`qemu-attach.mjs: QEMU 11.1's vfio-user-pci uses the device ${trixieSkipReason ?? ""}`, () => {
    const q = trixie!.qemu([]);
    const r = spawnSync(process.execPath, [join(examples, "qemu-attach.mjs")], {
      encoding: "utf8",
      timeout: 30_000,
      env: { ...q.env, QEMU: [q.file, ...q.args].join(" ") },
    });
    expect(r.stdout.split("\n"), r.stderr).toEqual([
      "QEMU sees 1234:be11 at 00:01.0",
      "RAM BAR through QEMU: 0xcafef00d",
      "doorbell rung through QEMU: the device saw 1 ring(s) of 0x2a, QEMU reads count 1, MSI data 0x4d53 delivered",
      "",
    ]);
    expect(r.status).toBe(0);
  });
});
