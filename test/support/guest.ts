// Boots the trixie kernel under QEMU 11.1 (TCG) with the project's initramfs and a test script,
// and collects what the script reports. The script's lines "@@name value" become results; the
// guest powers off when the script ends ("@@guest-exit <status>"). Everything is awaited on
// QEMU's output and exit; a timeout kills QEMU and fails with the console's tail.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { baseInitramfs, scriptArchive } from "../guest/initramfs.js";
import { trixie } from "./trixie.js";

export interface GuestOptions {
  /** QEMU -device arguments (JSON strings or key=value lists). */
  devices: string[];
  /** Further QEMU arguments, placed before the devices (e.g. a -drive a device refers to). */
  qemuArgs?: string[];
  /** Shell script run by the guest's init (busybox sh -e). */
  script: string;
  /** Further files for the guest's root, e.g. a test program built for it (paths without a leading /). */
  files?: { path: string; mode: number; data: Buffer }[];
  /** Guest RAM (default 512M), backed by a shared memfd so vfio-user DMA_MAP carries fds. */
  memory?: string;
  /** Unshared anonymous RAM instead (the server then reaches it through DMA_READ/DMA_WRITE). */
  unsharedMemory?: boolean;
  timeoutMs?: number;
  /** Called for every console line (e.g. to kill QEMU at a chosen point). */
  onLine?: (line: string, guest: RunningGuest) => void;
}

export interface GuestResult {
  /** The script's exit status (null if the guest never reported one). */
  status: number | null;
  /** QEMU's exit code and signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** "@@name value" lines, name → values in order. */
  results: Map<string, string[]>;
  console: string;
}

export interface RunningGuest {
  kill(signal?: NodeJS.Signals): void;
  readonly pid: number;
}

/** The first value reported under `name`, or a failure naming it. */
export function result(r: GuestResult, name: string): string {
  const v = r.results.get(name)?.[0];
  if (v === undefined) throw new Error(`the guest did not report @@${name}; console tail:\n${r.console.slice(-3000)}`);
  return v;
}

export async function bootGuest(options: GuestOptions): Promise<GuestResult> {
  const t = trixie!;
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-guest-"));
  const initrd = join(dir, "initrd.cpio");
  writeFileSync(initrd, Buffer.concat([readFileSync(baseInitramfs(t.root, t.kernelVersion)), scriptArchive(options.script, options.files)]));
  const memory = options.memory ?? "512M";
  const ram = options.unsharedMemory
    ? []
    : ["-object", `memory-backend-memfd,id=ram0,size=${memory},share=on`, "-machine", "memory-backend=ram0"];
  const c = t.qemu([
    "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", memory, ...ram,
    "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
    "-kernel", t.kernel, "-initrd", initrd,
    "-append", "console=ttyS0 panic=-1 loglevel=4 nokaslr",
    ...(options.qemuArgs ?? []),
    ...options.devices.flatMap((d) => ["-device", d]),
  ]);
  const child = spawn(c.file, c.args, { env: c.env, stdio: ["ignore", "pipe", "pipe"] });
  const running: RunningGuest = { kill: (s = "SIGKILL") => void child.kill(s), pid: child.pid! };
  const results = new Map<string, string[]>();
  let consoleText = "";
  let status: number | null = null;
  createInterface({ input: child.stdout! }).on("line", (raw) => {
    const line = raw.replace(/\r$/, "");
    consoleText += line + "\n";
    const m = /^@@(\S+)\s?(.*)$/.exec(line);
    if (m) {
      if (m[1] === "guest-exit") status = Number(m[2]);
      else (results.get(m[1]!) ?? results.set(m[1]!, []).get(m[1]!)!).push(m[2]!);
    }
    options.onLine?.(line, running);
  });
  child.stderr!.on("data", (d) => (consoleText += String(d)));
  const timeoutMs = options.timeoutMs ?? 120_000;
  try {
    const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`guest timed out after ${timeoutMs} ms; console tail:\n${consoleText.slice(-3000)}`));
      }, timeoutMs);
      child.once("exit", (code, sig) => {
        clearTimeout(timer);
        resolve([code, sig]);
      });
    });
    return { status, exitCode, signal, results, console: consoleText };
  } finally {
    // WASMDEV_GUEST_CONSOLE=FILE keeps the last guest's whole console for a look afterwards.
    if (process.env.WASMDEV_GUEST_CONSOLE) writeFileSync(process.env.WASMDEV_GUEST_CONSOLE, consoleText);
    rmSync(dir, { recursive: true, force: true });
  }
}
