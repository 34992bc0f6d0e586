// QEMU 11.1's vfio-user-pci against the `wasmdev serve` command itself (the bundled CLI in its
// own process), as a user runs it: realize, BAR sizing, edu ident, liveness and factorial, a
// posted-write burst then a read, and a clean stop on SIGTERM that removes the socket.
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { EDU_ID_VALUE, EDU_REG } from "../../src/devices/edu.js";
import { bundleCli } from "../support/cli-bundle.js";
import { spawn } from "node:child_process";
import { QtestQemu } from "../support/qtest.js";
import { trixie } from "../support/trixie.js";
import { describeQemu11 } from "../support/qemu11-fixture.js";
import { startServe } from "../support/serve-process.js";

const BAR0 = 0xfe000000;
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

describeQemu11("QEMU 11.1 against `wasmdev serve`", () => {
  // Inside the checkout, so the bundle resolves its external native dependency (usocket) from
  // node_modules, as the installed bin does.
  const outDir = join(root, "build", "test-qemu11-serve");
  const cli = join(outDir, "cli.mjs");
  const socketPath = join(outDir, "edu.sock");

  beforeAll(async () => {
    await bundleCli(cli);
  });
  afterAll(() => rmSync(outDir, { recursive: true, force: true }));

  for (const quiet of [false, true]) {
    it(`${quiet ? "-q (only the listening line for a healthy client): " : ""}realizes the served edu, drives its registers, and serve stops cleanly`, async () => {
      // Ready when serve logs "listening on" (-q keeps that line).
      const serve = startServe(cli, socketPath, quiet ? ["-q"] : []);
      try {
        await serve.listening;
        const q = QtestQemu.start(socketPath);
        try {
          expect(await q.configRead(0x00)).toBe(0x11e81234);
          await q.placeBar32(0, BAR0);
          expect(await q.readl(BAR0 + EDU_REG.ID)).toBe(EDU_ID_VALUE);
          const writes: Promise<void>[] = [];
          for (let i = 1; i <= 500; i++) writes.push(q.writel(BAR0 + EDU_REG.LIVENESS, i));
          await Promise.all(writes);
          expect(await q.readl(BAR0 + EDU_REG.LIVENESS)).toBe(~500 >>> 0);
          await q.writel(BAR0 + EDU_REG.FACTORIAL, 6);
          let status = 1;
          for (let i = 0; i < 10_000 && status & 1; i++) status = await q.readl(BAR0 + EDU_REG.STATUS);
          expect(await q.readl(BAR0 + EDU_REG.FACTORIAL)).toBe(720);
        } finally {
          await q.quit();
        }
        expect(await serve.stop()).toBe(0);
        if (quiet) {
          expect(serve.stderr().trim().split("\n")).toEqual([expect.stringMatching(/wasmdev serve: listening on /)]);
        } else {
          expect(serve.stderr()).toMatch(/client 1 connected/);
          expect(serve.stderr()).toMatch(/client 1 disconnected/);
        }
        expect(existsSync(socketPath)).toBe(false);
      } finally {
        await serve.stop();
      }
    }, 60_000);
  }

  it("the QEMU command line serve prints attaches QEMU 11.1", async () => {
    const serve = startServe(cli, socketPath, []);
    try {
      await serve.listening;
      const pattern = /QEMU >= 10\.1: qemu-system-x86_64 (.*) \.\.\. /;
      // The hint lines follow the "listening on" line, maybe in a later chunk.
      await new Promise<void>((resolve) => {
        const check = () => pattern.test(serve.stderr()) && (serve.child.stderr!.off("data", check), resolve());
        serve.child.stderr!.on("data", check);
        check();
      });
      const hint = pattern.exec(serve.stderr())?.[1];
      // Its words as a shell splits them (the -device JSON is single-quoted), then qtest in place of "...".
      const words = [...hint!.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]);
      const c = trixie!.qemu([...words, "-accel", "qtest", "-nodefaults", "-display", "none", "-qtest", "stdio", "-qtest-log", "/dev/null"]);
      const q = new QtestQemu(spawn(c.file, c.args, { env: c.env, stdio: ["pipe", "pipe", "pipe"] }));
      try {
        expect(await q.configRead(0x00), q.stderr).toBe(0x11e81234);
      } finally {
        await q.quit();
      }
      expect(serve.stderr()).toMatch(/client 1 connected/);
      expect(await serve.stop()).toBe(0);
    } finally {
      await serve.stop();
    }
  }, 60_000);
});
