// `wasmdev serve`: serve a sample device out of process until SIGINT, SIGTERM or SIGHUP.
//
// vfio-user listens on a socket path; mpqemu serves the already-connected socket its VMM
// passed (--fd N). Both take their device from the one registry in devices.ts.
import { fstatSync, lstatSync } from "node:fs";
import { resolve } from "node:path";
import type { PciFunction } from "../core/pci/api.js";
import { VfioUserServer } from "../vfio-user/server/server.js";
import { MpqemuRemote } from "../mpqemu/remote.js";
import { LOG_HELP, LOG_OPTIONS, UsageError, nonEmpty, parseCommandLine, parseInteger } from "./args.js";
import { DEVICES, PROTOCOLS, devicesFor, type DeviceOptions, type Protocol } from "./devices.js";
import { cliLogOptions, createCliLogger, type CliLogger } from "./log.js";
import { describeFunction } from "./config-space.js";

export const SYNOPSIS = `usage: wasmdev serve [--protocol vfio-user] [--socket PATH] [--device NAME] [options]
       wasmdev serve --protocol mpqemu --fd N [--device NAME] [options]`;

export const USAGE = `${SYNOPSIS}

Serves a sample PCI device to one VMM at a time until interrupted (SIGINT, SIGTERM or SIGHUP),
then removes the socket it created and exits 0. On start it prints how to connect.

options:
  --protocol NAME   wire protocol: ${PROTOCOLS.join(" or ")} (default vfio-user):
                      vfio-user  listen on --socket PATH (QEMU >= 10.1's vfio-user-pci)
                      mpqemu     serve the connected socket N that QEMU's orchestrator passed
                                 (QEMU's x-pci-proxy-dev holds the other end); exits when the
                                 VMM hangs up
  --socket PATH     vfio-user: UNIX socket to listen on (default ./wasmdev.sock), created with
                    mode 0600 and removed on exit; a stale socket there (nobody listening) is
                    replaced, a live one or any other file is refused
  --fd N            mpqemu: the socket's file descriptor number
  --device NAME     device to serve: edu (default; QEMU's educational device), throughput
                    (a RAM-backed data BAR plus a doorbell register, for benchmarks) or nvme
                    (vfio-user only: an NVMe controller with one namespace; guest RAM must be
                    shared, e.g. QEMU's memory-backend-memfd,share=on)
  --size BYTES      nvme: namespace size, a multiple of the LBA size; suffixes K, M, G
                    (default 64M in memory; with --disk, the file's size, growing it if larger)
  --lba-size N      nvme: logical block size, 512 (default) or 4096
  --disk FILE       nvme: keep the namespace in FILE (created when --size is given) instead of
                    memory; Flush makes writes durable with fdatasync
  --max-xfer BYTES  vfio-user max_data_xfer_size to offer (default 1048576)
${LOG_HELP}

exit status: 0 after a clean stop, 1 when the server cannot start, 2 on a usage error.`;

const OPTIONS = {
  ...LOG_OPTIONS,
  protocol: { type: "string" },
  socket: { type: "string" },
  fd: { type: "string" },
  device: { type: "string" },
  size: { type: "string" },
  "lba-size": { type: "string" },
  disk: { type: "string" },
  "max-xfer": { type: "string" },
} as const;

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

interface ServeArgs {
  protocol: Protocol;
  socketPath: string;
  fd: number;
  deviceName: string;
  device: DeviceOptions;
  maxDataXferSize: number;
}

/** The options, checked; undefined for --help. */
function parse(argv: string[]): { args: ServeArgs; logger: CliLogger } | undefined {
  const { values: v, positionals } = parseCommandLine(argv, OPTIONS);
  if (v.help) return undefined;
  const logger = createCliLogger(cliLogOptions("wasmdev serve", v));
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const protocol = (v.protocol ?? "vfio-user") as Protocol;
  if (!PROTOCOLS.includes(protocol)) throw new UsageError(`unknown protocol '${v.protocol}' (known: ${PROTOCOLS.join(", ")})`);
  const deviceName = v.device ?? "edu";
  if (!(deviceName in DEVICES)) throw new UsageError(`unknown device '${deviceName}' (known: ${devicesFor(protocol).join(", ")})`);
  if (!DEVICES[deviceName].protocols.includes(protocol)) throw new UsageError(`device '${deviceName}' is not served over ${protocol} (${protocol} serves: ${devicesFor(protocol).join(", ")})`);
  const only = (option: string, given: unknown, what: string) => {
    if (given !== undefined) throw new UsageError(`${option} applies to ${what} only`);
  };
  const args: ServeArgs = { protocol, socketPath: "./wasmdev.sock", fd: -1, deviceName, device: {}, maxDataXferSize: 1 << 20 };
  if (protocol === "mpqemu") {
    only("--socket", v.socket, "--protocol vfio-user");
    only("--max-xfer", v["max-xfer"], "--protocol vfio-user");
    if (v.fd === undefined) throw new UsageError("--protocol mpqemu needs --fd N (the socket QEMU's orchestrator passed)");
    args.fd = parseInteger(v.fd, "--fd", 0, 0x7fffffff);
  } else {
    only("--fd", v.fd, "--protocol mpqemu");
    args.socketPath = nonEmpty(v.socket, "--socket", "a path") ?? args.socketPath;
    if (v["max-xfer"] !== undefined) args.maxDataXferSize = parseInteger(v["max-xfer"], "--max-xfer", 4096, 64 * 1024 * 1024);
  }
  if (deviceName === "nvme") {
    const nvme: NonNullable<DeviceOptions["nvme"]> = {};
    if (v.size !== undefined) {
      const m = /^([0-9]+)([KMG]?)$/i.exec(v.size);
      const n = m ? Number(m[1]) * 1024 ** " KMG".indexOf((m[2] || " ").toUpperCase()) : NaN;
      if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError("--size must be a byte count, optionally with K, M or G");
      nvme.size = n;
    }
    if (v["lba-size"] !== undefined) {
      if (v["lba-size"] !== "512" && v["lba-size"] !== "4096") throw new UsageError("--lba-size must be 512 or 4096");
      nvme.lbaSize = Number(v["lba-size"]) as 512 | 4096;
    }
    nvme.disk = nonEmpty(v.disk, "--disk", "a file");
    args.device.nvme = nvme;
  } else {
    for (const o of ["size", "lba-size", "disk"] as const) only(`--${o}`, v[o], "--device nvme");
  }
  return { args, logger };
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parse(argv);
  if (!parsed) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const { args, logger } = parsed;
  if (args.protocol === "mpqemu") {
    // Checked before the device exists: a wrong fd is the caller's mistake.
    const problem = socketProblem(args.fd);
    if (problem) throw new UsageError(problem);
  }
  let device: PciFunction;
  try {
    device = DEVICES[args.deviceName].create(args.device);
  } catch (err) {
    process.stderr.write(`wasmdev serve: cannot create device '${args.deviceName}': ${(err as Error).message}\n`);
    return 1;
  }
  logger.debug(`device ${args.deviceName}: ${describeFunction(device).split("\n")[0].replace(/^\S+ /, "")}`);
  let onSignal: (name: string) => void = () => {};
  const stopSignal = new Promise<string>((resolveStop) => (onSignal = resolveStop));
  const handler = (name: NodeJS.Signals) => onSignal(name);
  for (const s of STOP_SIGNALS) process.once(s, handler);
  try {
    return args.protocol === "mpqemu" ? await serveMpqemu(args, device, logger, stopSignal) : await serveVfioUser(args, device, logger, stopSignal);
  } finally {
    for (const s of STOP_SIGNALS) process.off(s, handler);
  }
}

