// Client-side vfio-user message codec: pure functions, bytes in / typed values out, no I/O.
//
// The shared wire module (src/vfio-user/wire, owned by the server engineer) is the project's
// canonical codec; this file holds the client-direction pieces (request encoders, reply decoders
// with the checks a client must make on untrusted replies) so the client can be built and tested
// on its own. Layouts follow QEMU's docs/interop/vfio-user.rst. All integers are little-endian:
// the spec says host order, and every host this runs on is little-endian.

import {
  Command,
  HEADER_SIZE,
  HeaderFlag,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  DEFAULT_MAX_MSG_FDS,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_PGSIZES,
  DEFAULT_MAX_DMA_MAPS,
  DeviceInfoFlag,
  RegionInfoFlag,
  RegionCapId,
  IrqInfoFlag,
  DEVICE_INFO_SIZE,
  REGION_INFO_SIZE,
  IRQ_INFO_SIZE,
  IRQ_SET_SIZE,
  REGION_ACCESS_SIZE,
  DMA_MAP_SIZE,
  DMA_UNMAP_SIZE,
  DMA_ACCESS_SIZE,
  DEVICE_FEATURE_SIZE as FEATURE_SIZE,
  MIG_DATA_SIZE,
  MigrationState,
} from "../wire/constants.js";

// The protocol numbers are the shared wire module's; re-exported for the client's users.
export {
  Command,
  HEADER_SIZE,
  HeaderFlag,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  PciRegion,
  PciIrq,
  DeviceInfoFlag,
  RegionInfoFlag,
  RegionCapId,
  IrqInfoFlag,
  IrqSetFlag,
  DmaMapFlag,
  DeviceFeatureFlag,
  DeviceFeature,
  MigrationFlag,
  MigrationState,
  commandName,
  DEFAULT_MAX_DATA_XFER_SIZE,
} from "../wire/constants.js";
export type MigrationStateValue = (typeof MigrationState)[keyof typeof MigrationState];

const U64_MAX = (1n << 64n) - 1n;

export interface Header {
  msgId: number;
  command: number;
  size: number;
  flags: number;
  error: number;
}

export function readHeader(bytes: Uint8Array, at = 0): Header {
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, HEADER_SIZE);
  return {
    msgId: v.getUint16(0, true),
    command: v.getUint16(2, true),
    size: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    error: v.getUint32(12, true),
  };
}

/** A message buffer with its header filled in and a DataView over the whole message. */
function message(msgId: number, command: number, payloadSize: number, flags = 0): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(HEADER_SIZE + payloadSize);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, msgId, true);
  view.setUint16(2, command, true);
  view.setUint32(4, bytes.length, true);
  view.setUint32(8, flags, true);
  return { bytes, view };
}

// ---------------------------------------------------------------------------------------------
// Requests (client -> server)

export interface ClientCapabilities {
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes?: bigint;
  maxDmaMaps?: number;
}

export function encodeVersion(msgId: number, caps: ClientCapabilities, major = PROTOCOL_MAJOR, minor = PROTOCOL_MINOR): Uint8Array {
  const capabilities: Record<string, unknown> = {
    max_msg_fds: caps.maxMsgFds,
    max_data_xfer_size: caps.maxDataXferSize,
  };
  if (caps.pgsizes !== undefined) capabilities.pgsizes = Number(caps.pgsizes);
  if (caps.maxDmaMaps !== undefined) capabilities.max_dma_maps = caps.maxDmaMaps;
  const json = new TextEncoder().encode(JSON.stringify({ capabilities }));
  const { bytes, view } = message(msgId, Command.VERSION, 4 + json.length + 1);
  view.setUint16(16, major, true);
  view.setUint16(18, minor, true);
  bytes.set(json, 20); // followed by the terminating NUL already in place
  return bytes;
}

export function encodeDeviceGetInfo(msgId: number): Uint8Array {
  const { bytes, view } = message(msgId, Command.DEVICE_GET_INFO, DEVICE_INFO_SIZE);
  view.setUint32(16, DEVICE_INFO_SIZE, true);
  return bytes;
}

/** `argsz` is the largest reply payload the client accepts (region info + capabilities). */
export function encodeRegionInfo(msgId: number, index: number, argsz: number): Uint8Array {
  const { bytes, view } = message(msgId, Command.DEVICE_GET_REGION_INFO, REGION_INFO_SIZE);
  view.setUint32(16, argsz, true);
  view.setUint32(24, index, true);
  return bytes;
}

