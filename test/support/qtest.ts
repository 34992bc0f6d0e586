// One QEMU 11.1 under `-accel qtest` with a vfio-user-pci device: qtest commands over stdio,
// config space through 0xcf8/0xcfc, guest memory and MMIO accesses, and intercepted
// interrupts ("IRQ raise N" lines) as awaitable events.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { trixie } from "./trixie.js";

/** Slot 1, function 0: the device is placed at addr=0x1 below. */
export const QTEST_DEVFN = 0x08;

export interface QtestQemuOptions {
  /** Extra vfio-user-pci properties, e.g. { "x-no-posted-writes": true }. */
  deviceProps?: Record<string, unknown>;
  /** Guest RAM size (default 64M). */
  memory?: string;
  /** Back guest RAM by a shared memfd (DMA_MAP with fds) instead of plain anonymous memory. */
  sharedMemory?: boolean;
  /** Arguments appended to QEMU's command line. */
  extraArgs?: string[];
}

export class QtestQemu {
  private readonly waiting: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  private readonly irqWaiters: { raise: boolean; line: number | undefined; resolve: (line: number) => void; reject: (e: Error) => void }[] = [];
  /** Every "IRQ raise|lower N" line seen, in order. */
  readonly irqEvents: string[] = [];
  readonly exited: Promise<number | null>;
  stderr = "";

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("IRQ")) {
        this.irqEvents.push(line);
        const m = /^IRQ (raise|lower) (\d+)/.exec(line);
        if (m) {
          const raise = m[1] === "raise";
          const n = Number(m[2]);
          for (let i = 0; i < this.irqWaiters.length; i++) {
            const w = this.irqWaiters[i]!;
            if (w.raise === raise && (w.line === undefined || w.line === n)) this.irqWaiters.splice(i--, 1)[0]!.resolve(n);
          }
        }
        return;
      }
      const w = this.waiting.shift();
      if (!w) return;
      if (line.startsWith("OK")) w.resolve(line.slice(2).trim());
      else w.reject(new Error(`qtest: ${line}`));
    });
    child.stderr!.on("data", (d) => (this.stderr += String(d)));
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    void this.exited.then(() => {
      for (const w of [...this.waiting.splice(0), ...this.irqWaiters.splice(0)]) w.reject(new Error(`QEMU exited: ${this.stderr.trim()}`));
    });
  }

  static start(socketPath: string, options: QtestQemuOptions = {}): QtestQemu {
    const memory = options.memory ?? "64M";
    const ram = options.sharedMemory
      ? ["-object", `memory-backend-memfd,id=ram0,size=${memory},share=on`, "-machine", "memory-backend=ram0"]
      : [];
    const c = trixie!.qemu([
      "-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none", "-m", memory, ...ram,
      "-qtest", "stdio", "-qtest-log", "/dev/null",
      "-device", JSON.stringify({
        driver: "vfio-user-pci", id: "d0", addr: "0x1",
        socket: { path: socketPath, type: "unix" }, ...options.deviceProps,
      }),
      ...(options.extraArgs ?? []),
    ]);
    return new QtestQemu(spawn(c.file, c.args, { env: c.env, stdio: ["pipe", "pipe", "pipe"] }));
  }

  /** Sends one qtest command; resolves with what follows "OK". */
  cmd(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.child.stdin!.write(line + "\n");
    });
  }

  private static hex(v: number | bigint): string {
    return typeof v === "bigint" ? `0x${v.toString(16)}` : `0x${(v >>> 0).toString(16)}`;
  }

  private selectConfig(offset: number, devfn: number): Promise<string> {
    return this.cmd(`outl 0xcf8 ${QtestQemu.hex(0x80000000 | (devfn << 8) | (offset & 0xfc))}`);
  }

  /** Config dword at `offset` of bus 0 `devfn` (default: the vfio-user device). */
  async configRead(offset: number, devfn = QTEST_DEVFN): Promise<number> {
    await this.selectConfig(offset, devfn);
    return Number(await this.cmd("inl 0xcfc")) >>> 0;
  }

  async configWrite(offset: number, value: number, devfn = QTEST_DEVFN): Promise<void> {
    await this.selectConfig(offset, devfn);
    await this.cmd(`outl 0xcfc ${QtestQemu.hex(value)}`);
  }

  async readl(addr: number): Promise<number> {
    return Number(await this.cmd(`readl ${QtestQemu.hex(addr)}`)) >>> 0;
  }

  async writel(addr: number, value: number): Promise<void> {
    await this.cmd(`writel ${QtestQemu.hex(addr)} ${QtestQemu.hex(value)}`);
  }

  async readq(addr: number): Promise<bigint> {
    return BigInt(await this.cmd(`readq ${QtestQemu.hex(addr)}`));
  }

  async writeq(addr: number, value: bigint): Promise<void> {
    await this.cmd(`writeq ${QtestQemu.hex(addr)} ${QtestQemu.hex(value)}`);
  }

  /** Guest-physical memory read through qtest's `read` (hex reply). */
  async memRead(addr: number, size: number): Promise<Buffer> {
    const reply = await this.cmd(`read ${QtestQemu.hex(addr)} ${QtestQemu.hex(size)}`);
    return Buffer.from(reply.replace(/^0x/, ""), "hex");
  }

  async memWrite(addr: number, data: Uint8Array): Promise<void> {
    await this.cmd(`write ${QtestQemu.hex(addr)} ${QtestQemu.hex(data.length)} 0x${Buffer.from(data).toString("hex")}`);
  }

  /** Asks qtest to report the device's interrupts ("IRQ raise N") for the given QOM path. */
  async interceptIrqs(qomPath = "/machine/q35/ioapic"): Promise<void> {
    await this.cmd(`irq_intercept_in ${qomPath}`);
  }

  /** Resolves with the line of the next "IRQ raise N" (on `line` only, if given). */
  nextIrqRaise(line?: number): Promise<number> {
    return new Promise((resolve, reject) => this.irqWaiters.push({ raise: true, line, resolve, reject }));
  }

  /** Resolves with the line of the next "IRQ lower N" (on `line` only, if given). */
  nextIrqLower(line?: number): Promise<number> {
    return new Promise((resolve, reject) => this.irqWaiters.push({ raise: false, line, resolve, reject }));
  }

  /** Places BAR `index` (32-bit memory) at `addr`, then enables memory + bus master. */
  async placeBar32(index: number, addr: number, devfn = QTEST_DEVFN): Promise<void> {
    await this.configWrite(0x10 + 4 * index, addr, devfn);
    const cmd = (await this.configRead(0x04, devfn)) & 0xffff;
    await this.configWrite(0x04, cmd | 0x0006, devfn);
  }

  /**
   * Stops QEMU as libqtest does (SIGTERM: a clean shutdown that closes the vfio-user socket; a
   * closed qtest chardev alone does not end QEMU) and waits for the exit; SIGKILL if it lingers.
   */
  async quit(): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.stdin!.end();
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 20_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}
