// `wasmdev serve`: serve a sample device out of process until SIGINT/SIGTERM.
//
// Listening protocols register in PROTOCOLS below (a function taking ServeOptions and resolving
// to the exit code once the server stopped). mpqemu does not listen — it adopts the socket its
// VMM passed (--fd N) — so run() hands `--protocol mpqemu` to its own entry before parsing.
import { lstatSync } from "node:fs";
import { resolve } from "node:path";
import type { PciFunction } from "../core/pci/api.js";
import { createEdu } from "../devices/edu.js";
import { createNvme } from "../devices/nvme/index.js";
import { createThroughputDevice } from "../devices/throughput.js";
import { VfioUserServer } from "../vfio-user/server/server.js";

export const USAGE = `usage: wasmdev serve [--protocol vfio-user] [--socket PATH] [--device edu] [options]

Serves a sample PCI device to one VMM at a time until interrupted (SIGINT or SIGTERM), then
removes the socket and exits 0.

options:
  --protocol NAME   wire protocol: vfio-user (default), or mpqemu with its own options
                    (see: wasmdev serve --protocol mpqemu --help)
  --socket PATH     UNIX socket to listen on (default ./wasmdev.sock), created with mode 0600
                    and removed on exit; a stale socket there is replaced, any other file is not
  --device NAME     device to serve: edu (default; QEMU's educational device), throughput
                    (a RAM-backed data BAR plus a doorbell register, for benchmarks) or nvme
                    (an NVMe controller with one namespace; guest RAM must be shared, e.g.
                    QEMU's memory-backend-memfd,share=on)
  --size BYTES      nvme: namespace size, a multiple of the LBA size; suffixes K, M, G
                    (default 64M in memory; with --disk, the file's size, growing it if larger)
  --lba-size N      nvme: logical block size, 512 (default) or 4096
  --disk FILE       nvme: keep the namespace in FILE (created when --size is given) instead of
                    memory; Flush makes writes durable with fdatasync
  --max-xfer BYTES  vfio-user max_data_xfer_size to offer (default 1048576)
  --quiet           log errors only, and the one "listening on PATH" line that says the socket
                    is ready (default: also one line per connection)
  -h, --help        show this help

exit status: 0 after a clean stop, 1 when the server cannot start, 2 on a usage error.`;

/** What a protocol runner gets. */
export interface ServeOptions {
  socketPath: string;
  device: PciFunction;
  deviceName: string;
  maxDataXferSize: number;
  /** One line per connection and per error. */
  log: (line: string) => void;
  /** Resolves when SIGINT/SIGTERM arrives: the runner then stops and resolves its promise. */
  stopSignal: Promise<string>;
}

type ProtocolRunner = (options: ServeOptions) => Promise<number>;

const PROTOCOLS: Record<string, ProtocolRunner | undefined> = {
  "vfio-user": serveVfioUser,
};

const DEVICES: Record<string, (args: ParsedArgs) => PciFunction> = {
  edu: () => createEdu(),
  throughput: () => createThroughputDevice().fn,
  nvme: (args) => createNvme({ size: args.nvme.size, lbaSize: args.nvme.lbaSize, disk: args.nvme.disk }).fn,
};

class UsageError extends Error {}

interface ParsedArgs {
  protocol: string;
  socketPath: string;
  deviceName: string;
  maxDataXferSize: number;
  quiet: boolean;
  help: boolean;
  nvme: { size?: number; lbaSize?: 512 | 4096; disk?: string };
}