export function encodeIrqInfo(msgId: number, index: number): Uint8Array {
  const { bytes, view } = message(msgId, Command.DEVICE_GET_IRQ_INFO, IRQ_INFO_SIZE);
  view.setUint32(16, IRQ_INFO_SIZE, true);
  view.setUint32(24, index, true);
  return bytes;
}

/** SET_IRQS; `data` is the bool array for DATA_BOOL (eventfds travel as fds, not bytes). */
export function encodeSetIrqs(msgId: number, flags: number, index: number, start: number, count: number, data?: Uint8Array): Uint8Array {
  const extra = data?.length ?? 0;
  const { bytes, view } = message(msgId, Command.DEVICE_SET_IRQS, IRQ_SET_SIZE + extra);
  view.setUint32(16, IRQ_SET_SIZE + extra, true);
  view.setUint32(20, flags, true);
  view.setUint32(24, index, true);
  view.setUint32(28, start, true);
  view.setUint32(32, count, true);
  if (data) bytes.set(data, 36);
  return bytes;
}

export function encodeRegionRead(msgId: number, region: number, offset: bigint, count: number): Uint8Array {
  const { bytes, view } = message(msgId, Command.REGION_READ, REGION_ACCESS_SIZE);
  view.setBigUint64(16, offset, true);
  view.setUint32(24, region, true);
  view.setUint32(28, count, true);
  return bytes;
}

export function encodeRegionWrite(msgId: number, region: number, offset: bigint, data: Uint8Array, noReply: boolean): Uint8Array {
  const { bytes, view } = message(msgId, Command.REGION_WRITE, REGION_ACCESS_SIZE + data.length, noReply ? HeaderFlag.NO_REPLY : 0);
  view.setBigUint64(16, offset, true);
  view.setUint32(24, region, true);
  view.setUint32(28, data.length, true);
  bytes.set(data, 32);
  return bytes;
}

export function encodeDmaMap(msgId: number, flags: number, fileOffset: bigint, iova: bigint, size: bigint): Uint8Array {
  const { bytes, view } = message(msgId, Command.DMA_MAP, DMA_MAP_SIZE);
  view.setUint32(16, DMA_MAP_SIZE, true);
  view.setUint32(20, flags, true);
  view.setBigUint64(24, fileOffset, true);
  view.setBigUint64(32, iova, true);
  view.setBigUint64(40, size, true);
  return bytes;
}

export function encodeDmaUnmap(msgId: number, iova: bigint, size: bigint): Uint8Array {
  const { bytes, view } = message(msgId, Command.DMA_UNMAP, DMA_UNMAP_SIZE);
  view.setUint32(16, DMA_UNMAP_SIZE, true);
  view.setBigUint64(24, iova, true);
  view.setBigUint64(32, size, true);
  return bytes;
}

export function encodeDeviceReset(msgId: number): Uint8Array {
  return message(msgId, Command.DEVICE_RESET, 0).bytes;
}

/** DEVICE_FEATURE; `argsz` is the largest reply payload accepted (header 8 + feature data). */
export function encodeDeviceFeature(msgId: number, flags: number, data: Uint8Array, argsz: number): Uint8Array {
  const { bytes, view } = message(msgId, Command.DEVICE_FEATURE, FEATURE_SIZE + data.length);
  view.setUint32(16, argsz, true);
  view.setUint32(20, flags, true);
  bytes.set(data, 24);
  return bytes;
}

export function encodeMigDataRead(msgId: number, size: number): Uint8Array {
  const { bytes, view } = message(msgId, Command.MIG_DATA_READ, MIG_DATA_SIZE);
  view.setUint32(16, MIG_DATA_SIZE + size, true);
  view.setUint32(20, size, true);
  return bytes;
}

export function encodeMigDataWrite(msgId: number, data: Uint8Array): Uint8Array {
  const { bytes, view } = message(msgId, Command.MIG_DATA_WRITE, MIG_DATA_SIZE + data.length);
  view.setUint32(16, MIG_DATA_SIZE, true);
  view.setUint32(20, data.length, true);
  bytes.set(data, 24);
  return bytes;
}

// Replies the client sends to the server's own commands (DMA_READ / DMA_WRITE).

export function encodeErrorReply(msgId: number, command: number, errno: number): Uint8Array {
  const { bytes, view } = message(msgId, command, 0, HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR);
  view.setUint32(12, errno, true);
  return bytes;
}

