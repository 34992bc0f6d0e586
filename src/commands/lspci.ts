// `wasmdev lspci`: show a remote PCI function's configuration space and regions, lspci -vv style,
// over vfio-user (--socket PATH) or mpqemu (--mpqemu -- <remote command>).
//
// Each protocol collects a FunctionSnapshot and hands it to the one formatter, formatLspci().
import { connectVfioUser } from "../vfio-user/client/connect.js";
import type { VfioUserClient } from "../vfio-user/client/client.js";
import { PciRegion } from "../vfio-user/wire/constants.js";
import { MpqemuProxy } from "../mpqemu/proxy.js";
import type { Logger } from "../log.js";
import { LOG_HELP, LOG_OPTIONS, UsageError, nonEmpty, parseCommandLine, parseTimeout } from "./args.js";
import type { PciNames } from "./config-space.js";
import { formatLspci, type FunctionSnapshot } from "./lspci-format.js";
import { cliLogOptions, createCliLogger } from "./log.js";
import { describeClientError, onBusyNotice } from "./client-errors.js";
import { loadPciIds } from "./pci-ids.js";

export const SYNOPSIS = `usage: wasmdev lspci --socket PATH [-n] [-x|-xxx|-xxxx] [--timeout MS]
       wasmdev lspci --mpqemu [-n] [-x|-xxx] [--timeout MS] -- <remote command with {fd}>`;

export const USAGE = `${SYNOPSIS}

Connects to the vfio-user server at PATH and prints the function's configuration space
(decoded header, BARs with sizes and types, capabilities), its regions and interrupts, in the
style of 'lspci -vv'. With --mpqemu it starts the remote command (its socket goes where {fd}
is), probes the function through QEMU's multi-process protocol and prints header and BARs:
  wasmdev lspci --mpqemu -- qemu-system-x86_64 -machine x-remote -nodefaults -display none \\
    -device e1000,id=d0 -object x-remote-object,id=r0,devid=d0,fd={fd}

A server that serves another client is waited for, up to --timeout.

options:
  --socket PATH      the vfio-user server's UNIX socket
  --mpqemu           probe an mpqemu remote started from the command after --
  --timeout MS       per-request timeout and how long to wait for a busy server, in
                     milliseconds (default 5000; mpqemu: 3000)
  -n                 numeric ids only (no vendor and device names)
  -i, --pci-ids FILE names from FILE (default: $WASMDEV_PCI_IDS, else the system's pci.ids in
                     /usr/share/misc or /usr/share/hwdata, as lspci; numeric without one)
  -x                 also dump the first 64 bytes of config space in hex (-xxx: 256, -xxxx: 4096)
${LOG_HELP}

exit status: 0 on success, 1 when the device or the connection fails, 2 on a usage error.`;

const OPTIONS = {
  ...LOG_OPTIONS,
  socket: { type: "string" },
  timeout: { type: "string" },
  mpqemu: { type: "boolean" },
  numeric: { type: "boolean", short: "n" },
  "pci-ids": { type: "string", short: "i" },
  hex: { type: "boolean", short: "x", multiple: true },
} as const;

const IRQ_NAMES = ["INTx", "MSI", "MSI-X", "ERR", "REQ"];

