// Per-command payload layouts: one decoder (payload bytes -> typed value or WireError) and one
// serializer (typed value -> MessageWriter) per message. Decoders check structure only (lengths,
// counts that must agree with the payload); what a value means for a device (is the region index
// valid? is the range inside the region?) is the server's or client's to check.
//
// 64-bit fields are bigint, except region-access offsets, which are kept as two u32 halves
// (offsetLo/offsetHi) because they are on the per-access hot path; `joinU64` makes a bigint.
import {
  Command,
  HeaderFlag,
  Errno,
  DMA_MAP_SIZE,
  DMA_UNMAP_SIZE,
  BITMAP_HEADER_SIZE,
  DEVICE_INFO_SIZE,
  REGION_INFO_SIZE,
  REGION_IO_FDS_SIZE,
  SUB_REGION_IO_FD_SHADOW_SIZE,
  SUB_REGION_IO_FD_SIZE,
  IRQ_INFO_SIZE,
  IRQ_SET_SIZE,
  REGION_ACCESS_SIZE,
  DMA_ACCESS_SIZE,
  WRITE_MULTI_COUNT_SIZE,
  WRITE_MULTI_ENTRY_SIZE,
  WRITE_MULTI_MAX_DATA,
  DEVICE_FEATURE_SIZE,
  MIG_DATA_SIZE,
  CAP_HEADER_SIZE,
  SPARSE_MMAP_FIXED_SIZE,
  SPARSE_MMAP_AREA_SIZE,
  RegionCapId,
  RegionInfoFlag,
  DmaUnmapFlag,
  IrqSetFlag,
  DeviceFeatureFlag,
  commandName,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
} from "./constants.js";
import { WireError } from "./errors.js";
import { MessageWriter, readU32, readU64 } from "./writer.js";
import { encodeCapabilities, type Capabilities } from "./version.js";

// ---------------------------------------------------------------------------------------------
// helpers

const REQUEST = HeaderFlag.TYPE_COMMAND;
const REPLY = HeaderFlag.TYPE_REPLY;

function requestFlags(noReply: boolean | undefined): number {
  return noReply ? REQUEST | HeaderFlag.NO_REPLY : REQUEST;
}

function lengthError(command: number, what: string, expected: number, actual: number, atLeast = false): WireError {
  return new WireError(
    "WIRE_BAD_LENGTH",
    `${commandName(command)} ${what} is ${actual} bytes, expected ${atLeast ? "at least " : ""}${expected}`,
    { errno: Errno.EINVAL, command, expected, actual },
  );
}

function fieldError(command: number, field: string, message: string, expected?: number, actual?: number, errno: number = Errno.EINVAL): WireError {
  return new WireError("WIRE_BAD_FIELD", `${commandName(command)}: ${message}`, { errno, command, field, expected, actual });
}

/** The u64 at b[p] as a number, or -1 when it is not below 2^32 (counts must be). */
function readCount64(b: Uint8Array, p: number): number {
  return readU32(b, p + 4) === 0 ? readU32(b, p) : -1;
}

/** The 16-byte head DEVICE_GET_REGION_IO_FDS and DEVICE_GET_IRQ_INFO share: argsz, flags,
 *  index, count. */
function readIndexCountHead(body: Uint8Array): { argsz: number; flags: number; index: number; count: number } {
  return { argsz: readU32(body, 0), flags: readU32(body, 4), index: readU32(body, 8), count: readU32(body, 12) };
}

/** A request made of that head alone, flags and count 0. */
function writeIndexCountRequest(w: MessageWriter, msgId: number, command: number, index: number, argsz: number): void {
  w.begin(msgId, command, REQUEST).u32(argsz).u32(0).u32(index).u32(0).end();
}

// ---------------------------------------------------------------------------------------------
// generic replies

/** A reply carrying only the header, with the ERROR flag and `errno`. */
export function writeErrorReply(w: MessageWriter, msgId: number, command: number, errno: number): void {
  w.begin(msgId, command, REPLY | HeaderFlag.ERROR, errno).end();
}

/** A successful reply without payload (DMA_MAP, SET_IRQS, DEVICE_RESET, MIG_DATA_WRITE). */
export function writeEmptyReply(w: MessageWriter, msgId: number, command: number): void {
  w.begin(msgId, command, REPLY).end();
}

// ---------------------------------------------------------------------------------------------
// VERSION (request and reply share the layout; decodeVersion lives in version.ts)

export interface VersionMessage {
  major?: number;
  minor?: number;
  capabilities?: Capabilities;
}

export function writeVersionRequest(w: MessageWriter, msgId: number, v: VersionMessage = {}): void {
  w.begin(msgId, Command.VERSION, REQUEST);
  w.u16(v.major ?? PROTOCOL_MAJOR).u16(v.minor ?? PROTOCOL_MINOR).bytes(encodeCapabilities(v.capabilities));
  w.end();
}

export function writeVersionReply(w: MessageWriter, msgId: number, v: VersionMessage = {}): void {
  w.begin(msgId, Command.VERSION, REPLY);
  w.u16(v.major ?? PROTOCOL_MAJOR).u16(v.minor ?? PROTOCOL_MINOR).bytes(encodeCapabilities(v.capabilities));
  w.end();
}

// ---------------------------------------------------------------------------------------------
// DMA_MAP

export interface DmaMap {
  argsz: number;
  /** DmaMapFlag bits (READ, WRITE). */
  flags: number;
  /** Offset into the passed fd (0 without one). */
  offset: bigint;
  /** IOVA of the first byte. */
  address: bigint;
  size: bigint;
}

export function decodeDmaMap(body: Uint8Array): DmaMap | WireError {
  if (body.length !== DMA_MAP_SIZE) return lengthError(Command.DMA_MAP, "request", DMA_MAP_SIZE, body.length);
  return {
    argsz: readU32(body, 0),
    flags: readU32(body, 4),
    offset: readU64(body, 8),
    address: readU64(body, 16),
    size: readU64(body, 24),
  };
}