/** Why `fd` cannot be served (not open, not a socket), or undefined. */
function socketProblem(fd: number): string | undefined {
  let st;
  try {
    st = fstatSync(fd);
  } catch {
    return `fd ${fd} is not open`;
  }
  if (st.isSocket()) return undefined;
  const kind = st.isFIFO() ? "a pipe" : st.isCharacterDevice() ? "a character device" : st.isFile() ? "a regular file" : st.isDirectory() ? "a directory" : "not a socket";
  return `fd ${fd} is not a socket (it is ${kind}); give the socketpair end QEMU's orchestrator passed`;
}

async function serveVfioUser(args: ServeArgs, device: PciFunction, logger: CliLogger, stopSignal: Promise<string>): Promise<number> {
  const path = resolve(args.socketPath);
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st && !st.isSocket()) {
    process.stderr.write(`wasmdev serve: ${path} exists and is not a socket; refusing to replace it\n`);
    return 1;
  }
  let server: VfioUserServer;
  try {
    server = VfioUserServer.listen({ device, socketPath: path, replaceExisting: true, maxDataXferSize: args.maxDataXferSize, logger });
  } catch (err) {
    const cause = (err as { cause?: { errno?: string } }).cause;
    if (cause?.errno === "EADDRINUSE") {
      process.stderr.write(`wasmdev serve: cannot listen on ${path}: another server is listening there (EADDRINUSE); stop it or choose another --socket\n`);
    } else {
      process.stderr.write(`wasmdev serve: ${(err as Error).message}\n`);
    }
    return 1;
  }
  // Printed even with -q: launchers wait for this line to know the socket accepts.
  logger.notice(`listening on ${path} (vfio-user, device ${args.deviceName}, pid ${process.pid})`);
  for (const line of vfioUserHints(path, args.deviceName)) logger.info(line);
  const signal = await stopSignal;
  logger.info(`stopping on ${signal}`);
  await server.close();
  return 0;
}

/** How to reach a vfio-user server at `path`: inspect it, attach QEMU, stop it. */
export function vfioUserHints(path: string, deviceName: string): string[] {
  const device = JSON.stringify({ driver: "vfio-user-pci", socket: { path, type: "unix" } });
  const shared = DEVICES[deviceName].needsSharedRam ? "guest RAM must be shared" : "shared guest RAM lets the device DMA without messages";
  return [
    `inspect it:   wasmdev lspci --socket ${path}`,
    `QEMU >= 10.1: qemu-system-x86_64 -machine q35 -m 1G -object memory-backend-memfd,id=ram,size=1G,share=on -machine memory-backend=ram -device '${device}' ...  (${shared})`,
    `stop:         Ctrl-C, or kill -TERM ${process.pid} (removes the socket)`,
  ];
}

async function serveMpqemu(args: ServeArgs, device: PciFunction, logger: CliLogger, stopSignal: Promise<string>): Promise<number> {
  const remote = new MpqemuRemote({ fd: args.fd, fn: device, logger }).start();
  logger.notice(`serving mpqemu on fd ${args.fd} (device ${args.deviceName}, pid ${process.pid})`);
  logger.info(`QEMU 7.2 drives it with -device x-pci-proxy-dev,id=d0,fd=M where M is its end of the same socketpair`);
  logger.info(`stop: QEMU hanging up ends serving; or Ctrl-C, kill -TERM ${process.pid}`);
  void stopSignal.then((signal) => {
    logger.info(`stopping on ${signal}`);
    remote.close();
  });
  const end = await remote.ended;
  // The remote has logged why it stopped serving.
  return end.reason === "error" ? 1 : 0;
}