function parse(argv: string[]): ParsedArgs {
  const out: ParsedArgs = { protocol: "vfio-user", socketPath: "./wasmdev.sock", deviceName: "edu", maxDataXferSize: 1 << 20, quiet: false, help: false, nvme: {} };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const takeValue = (): string => {
      if (value !== undefined) return value;
      const next = argv[++i];
      if (next === undefined || next.startsWith("--")) throw new UsageError(`${arg} needs a value`);
      return next;
    };
    switch (arg) {
      case "-h":
      case "--help":
        out.help = true;
        break;
      case "--quiet":
        out.quiet = true;
        break;
      case "--protocol":
        out.protocol = takeValue();
        if (!(out.protocol in PROTOCOLS)) throw new UsageError(`unknown protocol '${out.protocol}' (known: ${Object.keys(PROTOCOLS).join(", ")})`);
        break;
      case "--socket":
        out.socketPath = takeValue();
        if (out.socketPath === "") throw new UsageError("--socket needs a path");
        break;
      case "--device":
        out.deviceName = takeValue();
        if (!(out.deviceName in DEVICES)) throw new UsageError(`unknown device '${out.deviceName}' (known: ${Object.keys(DEVICES).join(", ")})`);
        break;
      case "--max-xfer": {
        const v = takeValue();
        const n = /^(0x[0-9a-f]+|[0-9]+)$/i.test(v) ? Number(v) : NaN;
        if (!Number.isSafeInteger(n) || n < 4096 || n > 64 * 1024 * 1024) throw new UsageError("--max-xfer must be a byte count between 4096 and 67108864");
        out.maxDataXferSize = n;
        break;
      }
      case "--size": {
        const m = /^([0-9]+)([KMG]?)$/i.exec(takeValue());
        const n = m ? Number(m[1]) * 1024 ** " KMG".indexOf((m[2] || " ").toUpperCase()) : NaN;
        if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError("--size must be a byte count, optionally with K, M or G");
        out.nvme.size = n;
        break;
      }
      case "--lba-size": {
        const v = takeValue();
        if (v !== "512" && v !== "4096") throw new UsageError("--lba-size must be 512 or 4096");
        out.nvme.lbaSize = Number(v) as 512 | 4096;
        break;
      }
      case "--disk":
        out.nvme.disk = takeValue();
        if (out.nvme.disk === "") throw new UsageError("--disk needs a file");
        break;
      default:
        throw new UsageError(`unexpected argument '${argv[i]}'`);
    }
  }
  return out;
}

export async function run(argv: string[]): Promise<number> {
  // mpqemu adopts the socket its VMM passed (--fd N) instead of listening; its entry parses its own options.
  if (argv.some((a, i) => a === "--protocol=mpqemu" || (a === "--protocol" && argv[i + 1] === "mpqemu"))) {
    return (await import("../mpqemu/cli.js")).serveMpqemu(argv);
  }
  let args: ParsedArgs;
  try {
    args = parse(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`wasmdev serve: ${err.message}\n\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }
  if (args.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const runner = PROTOCOLS[args.protocol];
  if (!runner) {
    process.stderr.write(`wasmdev serve: protocol '${args.protocol}' is not available in this build\n`);
    return 1;
  }
  const stamp = () => new Date().toISOString();
  const log = (line: string) => process.stderr.write(`${stamp()} wasmdev serve: ${line}\n`);
  const quietLog = (line: string) => {
    // Connection lines are informational; everything else is an error worth seeing. The
    // "listening on" line stays: it is the readiness signal a launcher waits for before
    // starting the VMM (QEMU's vfio-user-pci needs the server listening when it realizes).
    if (!/\b(connected|disconnected|stopping)\b/.test(line)) log(line);
  };
  let device: PciFunction;
  try {
    if (args.deviceName !== "nvme" && Object.keys(args.nvme).length) throw new Error("--size, --lba-size and --disk apply to --device nvme only");
    device = DEVICES[args.deviceName](args);
  } catch (err) {
    process.stderr.write(`wasmdev serve: cannot create device '${args.deviceName}': ${(err as Error).message}\n`);
    return 1;
  }
  let onSignal: (name: string) => void = () => {};
  const stopSignal = new Promise<string>((resolveStop) => (onSignal = resolveStop));
  const handler = (name: NodeJS.Signals) => onSignal(name);
  process.once("SIGINT", handler);
  process.once("SIGTERM", handler);
  try {
    return await runner({
      socketPath: args.socketPath,
      device,
      deviceName: args.deviceName,
      maxDataXferSize: args.maxDataXferSize,
      log: args.quiet ? quietLog : log,
      stopSignal,
    });
  } finally {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  }
}

/** The vfio-user runner: listen, serve clients one at a time, stop on the signal. */
export async function serveVfioUser(options: ServeOptions): Promise<number> {
  const path = resolve(options.socketPath);
  try {
    // Replace a stale socket, never a regular file or directory someone put there.
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st && !st.isSocket()) {
      process.stderr.write(`wasmdev serve: ${path} exists and is not a socket; refusing to replace it\n`);
      return 1;
    }
  } catch (err) {
    process.stderr.write(`wasmdev serve: cannot inspect ${path}: ${(err as Error).message}\n`);
    return 1;
  }
  let server: VfioUserServer;
  try {
    server = VfioUserServer.listen({
      device: options.device,
      socketPath: path,
      replaceExisting: true,
      maxDataXferSize: options.maxDataXferSize,
      log: options.log,
    });
  } catch (err) {
    process.stderr.write(`wasmdev serve: ${(err as Error).message}\n`);
    return 1;
  }
  options.log(`listening on ${path} (vfio-user, device ${options.deviceName})`);
  const signal = await options.stopSignal;
  options.log(`stopping on ${signal}`);
  await server.close();
  return 0;
}
