// Command-line entry points of mpqemu, called from src/commands/serve.ts and lspci.ts:
//   wasmdev serve --protocol mpqemu --fd N [--device edu|throughput]
//   wasmdev lspci --mpqemu [--timeout MS] -- <remote command with {fd}>
import type { PciFunction } from "../core/pci/api.js";
import { createEdu } from "../devices/edu.js";
import { createThroughputDevice } from "../devices/throughput.js";
import { MpqemuError } from "./errors.js";
import { MpqemuProxy, type ProbeInfo } from "./proxy.js";
import { MpqemuRemote } from "./remote.js";
import { fdIsOpen } from "./sys.js";

export const MPQEMU_DEVICES: Record<string, () => PciFunction> = {
  edu: () => createEdu(),
  throughput: () => createThroughputDevice().fn,
};

const SERVE_USAGE = `usage: wasmdev serve --protocol mpqemu --fd N [--device ${Object.keys(MPQEMU_DEVICES).join("|")}] [--no-burst]

Serves one device as a QEMU multi-process remote on the already-connected socket N (the
VMM's x-pci-proxy-dev holds the other end). Exits 0 when the VMM hangs up.`;

/** `wasmdev serve --protocol mpqemu ...`; returns the exit code. */
export async function serveMpqemu(argv: string[]): Promise<number> {
  let fd: number | undefined;
  let device = "edu";
  let burst = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `${a} needs a value`);
      return v;
    };
    if (a === "--fd") fd = Number(value());
    else if (a.startsWith("--fd=")) fd = Number(a.slice(5));
    else if (a === "--device") device = value();
    else if (a.startsWith("--device=")) device = a.slice(9);
    else if (a === "--protocol") value();
    else if (a.startsWith("--protocol=")) continue;
    else if (a === "--no-burst") burst = false;
    else if (a === "--help" || a === "-h") {
      process.stdout.write(SERVE_USAGE + "\n");
      return 0;
    } else {
      process.stderr.write(`wasmdev serve: unknown option '${a}'\n${SERVE_USAGE}\n`);
      return 2;
    }
  }
  if (fd === undefined || !Number.isInteger(fd) || fd < 0) {
    process.stderr.write(`wasmdev serve: --protocol mpqemu needs --fd N (the socket QEMU's orchestrator passed)\n${SERVE_USAGE}\n`);
    return 2;
  }
  if (!fdIsOpen(fd)) {
    process.stderr.write(`wasmdev serve: fd ${fd} is not open\n`);
    return 2;
  }
  const make = MPQEMU_DEVICES[device];
  if (!make) {
    process.stderr.write(`wasmdev serve: unknown device '${device}' (known: ${Object.keys(MPQEMU_DEVICES).join(", ")})\n`);
    return 2;
  }
  const remote = new MpqemuRemote({ fd, fn: make(), burst: burst ? undefined : false }).start();
  const stop = () => remote.close();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  const end = await remote.ended;
  process.off("SIGTERM", stop);
  process.off("SIGINT", stop);
  if (end.reason === "error") {
    process.stderr.write(`wasmdev serve: ${end.error.message}\n`);
    return 1;
  }
  return 0;
}

const LSPCI_USAGE = `usage: wasmdev lspci --mpqemu [--timeout MS] -- <remote command, with {fd} for the socket>

Starts the remote, probes its PCI function through the mpqemu protocol and prints the header
and BARs. Example:
  wasmdev lspci --mpqemu -- qemu-system-x86_64 -machine x-remote -nodefaults -display none \\
    -device e1000,id=d0 -object x-remote-object,id=r0,devid=d0,fd={fd}`;

/** `wasmdev lspci --mpqemu -- <command>`; returns the exit code. */
export async function lspciMpqemu(argv: string[]): Promise<number> {
  const dash = argv.indexOf("--");
  const opts = dash >= 0 ? argv.slice(0, dash) : argv;
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  let timeoutMs = 3000;
  for (let i = 0; i < opts.length; i++) {
    if (opts[i] === "--mpqemu") continue;
    if (opts[i] === "--timeout") timeoutMs = Number(opts[++i]);
    else if (opts[i] === "--help" || opts[i] === "-h") {
      process.stdout.write(LSPCI_USAGE + "\n");
      return 0;
    } else {
      process.stderr.write(`wasmdev lspci: unknown option '${opts[i]}'\n${LSPCI_USAGE}\n`);
      return 2;
    }
  }
  if (command.length === 0 || !command.some((a) => a.includes("{fd}"))) {
    process.stderr.write(`wasmdev lspci: give the remote command after --, with {fd} where its socket goes\n${LSPCI_USAGE}\n`);
    return 2;
  }
  let proxy: MpqemuProxy | undefined;
  try {
    proxy = await MpqemuProxy.start({ command, timeoutMs, heartbeatMs: 0, stderr: "ignore", ramSize: 0 });
    const info = await proxy.probe();
    process.stdout.write(formatProbe(info));
    return 0;
  } catch (err) {
    process.stderr.write(`wasmdev lspci: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await proxy?.close();
  }
}

function hex(v: number | bigint, width: number): string {
  return v.toString(16).padStart(width, "0");
}

/** lspci-style summary of a probed function. */
export function formatProbe(info: ProbeInfo): string {
  const lines = [
    `00:00.0 Class ${hex(info.classCode >> 8, 4)}: Device ${hex(info.vendorId, 4)}:${hex(info.deviceId, 4)} (rev ${hex(info.revision, 2)})`,
    `\tSubsystem: ${hex(info.subsystemVendorId, 4)}:${hex(info.subsystemId, 4)}`,
    `\tProgramming interface: ${hex(info.classCode & 0xff, 2)}, header type ${hex(info.headerType & 0x7f, 2)}`,
  ];
  if (info.interruptPin) lines.push(`\tInterrupt: pin ${String.fromCharCode(0x40 + info.interruptPin)}`);
  for (const b of info.bars) {
    const what = b.kind === "io" ? "I/O ports" : `Memory (${b.kind === "mem64" ? "64-bit" : "32-bit"}, ${b.prefetchable ? "prefetchable" : "non-prefetchable"})`;
    lines.push(`\tRegion ${b.index}: ${what} [size=${sizeText(b.size)}]`);
  }
  return lines.join("\n") + "\n";
}

function sizeText(size: bigint): string {
  for (const [unit, shift] of [["G", 30n], ["M", 20n], ["K", 10n]] as const) {
    if (size >= 1n << shift && size % (1n << shift) === 0n) return `${size >> shift}${unit}`;
  }
  return String(size);
}