export function encodeDmaReadReply(msgId: number, address: bigint, data: Uint8Array): Uint8Array {
  const { bytes, view } = message(msgId, Command.DMA_READ, DMA_ACCESS_SIZE + data.length, HeaderFlag.TYPE_REPLY);
  view.setBigUint64(16, address, true);
  view.setBigUint64(24, BigInt(data.length), true);
  bytes.set(data, 32);
  return bytes;
}

export function encodeDmaWriteReply(msgId: number, address: bigint, count: bigint): Uint8Array {
  const { bytes, view } = message(msgId, Command.DMA_WRITE, DMA_ACCESS_SIZE, HeaderFlag.TYPE_REPLY);
  view.setBigUint64(16, address, true);
  view.setBigUint64(24, count, true);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Replies (server -> client). Each decoder gets the payload (bytes after the header) and
// returns a typed value or a string saying what is wrong; it never throws on bad input.

export type Decoded<T> = { ok: true; value: T } | { ok: false; problem: string };
const ok = <T>(value: T): Decoded<T> => ({ ok: true, value });
const bad = <T>(problem: string): Decoded<T> => ({ ok: false, problem });
const viewOf = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset, p.byteLength);

export interface ServerCapabilities {
  major: number;
  minor: number;
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: bigint;
  maxDmaMaps: number;
  writeMultiple: boolean;
  /** The capabilities object exactly as the server sent it (unknown keys included). */
  raw: Record<string, unknown>;
}

function nonNegativeInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

export function decodeVersionReply(payload: Uint8Array): Decoded<ServerCapabilities> {
  if (payload.length < 4) return bad(`VERSION reply payload is ${payload.length} bytes, needs at least 4`);
  const v = viewOf(payload);
  const major = v.getUint16(0, true);
  const minor = v.getUint16(2, true);
  let raw: Record<string, unknown> = {};
  if (payload.length > 4) {
    let end = payload.indexOf(0, 4);
    if (end < 0) end = payload.length; // tolerate a missing NUL terminator
    const text = new TextDecoder("utf-8", { fatal: false }).decode(payload.subarray(4, end));
    if (text.trim() !== "") {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        return bad(`VERSION reply JSON is malformed: ${(err as Error).message}`);
      }
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return bad("VERSION reply JSON is not an object");
      const caps = (parsed as Record<string, unknown>).capabilities;
      if (caps !== undefined) {
        if (typeof caps !== "object" || caps === null || Array.isArray(caps)) return bad("VERSION reply 'capabilities' is not an object");
        raw = caps as Record<string, unknown>;
      }
    }
  }
  const field = (key: string, fallback: number): Decoded<number> => {
    const value = raw[key];
    if (value === undefined) return ok(fallback);
    if (!nonNegativeInteger(value)) return bad(`VERSION capability ${key} is not a non-negative integer: ${JSON.stringify(value)}`);
    return ok(value);
  };
  const fds = field("max_msg_fds", DEFAULT_MAX_MSG_FDS);
  if (!fds.ok) return fds;
  const xfer = field("max_data_xfer_size", DEFAULT_MAX_DATA_XFER_SIZE);
  if (!xfer.ok) return xfer;
  if (xfer.value === 0) return bad("VERSION capability max_data_xfer_size is 0");
  const maps = field("max_dma_maps", DEFAULT_MAX_DMA_MAPS);
  if (!maps.ok) return maps;
  const pg = field("pgsizes", Number(DEFAULT_PGSIZES));
  if (!pg.ok) return pg;
  return ok({
    major,
    minor,
    maxMsgFds: fds.value,
    maxDataXferSize: xfer.value,
    pgsizes: BigInt(pg.value),
    maxDmaMaps: maps.value,
    writeMultiple: raw.write_multiple === true,
    raw,
  });
}

export interface DeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
  supportsReset: boolean;
  isPci: boolean;
}

export function decodeDeviceInfoReply(payload: Uint8Array): Decoded<DeviceInfo> {
  if (payload.length < DEVICE_INFO_SIZE) return bad(`DEVICE_GET_INFO reply payload is ${payload.length} bytes, needs ${DEVICE_INFO_SIZE}`);
  const v = viewOf(payload);
  const flags = v.getUint32(4, true);
  return ok({
    flags,
    numRegions: v.getUint32(8, true),
    numIrqs: v.getUint32(12, true),
    supportsReset: (flags & DeviceInfoFlag.RESET) !== 0,
    isPci: (flags & DeviceInfoFlag.PCI) !== 0,
  });
}

