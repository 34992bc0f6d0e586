// `wasmdev lspci`: show a remote PCI function's configuration space and regions, lspci -vv style.
//
// Each front end (today vfio-user; #8 adds mpqemu) collects a FunctionSnapshot and hands it to
// formatLspci(): a new mode adds its flags to FLAGS/USAGE and one branch in run().
import { connectVfioUser } from "../vfio-user/client/connect.js";
import type { VfioUserClient } from "../vfio-user/client/client.js";
import { PciRegion } from "../vfio-user/client/protocol.js";
import { formatLspci, type FunctionSnapshot } from "../vfio-user/client/lspci-format.js";
import { UsageError, connectionArgs, parseArgs } from "../vfio-user/client/cli-support.js";

export const USAGE = `usage: wasmdev lspci --socket PATH [--timeout MS]
       wasmdev lspci --mpqemu [--timeout MS] -- <remote command with {fd}>

Connects to the vfio-user server at PATH and prints the function's configuration space
(decoded header, BARs with sizes and types, capabilities), its regions and interrupts, in the
style of 'lspci -vv'.

options:
  --socket PATH    the server's UNIX socket (required)
  --timeout MS     per-request timeout in milliseconds (default 5000)
  -h, --help       show this help

exit status: 0 on success, 1 when the device or the connection fails, 2 on a usage error.`;

const VALUED = ["socket", "timeout"];
const SWITCHES = ["help"];
const IRQ_NAMES = ["INTx", "MSI", "MSI-X", "ERR", "REQ"];

export async function run(argv: string[]): Promise<number> {
  // mpqemu: start a remote from a command line and probe it (see: wasmdev lspci --mpqemu --help).
  if (argv.includes("--mpqemu")) return (await import("../mpqemu/cli.js")).lspciMpqemu(argv);
  let socketPath: string;
  let timeoutMs: number;
  try {
    const args = parseArgs(argv, VALUED, SWITCHES);
    if (args.flags.has("help")) {
      process.stdout.write(USAGE + "\n");
      return 0;
    }
    if (args.positional.length > 0) throw new UsageError(`unexpected argument '${args.positional[0]}'`);
    ({ socketPath, timeoutMs } = connectionArgs(args));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`wasmdev lspci: ${err.message}\n\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }

  let client: VfioUserClient | undefined;
  try {
    client = await connectVfioUser(socketPath, { timeoutMs, connectTimeoutMs: timeoutMs });
    const snapshot = await vfioUserSnapshot(client, socketPath);
    process.stdout.write(formatLspci(snapshot) + "\n");
    return 0;
  } catch (err) {
    process.stderr.write(`wasmdev lspci: ${err instanceof Error ? err.message : String(err)}\n`);
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


