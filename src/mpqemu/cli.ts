// Command-line entry points of mpqemu, called from src/commands/serve.ts and lspci.ts:
//   wasmdev serve --protocol mpqemu --fd N [--device edu|throughput]
//   wasmdev lspci --mpqemu [--timeout MS] -- <remote command with {fd}>
import type { PciFunction } from "../core/pci/api.js";
import { createEdu } from "../devices/edu.js";
import { createThroughputDevice } from "../devices/throughput.js";
import { MpqemuError } from "./errors.js";
import { formatConfigSpace } from "../devices/lspci.js";
import { MpqemuProxy } from "./proxy.js";
import { MpqemuRemote } from "./remote.js";
import { fdIsOpen } from "./sys.js";

export const MPQEMU_DEVICES: Record<string, () => PciFunction> = {
  edu: () => createEdu(),
  throughput: () => createThroughputDevice().fn,
};

const SERVE_USAGE = `usage: wasmdev serve --protocol mpqemu --fd N [--device ${Object.keys(MPQEMU_DEVICES).join("|")}]

Serves one device as a QEMU multi-process remote on the already-connected socket N (the
VMM's x-pci-proxy-dev holds the other end). Exits 0 when the VMM hangs up.`;

/** `wasmdev serve --protocol mpqemu ...`; returns the exit code. */
export async function serveMpqemu(argv: string[]): Promise<number> {
  let fd: number | undefined;
  let device = "edu";
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
  const remote = new MpqemuRemote({ fd, fn: make() }).start();
  const stop = () => remote.close();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  const end = await remote.ended;
  process.off("SIGTERM", stop);
  process.off("SIGINT", stop);
  // The remote has logged why it stopped serving.
  if (end.reason === "error") return 1;
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
    // Dword reads only: QEMU's remote exits on a narrower access near the end of the space.
    const config = new Uint8Array(256);
    const view = new DataView(config.buffer);
    for (let off = 0; off < 256; off += 4) view.setUint32(off, await proxy.configRead(off, 4), true);
    const barSizes: (bigint | undefined)[] = [];
    for (const b of info.bars) barSizes[b.index] = b.size;
    const lines = [formatConfigSpace(config, { address: "00:00.0", barSizes })];
    lines.push(`\tmpqemu: remote pid ${proxy.child?.pid ?? "?"}, ${info.bars.length} BARs proxied (the ROM BAR is not part of the protocol)`);
    process.stdout.write(lines.join("\n") + "\n");
    return 0;
  } catch (err) {
    process.stderr.write(`wasmdev lspci: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await proxy?.close();
  }
}
