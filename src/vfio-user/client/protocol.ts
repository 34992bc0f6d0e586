// The client's view of the wire: typed results built on the shared wire module's decoders
// (src/vfio-user/wire), plus the checks only a client can make on an untrusted reply — does it
// answer what was asked (region / IRQ index, offset), do sparse areas lie inside the region, is
// the version compatible. Pure functions; they return a value or a problem string, never throw.
import {
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_MAX_DMA_MAPS,
  DEFAULT_MAX_MSG_FDS,
  DEFAULT_PGSIZES,
  DeviceInfoFlag,
  IrqInfoFlag,
  IoEventFdFlag,
  IoFdType,
  RegionCapId,
  RegionInfoFlag,
  WireError,
  decodeDeviceFeature,
  decodeDeviceInfo,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  decodeIrqInfo,
  decodeMigDataReadReply as wireMigDataReadReply,
  decodeRegionInfoReply as wireRegionInfoReply,
  decodeRegionReadReply,
  decodeRegionWriteReply,
  decodeRegionIoFdsReply as wireRegionIoFdsReply,
  decodeVersion,
  joinU64,
  type RegionCap,
} from "../wire/index.js";

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
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_PGSIZES,
  commandName,
} from "../wire/index.js";
import type { MigrationState } from "../wire/index.js";
export type MigrationStateValue = (typeof MigrationState)[keyof typeof MigrationState];

export type Decoded<T> = { ok: true; value: T } | { ok: false; problem: string };
const ok = <T>(value: T): Decoded<T> => ({ ok: true, value });
const bad = <T>(problem: string): Decoded<T> => ({ ok: false, problem });
const U64_LIMIT = 1n << 64n;

export interface ServerCapabilities {
  major: number;
  minor: number;
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: bigint;
  maxDmaMaps: number;
  writeMultiple: boolean;
  /** The JSON text exactly as the server sent it (for diagnostics). */
  json?: string;
}

