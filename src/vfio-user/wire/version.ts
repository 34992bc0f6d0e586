// VERSION payload: major u16, minor u16, then optional NUL-terminated UTF-8 JSON
// `{"capabilities": {...}}`. Unknown capabilities are ignored; a known one of the wrong type, or
// text that is not JSON, makes the whole payload malformed (EINVAL).
import { Errno, Command } from "./constants.js";
import { WireError } from "./errors.js";
import { readU16 } from "./writer.js";

export interface MigrationCapability {
  /** Page size of dirty bitmaps. */
  pgsize?: number;
  /** Largest dirty bitmap the sender accepts, in bytes. */
  maxBitmapSize?: number;
}

export interface TwinSocketCapability {
  supported?: boolean;
  fdIndex?: number;
}

/** Capabilities as sent; absent fields mean "use the spec default". */
export interface Capabilities {
  maxMsgFds?: number;
  maxDataXferSize?: number;
  /** Page sizes supported for DMA maps, or'ed together (u64 on the wire). */
  pgsizes?: bigint;
  maxDmaMaps?: number;
  migration?: MigrationCapability;
  writeMultiple?: boolean;
  twinSocket?: TwinSocketCapability;
}

export interface VersionPayload {
  major: number;
  minor: number;
  /** Undefined when the message carried no JSON. */
  capabilities?: Capabilities;
  /** The JSON text exactly as received (without the NUL), for logging. */
  json?: string;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

function bad(message: string, cause?: unknown): WireError {
  return new WireError("WIRE_BAD_VERSION_JSON", message, { errno: Errno.EINVAL, command: Command.VERSION, field: "capabilities", cause });
}

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isSafeInteger(n) && 2 ** Math.round(Math.log2(n)) === n;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function readCount(obj: Record<string, unknown>, key: string, min: number): number | undefined | WireError {
  if (!(key in obj)) return undefined;
  const v = obj[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    return bad(`capability "${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Decodes a VERSION request or reply payload. */
export function decodeVersion(body: Uint8Array): VersionPayload | WireError {
  if (body.length < 4) {
    return new WireError("WIRE_BAD_LENGTH", `VERSION payload is ${body.length} bytes, needs at least 4`, {
      errno: Errno.EINVAL,
      command: Command.VERSION,
      expected: 4,
      actual: body.length,
    });
  }
  const major = readU16(body, 0);
  const minor = readU16(body, 2);
  // The JSON is NUL-terminated (spec, "VFIO_USER_VERSION"; libvfio-user and QEMU check for the
  // terminator): data without one is refused, bytes after it too.
  let end = body.length;
  if (body.length > 4) {
    const nul = body.indexOf(0, 4);
    if (nul < 0) return bad("VERSION data is not NUL-terminated");
    for (let i = nul + 1; i < body.length; i++) {
      if (body[i] !== 0) return bad("VERSION data has bytes after its NUL terminator");
    }
    end = nul;
  }
  if (end === 4) return { major, minor };
  let text: string;
  try {
    text = utf8.decode(body.subarray(4, end));
  } catch (e) {
    return bad("VERSION data is not valid UTF-8", e);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return bad(`VERSION data is not valid JSON: ${(e as Error).message}`, e);
  }
  if (!isPlainObject(doc)) return bad("VERSION data must be a JSON object");
  const caps = parseCapabilities(doc);
  if (caps instanceof WireError) return caps;
  return { major, minor, capabilities: caps, json: text };
}

function parseCapabilities(doc: Record<string, unknown>): Capabilities | WireError {
  if (!("capabilities" in doc)) return {};
  const c = doc.capabilities;
  if (!isPlainObject(c)) return bad(`"capabilities" must be an object`);
  const out: Capabilities = {};

  const maxMsgFds = readCount(c, "max_msg_fds", 0);
  if (maxMsgFds instanceof WireError) return maxMsgFds;
  if (maxMsgFds !== undefined) out.maxMsgFds = maxMsgFds;

  const xfer = readCount(c, "max_data_xfer_size", 1);
  if (xfer instanceof WireError) return xfer;
  if (xfer !== undefined) out.maxDataXferSize = xfer;

  if ("pgsizes" in c) {
    const v = c.pgsizes;
    // JSON numbers above 2^53 lose bits; page-size masks used in practice stay well below.
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      return bad(`capability "pgsizes" must be a positive integer bit mask, got ${JSON.stringify(v)}`);
    }
    out.pgsizes = BigInt(v);
  }

  const maps = readCount(c, "max_dma_maps", 1);
  if (maps instanceof WireError) return maps;
  if (maps !== undefined) out.maxDmaMaps = maps;

  if ("migration" in c) {
    const m = c.migration;
    if (!isPlainObject(m)) return bad(`capability "migration" must be an object`);
    const mig: MigrationCapability = {};
    const pgsize = readCount(m, "pgsize", 1);
    if (pgsize instanceof WireError) return pgsize;
    if (pgsize !== undefined) {
      if (!isPowerOfTwo(pgsize)) return bad(`migration "pgsize" must be a power of two, got ${pgsize}`);
      mig.pgsize = pgsize;
    }
    const maxBitmap = readCount(m, "max_bitmap_size", 1);
    if (maxBitmap instanceof WireError) return maxBitmap;
    if (maxBitmap !== undefined) mig.maxBitmapSize = maxBitmap;
    out.migration = mig;
  }

  if ("write_multiple" in c) {
    if (typeof c.write_multiple !== "boolean") return bad(`capability "write_multiple" must be a boolean`);
    out.writeMultiple = c.write_multiple;
  }

  if ("twin_socket" in c) {
    const t = c.twin_socket;
    if (!isPlainObject(t)) return bad(`capability "twin_socket" must be an object`);
    const twin: TwinSocketCapability = {};
    if ("supported" in t) {
      if (typeof t.supported !== "boolean") return bad(`twin_socket "supported" must be a boolean`);
      twin.supported = t.supported;
    }
    const idx = readCount(t, "fd_index", 0);
    if (idx instanceof WireError) return idx;
    if (idx !== undefined) twin.fdIndex = idx;
    out.twinSocket = twin;
  }
  return out;
}

/** The JSON text for a capability set (spec names), or "" when there is nothing to say. */
export function capabilitiesJson(caps: Capabilities | undefined): string {
  if (!caps) return "";
  const c: Record<string, unknown> = {};
  if (caps.maxMsgFds !== undefined) c.max_msg_fds = caps.maxMsgFds;
  if (caps.maxDataXferSize !== undefined) c.max_data_xfer_size = caps.maxDataXferSize;
  if (caps.pgsizes !== undefined) {
    if (caps.pgsizes > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError("pgsizes above 2^53 cannot be written as a JSON number");
    c.pgsizes = Number(caps.pgsizes);
  }
  if (caps.maxDmaMaps !== undefined) c.max_dma_maps = caps.maxDmaMaps;
  if (caps.migration !== undefined) {
    const m: Record<string, unknown> = {};
    if (caps.migration.pgsize !== undefined) m.pgsize = caps.migration.pgsize;
    if (caps.migration.maxBitmapSize !== undefined) m.max_bitmap_size = caps.migration.maxBitmapSize;
    c.migration = m;
  }
  if (caps.writeMultiple !== undefined) c.write_multiple = caps.writeMultiple;
  if (caps.twinSocket !== undefined) {
    const t: Record<string, unknown> = {};
    if (caps.twinSocket.supported !== undefined) t.supported = caps.twinSocket.supported;
    if (caps.twinSocket.fdIndex !== undefined) t.fd_index = caps.twinSocket.fdIndex;
    c.twin_socket = t;
  }
  return JSON.stringify({ capabilities: c });
}

export function encodeCapabilities(caps: Capabilities | undefined): Uint8Array {
  const text = capabilitiesJson(caps);
  if (text === "") return new Uint8Array(0);
  const bytes = utf8Encoder.encode(text);
  const out = new Uint8Array(bytes.length + 1); // NUL terminator
  out.set(bytes);
  return out;
}

/** Effective limits after applying the spec's defaults. */
export interface EffectiveCapabilities {
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: bigint;
  maxDmaMaps: number;
  /** Undefined when the peer did not offer migration. */
  migration?: { pgsize: number; maxBitmapSize: number };
  writeMultiple: boolean;
}
