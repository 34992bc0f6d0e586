// `wasmdev region read|write`: one region access on a vfio-user device, for scripting.
import { connectVfioUser } from "../vfio-user/client/connect.js";
import { VfioUserClientError } from "../vfio-user/client/errors.js";
import { UsageError, connectionArgs, formatValue, hexDump, parseArgs, parseRegion, parseSize, parseU64, parseWriteValue, regionName } from "../vfio-user/client/cli-support.js";

const MAX_SIZE = 16 * 1024 * 1024;

export const USAGE = `usage: wasmdev region read  --socket PATH REGION OFFSET SIZE
       wasmdev region write --socket PATH REGION OFFSET SIZE VALUE

Reads or writes SIZE bytes at OFFSET of a region of the vfio-user device served at PATH.

  REGION   bar0..bar5, rom, config, vga, or a region index
  OFFSET   byte offset in the region (decimal or 0x-hex)
  SIZE     bytes to access (1..${MAX_SIZE}); larger accesses are split as the server requires
  VALUE    for SIZE <= 8: a number, written little-endian as a register write of SIZE bytes;
           for larger SIZE: exactly SIZE bytes of hex, e.g. 00112233...

read prints a 0x-prefixed hex number for SIZE <= 8 and a hex dump for larger sizes.
write waits until the server has performed the write (never posted).

options:
  --socket PATH    the server's UNIX socket (required)
  --timeout MS     per-request timeout in milliseconds (default 5000)
  -h, --help       show this help

exit status: 0 on success, 1 when the device or the connection fails, 2 on a usage error.`;

export async function run(argv: string[]): Promise<number> {
  let op: "read" | "write";
  let socketPath: string;
  let region: number;
  let offset: bigint;
  let size: number;
  let value: Uint8Array | undefined;
  let timeoutMs: number;
  try {
    const args = parseArgs(argv, ["socket", "timeout"], ["help"]);
    if (args.flags.has("help")) {
      process.stdout.write(USAGE + "\n");
      return 0;
    }
    const [verb, ...rest] = args.positional;
    if (verb !== "read" && verb !== "write") throw new UsageError(verb === undefined ? "missing operation: read or write" : `unknown operation '${verb}': use read or write`);
    op = verb;
    ({ socketPath, timeoutMs } = connectionArgs(args));
    const expected = op === "read" ? 3 : 4;
    if (rest.length !== expected) {
      throw new UsageError(`${op} takes ${expected} arguments (${op === "read" ? "REGION OFFSET SIZE" : "REGION OFFSET SIZE VALUE"}), got ${rest.length}`);
    }
    region = parseRegion(rest[0]);
    offset = parseU64(rest[1], "OFFSET");
    size = parseSize(rest[2], MAX_SIZE);
    if (op === "write") value = parseWriteValue(rest[3], size);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`wasmdev region: ${err.message}\n\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }

  let client;
  try {
    client = await connectVfioUser(socketPath, { timeoutMs, connectTimeoutMs: timeoutMs });
    if (op === "read") {
      const data = await client.readRegion(region, offset, size);
      process.stdout.write((size <= 8 ? formatValue(data) : hexDump(data, offset)) + "\n");
    } else {
      await client.writeRegion(region, offset, value!, { posted: false });
    }
    return 0;
  } catch (err) {
    process.stderr.write(`wasmdev region: ${describe(err, op, region, offset, size)}\n`);
    return 1;
  } finally {
    client?.close();
  }
}

function describe(err: unknown, op: string, region: number, offset: bigint, size: number): string {
  const where = `${op} of ${size} byte${size === 1 ? "" : "s"} at ${regionName(region)} offset 0x${offset.toString(16)}`;
  if (err instanceof VfioUserClientError) {
    if (err.code === "ERR_CONNECT" || err.code === "ERR_VERSION") return err.message;
    return `${where} failed: ${err.message}`;
  }
  return `${where} failed: ${err instanceof Error ? err.message : String(err)}`;
}
