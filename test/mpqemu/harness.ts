// Test and benchmark harness around real QEMU 7.2: spawn QEMU with a socketpair end passed
// through spawn's stdio array, drive its HMP monitor (stdio, read until the "(qemu) " prompt),
// and reach config space through 0xcf8/0xcfc and MMIO through `xp`.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";

export const QEMU = process.env.WASMDEV_QEMU ?? "qemu-system-x86_64";

/** Whether QEMU with the multi-process pieces is installed (tests skip otherwise). */
export function qemuAvailable(): boolean {
  const r = spawnSync(QEMU, ["-device", "help"], { encoding: "utf8", timeout: 10_000 });
  return r.status === 0 && r.stdout.includes("x-pci-proxy-dev");
}

const children = new Set<ChildProcess>();

/** Kills every QEMU this harness started and waits for them to exit (for afterAll). */
export async function killAllQemu(): Promise<void> {
  await Promise.all(
    [...children].map(
      (c) =>
        new Promise<void>((resolve) => {
          // No pid: never spawned (and kill() would signal our own process group).
          if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once("exit", () => resolve());
          c.kill("SIGKILL");
        }),
    ),
  );
  children.clear();
}

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** QEMU as the remote (device side) hosting `device` (e.g. "e1000"); `{fd}` is the socket. */
export function qemuRemoteCommand(device: string): string[] {
  return [QEMU, "-machine", "x-remote", "-nodefaults", "-display", "none", "-device", `${device},id=d0`, "-object", "x-remote-object,id=r0,devid=d0,fd={fd}"];
}

export interface VmOptions {
  /** Extra arguments (devices). */
  args: string[];
  /** fds to pass; the child sees extraFds[i] as fd 3 + i. */
  extraFds?: number[];
  ramMiB?: number;
  /** memfd-backed RAM so a proxy can share it (default true). */
  memfd?: boolean;
  /** Accelerator and extra -machine properties (default "tcg"), e.g. "kvm,kernel-irqchip=on". */
  accel?: string;
}