export async function run(argv: string[]): Promise<number> {
  const dash = argv.indexOf("--");
  const { values: v, positionals } = parseCommandLine(dash >= 0 ? argv.slice(0, dash) : argv, OPTIONS);
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  if (v.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const logger = createCliLogger({ ...cliLogOptions("wasmdev lspci", v), timestamps: false });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const hexCount = v.hex?.length ?? 0;
  const dumpBytes = hexCount === 0 ? 0 : hexCount < 3 ? 64 : hexCount === 3 ? 256 : 4096;
  let names: PciNames | undefined;
  if (!v.numeric) {
    const file = nonEmpty(v["pci-ids"], "--pci-ids", "a file");
    try {
      names = loadPciIds(file);
    } catch (err) {
      throw new UsageError(`cannot read the pci.ids file: ${(err as Error).message}`);
    }
  }
  if (v.mpqemu) {
    if (v.socket !== undefined) throw new UsageError("--socket and --mpqemu exclude each other");
    if (command.length === 0 || !command.some((a) => a.includes("{fd}"))) throw new UsageError("give the remote command after --, with {fd} where its socket goes");
    return lspciMpqemu(command, v.timeout === undefined ? 3000 : parseTimeout(v.timeout), names, dumpBytes, logger);
  }
  if (command.length > 0) throw new UsageError(`unexpected argument '${command[0]}' (a command after -- needs --mpqemu)`);
  const socketPath = nonEmpty(v.socket, "--socket", "a path");
  if (socketPath === undefined) throw new UsageError("--socket PATH is required");
  const timeoutMs = parseTimeout(v.timeout);

  let client: VfioUserClient | undefined;
  try {
    client = await connectVfioUser(socketPath, { timeoutMs, connectTimeoutMs: timeoutMs, logger, onBusy: onBusyNotice(logger, socketPath, timeoutMs) });
    const snapshot = await vfioUserSnapshot(client, socketPath);
    process.stdout.write(formatLspci(snapshot, { names, hexBytes: dumpBytes }) + "\n");
    return 0;
  } catch (err) {
    process.stderr.write(`wasmdev lspci: ${describeClientError(err, socketPath, timeoutMs)}\n`);
    return 1;
  } finally {
    client?.close();
  }
}

/** Everything lspci shows, read through a connected (and probed) vfio-user client. */
export async function vfioUserSnapshot(client: VfioUserClient, location: string): Promise<FunctionSnapshot> {
  const device = client.deviceInfo ?? (await client.getDeviceInfo());
  if (!device.isPci) throw new Error(`the device at ${location} is not a PCI device (flags 0x${device.flags.toString(16)})`);
  const configInfo = client.regions.get(PciRegion.CONFIG) ?? (await client.getRegionInfo(PciRegion.CONFIG));
  const configSize = Number(configInfo.size >= 0x1000n ? 0x1000n : configInfo.size);
  if (configSize < 0x40) throw new Error(`the config region is only ${configSize} bytes`);
  const config = await client.readRegion(PciRegion.CONFIG, 0, configSize);
  const irqs = [];
  for (let index = 0; index < Math.min(device.numIrqs, IRQ_NAMES.length); index++) {
    const info = await client.getIrqInfo(index);
    const flags = [info.eventfd && "eventfd", info.maskable && "maskable", info.automasked && "automasked", info.noresize && "noresize"].filter((f): f is string => !!f);
    irqs.push({ name: IRQ_NAMES[index] ?? `index ${index}`, count: info.count, flags });
  }
  const caps = client.capabilities;
  return {
    location,
    config,
    regions: [...client.regions.values()].map((r) => ({
      index: r.index, size: r.size, readable: r.readable, writable: r.writable, mmappable: r.mmappable && r.fd !== undefined, sparseAreas: r.sparseAreas,
    })),
    irqs,
    notes: caps
      ? [`vfio-user: version ${caps.major}.${caps.minor}, max_data_xfer_size=${caps.maxDataXferSize}, max_msg_fds=${caps.maxMsgFds}, ${device.numRegions} regions, ${device.numIrqs} IRQ types${device.supportsReset ? ", reset" : ""}`]
      : [],
  };
}

async function lspciMpqemu(command: string[], timeoutMs: number, names: PciNames | undefined, dumpBytes: number, logger: Logger): Promise<number> {
  let proxy: MpqemuProxy | undefined;
  try {
    proxy = await MpqemuProxy.start({ command, timeoutMs, heartbeatMs: 0, stderr: "ignore", ramSize: 0, logger });
    const info = await proxy.probe();
    // Dword reads only: QEMU's remote exits on a narrower access near the end of the space.
    const config = new Uint8Array(256);
    const view = new DataView(config.buffer);
    for (let off = 0; off < 256; off += 4) view.setUint32(off, await proxy.configRead(off, 4), true);
    const barSizes: (bigint | undefined)[] = [];
    for (const b of info.bars) barSizes[b.index] = b.size;
    const snapshot: FunctionSnapshot = {
      location: "00:00.0",
      config,
      regions: [],
      barSizes,
      notes: [`mpqemu: remote pid ${proxy.child?.pid ?? "?"}, ${info.bars.length} BARs proxied (the ROM BAR is not part of the protocol)`],
    };
    process.stdout.write(formatLspci(snapshot, { names, hexBytes: dumpBytes }) + "\n");
    return 0;
  } catch (err) {
    process.stderr.write(`wasmdev lspci: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await proxy?.close();
  }
}