export interface SparseMmapArea {
  /** Offset within the region. */
  offset: bigint;
  size: bigint;
}

export interface RegionCapability {
  id: number;
  version: number;
  /** Capability body (after the 8-byte capability header). */
  body: Uint8Array;
}

export interface RegionInfo {
  index: number;
  flags: number;
  size: bigint;
  /** Offset to give mmap() for the region fd (base for sparse areas). */
  offset: bigint;
  readable: boolean;
  writable: boolean;
  mmappable: boolean;
  /** argsz the server says the full reply needs (may exceed what we asked for). */
  argsz: number;
  /** Sparse mmap areas when the server sent that capability; undefined otherwise. */
  sparseAreas?: SparseMmapArea[];
  capabilities: RegionCapability[];
}

const MAX_REGION_CAPS = 64;
const MAX_SPARSE_AREAS = 1024;

export function decodeRegionInfoReply(payload: Uint8Array, requestedIndex: number): Decoded<RegionInfo> {
  if (payload.length < REGION_INFO_SIZE) return bad(`DEVICE_GET_REGION_INFO reply payload is ${payload.length} bytes, needs ${REGION_INFO_SIZE}`);
  const v = viewOf(payload);
  const argsz = v.getUint32(0, true);
  const flags = v.getUint32(4, true);
  const index = v.getUint32(8, true);
  const capOffset = v.getUint32(12, true);
  if (index !== requestedIndex) return bad(`DEVICE_GET_REGION_INFO reply is for region ${index}, asked for ${requestedIndex}`);
  const info: RegionInfo = {
    index,
    flags,
    size: v.getBigUint64(16, true),
    offset: v.getBigUint64(24, true),
    readable: (flags & RegionInfoFlag.READ) !== 0,
    writable: (flags & RegionInfoFlag.WRITE) !== 0,
    mmappable: (flags & RegionInfoFlag.MMAP) !== 0,
    argsz,
    capabilities: [],
  };
  // Capabilities are only present when flagged and when they fit in what the server sent.
  if ((flags & RegionInfoFlag.CAPS) !== 0 && capOffset !== 0 && argsz <= payload.length) {
    let at = capOffset;
    const seen = new Set<number>();
    while (at !== 0) {
      if (seen.has(at) || seen.size >= MAX_REGION_CAPS) return bad(`region ${index}: capability chain loops or is too long`);
      seen.add(at);
      if (at < REGION_INFO_SIZE || at + 8 > payload.length) return bad(`region ${index}: capability at offset ${at} lies outside the ${payload.length}-byte reply`);
      const id = v.getUint16(at, true);
      const version = v.getUint16(at + 2, true);
      const next = v.getUint32(at + 4, true);
      // A capability's body runs to the next capability (if it follows) or to the end.
      const end = next > at ? Math.min(next, payload.length) : payload.length;
      const body = payload.subarray(at + 8, end);
      info.capabilities.push({ id, version, body });
      if (id === RegionCapId.SPARSE_MMAP) {
        const areas = decodeSparseMmap(body, info.size);
        if (!areas.ok) return bad(`region ${index}: ${areas.problem}`);
        info.sparseAreas = areas.value;
      }
      at = next;
    }
  }
  return ok(info);
}

function decodeSparseMmap(body: Uint8Array, regionSize: bigint): Decoded<SparseMmapArea[]> {
  if (body.length < 8) return bad(`sparse mmap capability is ${body.length} bytes, needs at least 8`);
  const v = viewOf(body);
  const count = v.getUint32(0, true);
  if (count > MAX_SPARSE_AREAS) return bad(`sparse mmap capability lists ${count} areas (limit ${MAX_SPARSE_AREAS})`);
  if (8 + count * 16 > body.length) return bad(`sparse mmap capability lists ${count} areas but holds only ${Math.floor((body.length - 8) / 16)}`);
  const areas: SparseMmapArea[] = [];
  for (let i = 0; i < count; i++) {
    const offset = v.getBigUint64(8 + i * 16, true);
    const size = v.getBigUint64(16 + i * 16, true);
    if (offset + size > regionSize) return bad(`sparse mmap area ${i} [${hex(offset)}, +${hex(size)}) runs past the region size ${hex(regionSize)}`);
    areas.push({ offset, size });
  }
  return ok(areas);
}

export interface IrqInfo {
  index: number;
  flags: number;
  count: number;
  eventfd: boolean;
  maskable: boolean;
  automasked: boolean;
  noresize: boolean;
}