/** A QEMU VMM (q35, TCG, CPU stopped with -S) driven through HMP on stdio. */
export class HmpVm {
  readonly child: ChildProcess;
  private buf = "";
  private waiter: { resolve: (s: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private exitError: Error | null = null;
  stderr = "";

  private constructor(child: ChildProcess) {
    this.child = child;
    child.stdout!.setEncoding("latin1");
    child.stdout!.on("data", (d: string) => {
      this.buf += d;
      this.check();
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => (this.stderr += d));
    child.once("exit", (code, sig) => {
      this.exitError = new Error(`QEMU exited (${sig ?? code}); stderr: ${this.stderr.trim()}`);
      if (this.waiter) {
        clearTimeout(this.waiter.timer);
        this.waiter.reject(this.exitError);
        this.waiter = null;
      }
    });
  }

  static async start(opts: VmOptions, timeoutMs = 20_000): Promise<HmpVm> {
    const ram = opts.ramMiB ?? 64;
    const memArgs = opts.memfd === false ? ["-m", `${ram}M`] : ["-m", `${ram}M`, "-object", `memory-backend-memfd,id=sysmem-file,size=${ram}M`, "-numa", "node,memdev=sysmem-file"];
    const args = ["-machine", `q35,accel=${opts.accel ?? "tcg"}`, "-nodefaults", "-display", "none", ...memArgs, "-S", "-monitor", "stdio", ...opts.args];
    const extra = opts.extraFds ?? [];
    const child = track(spawn(QEMU, args, { stdio: ["pipe", "pipe", "pipe", ...extra] }));
    const vm = new HmpVm(child);
    await vm.waitPrompt(timeoutMs); // banner
    return vm;
  }

  private check(): void {
    if (!this.waiter) return;
    const at = this.buf.indexOf("(qemu) ");
    if (at < 0) return;
    const out = this.buf.slice(0, at);
    this.buf = this.buf.slice(at + 7);
    const w = this.waiter;
    this.waiter = null;
    clearTimeout(w.timer);
    w.resolve(out);
  }

  private waitPrompt(timeoutMs: number): Promise<string> {
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`HMP: no prompt within ${timeoutMs} ms; stderr: ${this.stderr.trim()}`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
      this.check();
    });
  }

  /** Runs one HMP command; resolves with its output (the echoed line removed). */
  cmd(line: string, timeoutMs = 15_000): Promise<string> {
    const run = async () => {
      const p = this.waitPrompt(timeoutMs);
      this.child.stdin!.write(line + "\n");
      const raw = await p;
      const eol = raw.indexOf("\r\n");
      return (eol >= 0 ? raw.slice(eol + 2) : raw).replace(/\r/g, "");
    };
    const r = this.queue.then(run, run);
    this.queue = r.catch(() => {});
    return r;
  }

  async inPort(port: number, size: 1 | 2 | 4): Promise<number> {
    const out = await this.cmd(`i /${sizeLetter(size)} 0x${port.toString(16)}`);
    const m = /= (0x[0-9a-f]+)/.exec(out);
    if (!m) throw new Error(`HMP i: unexpected output ${JSON.stringify(out)}`);
    return Number(m[1]);
  }

  async outPort(port: number, size: 1 | 2 | 4, value: number): Promise<void> {
    const out = await this.cmd(`o /${sizeLetter(size)} 0x${port.toString(16)} 0x${(value >>> 0).toString(16)}`);
    if (out.trim()) throw new Error(`HMP o: ${out.trim()}`);
  }

  /** Config read through the CF8/CFC mechanism (bus 0). */
  async cfgRead(dev: number, reg: number, size: 1 | 2 | 4 = 4): Promise<number> {
    await this.outPort(0xcf8, 4, cfgAddress(dev, reg));
    return this.inPort(0xcfc + (reg & 3), size);
  }

  async cfgWrite(dev: number, reg: number, size: 1 | 2 | 4, value: number): Promise<void> {
    await this.outPort(0xcf8, 4, cfgAddress(dev, reg));
    await this.outPort(0xcfc + (reg & 3), size, value);
  }

  /** `xp /Nwx addr`: N separate 4-byte reads of guest-physical memory. */
  async readWords(addr: bigint, n: number): Promise<number[]> {
    const out = await this.cmd(`xp /${n}wx 0x${addr.toString(16)}`);
    const words: number[] = [];
    for (const line of out.split("\n")) {
      const m = /^[0-9a-f]+:((?:\s+0x[0-9a-f]+)+)/.exec(line.trim());
      if (m) for (const w of m[1].trim().split(/\s+/)) words.push(Number(w));
    }
    if (words.length !== n) throw new Error(`HMP xp: expected ${n} words, got ${JSON.stringify(out)}`);
    return words;
  }

  /** Sizes BAR `bar` of device `dev` with all-ones / read / restore. */
  async barSize(dev: number, bar: number): Promise<number> {
    const reg = 0x10 + 4 * bar;
    const orig = await this.cfgRead(dev, reg);
    await this.cfgWrite(dev, reg, 4, 0xffffffff);
    const v = await this.cfgRead(dev, reg);
    await this.cfgWrite(dev, reg, 4, orig);
    if (v === 0) return 0;
    const mask = v & 1 ? v & 0xfffffffc : v & 0xfffffff0;
    return v & 1 ? (~mask + 1) & 0xffff : (~mask + 1) >>> 0;
  }

  async quit(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.child.stdin!.write("quit\n");
    const t = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(t);
  }
}

export function cfgAddress(dev: number, reg: number): number {
  return (0x80000000 | (dev << 11) | (reg & 0xfc)) >>> 0;
}

function sizeLetter(size: 1 | 2 | 4): string {
  return size === 1 ? "b" : size === 2 ? "h" : "w";
}

/** Parses `info pci` into { dev -> { vendor, device, bars: { n: { kind, size } } } }. */
export function parseInfoPci(text: string): Map<number, { vendorId: number; deviceId: number; subsystemVendorId?: number; subsystemId?: number; bars: Map<number, { kind: string; size: number }> }> {
  const out = new Map<number, any>();
  let cur: any = null;
  for (const line of text.split("\n")) {
    let m = /Bus\s+0, device\s+(\d+), function 0:/.exec(line);
    if (m) {
      cur = { bars: new Map() };
      out.set(Number(m[1]), cur);
      continue;
    }
    if (!cur) continue;
    if ((m = /PCI device ([0-9a-f]{4}):([0-9a-f]{4})/.exec(line))) {
      cur.vendorId = parseInt(m[1], 16);
      cur.deviceId = parseInt(m[2], 16);
    } else if ((m = /PCI subsystem ([0-9a-f]{4}):([0-9a-f]{4})/.exec(line))) {
      cur.subsystemVendorId = parseInt(m[1], 16);
      cur.subsystemId = parseInt(m[2], 16);
    } else if ((m = /BAR(\d): (I\/O|32 bit memory|64 bit memory|32 bit prefetchable memory|64 bit prefetchable memory) at 0x([0-9a-f]+) \[0x([0-9a-f]+)\]/.exec(line))) {
      // `info pci` prints [addr + size - 1]; an unmapped BAR has addr = all-ones (i.e. -1).
      const addr = BigInt("0x" + m[3]);
      const last = BigInt("0x" + m[4]);
      const size = addr === 0xffffffffffffffffn ? last + 2n : last - addr + 1n;
      cur.bars.set(Number(m[1]), { kind: m[2], size: Number(size) });
    }
  }
  return out;
}
