// QEMU 11.1's own vfio-user client (vfio-user-pci) against our server, driven through qtest
// without a guest: config space through 0xcf8/0xcfc, BAR sizing, edu's registers, and a
// second QEMU attaching to the same server after the first quits.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEdu, EDU_BAR_SIZE, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { trixie, trixieSkipReason } from "../support/trixie.js";

const BAR0 = 0xfe000000;
const DEVFN = 0x08; // slot 1, function 0 (addr=0x1 below)

/** One QEMU under qtest: each command resolves with its "OK ..." line or rejects on "FAIL". */
class QtestQemu {
  private readonly waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  private readonly exited: Promise<number | null>;
  private stderr = "";

  constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("IRQ")) return;
      const w = this.waiting.shift();
      if (!w) return;
      if (line.startsWith("OK")) w.resolve(line.slice(2).trim());
      else w.reject(new Error(`qtest: ${line}`));
    });
    child.stderr!.on("data", (d) => (this.stderr += String(d)));
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    void this.exited.then(() => {
      for (const w of this.waiting.splice(0)) w.reject(new Error(`QEMU exited: ${this.stderr.trim()}`));
    });
  }

  static start(socketPath: string): QtestQemu {
    const c = trixie!.qemu([
      "-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none", "-m", "64M",
      "-qtest", "stdio", "-qtest-log", "/dev/null",
      "-device", JSON.stringify({ driver: "vfio-user-pci", id: "d0", addr: "0x1", socket: { path: socketPath, type: "unix" } }),
    ]);
    return new QtestQemu(spawn(c.file, c.args, { env: c.env, stdio: ["pipe", "pipe", "pipe"] }));
  }

  cmd(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.child.stdin!.write(line + "\n");
    });
  }

  async configRead(offset: number): Promise<number> {
    await this.cmd(`outl 0xcf8 0x${((0x80000000 | (DEVFN << 8) | (offset & 0xfc)) >>> 0).toString(16)}`);
    return Number(await this.cmd("inl 0xcfc"));
  }

  async configWrite(offset: number, value: number): Promise<void> {
    await this.cmd(`outl 0xcf8 0x${((0x80000000 | (DEVFN << 8) | (offset & 0xfc)) >>> 0).toString(16)}`);
    await this.cmd(`outl 0xcfc 0x${(value >>> 0).toString(16)}`);
  }

  async readl(addr: number): Promise<number> {
    return Number(await this.cmd(`readl 0x${addr.toString(16)}`));
  }

  async writel(addr: number, value: number): Promise<void> {
    await this.cmd(`writel 0x${addr.toString(16)} 0x${(value >>> 0).toString(16)}`);
  }

  /** Closes qtest's stdin (QEMU quits) and waits for the exit; kills it if it lingers. */
  async quit(): Promise<number | null> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 20_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

const d = describe.skipIf(!trixie);
if (trixieSkipReason) it.skip(`QEMU 11.1 e2e skipped: ${trixieSkipReason}`, () => {});

d("QEMU 11.1 vfio-user-pci against the project's server (qtest)", () => {
  let dir: string;
  let socketPath: string;
  let server: VfioUserServer;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "wasmdev-qemu11-"));
    socketPath = join(dir, "edu.sock");
    server = VfioUserServer.listen({ device: createEdu(), socketPath });
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("realizes edu, sizes its BAR, and drives ident, liveness and factorial; a second QEMU attaches after the first quits", async () => {
    for (const round of [1, 2]) {
      const q = QtestQemu.start(socketPath);
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
        await q.quit();
      }
    }
  }, 120_000);
});