export function decodeIrqInfoReply(payload: Uint8Array, requestedIndex: number): Decoded<IrqInfo> {
  if (payload.length < IRQ_INFO_SIZE) return bad(`DEVICE_GET_IRQ_INFO reply payload is ${payload.length} bytes, needs ${IRQ_INFO_SIZE}`);
  const v = viewOf(payload);
  const flags = v.getUint32(4, true);
  const index = v.getUint32(8, true);
  if (index !== requestedIndex) return bad(`DEVICE_GET_IRQ_INFO reply is for IRQ index ${index}, asked for ${requestedIndex}`);
  return ok({
    index,
    flags,
    count: v.getUint32(12, true),
    eventfd: (flags & IrqInfoFlag.EVENTFD) !== 0,
    maskable: (flags & IrqInfoFlag.MASKABLE) !== 0,
    automasked: (flags & IrqInfoFlag.AUTOMASKED) !== 0,
    noresize: (flags & IrqInfoFlag.NORESIZE) !== 0,
  });
}

export interface RegionAccessReply {
  offset: bigint;
  region: number;
  count: number;
  /** Data for a read reply (a view into the received message). */
  data: Uint8Array;
}

/**
 * REGION_READ / REGION_WRITE reply. `withData` for reads: the payload must hold exactly `count`
 * data bytes. The caller compares count with what it asked for (E2BIG / short transfer).
 */
export function decodeRegionAccessReply(payload: Uint8Array, withData: boolean): Decoded<RegionAccessReply> {
  if (payload.length < REGION_ACCESS_SIZE) return bad(`region access reply payload is ${payload.length} bytes, needs ${REGION_ACCESS_SIZE}`);
  const v = viewOf(payload);
  const count = v.getUint32(12, true);
  const data = payload.subarray(REGION_ACCESS_SIZE);
  if (withData && data.length !== count) return bad(`REGION_READ reply says count ${count} but carries ${data.length} data bytes`);
  return ok({ offset: v.getBigUint64(0, true), region: v.getUint32(8, true), count, data });
}

export interface DmaAccessRequest {
  address: bigint;
  count: bigint;
  /** DMA_WRITE data (view into the received message). */
  data: Uint8Array;
}

/** The server's DMA_READ (no data) / DMA_WRITE (data of `count` bytes) command. */
export function decodeDmaAccessRequest(payload: Uint8Array, withData: boolean): Decoded<DmaAccessRequest> {
  if (payload.length < DMA_ACCESS_SIZE) return bad(`DMA access payload is ${payload.length} bytes, needs ${DMA_ACCESS_SIZE}`);
  const v = viewOf(payload);
  const address = v.getBigUint64(0, true);
  const count = v.getBigUint64(8, true);
  const data = payload.subarray(DMA_ACCESS_SIZE);
  if (withData && BigInt(data.length) !== count) return bad(`DMA_WRITE says count ${count} but carries ${data.length} data bytes`);
  if (!withData && data.length !== 0) return bad(`DMA_READ request carries ${data.length} unexpected bytes`);
  if (address + count - (count === 0n ? 0n : 1n) > U64_MAX) return bad("DMA access wraps past 2^64");
  return ok({ address, count, data });
}

export interface FeatureReply {
  argsz: number;
  flags: number;
  data: Uint8Array;
}

export function decodeFeatureReply(payload: Uint8Array): Decoded<FeatureReply> {
  if (payload.length < FEATURE_SIZE) return bad(`DEVICE_FEATURE reply payload is ${payload.length} bytes, needs ${FEATURE_SIZE}`);
  const v = viewOf(payload);
  return ok({ argsz: v.getUint32(0, true), flags: v.getUint32(4, true), data: payload.subarray(FEATURE_SIZE) });
}

export function decodeMigDataReadReply(payload: Uint8Array): Decoded<Uint8Array> {
  if (payload.length < MIG_DATA_SIZE) return bad(`MIG_DATA_READ reply payload is ${payload.length} bytes, needs ${MIG_DATA_SIZE}`);
  const v = viewOf(payload);
  const size = v.getUint32(4, true);
  const data = payload.subarray(MIG_DATA_SIZE);
  if (data.length !== size) return bad(`MIG_DATA_READ reply says size ${size} but carries ${data.length} bytes`);
  return ok(data);
}

export function hex(value: bigint | number): string {
  return "0x" + value.toString(16);
}