export function writeDmaMapRequest(w: MessageWriter, msgId: number, m: Omit<DmaMap, "argsz"> & { argsz?: number }): void {
  w.begin(msgId, Command.DMA_MAP, REQUEST);
  w.u32(m.argsz ?? DMA_MAP_SIZE).u32(m.flags).u64(m.offset).u64(m.address).u64(m.size);
  w.end();
}

// ---------------------------------------------------------------------------------------------
// DMA_UNMAP (with the optional dirty bitmap of libvfio-user's migration-v1 era)

export interface DirtyBitmapRequest {
  /** Page size one bit stands for. */
  pgsize: bigint;
  /** Bitmap size in bytes. */
  size: bigint;
}

export interface DmaUnmap {
  /** Largest reply payload the client accepts. */
  argsz: number;
  /** DmaUnmapFlag bits. */
  flags: number;
  address: bigint;
  size: bigint;
  /** Present iff flags has GET_DIRTY_BITMAP. */
  bitmap?: DirtyBitmapRequest;
}

export function decodeDmaUnmap(body: Uint8Array): DmaUnmap | WireError {
  if (body.length < DMA_UNMAP_SIZE) return lengthError(Command.DMA_UNMAP, "request", DMA_UNMAP_SIZE, body.length, true);
  const flags = readU32(body, 4);
  const withBitmap = (flags & DmaUnmapFlag.GET_DIRTY_BITMAP) !== 0;
  const expected = withBitmap ? DMA_UNMAP_SIZE + BITMAP_HEADER_SIZE : DMA_UNMAP_SIZE;
  if (body.length !== expected) return lengthError(Command.DMA_UNMAP, withBitmap ? "request with a dirty bitmap" : "request", expected, body.length);
  const out: DmaUnmap = { argsz: readU32(body, 0), flags, address: readU64(body, 8), size: readU64(body, 16) };
  if (withBitmap) out.bitmap = { pgsize: readU64(body, 24), size: readU64(body, 32) };
  return out;
}

export function writeDmaUnmapRequest(w: MessageWriter, msgId: number, u: Omit<DmaUnmap, "argsz"> & { argsz?: number }): void {
  const withBitmap = u.bitmap !== undefined;
  const flags = withBitmap ? u.flags | DmaUnmapFlag.GET_DIRTY_BITMAP : u.flags;
  const argsz = u.argsz ?? (withBitmap ? DMA_UNMAP_SIZE + BITMAP_HEADER_SIZE + Number(u.bitmap!.size) : DMA_UNMAP_SIZE);
  w.begin(msgId, Command.DMA_UNMAP, REQUEST);
  w.u32(argsz).u32(flags).u64(u.address).u64(u.size);
  if (withBitmap) w.u64(u.bitmap!.pgsize).u64(u.bitmap!.size);
  w.end();
}

export interface DmaUnmapReply {
  argsz: number;
  flags: number;
  address: bigint;
  size: bigint;
  bitmap?: { pgsize: bigint; size: bigint; data: Uint8Array };
}

/**
 * Echoes the request's entry, argsz included (spec, VFIO_USER_DMA_UNMAP Reply: "the original DMA
 * entry"); with GET_DIRTY_BITMAP the bitmap header and `bitmapData` follow.
 */
export function writeDmaUnmapReply(w: MessageWriter, msgId: number, req: DmaUnmap, bitmapData?: Uint8Array): void {
  w.begin(msgId, Command.DMA_UNMAP, REPLY);
  w.u32(req.argsz).u32(req.flags).u64(req.address).u64(req.size);
  if (req.bitmap) {
    w.u64(req.bitmap.pgsize).u64(BigInt(bitmapData?.length ?? 0));
    if (bitmapData) w.bytes(bitmapData);
  }
  w.end();
}

