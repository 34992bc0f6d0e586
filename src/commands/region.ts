// `wasmdev region read|write`: one region access on a vfio-user device, for scripting.
import { writeFileSync } from "node:fs";
import { connectVfioUser } from "../vfio-user/client/connect.js";
import type { VfioUserClient } from "../vfio-user/client/client.js";
import { VfioUserClientError } from "../vfio-user/client/errors.js";
import { Errno } from "../vfio-user/wire/constants.js";
import { LOG_HELP, LOG_OPTIONS, UsageError, bytes, nonEmpty, parseCommandLine, parseRegion, parseSize, parseTimeout, parseU64, parseWriteValue, regionName } from "./args.js";
import { describeClientError, onBusyNotice } from "./client-errors.js";
import { formatValue, hexDump } from "./hexdump.js";
import { cliLogOptions, createCliLogger } from "./log.js";

const MAX_SIZE = 16 * 1024 * 1024;

export const SYNOPSIS = `usage: wasmdev region read  --socket PATH [--raw | --output FILE] REGION OFFSET SIZE
       wasmdev region write --socket PATH REGION OFFSET SIZE VALUE`;

export const USAGE = `${SYNOPSIS}

Reads or writes SIZE bytes at OFFSET of a region of the vfio-user device served at PATH.

  REGION   bar0..bar5, rom, config, vga, or a region index
  OFFSET   byte offset in the region (decimal or 0x-hex)
  SIZE     bytes to access (1..${MAX_SIZE}); larger accesses are split as the server requires
  VALUE    for SIZE <= 8: a number, written little-endian as a register write of SIZE bytes;
           for larger SIZE: exactly SIZE bytes of hex, e.g. 00112233...

read prints a 0x-prefixed hex number for SIZE <= 8 and a hex dump for larger sizes (hexdump -C
style: a line repeating the one before it shows as '*'). write waits until the server has
performed the write (never posted). When the device refuses an access of up to 8 bytes (EIO),
region reads the same offset with the other widths (1, 2, 4, 8) and names the ones it accepts.
A server that serves another client is waited for, up to --timeout.

options:
  --socket PATH      the server's UNIX socket (required)
  --timeout MS       per-request timeout and how long to wait for a busy server, in
                     milliseconds (default 5000)
  --raw              read: write the bytes themselves to stdout
  -o, --output FILE  read: write the bytes themselves to FILE
${LOG_HELP}

exit status: 0 on success, 1 when the device or the connection fails, 2 on a usage error.`;

const OPTIONS = {
  ...LOG_OPTIONS,
  socket: { type: "string" },
  timeout: { type: "string" },
  raw: { type: "boolean" },
  output: { type: "string", short: "o" },
} as const;

const WIDTHS = [1, 2, 4, 8] as const;

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommandLine(argv, OPTIONS);
  if (v.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const logger = createCliLogger({ ...cliLogOptions("wasmdev region", v), timestamps: false });
  const [verb, ...rest] = positionals;
  if (verb !== "read" && verb !== "write") throw new UsageError(verb === undefined ? "missing operation: read or write" : `unknown operation '${verb}': use read or write`);
  const op = verb;
  const socketPath = nonEmpty(v.socket, "--socket", "a path");
  if (socketPath === undefined) throw new UsageError("--socket PATH is required");
  const timeoutMs = parseTimeout(v.timeout);
  const output = nonEmpty(v.output, "--output", "a file");
  if (op === "write" && (v.raw || output !== undefined)) throw new UsageError("--raw and --output apply to read only");
  if (v.raw && output !== undefined) throw new UsageError("--raw and --output exclude each other");
  const expected = op === "read" ? 3 : 4;
  if (rest.length !== expected) {
    throw new UsageError(`${op} takes ${expected} arguments (${op === "read" ? "REGION OFFSET SIZE" : "REGION OFFSET SIZE VALUE"}), got ${rest.length}`);
  }
  const region = parseRegion(rest[0]);
  const offset = parseU64(rest[1], "OFFSET");
  const size = parseSize(rest[2], MAX_SIZE);
  const value = op === "write" ? parseWriteValue(rest[3], size) : undefined;

  let client: VfioUserClient | undefined;
  try {
    client = await connectVfioUser(socketPath, { timeoutMs, connectTimeoutMs: timeoutMs, logger, onBusy: onBusyNotice(logger, socketPath, timeoutMs) });
  } catch (err) {
    process.stderr.write(`wasmdev region: ${describeClientError(err, socketPath, timeoutMs)}\n`);
    return 1;
  }
  try {
    if (op === "read") {
      const data = await client.readRegion(region, offset, size);
      if (output !== undefined) writeFileSync(output, data);
      else if (v.raw) process.stdout.write(data);
      else process.stdout.write((size <= 8 ? formatValue(data) : hexDump(data, offset)) + "\n");
    } else {
      await client.writeRegion(region, offset, value!, { posted: false });
    }
    return 0;
  } catch (err) {
    const where = `${op} of ${bytes(size)} at ${regionName(region)} offset 0x${offset.toString(16)}`;
    let text = `${where} failed: ${err instanceof Error ? err.message : String(err)}`;
    if (err instanceof VfioUserClientError && err.errno === Errno.EIO && size <= 8 && !client.closed) {
      const widths = await acceptedWidths(client, region, offset, size);
      if (widths) text = `${where} failed with EIO: ${widths}`;
    }
    process.stderr.write(`wasmdev region: ${text}\n`);
    return 1;
  } finally {
    client.close();
  }
}

/**
 * The device refused the access (EIO, which is what a size the region does not accept gets):
 * read the same offset with the other widths and name those that work.
 */
async function acceptedWidths(client: VfioUserClient, region: number, offset: bigint, failed: number): Promise<string | undefined> {
  const ok: number[] = [];
  for (const width of WIDTHS) {
    if (width === failed) continue;
    try {
      await client.readRegion(region, offset, width);
      ok.push(width);
    } catch {
      // Not this width either.
    }
  }
  if (ok.length === 0) return undefined;
  const list = ok.length === 1 ? `${ok[0]}` : `${ok.slice(0, -1).join(", ")} or ${ok[ok.length - 1]}`;
  const unit = ok.length === 1 && ok[0] === 1 ? "byte" : "bytes";
  return `${regionName(region)} accepts accesses of ${list} ${unit} there, not ${bytes(failed)} (found by reading with each width)`;
}