/** VERSION reply with the spec's defaults applied to whatever the server left out. */
export function decodeVersionReply(payload: Uint8Array): Decoded<ServerCapabilities> {
  const v = decodeVersion(payload);
  if (v instanceof WireError) return bad(v.message);
  const c = v.capabilities ?? {};
  return ok({
    major: v.major,
    minor: v.minor,
    maxMsgFds: c.maxMsgFds ?? DEFAULT_MAX_MSG_FDS,
    maxDataXferSize: c.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE,
    pgsizes: c.pgsizes ?? DEFAULT_PGSIZES,
    maxDmaMaps: c.maxDmaMaps ?? DEFAULT_MAX_DMA_MAPS,
    writeMultiple: c.writeMultiple ?? false,
    json: v.json,
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
  const d = decodeDeviceInfo(payload);
  if (d instanceof WireError) return bad(d.message);
  return ok({
    flags: d.flags,
    numRegions: d.numRegions,
    numIrqs: d.numIrqs,
    supportsReset: (d.flags & DeviceInfoFlag.RESET) !== 0,
    isPci: (d.flags & DeviceInfoFlag.PCI) !== 0,
  });
}

export interface SparseMmapArea {
  /** Offset within the region. */
  offset: bigint;
  size: bigint;
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
  /** argsz the server says the full reply needs (may exceed what was asked for). */
  argsz: number;
  /** Sparse mmap areas when the server sent that capability; undefined otherwise. */
  sparseAreas?: SparseMmapArea[];
  capabilities: RegionCap[];
}

const MAX_SPARSE_AREAS = 1024;

export function decodeRegionInfoReply(payload: Uint8Array, requestedIndex: number): Decoded<RegionInfo> {
  const r = wireRegionInfoReply(payload);
  if (r instanceof WireError) return bad(r.message);
  if (r.index !== requestedIndex) return bad(`reply is for region ${r.index}, asked for ${requestedIndex}`);
  const info: RegionInfo = {
    index: r.index,
    flags: r.flags,
    size: r.size,
    offset: r.offset,
    readable: (r.flags & RegionInfoFlag.READ) !== 0,
    writable: (r.flags & RegionInfoFlag.WRITE) !== 0,
    mmappable: (r.flags & RegionInfoFlag.MMAP) !== 0,
    argsz: r.argsz,
    capabilities: r.caps,
  };
  for (const cap of r.caps) {
    if (cap.id !== RegionCapId.SPARSE_MMAP || !("areas" in cap)) continue;
    if (cap.areas.length > MAX_SPARSE_AREAS) return bad(`region ${r.index}: ${cap.areas.length} sparse mmap areas (limit ${MAX_SPARSE_AREAS})`);
    for (const [i, a] of cap.areas.entries()) {
      if (a.offset + a.size > r.size) return bad(`region ${r.index}: sparse mmap area ${i} [${hex(a.offset)}, +${hex(a.size)}) runs past the region size ${hex(r.size)}`);
      if (r.offset + a.offset + a.size > U64_LIMIT) return bad(`region ${r.index}: sparse mmap area ${i} overflows the file offset`);
    }
    info.sparseAreas = cap.areas.map((a) => ({ offset: a.offset, size: a.size }));
  }
  return ok(info);
}

/** One ioeventfd sub-region of a region (DEVICE_GET_REGION_IO_FDS), checked. */
export interface IoEventFdSubRegion {
  /** Offset within the region. */
  offset: bigint;
  /** Write width that signals: 1, 2, 4 or 8 bytes, or 0 = any width. */
  size: number;
  /** Only writes of this value signal (KVM_IOEVENTFD_FLAG_DATAMATCH); undefined: any value. */
  datamatch?: bigint;
  /** The region is port I/O (KVM_IOEVENTFD_FLAG_PIO). */
  pio: boolean;
  /** Index into the fds that came with the reply (sub-regions may share one). */
  fdIndex: number;
}

export interface RegionIoFdsDecoded {
  index: number;
  /** Sub-regions the server has; when `subRegions` is empty and this is not, the reply was cut. */
  count: number;
  /** Payload size the full reply needs. */
  argsz: number;
  subRegions: IoEventFdSubRegion[];
}

/** Most sub-regions the client accepts in one reply. */
export const MAX_IO_FD_SUB_REGIONS = 1024;

/**
 * DEVICE_GET_REGION_IO_FDS reply, with the checks the spec leaves to the client: the region
 * asked for, flags zero, ioeventfd entries only (ioregionfd and shadow ioeventfds are not
 * supported), widths KVM knows, fd indices inside the fds received, sub-regions inside the
 * region (when its size is known), datamatch values that fit the width.
 */
export function decodeRegionIoFdsReply(payload: Uint8Array, requestedIndex: number, fdCount: number, regionSize?: bigint): Decoded<RegionIoFdsDecoded> {
  const r = wireRegionIoFdsReply(payload);
  if (r instanceof WireError) return bad(r.message);
  if (r.index !== requestedIndex) return bad(`reply is for region ${r.index}, asked for ${requestedIndex}`);
  if (r.flags !== 0) return bad(`reply flags ${hex(r.flags)} must be zero`);
  if (r.count > MAX_IO_FD_SUB_REGIONS) return bad(`${r.count} sub-regions (limit ${MAX_IO_FD_SUB_REGIONS})`);
  const subRegions: IoEventFdSubRegion[] = [];
  for (const [i, s] of r.subRegions.entries()) {
    const where = `sub-region ${i}`;
    if (s.type !== IoFdType.IOEVENTFD) return bad(`${where} has type ${s.type}; only ioeventfds (type 0) are supported`);
    if ((s.flags & ~(IoEventFdFlag.DATAMATCH | IoEventFdFlag.PIO)) !== 0) return bad(`${where} has unknown flags ${hex(s.flags)}`);
    if (s.size !== 0n && s.size !== 1n && s.size !== 2n && s.size !== 4n && s.size !== 8n) return bad(`${where} has width ${s.size}; an ioeventfd fires on 0 (any), 1, 2, 4 or 8 bytes`);
    if (s.fdIndex >= fdCount) return bad(`${where} names fd ${s.fdIndex}, but ${fdCount} fd${fdCount === 1 ? "" : "s"} came with the reply`);
    if (s.offset + s.size > U64_LIMIT || (regionSize !== undefined && s.offset + s.size > regionSize)) {
      return bad(`${where} [${hex(s.offset)}, +${s.size}) runs past the end of region ${r.index}${regionSize !== undefined ? ` (size ${hex(regionSize)})` : ""}`);
    }
    const matches = (s.flags & IoEventFdFlag.DATAMATCH) !== 0;
    if (matches && s.size !== 0n && s.size < 8n && s.datamatch >> (s.size * 8n) !== 0n) return bad(`${where} datamatch ${hex(s.datamatch)} does not fit in ${s.size} bytes`);
    subRegions.push({ offset: s.offset, size: Number(s.size), datamatch: matches ? s.datamatch : undefined, pio: (s.flags & IoEventFdFlag.PIO) !== 0, fdIndex: s.fdIndex });
  }
  return ok({ index: r.index, count: r.count, argsz: r.argsz, subRegions });
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
  const r = decodeIrqInfo(payload);
  if (r instanceof WireError) return bad(r.message);
  if (r.index !== requestedIndex) return bad(`reply is for IRQ index ${r.index}, asked for ${requestedIndex}`);
  return ok({
    index: r.index,
    flags: r.flags,
    count: r.count,
    eventfd: (r.flags & IrqInfoFlag.EVENTFD) !== 0,
    maskable: (r.flags & IrqInfoFlag.MASKABLE) !== 0,
    automasked: (r.flags & IrqInfoFlag.AUTOMASKED) !== 0,
    noresize: (r.flags & IrqInfoFlag.NORESIZE) !== 0,
  });
}

export interface RegionAccessReply {
  offset: bigint;
  region: number;
  count: number;
  /** Read data (a view into the received message; copy it to keep it). */
  data: Uint8Array;
}

/** REGION_READ (with data) / REGION_WRITE (without) reply. Count checks are the caller's. */
export function decodeRegionAccessReply(payload: Uint8Array, isRead: boolean): Decoded<RegionAccessReply> {
  const r = isRead ? decodeRegionReadReply(payload) : decodeRegionWriteReply(payload);
  if (r instanceof WireError) return bad(r.message);
  return ok({ offset: joinU64(r.offsetLo, r.offsetHi), region: r.region, count: r.count, data: r.data });
}

export interface DmaAccessRequest {
  address: bigint;
  count: number;
  /** DMA_WRITE data (view into the received message). */
  data: Uint8Array;
}

/** The server's DMA_READ / DMA_WRITE command; `errno` is what to answer a malformed one with. */
export function decodeDmaAccessRequest(payload: Uint8Array, isWrite: boolean): { ok: true; value: DmaAccessRequest } | { ok: false; problem: string; errno: number } {
  const r = isWrite ? decodeDmaWriteRequest(payload) : decodeDmaReadRequest(payload);
  if (r instanceof WireError) return { ok: false, problem: r.message, errno: r.errno };
  return { ok: true, value: r };
}

export interface FeatureReply {
  flags: number;
  feature: number;
  data: Uint8Array;
}

export function decodeFeatureReply(payload: Uint8Array): Decoded<FeatureReply> {
  const r = decodeDeviceFeature(payload);
  if (r instanceof WireError) return bad(r.message);
  return ok({ flags: r.flags, feature: r.feature, data: r.data });
}

export function decodeMigDataReadReply(payload: Uint8Array): Decoded<Uint8Array> {
  const r = wireMigDataReadReply(payload);
  if (r instanceof WireError) return bad(r.message);
  return ok(r.data);
}

export function hex(value: bigint | number): string {
  return "0x" + value.toString(16);
}