export function decodeDmaUnmapReply(body: Uint8Array): DmaUnmapReply | WireError {
  if (body.length < DMA_UNMAP_SIZE) return lengthError(Command.DMA_UNMAP, "reply", DMA_UNMAP_SIZE, body.length, true);
  const out: DmaUnmapReply = { argsz: readU32(body, 0), flags: readU32(body, 4), address: readU64(body, 8), size: readU64(body, 16) };
  if (out.flags & DmaUnmapFlag.GET_DIRTY_BITMAP) {
    if (body.length < DMA_UNMAP_SIZE + BITMAP_HEADER_SIZE) return lengthError(Command.DMA_UNMAP, "reply with a dirty bitmap", DMA_UNMAP_SIZE + BITMAP_HEADER_SIZE, body.length, true);
    const size = readU64(body, 32);
    const dataLen = body.length - DMA_UNMAP_SIZE - BITMAP_HEADER_SIZE;
    if (size !== BigInt(dataLen)) return fieldError(Command.DMA_UNMAP, "bitmap.size", `bitmap size ${size} disagrees with the ${dataLen} bytes present`, dataLen, Number(size));
    out.bitmap = { pgsize: readU64(body, 24), size, data: body.subarray(DMA_UNMAP_SIZE + BITMAP_HEADER_SIZE) };
  } else if (body.length !== DMA_UNMAP_SIZE) {
    return lengthError(Command.DMA_UNMAP, "reply", DMA_UNMAP_SIZE, body.length);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_INFO (request and reply share the 16-byte layout)

export interface DeviceInfo {
  argsz: number;
  /** DeviceInfoFlag bits. */
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export function decodeDeviceInfo(body: Uint8Array): DeviceInfo | WireError {
  if (body.length !== DEVICE_INFO_SIZE) return lengthError(Command.DEVICE_GET_INFO, "payload", DEVICE_INFO_SIZE, body.length);
  return { argsz: readU32(body, 0), flags: readU32(body, 4), numRegions: readU32(body, 8), numIrqs: readU32(body, 12) };
}

export function writeDeviceInfoRequest(w: MessageWriter, msgId: number, argsz = DEVICE_INFO_SIZE): void {
  w.begin(msgId, Command.DEVICE_GET_INFO, REQUEST).u32(argsz).u32(0).u32(0).u32(0).end();
}

export function writeDeviceInfoReply(w: MessageWriter, msgId: number, info: Omit<DeviceInfo, "argsz">): void {
  w.begin(msgId, Command.DEVICE_GET_INFO, REPLY).u32(DEVICE_INFO_SIZE).u32(info.flags).u32(info.numRegions).u32(info.numIrqs).end();
}

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_REGION_INFO

export interface RegionInfoRequest {
  argsz: number;
  index: number;
}

export function decodeRegionInfoRequest(body: Uint8Array): RegionInfoRequest | WireError {
  if (body.length !== REGION_INFO_SIZE) return lengthError(Command.DEVICE_GET_REGION_INFO, "request", REGION_INFO_SIZE, body.length);
  return { argsz: readU32(body, 0), index: readU32(body, 8) };
}

export function writeRegionInfoRequest(w: MessageWriter, msgId: number, index: number, argsz = REGION_INFO_SIZE): void {
  w.begin(msgId, Command.DEVICE_GET_REGION_INFO, REQUEST).u32(argsz).u32(0).u32(index).u32(0).u64Parts(0, 0).u64Parts(0, 0).end();
}

export interface SparseMmapArea {
  offset: bigint;
  size: bigint;
}
export interface SparseMmapCap {
  id: typeof RegionCapId.SPARSE_MMAP;
  version: number;
  areas: SparseMmapArea[];
}
export interface RegionTypeCap {
  id: typeof RegionCapId.TYPE;
  version: number;
  type: number;
  subtype: number;
}
export interface UnknownRegionCap {
  id: number;
  version: number;
  /** Bytes after the 8-byte capability header up to the next capability (or the end). */
  data: Uint8Array;
}
export type RegionCap = SparseMmapCap | RegionTypeCap | UnknownRegionCap;

export interface RegionInfo {
  /** Payload size needed for the whole reply (struct + capabilities). */
  argsz: number;
  /** RegionInfoFlag bits. */
  flags: number;
  index: number;
  capOffset: number;
  size: bigint;
  /** Offset to pass to mmap() of the region fd. */
  offset: bigint;
  /** Capabilities present in this reply (empty when the reply was cut to the client's argsz). */
  caps: RegionCap[];
}

function capSize(cap: RegionCap): number {
  if (cap.id === RegionCapId.SPARSE_MMAP && "areas" in cap) return CAP_HEADER_SIZE + SPARSE_MMAP_FIXED_SIZE + cap.areas.length * SPARSE_MMAP_AREA_SIZE;
  if (cap.id === RegionCapId.TYPE && "subtype" in cap) return CAP_HEADER_SIZE + 8;
  return CAP_HEADER_SIZE + (cap as UnknownRegionCap).data.length;
}

/** Payload bytes a full region-info reply with these capabilities takes. */
export function regionInfoReplySize(caps: readonly RegionCap[]): number {
  let n = REGION_INFO_SIZE;
  for (const c of caps) n += capSize(c);
  return n;
}

/**
 * Writes a region-info reply. When `requestArgsz` is smaller than the full reply, only the
 * 32-byte struct is sent, with argsz telling the client how much to ask for (VFIO's convention);
 * the function returns whether the full reply (capabilities included) was written.
 */
export function writeRegionInfoReply(
  w: MessageWriter,
  msgId: number,
  info: { flags: number; index: number; size: bigint; offset: bigint; caps: readonly RegionCap[] },
  requestArgsz: number,
): boolean {
  const needed = regionInfoReplySize(info.caps);
  const full = requestArgsz >= needed;
  // CAPS only when the capabilities are in this reply, as libvfio-user does. The kernel keeps
  // CAPS with cap_offset 0 in a cut reply, but QEMU 11.1's vfio-user client rejects any CAPS
  // reply whose cap_offset is below the struct (hw/vfio-user/device.c
  // vfio_user_device_io_get_region_info): it could not realize a device with a mappable BAR.
  // argsz alone tells the client how much to ask for.
  const hasCaps = full && info.caps.length > 0;
  const flags = hasCaps ? info.flags | RegionInfoFlag.CAPS : info.flags & ~RegionInfoFlag.CAPS;
  w.begin(msgId, Command.DEVICE_GET_REGION_INFO, REPLY);
  w.u32(needed).u32(flags).u32(info.index).u32(hasCaps ? REGION_INFO_SIZE : 0).u64(info.size).u64(info.offset);
  if (full) {
    let at = REGION_INFO_SIZE;
    info.caps.forEach((cap, i) => {
      const size = capSize(cap);
      const next = i + 1 < info.caps.length ? at + size : 0;
      w.u16(cap.id).u16(cap.version).u32(next);
      if (cap.id === RegionCapId.SPARSE_MMAP && "areas" in cap) {
        w.u32(cap.areas.length).u32(0);
        for (const a of cap.areas) w.u64(a.offset).u64(a.size);
      } else if (cap.id === RegionCapId.TYPE && "subtype" in cap) {
        w.u32(cap.type).u32(cap.subtype);
      } else {
        w.bytes((cap as UnknownRegionCap).data);
      }
      at += size;
    });
  }
  w.end();
  return full;
}

export function decodeRegionInfoReply(body: Uint8Array): RegionInfo | WireError {
  const C = Command.DEVICE_GET_REGION_INFO;
  if (body.length < REGION_INFO_SIZE) return lengthError(C, "reply", REGION_INFO_SIZE, body.length, true);
  const info: RegionInfo = {
    argsz: readU32(body, 0),
    flags: readU32(body, 4),
    index: readU32(body, 8),
    capOffset: readU32(body, 12),
    size: readU64(body, 16),
    offset: readU64(body, 24),
    caps: [],
  };
  if (!(info.flags & RegionInfoFlag.CAPS) || info.capOffset === 0) return info;
  // Walk the chain; every offset is relative to the start of the struct and must move forward
  // (which also bounds the walk).
  let at = info.capOffset;
  let prev = REGION_INFO_SIZE - 1;
  while (at !== 0) {
    if (at <= prev || at + CAP_HEADER_SIZE > body.length) return fieldError(C, "cap_offset", `capability offset ${at} is outside the ${body.length}-byte reply or not increasing`, undefined, at);
    const id = body[at] | (body[at + 1] << 8);
    const version = body[at + 2] | (body[at + 3] << 8);
    const next = readU32(body, at + 4);
    const end = next === 0 ? body.length : next;
    if (next !== 0 && (next <= at || next > body.length)) return fieldError(C, "next", `capability at ${at} points to ${next}, outside the reply or backwards`, undefined, next);
    const data = body.subarray(at + CAP_HEADER_SIZE, end);
    if (id === RegionCapId.SPARSE_MMAP) {
      if (data.length < SPARSE_MMAP_FIXED_SIZE) return lengthError(C, "sparse-mmap capability", SPARSE_MMAP_FIXED_SIZE, data.length, true);
      const nr = readU32(data, 0);
      if (nr > (data.length - SPARSE_MMAP_FIXED_SIZE) / SPARSE_MMAP_AREA_SIZE) {
        return fieldError(C, "nr_areas", `sparse-mmap capability claims ${nr} areas but has room for ${Math.floor((data.length - SPARSE_MMAP_FIXED_SIZE) / SPARSE_MMAP_AREA_SIZE)}`, undefined, nr);
      }
      const areas: SparseMmapArea[] = [];
      for (let i = 0; i < nr; i++) {
        const p = SPARSE_MMAP_FIXED_SIZE + i * SPARSE_MMAP_AREA_SIZE;
        areas.push({ offset: readU64(data, p), size: readU64(data, p + 8) });
      }
      info.caps.push({ id: RegionCapId.SPARSE_MMAP, version, areas });
    } else if (id === RegionCapId.TYPE) {
      if (data.length < 8) return lengthError(C, "type capability", 8, data.length, true);
      info.caps.push({ id: RegionCapId.TYPE, version, type: readU32(data, 0), subtype: readU32(data, 4) });
    } else {
      info.caps.push({ id, version, data });
    }
    prev = at;
    at = next;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_REGION_IO_FDS

export interface RegionIoFdsRequest {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}

export function decodeRegionIoFdsRequest(body: Uint8Array): RegionIoFdsRequest | WireError {
  if (body.length !== REGION_IO_FDS_SIZE) return lengthError(Command.DEVICE_GET_REGION_IO_FDS, "request", REGION_IO_FDS_SIZE, body.length);
  return readIndexCountHead(body);
}

export function writeRegionIoFdsRequest(w: MessageWriter, msgId: number, index: number, argsz = REGION_IO_FDS_SIZE): void {
  writeIndexCountRequest(w, msgId, Command.DEVICE_GET_REGION_IO_FDS, index, argsz);
}

export interface SubRegionIoFd {
  offset: bigint;
  size: bigint;
  /** Index into the fds that travel with the reply. */
  fdIndex: number;
  /** IoFdType. */
  type: number;
  /** IoEventFdFlag bits (ioeventfd) or ioregionfd flags. */
  flags: number;
  /** Datamatch value (ioeventfd) or user_data (ioregionfd). */
  datamatch: bigint;
  /**
   * Only in the 48-byte entries libvfio-user sends (for every type; zero unless the type is
   * IOEVENTFD_SHADOW): the fd index and offset of the shadow memory.
   */
  shadowFdIndex?: number;
  shadowOffset?: bigint;
}

export interface RegionIoFdsReply {
  argsz: number;
  flags: number;
  index: number;
  count: number;
  subRegions: SubRegionIoFd[];
}

/** argsz of a full DEVICE_GET_REGION_IO_FDS reply with `count` sub-regions. */
export function regionIoFdsReplySize(count: number): number {
  return REGION_IO_FDS_SIZE + count * SUB_REGION_IO_FD_SHADOW_SIZE;
}

/** Full reply when `requestArgsz` allows it, else the 16-byte head with the needed argsz; returns whether it was full. */
export function writeRegionIoFdsReply(w: MessageWriter, msgId: number, index: number, subRegions: readonly SubRegionIoFd[], requestArgsz: number): boolean {
  // 48-byte entries (see SUB_REGION_IO_FD_SHADOW_SIZE), shadow fields zero unless given.
  const needed = regionIoFdsReplySize(subRegions.length);
  const full = requestArgsz >= needed;
  w.begin(msgId, Command.DEVICE_GET_REGION_IO_FDS, REPLY).u32(needed).u32(0).u32(index).u32(subRegions.length);
  if (full) {
    for (const s of subRegions) {
      w.u64(s.offset).u64(s.size).u32(s.fdIndex).u32(s.type).u32(s.flags).u32(s.shadowFdIndex ?? 0).u64(s.shadowOffset ?? 0n).u64(s.datamatch);
    }
  }
  w.end();
  return full;
}

export function decodeRegionIoFdsReply(body: Uint8Array): RegionIoFdsReply | WireError {
  const C = Command.DEVICE_GET_REGION_IO_FDS;
  if (body.length < REGION_IO_FDS_SIZE) return lengthError(C, "reply", REGION_IO_FDS_SIZE, body.length, true);
  const out: RegionIoFdsReply = { ...readIndexCountHead(body), subRegions: [] };
  const present = body.length - REGION_IO_FDS_SIZE;
  if (present === 0) return out; // head only: argsz says how much to ask for
  // The spec's entries are 40 bytes but it tells readers to take the stride from the payload:
  // libvfio-user sends 48-byte entries (shadow fd index at 28 where the spec has padding, shadow
  // offset at 32, datamatch moved to 40). Anything longer is read as that layout, extra skipped.
  const stride = out.count > 0 ? present / out.count : 0;
  if (!Number.isInteger(stride) || stride < SUB_REGION_IO_FD_SIZE) return lengthError(C, `reply with ${out.count} sub-regions`, REGION_IO_FDS_SIZE + out.count * SUB_REGION_IO_FD_SIZE, body.length);
  const shadowLayout = stride >= SUB_REGION_IO_FD_SHADOW_SIZE;
  for (let i = 0; i < out.count; i++) {
    const p = REGION_IO_FDS_SIZE + i * stride;
    const s: SubRegionIoFd = { offset: readU64(body, p), size: readU64(body, p + 8), fdIndex: readU32(body, p + 16), type: readU32(body, p + 20), flags: readU32(body, p + 24), datamatch: readU64(body, p + (shadowLayout ? 40 : 32)) };
    if (shadowLayout) {
      s.shadowFdIndex = readU32(body, p + 28);
      s.shadowOffset = readU64(body, p + 32);
    }
    out.subRegions.push(s);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_IRQ_INFO (request and reply share the layout)

export interface IrqInfo {
  argsz: number;
  /** IrqInfoFlag bits. */
  flags: number;
  index: number;
  count: number;
}

export function decodeIrqInfo(body: Uint8Array): IrqInfo | WireError {
  if (body.length !== IRQ_INFO_SIZE) return lengthError(Command.DEVICE_GET_IRQ_INFO, "payload", IRQ_INFO_SIZE, body.length);
  return readIndexCountHead(body);
}

export function writeIrqInfoRequest(w: MessageWriter, msgId: number, index: number, argsz = IRQ_INFO_SIZE): void {
  writeIndexCountRequest(w, msgId, Command.DEVICE_GET_IRQ_INFO, index, argsz);
}

export function writeIrqInfoReply(w: MessageWriter, msgId: number, info: Omit<IrqInfo, "argsz">): void {
  w.begin(msgId, Command.DEVICE_GET_IRQ_INFO, REPLY).u32(IRQ_INFO_SIZE).u32(info.flags).u32(info.index).u32(info.count).end();
}

// ---------------------------------------------------------------------------------------------
// DEVICE_SET_IRQS

export interface IrqSet {
  argsz: number;
  /** One IrqSetFlag DATA_* bit and one ACTION_* bit. */
  flags: number;
  index: number;
  start: number;
  count: number;
  /** `count` booleans (one byte each) with DATA_BOOL; empty otherwise. */
  data: Uint8Array;
}

export function decodeIrqSet(body: Uint8Array): IrqSet | WireError {
  const C = Command.DEVICE_SET_IRQS;
  if (body.length < IRQ_SET_SIZE) return lengthError(C, "request", IRQ_SET_SIZE, body.length, true);
  const flags = readU32(body, 4);
  const count = readU32(body, 16);
  const dataLen = body.length - IRQ_SET_SIZE;
  const expectedData = flags & IrqSetFlag.DATA_BOOL ? count : 0;
  if (dataLen !== expectedData) {
    return lengthError(C, flags & IrqSetFlag.DATA_BOOL ? `request with ${count} booleans` : "request without DATA_BOOL", IRQ_SET_SIZE + expectedData, body.length);
  }
  return { argsz: readU32(body, 0), flags, index: readU32(body, 8), start: readU32(body, 12), count, data: body.subarray(IRQ_SET_SIZE) };
}

export function writeIrqSetRequest(w: MessageWriter, msgId: number, s: { flags: number; index: number; start: number; count: number; data?: Uint8Array }): void {
  const data = s.data ?? new Uint8Array(0);
  w.begin(msgId, Command.DEVICE_SET_IRQS, REQUEST).u32(IRQ_SET_SIZE + data.length).u32(s.flags).u32(s.index).u32(s.start).u32(s.count).bytes(data).end();
}

// ---------------------------------------------------------------------------------------------
// REGION_READ / REGION_WRITE

export interface RegionAccess {
  /** Low and high u32 halves of the offset into the region. */
  offsetLo: number;
  offsetHi: number;
  region: number;
  count: number;
  /** Write data (requests) or read data (replies); empty otherwise. */
  data: Uint8Array;
}

/**
 * The fixed head of a REGION_READ / REGION_WRITE message, filled in place by
 * readRegionAccessHead(): the hot path's decoder (one reused object, nothing allocated).
 */
export interface RegionAccessHead {
  offsetLo: number;
  offsetHi: number;
  region: number;
  count: number;
}

export function newRegionAccessHead(): RegionAccessHead {
  return { offsetLo: 0, offsetHi: 0, region: 0, count: 0 };
}

/**
 * Checks a REGION_READ / REGION_WRITE body (the 16-byte head, then exactly `count` data bytes
 * when `withData`, else nothing) and fills `out`; the data, if any, is body[16..]. Returns null,
 * or the WireError when the body is malformed (then `out` is unspecified).
 */
export function readRegionAccessHead(command: number, what: string, body: Uint8Array, withData: boolean, out: RegionAccessHead): WireError | null {
  if (withData) {
    if (body.length < REGION_ACCESS_SIZE) return lengthError(command, what, REGION_ACCESS_SIZE, body.length, true);
    const count = readU32(body, 12);
    const dataLen = body.length - REGION_ACCESS_SIZE;
    if (dataLen !== count) return fieldError(command, "count", `${what} count ${count} but ${dataLen} data bytes`, dataLen, count);
  } else if (body.length !== REGION_ACCESS_SIZE) {
    return lengthError(command, what, REGION_ACCESS_SIZE, body.length);
  }
  out.offsetLo = readU32(body, 0);
  out.offsetHi = readU32(body, 4);
  out.region = readU32(body, 8);
  out.count = readU32(body, 12);
  return null;
}

/** The 16-byte head, then exactly `count` data bytes when `withData`, else nothing. */
function decodeRegionAccess(command: number, what: string, body: Uint8Array, withData: boolean): RegionAccess | WireError {
  const head = newRegionAccessHead();
  const err = readRegionAccessHead(command, what, body, withData, head);
  if (err !== null) return err;
  return { offsetLo: head.offsetLo, offsetHi: head.offsetHi, region: head.region, count: head.count, data: body.subarray(REGION_ACCESS_SIZE) };
}

export function decodeRegionReadRequest(body: Uint8Array): RegionAccess | WireError {
  return decodeRegionAccess(Command.REGION_READ, "request", body, false);
}

/** The payload after the 16-byte head must hold exactly `count` bytes. */
export function decodeRegionWriteRequest(body: Uint8Array): RegionAccess | WireError {
  return decodeRegionAccess(Command.REGION_WRITE, "request", body, true);
}

export function decodeRegionReadReply(body: Uint8Array): RegionAccess | WireError {
  return decodeRegionAccess(Command.REGION_READ, "reply", body, true);
}

export function decodeRegionWriteReply(body: Uint8Array): RegionAccess | WireError {
  return decodeRegionAccess(Command.REGION_WRITE, "reply", body, false);
}

export function writeRegionReadRequest(w: MessageWriter, msgId: number, offsetLo: number, offsetHi: number, region: number, count: number): void {
  w.begin(msgId, Command.REGION_READ, REQUEST).u64Parts(offsetLo, offsetHi).u32(region).u32(count).end();
}

export function writeRegionWriteRequest(w: MessageWriter, msgId: number, offsetLo: number, offsetHi: number, region: number, data: Uint8Array, noReply = false): void {
  w.begin(msgId, Command.REGION_WRITE, requestFlags(noReply)).u64Parts(offsetLo, offsetHi).u32(region).u32(data.length).bytes(data).end();
}

/**
 * Starts a REGION_READ reply and returns a view of its `count` data bytes for the caller to fill
 * in place; the message is finished when this returns. The view is valid until the next write.
 */
export function writeRegionReadReplyInPlace(w: MessageWriter, msgId: number, offsetLo: number, offsetHi: number, region: number, count: number): Uint8Array {
  w.begin(msgId, Command.REGION_READ, REPLY).u64Parts(offsetLo, offsetHi).u32(region).u32(count);
  const view = w.claim(count);
  w.end();
  return view;
}

export function writeRegionReadReply(w: MessageWriter, msgId: number, offsetLo: number, offsetHi: number, region: number, data: Uint8Array): void {
  w.begin(msgId, Command.REGION_READ, REPLY).u64Parts(offsetLo, offsetHi).u32(region).u32(data.length).bytes(data).end();
}

export function writeRegionWriteReply(w: MessageWriter, msgId: number, offsetLo: number, offsetHi: number, region: number, count: number): void {
  w.begin(msgId, Command.REGION_WRITE, REPLY).u64Parts(offsetLo, offsetHi).u32(region).u32(count).end();
}

// ---------------------------------------------------------------------------------------------
// REGION_WRITE_MULTI

export interface RegionWriteMulti {
  writes: RegionAccess[];
}

export function decodeRegionWriteMulti(body: Uint8Array): RegionWriteMulti | WireError {
  const C = Command.REGION_WRITE_MULTI;
  if (body.length < WRITE_MULTI_COUNT_SIZE) return lengthError(C, "request", WRITE_MULTI_COUNT_SIZE, body.length, true);
  const n = readCount64(body, 0);
  const room = (body.length - WRITE_MULTI_COUNT_SIZE) / WRITE_MULTI_ENTRY_SIZE;
  if (n < 0 || n !== room) return fieldError(C, "wr_cnt", `wr_cnt ${n < 0 ? "above 2^32" : n} disagrees with the ${body.length - WRITE_MULTI_COUNT_SIZE} bytes of entries`, room, n);
  const writes: RegionAccess[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const p = WRITE_MULTI_COUNT_SIZE + i * WRITE_MULTI_ENTRY_SIZE;
    const count = readU32(body, p + 12);
    if (count === 0 || count > WRITE_MULTI_MAX_DATA) return fieldError(C, "count", `entry ${i} count ${count} is not 1..${WRITE_MULTI_MAX_DATA}`, WRITE_MULTI_MAX_DATA, count);
    writes[i] = { offsetLo: readU32(body, p), offsetHi: readU32(body, p + 4), region: readU32(body, p + 8), count, data: body.subarray(p + 16, p + 16 + count) };
  }
  return { writes };
}

export function writeRegionWriteMultiRequest(w: MessageWriter, msgId: number, writes: readonly { offsetLo: number; offsetHi: number; region: number; data: Uint8Array }[], noReply = false): void {
  w.begin(msgId, Command.REGION_WRITE_MULTI, requestFlags(noReply)).u64Parts(writes.length, 0);
  for (const wr of writes) {
    if (wr.data.length === 0 || wr.data.length > WRITE_MULTI_MAX_DATA) {
      w.abandon();
      throw new RangeError(`REGION_WRITE_MULTI entries carry 1..${WRITE_MULTI_MAX_DATA} bytes, got ${wr.data.length}`);
    }
    w.u64Parts(wr.offsetLo, wr.offsetHi).u32(wr.region).u32(wr.data.length).bytes(wr.data).zeros(WRITE_MULTI_MAX_DATA - wr.data.length);
  }
  w.end();
}

export function writeRegionWriteMultiReply(w: MessageWriter, msgId: number, completed: number): void {
  w.begin(msgId, Command.REGION_WRITE_MULTI, REPLY).u64Parts(completed, 0).end();
}

export function decodeRegionWriteMultiReply(body: Uint8Array): { completed: number } | WireError {
  if (body.length !== WRITE_MULTI_COUNT_SIZE) return lengthError(Command.REGION_WRITE_MULTI, "reply", WRITE_MULTI_COUNT_SIZE, body.length);
  const n = readCount64(body, 0);
  if (n < 0) return fieldError(Command.REGION_WRITE_MULTI, "wr_cnt", "wr_cnt above 2^32");
  return { completed: n };
}

// ---------------------------------------------------------------------------------------------
// DMA_READ / DMA_WRITE (server -> client)

export interface DmaAccess {
  address: bigint;
  /** Bytes to transfer (a u64 on the wire; values above 2^32 are rejected). */
  count: number;
  /** DMA_WRITE request data or DMA_READ reply data; empty otherwise. */
  data: Uint8Array;
}

function decodeDmaHead(command: number, what: string, body: Uint8Array, withData: boolean): DmaAccess | WireError {
  if (body.length < DMA_ACCESS_SIZE) return lengthError(command, what, DMA_ACCESS_SIZE, body.length, true);
  const count = readCount64(body, 8);
  if (count < 0) return fieldError(command, "count", `${what} count is above 2^32`, undefined, undefined, Errno.E2BIG);
  const data = body.subarray(DMA_ACCESS_SIZE);
  if (withData) {
    if (data.length !== count) return fieldError(command, "count", `${what} count ${count} but ${data.length} data bytes`, data.length, count);
  } else if (data.length !== 0) {
    return lengthError(command, what, DMA_ACCESS_SIZE, body.length);
  }
  return { address: readU64(body, 0), count, data };
}

export function decodeDmaReadRequest(body: Uint8Array): DmaAccess | WireError {
  return decodeDmaHead(Command.DMA_READ, "request", body, false);
}
export function decodeDmaWriteRequest(body: Uint8Array): DmaAccess | WireError {
  return decodeDmaHead(Command.DMA_WRITE, "request", body, true);
}
export function decodeDmaReadReply(body: Uint8Array): DmaAccess | WireError {
  return decodeDmaHead(Command.DMA_READ, "reply", body, true);
}
/** What a DMA_WRITE reply says; both fields are absent in a header-only acknowledgement. */
export interface DmaWriteReply {
  address?: bigint;
  count?: number;
}

/**
 * DMA_WRITE reply: address u64 then count. Shapes accepted: count as a u64 (16 bytes), which
 * libvfio-user sends and checks, writeDmaWriteReply sends, and QEMU 11.1.3 sends on the wire
 * (a 32-byte message echoing the request's address and count; pinned by
 * test/qemu11/edu-dma-unshared.test.ts, although a comment of an early QEMU series suggested
 * the header alone); count as the 4 bytes of the spec's reply table (12 bytes); and a bare
 * header, which older clients sent.
 */
export function decodeDmaWriteReply(body: Uint8Array): DmaWriteReply | WireError {
  if (body.length === 0) return {};
  if (body.length === 12) return { address: readU64(body, 0), count: readU32(body, 8) };
  const r = decodeDmaHead(Command.DMA_WRITE, "reply", body, false);
  return r instanceof WireError ? r : { address: r.address, count: r.count };
}

export function writeDmaReadRequest(w: MessageWriter, msgId: number, address: bigint, count: number): void {
  w.begin(msgId, Command.DMA_READ, REQUEST).u64(address).u64Parts(count, 0).end();
}
export function writeDmaWriteRequest(w: MessageWriter, msgId: number, address: bigint, data: Uint8Array, noReply = false): void {
  w.begin(msgId, Command.DMA_WRITE, requestFlags(noReply)).u64(address).u64Parts(data.length, 0).bytes(data).end();
}
export function writeDmaReadReply(w: MessageWriter, msgId: number, address: bigint, data: Uint8Array): void {
  w.begin(msgId, Command.DMA_READ, REPLY).u64(address).u64Parts(data.length, 0).bytes(data).end();
}
export function writeDmaWriteReply(w: MessageWriter, msgId: number, address: bigint, count: number): void {
  w.begin(msgId, Command.DMA_WRITE, REPLY).u64(address).u64Parts(count, 0).end();
}

// ---------------------------------------------------------------------------------------------
// DEVICE_RESET

export function writeDeviceResetRequest(w: MessageWriter, msgId: number): void {
  w.begin(msgId, Command.DEVICE_RESET, REQUEST).end();
}

// ---------------------------------------------------------------------------------------------
// DEVICE_FEATURE

export interface DeviceFeatureMessage {
  argsz: number;
  /** Whole flags word: feature index (bits 0-15) | GET | SET | PROBE. */
  flags: number;
  /** flags & 0xffff. */
  feature: number;
  data: Uint8Array;
}

export function decodeDeviceFeature(body: Uint8Array): DeviceFeatureMessage | WireError {
  if (body.length < DEVICE_FEATURE_SIZE) return lengthError(Command.DEVICE_FEATURE, "payload", DEVICE_FEATURE_SIZE, body.length, true);
  const flags = readU32(body, 4);
  return { argsz: readU32(body, 0), flags, feature: flags & DeviceFeatureFlag.INDEX_MASK, data: body.subarray(DEVICE_FEATURE_SIZE) };
}

export function writeDeviceFeatureRequest(w: MessageWriter, msgId: number, flags: number, data: Uint8Array = new Uint8Array(0), argsz?: number): void {
  w.begin(msgId, Command.DEVICE_FEATURE, REQUEST).u32(argsz ?? DEVICE_FEATURE_SIZE + data.length).u32(flags).bytes(data).end();
}

/**
 * Reply: argsz, the request's flags, then the feature data. argsz defaults to 8 + data length
 * (a GET reply); SET and PROBE replies repeat the request's argsz.
 */
export function writeDeviceFeatureReply(w: MessageWriter, msgId: number, flags: number, data: Uint8Array = new Uint8Array(0), argsz = DEVICE_FEATURE_SIZE + data.length): void {
  w.begin(msgId, Command.DEVICE_FEATURE, REPLY).u32(argsz).u32(flags).bytes(data).end();
}

/** MIGRATION feature data: flags u64 (MigrationFlag). */
export function decodeMigrationFeature(data: Uint8Array): { flags: bigint } | WireError {
  if (data.length !== 8) return lengthError(Command.DEVICE_FEATURE, "MIGRATION data", 8, data.length);
  return { flags: readU64(data, 0) };
}
export function encodeMigrationFeature(flags: bigint): Uint8Array {
  const w = new MessageWriter(16);
  w.u64(flags);
  return w.take().slice();
}

/** MIG_DEVICE_STATE feature data: device_state u32, data_fd u32 (unused by vfio-user). */
export function decodeMigDeviceState(data: Uint8Array): { deviceState: number; dataFd: number } | WireError {
  if (data.length !== 8) return lengthError(Command.DEVICE_FEATURE, "MIG_DEVICE_STATE data", 8, data.length);
  return { deviceState: readU32(data, 0), dataFd: readU32(data, 4) | 0 };
}
export function encodeMigDeviceState(deviceState: number, dataFd = -1): Uint8Array {
  const w = new MessageWriter(16);
  w.u32(deviceState).u32(dataFd >>> 0);
  return w.take().slice();
}

export interface IovaRange {
  iova: bigint;
  length: bigint;
}

/** DMA_LOGGING_START data: page_size u64, num_ranges u32, reserved u32, ranges[] (iova, length). */
export function decodeDmaLoggingControl(data: Uint8Array): { pageSize: bigint; ranges: IovaRange[] } | WireError {
  const C = Command.DEVICE_FEATURE;
  if (data.length < 16) return lengthError(C, "DMA_LOGGING control data", 16, data.length, true);
  const n = readU32(data, 8);
  if (data.length !== 16 + n * 16) return fieldError(C, "num_ranges", `num_ranges ${n} disagrees with ${data.length - 16} bytes of ranges`, (data.length - 16) / 16, n);
  const ranges: IovaRange[] = [];
  for (let i = 0; i < n; i++) ranges.push({ iova: readU64(data, 16 + i * 16), length: readU64(data, 24 + i * 16) });
  return { pageSize: readU64(data, 0), ranges };
}
export function encodeDmaLoggingControl(pageSize: bigint, ranges: readonly IovaRange[]): Uint8Array {
  const w = new MessageWriter(16 + ranges.length * 16);
  w.u64(pageSize).u32(ranges.length).u32(0);
  for (const r of ranges) w.u64(r.iova).u64(r.length);
  return w.take().slice();
}

/** DMA_LOGGING_REPORT request data: iova, length, page_size (u64 each); the reply appends the bitmap. */
export function decodeDmaLoggingReport(data: Uint8Array): { iova: bigint; length: bigint; pageSize: bigint; bitmap: Uint8Array } | WireError {
  if (data.length < 24) return lengthError(Command.DEVICE_FEATURE, "DMA_LOGGING_REPORT data", 24, data.length, true);
  return { iova: readU64(data, 0), length: readU64(data, 8), pageSize: readU64(data, 16), bitmap: data.subarray(24) };
}
export function encodeDmaLoggingReport(iova: bigint, length: bigint, pageSize: bigint, bitmap?: Uint8Array): Uint8Array {
  const w = new MessageWriter(24 + (bitmap?.length ?? 0));
  w.u64(iova).u64(length).u64(pageSize);
  if (bitmap) w.bytes(bitmap);
  return w.take().slice();
}

// ---------------------------------------------------------------------------------------------
// MIG_DATA_READ / MIG_DATA_WRITE

export interface MigData {
  argsz: number;
  size: number;
  /** Data (MIG_DATA_WRITE request, MIG_DATA_READ reply); empty otherwise. */
  data: Uint8Array;
}

export function decodeMigDataReadRequest(body: Uint8Array): MigData | WireError {
  if (body.length !== MIG_DATA_SIZE) return lengthError(Command.MIG_DATA_READ, "request", MIG_DATA_SIZE, body.length);
  return { argsz: readU32(body, 0), size: readU32(body, 4), data: body.subarray(MIG_DATA_SIZE) };
}
/**
 * The reply's `size` is the amount of migration data; the payload may be longer: libvfio-user
 * pads it to the size that was asked (its client rejects any other length), so padding after
 * `size` bytes is accepted and dropped here.
 */
export function decodeMigDataReadReply(body: Uint8Array): MigData | WireError {
  if (body.length < MIG_DATA_SIZE) return lengthError(Command.MIG_DATA_READ, "reply", MIG_DATA_SIZE, body.length, true);
  const size = readU32(body, 4);
  const carried = body.length - MIG_DATA_SIZE;
  if (size > carried) return fieldError(Command.MIG_DATA_READ, "size", `reply size ${size} but ${carried} data bytes`, carried, size);
  return { argsz: readU32(body, 0), size, data: body.subarray(MIG_DATA_SIZE, MIG_DATA_SIZE + size) };
}
export function decodeMigDataWriteRequest(body: Uint8Array): MigData | WireError {
  return decodeMigWithData(Command.MIG_DATA_WRITE, "request", body);
}
function decodeMigWithData(command: number, what: string, body: Uint8Array): MigData | WireError {
  if (body.length < MIG_DATA_SIZE) return lengthError(command, what, MIG_DATA_SIZE, body.length, true);
  const size = readU32(body, 4);
  const data = body.subarray(MIG_DATA_SIZE);
  if (data.length !== size) return fieldError(command, "size", `${what} size ${size} but ${data.length} data bytes`, data.length, size);
  return { argsz: readU32(body, 0), size, data };
}

export function writeMigDataReadRequest(w: MessageWriter, msgId: number, size: number, argsz = MIG_DATA_SIZE + size): void {
  w.begin(msgId, Command.MIG_DATA_READ, REQUEST).u32(argsz).u32(size).end();
}
/**
 * `paddedTo` (at least data.length): the payload carries that many data bytes, zeros after the
 * real `size`, as libvfio-user's client expects a reply as long as its request asked.
 */
export function writeMigDataReadReply(w: MessageWriter, msgId: number, data: Uint8Array, paddedTo = data.length): void {
  const pad = Math.max(0, paddedTo - data.length);
  w.begin(msgId, Command.MIG_DATA_READ, REPLY).u32(MIG_DATA_SIZE + data.length + pad).u32(data.length).bytes(data);
  if (pad > 0) w.zeros(pad);
  w.end();
}
export function writeMigDataWriteRequest(w: MessageWriter, msgId: number, data: Uint8Array, argsz = MIG_DATA_SIZE + data.length): void {
  w.begin(msgId, Command.MIG_DATA_WRITE, REQUEST).u32(argsz).u32(data.length).bytes(data).end();
}
