import { describe, expect, it } from "vitest";
import {
  Command,
  HeaderFlag,
  Errno,
  RegionCapId,
  RegionInfoFlag,
  IrqSetFlag,
  DmaUnmapFlag,
  DeviceFeature,
  DeviceFeatureFlag,
  MigrationState,
  MessageWriter,
  MessageParser,
  WireError,
  type ParseEvent,
  type Frame,
  decodeVersion,
  decodeDmaMap,
  decodeDmaUnmap,
  decodeDmaUnmapReply,
  decodeDeviceInfo,
  decodeRegionInfoRequest,
  decodeRegionInfoReply,
  decodeRegionIoFdsRequest,
  decodeRegionIoFdsReply,
  decodeIrqInfo,
  decodeIrqSet,
  decodeRegionReadRequest,
  decodeRegionReadReply,
  decodeRegionWriteRequest,
  decodeRegionWriteReply,
  decodeRegionWriteMulti,
  decodeRegionWriteMultiReply,
  decodeDmaReadRequest,
  decodeDmaReadReply,
  decodeDmaWriteRequest,
  decodeDmaWriteReply,
  decodeDeviceFeature,
  decodeMigrationFeature,
  decodeMigDeviceState,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeMigDataReadRequest,
  decodeMigDataReadReply,
  decodeMigDataWriteRequest,
  writeVersionRequest,
  writeVersionReply,
  writeErrorReply,
  writeEmptyReply,
  writeDmaMapRequest,
  writeDmaUnmapRequest,
  writeDmaUnmapReply,
  writeDeviceInfoRequest,
  writeDeviceInfoReply,
  writeRegionInfoRequest,
  writeRegionInfoReply,
  writeRegionIoFdsRequest,
  writeRegionIoFdsReply,
  writeIrqInfoRequest,
  writeIrqInfoReply,
  writeIrqSetRequest,
  writeRegionReadRequest,
  writeRegionReadReply,
  writeRegionReadReplyInPlace,
  writeRegionWriteRequest,
  writeRegionWriteReply,
  writeRegionWriteMultiRequest,
  writeRegionWriteMultiReply,
  writeDmaReadRequest,
  writeDmaReadReply,
  writeDmaWriteRequest,
  writeDmaWriteReply,
  writeDeviceResetRequest,
  writeDeviceFeatureRequest,
  writeDeviceFeatureReply,
  encodeMigDeviceState,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeMigrationFeature,
  writeMigDataReadRequest,
  writeMigDataReadReply,
  writeMigDataWriteRequest,
  joinU64,
  u64PartsToSafeNumber,
  maxMessageSizeFor,
} from "../../src/vfio-user/wire/index.js";
import { Bytes, message, concat, toHex, hex } from "./bytes.js";

const REQ = 0;
const REPLY = 1;
const NO_REPLY = 0x10;
const ERROR = 0x20;

interface Fixture {
  name: string;
  bytes: Uint8Array;
  write: (w: MessageWriter) => void;
  /** Decodes the frame body; compared with `decoded`. */
  decode?: (body: Uint8Array) => unknown;
  decoded?: unknown;
  header: { msgId: number; command: number; flags: number; error?: number };
}

const versionJson = '{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"pgsizes":4096,"migration":{"pgsize":4096,"max_bitmap_size":268435456}}}';

const fixtures: Fixture[] = [
  {
    name: "VERSION request with capabilities",
    header: { msgId: 1, command: 1, flags: REQ },
    bytes: message(1, 1, REQ, new Bytes().u16(0).u16(1).ascii(versionJson).u8(0)),
    write: (w) =>
      writeVersionRequest(w, 1, {
        major: 0,
        minor: 1,
        capabilities: { maxMsgFds: 8, maxDataXferSize: 1048576, pgsizes: 4096n, migration: { pgsize: 4096, maxBitmapSize: 268435456 } },
      }),
    decode: decodeVersion,
    decoded: {
      major: 0,
      minor: 1,
      json: versionJson,
      capabilities: { maxMsgFds: 8, maxDataXferSize: 1048576, pgsizes: 4096n, migration: { pgsize: 4096, maxBitmapSize: 268435456 } },
    },
  },
  {
    name: "VERSION reply without JSON",
    header: { msgId: 0xbeef, command: 1, flags: REPLY },
    bytes: hex("efbe 0100 14000000 01000000 00000000 0000 0100"),
    write: (w) => writeVersionReply(w, 0xbeef, { major: 0, minor: 1 }),
    decode: decodeVersion,
    decoded: { major: 0, minor: 1 },
  },
  {
    name: "error reply",
    header: { msgId: 7, command: 9, flags: REPLY | ERROR, error: 22 },
    bytes: hex("0700 0900 10000000 21000000 16000000"),
    write: (w) => writeErrorReply(w, 7, Command.REGION_READ, Errno.EINVAL),
  },
  {
    name: "DMA_MAP request",
    header: { msgId: 2, command: 2, flags: REQ },
    bytes: message(2, 2, REQ, new Bytes().u32(32).u32(3).u64(0x1000).u64(0x1_0000_0000n).u64(0x20_0000)),
    write: (w) => writeDmaMapRequest(w, 2, { flags: 3, offset: 0x1000n, address: 0x1_0000_0000n, size: 0x20_0000n }),
    decode: decodeDmaMap,
    decoded: { argsz: 32, flags: 3, offset: 0x1000n, address: 0x1_0000_0000n, size: 0x20_0000n },
  },
  {
    name: "DMA_MAP reply",
    header: { msgId: 2, command: 2, flags: REPLY },
    bytes: message(2, 2, REPLY),
    write: (w) => writeEmptyReply(w, 2, Command.DMA_MAP),
  },
  {
    name: "DMA_UNMAP request",
    header: { msgId: 3, command: 3, flags: REQ },
    bytes: message(3, 3, REQ, new Bytes().u32(24).u32(0).u64(0xffff_ffff_ffff_f000n).u64(0x1000)),
    write: (w) => writeDmaUnmapRequest(w, 3, { flags: 0, address: 0xffff_ffff_ffff_f000n, size: 0x1000n }),
    decode: decodeDmaUnmap,
    decoded: { argsz: 24, flags: 0, address: 0xffff_ffff_ffff_f000n, size: 0x1000n },
  },
  {
    // Spec, VFIO_USER_DMA_UNMAP Reply: the server answers with the original entry, argsz as sent.
    name: "DMA_UNMAP reply echoes the request's entry",
    header: { msgId: 3, command: 3, flags: REPLY },
    bytes: message(3, 3, REPLY, new Bytes().u32(64).u32(0).u64(0xffff_ffff_ffff_f000n).u64(0x1000)),
    write: (w) => writeDmaUnmapReply(w, 3, { argsz: 64, flags: 0, address: 0xffff_ffff_ffff_f000n, size: 0x1000n }),
    decode: decodeDmaUnmapReply,
    decoded: { argsz: 64, flags: 0, address: 0xffff_ffff_ffff_f000n, size: 0x1000n },
  },
  {
    name: "DMA_UNMAP request with dirty bitmap",
    header: { msgId: 4, command: 3, flags: REQ },
    bytes: message(4, 3, REQ, new Bytes().u32(24 + 16 + 8).u32(1).u64(0x10000).u64(0x40000).u64(4096).u64(8)),
    write: (w) => writeDmaUnmapRequest(w, 4, { flags: 0, address: 0x10000n, size: 0x40000n, bitmap: { pgsize: 4096n, size: 8n } }),
    decode: decodeDmaUnmap,
    decoded: { argsz: 48, flags: DmaUnmapFlag.GET_DIRTY_BITMAP, address: 0x10000n, size: 0x40000n, bitmap: { pgsize: 4096n, size: 8n } },
  },
  {
    name: "DMA_UNMAP reply with dirty bitmap",
    header: { msgId: 4, command: 3, flags: REPLY },
    bytes: message(4, 3, REPLY, new Bytes().u32(48).u32(1).u64(0x10000).u64(0x40000).u64(4096).u64(8).raw([0x05, 0, 0, 0, 0, 0, 0, 0x80])),
    write: (w) =>
      writeDmaUnmapReply(w, 4, { argsz: 48, flags: 1, address: 0x10000n, size: 0x40000n, bitmap: { pgsize: 4096n, size: 8n } }, Uint8Array.of(5, 0, 0, 0, 0, 0, 0, 0x80)),
    decode: decodeDmaUnmapReply,
    decoded: { argsz: 48, flags: 1, address: 0x10000n, size: 0x40000n, bitmap: { pgsize: 4096n, size: 8n, data: Uint8Array.of(5, 0, 0, 0, 0, 0, 0, 0x80) } },
  },
  {
    name: "DEVICE_GET_INFO request",
    header: { msgId: 5, command: 4, flags: REQ },
    bytes: message(5, 4, REQ, new Bytes().u32(16).zeros(12)),
    write: (w) => writeDeviceInfoRequest(w, 5),
    decode: decodeDeviceInfo,
    decoded: { argsz: 16, flags: 0, numRegions: 0, numIrqs: 0 },
  },
  {
    name: "DEVICE_GET_INFO reply",
    header: { msgId: 5, command: 4, flags: REPLY },
    bytes: message(5, 4, REPLY, new Bytes().u32(16).u32(3).u32(9).u32(5)),
    write: (w) => writeDeviceInfoReply(w, 5, { flags: 3, numRegions: 9, numIrqs: 5 }),
    decode: decodeDeviceInfo,
    decoded: { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 },
  },
  {
    name: "DEVICE_GET_REGION_INFO request",
    header: { msgId: 6, command: 5, flags: REQ },
    bytes: message(6, 5, REQ, new Bytes().u32(32).u32(0).u32(7).u32(0).u64(0).u64(0)),
    write: (w) => writeRegionInfoRequest(w, 6, 7),
    decode: decodeRegionInfoRequest,
    decoded: { argsz: 32, index: 7 },
  },
  {
    name: "DEVICE_GET_REGION_INFO reply with sparse mmap and type caps",
    header: { msgId: 6, command: 5, flags: REPLY },
    bytes: message(
      6,
      5,
      REPLY,
      new Bytes()
        .u32(32 + 8 + 8 + 32 + 8 + 8)
        .u32(0xf)
        .u32(2)
        .u32(32)
        .u64(0x4000)
        .u64(0x10_0000)
        // sparse mmap cap at 32: id 1, version 1, next 80
        .u16(1)
        .u16(1)
        .u32(80)
        .u32(2)
        .u32(0)
        .u64(0)
        .u64(0x1000)
        .u64(0x2000)
        .u64(0x2000)
        // type cap at 80: id 2, version 1, next 0
        .u16(2)
        .u16(1)
        .u32(0)
        .u32(0x8086)
        .u32(3),
    ),
    write: (w) =>
      writeRegionInfoReply(
        w,
        6,
        {
          flags: RegionInfoFlag.READ | RegionInfoFlag.WRITE | RegionInfoFlag.MMAP,
          index: 2,
          size: 0x4000n,
          offset: 0x10_0000n,
          caps: [
            { id: RegionCapId.SPARSE_MMAP, version: 1, areas: [{ offset: 0n, size: 0x1000n }, { offset: 0x2000n, size: 0x2000n }] },
            { id: RegionCapId.TYPE, version: 1, type: 0x8086, subtype: 3 },
          ],
        },
        4096,
      ),
    decode: decodeRegionInfoReply,
    decoded: {
      argsz: 96,
      flags: 0xf,
      index: 2,
      capOffset: 32,
      size: 0x4000n,
      offset: 0x10_0000n,
      caps: [
        { id: 1, version: 1, areas: [{ offset: 0n, size: 0x1000n }, { offset: 0x2000n, size: 0x2000n }] },
        { id: 2, version: 1, type: 0x8086, subtype: 3 },
      ],
    },
  },
  {
    // No CAPS flag: the capabilities are not in it (QEMU 11.1 refuses CAPS with cap_offset 0).
    name: "DEVICE_GET_REGION_INFO reply cut to a small argsz",
    header: { msgId: 8, command: 5, flags: REPLY },
    bytes: message(8, 5, REPLY, new Bytes().u32(32 + 8 + 8 + 16).u32(0x7).u32(2).u32(0).u64(0x4000).u64(0)),
    write: (w) =>
      writeRegionInfoReply(w, 8, { flags: 7, index: 2, size: 0x4000n, offset: 0n, caps: [{ id: RegionCapId.SPARSE_MMAP, version: 1, areas: [{ offset: 0n, size: 0x1000n }] }] }, 32),
    decode: decodeRegionInfoReply,
    decoded: { argsz: 64, flags: 0x7, index: 2, capOffset: 0, size: 0x4000n, offset: 0n, caps: [] },
  },
  {
    name: "DEVICE_GET_REGION_IO_FDS request",
    header: { msgId: 9, command: 6, flags: REQ },
    bytes: message(9, 6, REQ, new Bytes().u32(16).u32(0).u32(0).u32(0)),
    write: (w) => writeRegionIoFdsRequest(w, 9, 0),
    decode: decodeRegionIoFdsRequest,
    decoded: { argsz: 16, flags: 0, index: 0, count: 0 },
  },
  {
    name: "DEVICE_GET_REGION_IO_FDS reply",
    header: { msgId: 9, command: 6, flags: REPLY },
    bytes: message(9, 6, REPLY, new Bytes().u32(64).u32(0).u32(0).u32(1).u64(0x80).u64(4).u32(0).u32(0).u32(1).u32(0).u64(0).u64(0x1234)),
    write: (w) => writeRegionIoFdsReply(w, 9, 0, [{ offset: 0x80n, size: 4n, fdIndex: 0, type: 0, flags: 1, datamatch: 0x1234n }], 1024),
    decode: decodeRegionIoFdsReply,
    decoded: { argsz: 64, flags: 0, index: 0, count: 1, subRegions: [{ offset: 0x80n, size: 4n, fdIndex: 0, type: 0, flags: 1, datamatch: 0x1234n, shadowFdIndex: 0, shadowOffset: 0n }] },
  },
  {
    // Two ioeventfds of an I/O BAR as the throughput-style doorbell pair would be offered: the
    // first without datamatch, the second PIO + DATAMATCH; written out as hex so the layout is
    // checked against libvfio-user's vfio_user_sub_region_ioeventfd byte by byte (offset 0,
    // size 8, fd_index 16, type 20, flags 24, shadow_mem_fd_index 28, shadow_offset 32,
    // datamatch 40).
    name: "DEVICE_GET_REGION_IO_FDS reply, two sub-regions, one fd each",
    header: { msgId: 0x31, command: 6, flags: REPLY },
    bytes: hex(`
      3100 0600 80000000 01000000 00000000
      70000000 00000000 04000000 02000000
      0400000000000000 0400000000000000 00000000 00000000 00000000 00000000 0000000000000000 0000000000000000
      0800000000000000 0200000000000000 01000000 00000000 03000000 00000000 0000000000000000 efbe000000000000`),
    write: (w) =>
      writeRegionIoFdsReply(
        w,
        0x31,
        4,
        [
          { offset: 4n, size: 4n, fdIndex: 0, type: 0, flags: 0, datamatch: 0n },
          { offset: 8n, size: 2n, fdIndex: 1, type: 0, flags: 3, datamatch: 0xbeefn },
        ],
        0x70,
      ),
    decode: decodeRegionIoFdsReply,
    decoded: {
      argsz: 0x70,
      flags: 0,
      index: 4,
      count: 2,
      subRegions: [
        { offset: 4n, size: 4n, fdIndex: 0, type: 0, flags: 0, datamatch: 0n, shadowFdIndex: 0, shadowOffset: 0n },
        { offset: 8n, size: 2n, fdIndex: 1, type: 0, flags: 3, datamatch: 0xbeefn, shadowFdIndex: 0, shadowOffset: 0n },
      ],
    },
  },
  {
    // argsz 0x6f is one byte short of the full reply: only the head goes out, with the argsz
    // the client must ask for and the real count.
    name: "DEVICE_GET_REGION_IO_FDS reply cut to the head when argsz is too small",
    header: { msgId: 0x32, command: 6, flags: REPLY },
    bytes: message(0x32, 6, REPLY, new Bytes().u32(16 + 2 * 48).u32(0).u32(4).u32(2)),
    write: (w) =>
      writeRegionIoFdsReply(
        w,
        0x32,
        4,
        [
          { offset: 4n, size: 4n, fdIndex: 0, type: 0, flags: 0, datamatch: 0n },
          { offset: 8n, size: 2n, fdIndex: 1, type: 0, flags: 3, datamatch: 0xbeefn },
        ],
        0x6f,
      ),
    decode: decodeRegionIoFdsReply,
    decoded: { argsz: 0x70, flags: 0, index: 4, count: 2, subRegions: [] },
  },
  {
    name: "DEVICE_GET_REGION_IO_FDS reply with no sub-regions",
    header: { msgId: 0x33, command: 6, flags: REPLY },
    bytes: message(0x33, 6, REPLY, new Bytes().u32(16).u32(0).u32(7).u32(0)),
    write: (w) => writeRegionIoFdsReply(w, 0x33, 7, [], 16),
    decode: decodeRegionIoFdsReply,
    decoded: { argsz: 16, flags: 0, index: 7, count: 0, subRegions: [] },
  },
  {
    name: "DEVICE_GET_REGION_IO_FDS request with a large argsz",
    header: { msgId: 0x34, command: 6, flags: REQ },
    bytes: message(0x34, 6, REQ, new Bytes().u32(0x1000).u32(0).u32(2).u32(0)),
    write: (w) => writeRegionIoFdsRequest(w, 0x34, 2, 0x1000),
    decode: decodeRegionIoFdsRequest,
    decoded: { argsz: 0x1000, flags: 0, index: 2, count: 0 },
  },
  {
    name: "DEVICE_GET_IRQ_INFO request",
    header: { msgId: 10, command: 7, flags: REQ },
    bytes: message(10, 7, REQ, new Bytes().u32(16).u32(0).u32(2).u32(0)),
    write: (w) => writeIrqInfoRequest(w, 10, 2),
    decode: decodeIrqInfo,
    decoded: { argsz: 16, flags: 0, index: 2, count: 0 },
  },
  {
    name: "DEVICE_GET_IRQ_INFO reply",
    header: { msgId: 10, command: 7, flags: REPLY },
    bytes: message(10, 7, REPLY, new Bytes().u32(16).u32(9).u32(2).u32(32)),
    write: (w) => writeIrqInfoReply(w, 10, { flags: 9, index: 2, count: 32 }),
    decode: decodeIrqInfo,
    decoded: { argsz: 16, flags: 9, index: 2, count: 32 },
  },
  {
    name: "DEVICE_SET_IRQS request with booleans",
    header: { msgId: 11, command: 8, flags: REQ },
    bytes: message(11, 8, REQ, new Bytes().u32(23).u32(IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER).u32(2).u32(4).u32(3).raw([1, 0, 1])),
    write: (w) => writeIrqSetRequest(w, 11, { flags: IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, index: 2, start: 4, count: 3, data: Uint8Array.of(1, 0, 1) }),
    decode: decodeIrqSet,
    decoded: { argsz: 23, flags: 0x22, index: 2, start: 4, count: 3, data: Uint8Array.of(1, 0, 1) },
  },
  {
    name: "REGION_READ request",
    header: { msgId: 12, command: 9, flags: REQ },
    bytes: hex("0c00 0900 20000000 00000000 00000000  0400000000000000 00000000 04000000"),
    write: (w) => writeRegionReadRequest(w, 12, 4, 0, 0, 4),
    decode: decodeRegionReadRequest,
    decoded: { offsetLo: 4, offsetHi: 0, region: 0, count: 4, data: new Uint8Array(0) },
  },
  {
    name: "REGION_READ reply",
    header: { msgId: 12, command: 9, flags: REPLY },
    bytes: hex("0c00 0900 24000000 01000000 00000000  0400000000000000 00000000 04000000 ed000001"),
    write: (w) => writeRegionReadReply(w, 12, 4, 0, 0, Uint8Array.of(0xed, 0, 0, 1)),
    decode: decodeRegionReadReply,
    decoded: { offsetLo: 4, offsetHi: 0, region: 0, count: 4, data: Uint8Array.of(0xed, 0, 0, 1) },
  },
  {
    name: "REGION_WRITE posted request (64-bit offset)",
    header: { msgId: 13, command: 10, flags: NO_REPLY },
    bytes: message(13, 10, NO_REPLY, new Bytes().u64(0x1_0000_0010n).u32(4).u32(2).raw([0xaa, 0xbb])),
    write: (w) => writeRegionWriteRequest(w, 13, 0x10, 1, 4, Uint8Array.of(0xaa, 0xbb), true),
    decode: decodeRegionWriteRequest,
    decoded: { offsetLo: 0x10, offsetHi: 1, region: 4, count: 2, data: Uint8Array.of(0xaa, 0xbb) },
  },
  {
    name: "REGION_WRITE reply",
    header: { msgId: 13, command: 10, flags: REPLY },
    bytes: message(13, 10, REPLY, new Bytes().u64(0x10).u32(4).u32(2)),
    write: (w) => writeRegionWriteReply(w, 13, 0x10, 0, 4, 2),
    decode: decodeRegionWriteReply,
    decoded: { offsetLo: 0x10, offsetHi: 0, region: 4, count: 2, data: new Uint8Array(0) },
  },
  {
    name: "REGION_WRITE_MULTI request",
    header: { msgId: 14, command: 15, flags: REQ },
    bytes: message(
      14,
      15,
      REQ,
      new Bytes().u64(2).u64(0x8).u32(0).u32(4).raw([1, 2, 3, 4, 0, 0, 0, 0]).u64(0x20).u32(1).u32(8).raw([1, 2, 3, 4, 5, 6, 7, 8]),
    ),
    write: (w) =>
      writeRegionWriteMultiRequest(w, 14, [
        { offsetLo: 8, offsetHi: 0, region: 0, data: Uint8Array.of(1, 2, 3, 4) },
        { offsetLo: 0x20, offsetHi: 0, region: 1, data: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8) },
      ]),
    decode: decodeRegionWriteMulti,
    decoded: {
      writes: [
        { offsetLo: 8, offsetHi: 0, region: 0, count: 4, data: Uint8Array.of(1, 2, 3, 4) },
        { offsetLo: 0x20, offsetHi: 0, region: 1, count: 8, data: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8) },
      ],
    },
  },
  {
    name: "REGION_WRITE_MULTI reply",
    header: { msgId: 14, command: 15, flags: REPLY },
    bytes: message(14, 15, REPLY, new Bytes().u64(2)),
    write: (w) => writeRegionWriteMultiReply(w, 14, 2),
    decode: decodeRegionWriteMultiReply,
    decoded: { completed: 2 },
  },
  {
    name: "DMA_READ request (server to client)",
    header: { msgId: 15, command: 11, flags: REQ },
    bytes: message(15, 11, REQ, new Bytes().u64(0xdead_0000n).u64(16)),
    write: (w) => writeDmaReadRequest(w, 15, 0xdead_0000n, 16),
    decode: decodeDmaReadRequest,
    decoded: { address: 0xdead_0000n, count: 16, data: new Uint8Array(0) },
  },
  {
    name: "DMA_READ reply",
    header: { msgId: 15, command: 11, flags: REPLY },
    bytes: message(15, 11, REPLY, new Bytes().u64(0xdead_0000n).u64(2).raw([9, 8])),
    write: (w) => writeDmaReadReply(w, 15, 0xdead_0000n, Uint8Array.of(9, 8)),
    decode: decodeDmaReadReply,
    decoded: { address: 0xdead_0000n, count: 2, data: Uint8Array.of(9, 8) },
  },
  {
    name: "DMA_WRITE request",
    header: { msgId: 16, command: 12, flags: REQ },
    bytes: message(16, 12, REQ, new Bytes().u64(0x2000).u64(3).raw([1, 2, 3])),
    write: (w) => writeDmaWriteRequest(w, 16, 0x2000n, Uint8Array.of(1, 2, 3)),
    decode: decodeDmaWriteRequest,
    decoded: { address: 0x2000n, count: 3, data: Uint8Array.of(1, 2, 3) },
  },
  {
    name: "DMA_WRITE reply",
    header: { msgId: 16, command: 12, flags: REPLY },
    bytes: message(16, 12, REPLY, new Bytes().u64(0x2000).u64(3)),
    write: (w) => writeDmaWriteReply(w, 16, 0x2000n, 3),
    decode: decodeDmaWriteReply,
    decoded: { address: 0x2000n, count: 3 },
  },
  {
    name: "DEVICE_RESET request",
    header: { msgId: 17, command: 13, flags: REQ },
    bytes: hex("1100 0d00 10000000 00000000 00000000"),
    write: (w) => writeDeviceResetRequest(w, 17),
  },
  {
    name: "DEVICE_FEATURE MIG_DEVICE_STATE set",
    header: { msgId: 18, command: 16, flags: REQ },
    bytes: message(18, 16, REQ, new Bytes().u32(16).u32(DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE).u32(MigrationState.STOP_COPY).u32(0xffff_ffff)),
    write: (w) => writeDeviceFeatureRequest(w, 18, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(MigrationState.STOP_COPY)),
    decode: (b) => {
      const f = decodeDeviceFeature(b);
      if (f instanceof WireError) return f;
      return { ...f, data: undefined, state: decodeMigDeviceState(f.data) };
    },
    decoded: { argsz: 16, flags: 0x20002, feature: 2, data: undefined, state: { deviceState: 3, dataFd: -1 } },
  },
  {
    name: "DEVICE_FEATURE MIGRATION get reply",
    header: { msgId: 19, command: 16, flags: REPLY },
    bytes: message(19, 16, REPLY, new Bytes().u32(16).u32(DeviceFeatureFlag.GET | DeviceFeature.MIGRATION).u64(5)),
    write: (w) => writeDeviceFeatureReply(w, 19, DeviceFeatureFlag.GET | DeviceFeature.MIGRATION, encodeMigrationFeature(5n)),
    decode: (b) => {
      const f = decodeDeviceFeature(b);
      if (f instanceof WireError) return f;
      return decodeMigrationFeature(f.data);
    },
    decoded: { flags: 5n },
  },
  {
    name: "DEVICE_FEATURE DMA_LOGGING_START",
    header: { msgId: 20, command: 16, flags: REQ },
    bytes: message(20, 16, REQ, new Bytes().u32(8 + 32).u32(DeviceFeatureFlag.SET | 6).u64(4096).u32(1).u32(0).u64(0x10000).u64(0x40000)),
    write: (w) => writeDeviceFeatureRequest(w, 20, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_START, encodeDmaLoggingControl(4096n, [{ iova: 0x10000n, length: 0x40000n }])),
    decode: (b) => {
      const f = decodeDeviceFeature(b);
      if (f instanceof WireError) return f;
      return decodeDmaLoggingControl(f.data);
    },
    decoded: { pageSize: 4096n, ranges: [{ iova: 0x10000n, length: 0x40000n }] },
  },
  {
    name: "DEVICE_FEATURE DMA_LOGGING_REPORT reply",
    header: { msgId: 21, command: 16, flags: REPLY },
    bytes: message(21, 16, REPLY, new Bytes().u32(8 + 24 + 8).u32(DeviceFeatureFlag.GET | 8).u64(0x10000).u64(0x40000).u64(4096).u64(0x8001)),
    write: (w) => writeDeviceFeatureReply(w, 21, DeviceFeatureFlag.GET | DeviceFeature.DMA_LOGGING_REPORT, encodeDmaLoggingReport(0x10000n, 0x40000n, 4096n, Uint8Array.of(1, 0x80, 0, 0, 0, 0, 0, 0))),
    decode: (b) => {
      const f = decodeDeviceFeature(b);
      if (f instanceof WireError) return f;
      return decodeDmaLoggingReport(f.data);
    },
    decoded: { iova: 0x10000n, length: 0x40000n, pageSize: 4096n, bitmap: Uint8Array.of(1, 0x80, 0, 0, 0, 0, 0, 0) },
  },
  {
    name: "MIG_DATA_READ request",
    header: { msgId: 22, command: 17, flags: REQ },
    bytes: message(22, 17, REQ, new Bytes().u32(8 + 64).u32(64)),
    write: (w) => writeMigDataReadRequest(w, 22, 64),
    decode: decodeMigDataReadRequest,
    decoded: { argsz: 72, size: 64, data: new Uint8Array(0) },
  },
  {
    name: "MIG_DATA_READ reply",
    header: { msgId: 22, command: 17, flags: REPLY },
    bytes: message(22, 17, REPLY, new Bytes().u32(11).u32(3).raw([7, 7, 7])),
    write: (w) => writeMigDataReadReply(w, 22, Uint8Array.of(7, 7, 7)),
    decode: decodeMigDataReadReply,
    decoded: { argsz: 11, size: 3, data: Uint8Array.of(7, 7, 7) },
  },
  {
    // libvfio-user's shape: padded to the 8 bytes asked, the real amount in size.
    name: "MIG_DATA_READ reply, padded to the asked size",
    header: { msgId: 22, command: 17, flags: REPLY },
    bytes: message(22, 17, REPLY, new Bytes().u32(16).u32(3).raw([7, 7, 7]).zeros(5)),
    write: (w) => writeMigDataReadReply(w, 22, Uint8Array.of(7, 7, 7), 8),
    decode: decodeMigDataReadReply,
    decoded: { argsz: 16, size: 3, data: Uint8Array.of(7, 7, 7) },
  },
  {
    name: "MIG_DATA_WRITE request",
    header: { msgId: 23, command: 18, flags: REQ },
    bytes: message(23, 18, REQ, new Bytes().u32(10).u32(2).raw([5, 6])),
    write: (w) => writeMigDataWriteRequest(w, 23, Uint8Array.of(5, 6)),
    decode: decodeMigDataWriteRequest,
    decoded: { argsz: 10, size: 2, data: Uint8Array.of(5, 6) },
  },
];

/** Feeds `parts` to a fresh parser and collects events (frame bodies copied). */
function feed(parts: { bytes: Uint8Array; fds?: number[] }[], maxMessageSize = 1 << 20, closed: number[] = []) {
  const parser = new MessageParser({ maxMessageSize, closeFd: (fd) => closed.push(fd) });
  const events: ParseEvent[] = [];
  for (const p of parts) parser.parse(p.bytes, p.fds ?? [], (ev) => events.push(ev.kind === "frame" ? { ...ev, body: ev.body.slice() } : ev));
  return { parser, events, closed };
}

function splits(bytes: Uint8Array, at: number): { bytes: Uint8Array }[] {
  return [{ bytes: bytes.subarray(0, at) }, { bytes: bytes.subarray(at) }];
}

describe("serializers match independently built bytes", () => {
  for (const f of fixtures) {
    it(f.name, () => {
      const w = new MessageWriter(16); // tiny start: exercises growth
      f.write(w);
      expect(toHex(w.take())).toBe(toHex(f.bytes));
    });
  }
});

describe("parser + decoders on every fixture, split at every offset", () => {
  for (const f of fixtures) {
    it(f.name, () => {
      for (let at = 0; at <= f.bytes.length; at++) {
        const { events, parser } = feed(splits(f.bytes, at));
        expect(events.length, `split at ${at}`).toBe(1);
        const fr = events[0] as Frame;
        expect(fr.kind).toBe("frame");
        expect(fr.msgId).toBe(f.header.msgId);
        expect(fr.command).toBe(f.header.command);
        expect(fr.flags).toBe(f.header.flags);
        expect(fr.error).toBe(f.header.error ?? 0);
        expect(fr.size).toBe(f.bytes.length);
        if (f.decode) expect(f.decode(fr.body), `split at ${at}`).toEqual(f.decoded);
        expect(parser.hasPartial).toBe(false);
        expect(parser.end()).toBeUndefined();
      }
    });
  }

  it("a stream of every fixture fed one byte at a time, and in three uneven pieces", () => {
    const stream = concat(...fixtures.map((f) => f.bytes));
    const oneByOne = feed(Array.from(stream, (b) => ({ bytes: Uint8Array.of(b) })));
    expect(oneByOne.events.map((e) => (e as Frame).msgId)).toEqual(fixtures.map((f) => f.header.msgId));
    for (const [a, b] of [
      [1, 17],
      [15, 400],
      [100, stream.length - 3],
    ]) {
      const pieces = feed([{ bytes: stream.subarray(0, a) }, { bytes: stream.subarray(a, b) }, { bytes: stream.subarray(b) }]);
      expect(pieces.events.length).toBe(fixtures.length);
      pieces.events.forEach((e, i) => {
        const f = fixtures[i];
        if (f.decode) expect(f.decode((e as Frame).body)).toEqual(f.decoded);
      });
    }
  });
});

describe("fd attachment", () => {
  const a = message(1, Command.REGION_READ, REQ, new Bytes().u64(0).u32(0).u32(4));
  const b = message(2, Command.DMA_MAP, REQ, new Bytes().u32(32).u32(3).u64(0).u64(0x1000).u64(0x1000));
  const stream = concat(a, b);

  it("fds arriving with a chunk go to the last message that begins in it, at every split", () => {
    // Model the kernel: a recvmsg may return earlier bytes, then stops after the buffer with fds.
    for (let cut = a.length + 1; cut <= stream.length; cut++) {
      // chunk1 = a + start of b, with the fds; chunk2 = rest of b
      const { events, closed } = feed([{ bytes: stream.subarray(0, cut), fds: [40] }, { bytes: stream.subarray(cut) }]);
      expect((events[0] as Frame).fds).toEqual([]);
      expect((events[1] as Frame).fds).toEqual([40]);
      expect(closed).toEqual([]);
    }
    for (let cut = 1; cut <= a.length; cut++) {
      // chunk1 = part of a; chunk2 = rest of a + all of b, with the fds
      const { events } = feed([{ bytes: stream.subarray(0, cut) }, { bytes: stream.subarray(cut), fds: [41, 42] }]);
      expect((events[0] as Frame).fds).toEqual([]);
      expect((events[1] as Frame).fds).toEqual([41, 42]);
    }
  });

  it("queued messages before the fd-carrying one keep no fds (a, a, b in one chunk)", () => {
    const three = concat(a, a, b);
    for (let cut = 2 * a.length + 1; cut <= three.length; cut++) {
      const { events } = feed([{ bytes: three.subarray(0, cut), fds: [43] }, { bytes: three.subarray(cut) }]);
      expect(events.map((e) => (e as Frame).fds)).toEqual([[], [], [43]]);
    }
    // two fd-carrying messages in two chunks
    const { events } = feed([{ bytes: concat(a, b), fds: [44] }, { bytes: concat(a, b), fds: [45] }]);
    expect(events.map((e) => (e as Frame).fds)).toEqual([[], [44], [], [45]]);
  });

  it("with reuseFrames: one frame object for every message, same fd attachment, nothing carried over", () => {
    const two = concat(a, b);
    for (let cut = a.length + 1; cut <= two.length; cut++) {
      const closed: number[] = [];
      const parser = new MessageParser({ maxMessageSize: 1 << 20, closeFd: (fd) => closed.push(fd), reuseFrames: true });
      const seen: Frame[] = [];
      const copies: { msgId: number; body: string; fds: number[] }[] = [];
      const onMessage = (ev: ParseEvent) => {
        if (ev.kind !== "frame") throw ev.error;
        seen.push(ev);
        copies.push({ msgId: ev.msgId, body: toHex(ev.body), fds: ev.fds.splice(0) });
        ev.fds.push(99); // a receiver scribbling on the array must not reach the next frame
      };
      // a + the start of b with b's fds, the rest of b, then a again in its own read.
      parser.parse(two.subarray(0, cut), [60], onMessage);
      parser.parse(two.subarray(cut), [], onMessage);
      parser.parse(a, [], onMessage);
      expect(copies.map((c) => c.msgId)).toEqual([1, 2, 1]);
      expect(copies.map((c) => c.fds)).toEqual([[], [60], []]);
      expect(copies.map((c) => c.body)).toEqual([toHex(a.subarray(16)), toHex(b.subarray(16)), toHex(a.subarray(16))]);
      expect(new Set(seen).size).toBe(1);
      expect(seen[0].fds).toEqual([]);
      expect(seen[0].body.length).toBe(0);
      expect(closed).toEqual([]);
    }
  });

  it("fds in a chunk that only continues a message belong to that message", () => {
    for (let cut = 1; cut < b.length; cut++) {
      const { events } = feed([{ bytes: b.subarray(0, cut) }, { bytes: b.subarray(cut), fds: [50] }]);
      expect((events[0] as Frame).fds).toEqual([50]);
    }
  });

  it("a callback that ends the parser (connection closing) stops delivery; held fds are closed", () => {
    for (const kind of ["frame", "error"] as const) {
      const closed: number[] = [];
      const parser = new MessageParser({ maxMessageSize: kind === "frame" ? 1024 : 40, closeFd: (fd) => closed.push(fd) });
      const first = kind === "frame" ? a : message(3, Command.REGION_WRITE, REQ, new Bytes().u64(0).u32(0).u32(64).zeros(64));
      const seen: string[] = [];
      parser.parse(concat(first, b, a), [80], (ev) => {
        seen.push(ev.kind);
        parser.dispose();
      });
      expect(seen, kind).toEqual([kind]);
      expect(closed, kind).toEqual([80]);
      // The parser starts over: a whole message in the next chunk is framed from its first byte.
      parser.parse(a, [], (ev) => seen.push(ev.kind === "frame" ? `frame ${ev.msgId}` : ev.kind));
      expect(seen, kind).toEqual([kind, "frame 1"]);
    }
  });

  it("end() inside a message closes its fds and reports the truncation", () => {
    const { parser, closed } = feed([{ bytes: b.subarray(0, 20), fds: [60, 61] }]);
    const err = parser.end();
    expect(err).toBeInstanceOf(WireError);
    expect(err!.code).toBe("WIRE_TRUNCATED");
    expect(closed.sort()).toEqual([60, 61]);
  });

  it("a header shorter than 16 bytes at end of stream is reported", () => {
    for (let n = 1; n < 16; n++) {
      const { parser } = feed([{ bytes: a.subarray(0, n) }]);
      const err = parser.end();
      expect(err?.code).toBe("WIRE_TRUNCATED");
      expect(err?.message).toContain(`after ${n} bytes`);
    }
  });
});

describe("framing errors", () => {
  const good = message(9, Command.REGION_READ, REQ, new Bytes().u64(0).u32(0).u32(4));

  it("a size above the limit is fatal wherever the stream is cut: one event with its header, its fds and all later input dropped", () => {
    const big = message(5, Command.REGION_WRITE, REQ, new Bytes().u64(0).u32(0).u32(200).zeros(200));
    const stream = concat(good, big, good);
    // The fds ride with a chunk that ends inside the big message (as the kernel delivers them).
    for (let cut = good.length + 1; cut <= stream.length; cut++) {
      const closed: number[] = [];
      const { events, parser } = feed([{ bytes: stream.subarray(0, cut), fds: [70] }, { bytes: stream.subarray(cut) }], 128, closed);
      expect(events.length, `cut ${cut}`).toBe(2);
      expect((events[0] as Frame).msgId).toBe(9);
      const e = events[1];
      expect(e.kind).toBe("error");
      if (e.kind !== "error") return;
      expect(e.fatal).toBe(true);
      expect(e.msgId).toBe(5);
      expect(e.command).toBe(Command.REGION_WRITE);
      expect(e.flags).toBe(REQ);
      expect(e.error.code).toBe("WIRE_MESSAGE_TOO_LARGE");
      expect(e.error.errno).toBe(Errno.EMSGSIZE);
      expect(parser.isFailed).toBe(true);
      expect(closed).toEqual([70]);
    }
  });

  it("a size field below 16 is fatal: later input and fds are dropped", () => {
    const bad = hex("0100 0900 08000000 00000000 00000000");
    for (let cut = 0; cut <= 16; cut++) {
      const closed: number[] = [];
      const { events, parser } = feed([{ bytes: concat(good, bad).subarray(0, good.length + cut), fds: [80] }, { bytes: concat(good, bad).subarray(good.length + cut) }], 1 << 20, closed);
      expect(events.filter((e) => e.kind === "error").length).toBe(1);
      expect((events[0] as Frame).msgId).toBe(9);
      const e = events[1];
      expect(e.kind === "error" && e.fatal && e.error.code === "WIRE_SIZE_BELOW_HEADER").toBe(true);
      expect(parser.isFailed).toBe(true);
      const after: ParseEvent[] = [];
      parser.parse(good, [81], (ev) => after.push(ev));
      expect(after).toEqual([]);
      expect(closed).toContain(81);
    }
  });

  it("size 0 and size 15 are both rejected", () => {
    for (const size of [0, 15]) {
      const b = new Bytes().u16(1).u16(1).u32(size).u32(0).u32(0).build();
      const { events } = feed([{ bytes: b }]);
      expect(events[0].kind === "error" && events[0].error.code).toBe("WIRE_SIZE_BELOW_HEADER");
    }
  });

  it("the limit can change between messages (after VERSION negotiation)", () => {
    const parser = new MessageParser({ maxMessageSize: 1 << 20, closeFd: () => {} });
    const events: ParseEvent[] = [];
    parser.parse(good, [], (e) => {
      events.push(e);
      parser.setMaxMessageSize(20);
    });
    parser.parse(good, [], (e) => events.push(e));
    expect(events[0].kind).toBe("frame");
    expect(events[1].kind).toBe("error");
  });
});

describe("structural decode errors carry errnos", () => {
  const cases: [string, () => unknown, string][] = [
    ["DMA_MAP too short", () => decodeDmaMap(new Uint8Array(31)), "WIRE_BAD_LENGTH"],
    ["DMA_MAP too long", () => decodeDmaMap(new Uint8Array(33)), "WIRE_BAD_LENGTH"],
    ["DMA_UNMAP bitmap flag without bitmap", () => decodeDmaUnmap(new Bytes().u32(24).u32(1).u64(0).u64(0).build()), "WIRE_BAD_LENGTH"],
    ["DEVICE_GET_INFO short", () => decodeDeviceInfo(new Uint8Array(12)), "WIRE_BAD_LENGTH"],
    ["REGION_READ with data", () => decodeRegionReadRequest(new Uint8Array(20)), "WIRE_BAD_LENGTH"],
    ["REGION_WRITE count above payload", () => decodeRegionWriteRequest(new Bytes().u64(0).u32(0).u32(4).raw([1, 2]).build()), "WIRE_BAD_FIELD"],
    ["REGION_WRITE count below payload", () => decodeRegionWriteRequest(new Bytes().u64(0).u32(0).u32(1).raw([1, 2]).build()), "WIRE_BAD_FIELD"],
    ["REGION_READ reply count mismatch", () => decodeRegionReadReply(new Bytes().u64(0).u32(0).u32(8).raw([1, 2, 3, 4]).build()), "WIRE_BAD_FIELD"],
    ["SET_IRQS bool count mismatch", () => decodeIrqSet(new Bytes().u32(22).u32(IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK).u32(0).u32(0).u32(3).raw([1, 1]).build()), "WIRE_BAD_LENGTH"],
    ["SET_IRQS trailing data without DATA_BOOL", () => decodeIrqSet(new Bytes().u32(21).u32(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK).u32(0).u32(0).u32(1).raw([1]).build()), "WIRE_BAD_LENGTH"],
    ["WRITE_MULTI count disagrees", () => decodeRegionWriteMulti(new Bytes().u64(2).zeros(24).build()), "WIRE_BAD_FIELD"],
    ["WRITE_MULTI entry count 9", () => decodeRegionWriteMulti(new Bytes().u64(1).u64(0).u32(0).u32(9).zeros(8).build()), "WIRE_BAD_FIELD"],
    ["DMA_READ count above 2^32", () => decodeDmaReadRequest(new Bytes().u64(0).u64(1n << 32n).build()), "WIRE_BAD_FIELD"],
    ["MIG_DATA_WRITE size mismatch", () => decodeMigDataWriteRequest(new Bytes().u32(12).u32(4).raw([1]).build()), "WIRE_BAD_FIELD"],
    ["region info caps pointing backwards", () => decodeRegionInfoReply(new Bytes().u32(48).u32(8).u32(0).u32(32).u64(0).u64(0).u16(1).u16(1).u32(32).u32(0).u32(0).build()), "WIRE_BAD_FIELD"],
    ["IO_FDS request with a trailing byte", () => decodeRegionIoFdsRequest(new Uint8Array(17)), "WIRE_BAD_LENGTH"],
    ["IO_FDS request too short", () => decodeRegionIoFdsRequest(new Uint8Array(12)), "WIRE_BAD_LENGTH"],
    ["IO_FDS reply shorter than its head", () => decodeRegionIoFdsReply(new Uint8Array(15)), "WIRE_BAD_LENGTH"],
    ["IO_FDS reply with fewer entry bytes than count needs", () => decodeRegionIoFdsReply(new Bytes().u32(96).u32(0).u32(0).u32(2).zeros(40).build()), "WIRE_BAD_LENGTH"],
    ["IO_FDS reply with entries not a whole stride", () => decodeRegionIoFdsReply(new Bytes().u32(97).u32(0).u32(0).u32(2).zeros(81).build()), "WIRE_BAD_LENGTH"],
    ["IO_FDS reply with entry bytes but count 0", () => decodeRegionIoFdsReply(new Bytes().u32(56).u32(0).u32(0).u32(0).zeros(40).build()), "WIRE_BAD_LENGTH"],
    ["region info sparse nr_areas too large", () => decodeRegionInfoReply(new Bytes().u32(48).u32(8).u32(0).u32(32).u64(0).u64(0).u16(1).u16(1).u32(0).u32(5).u32(0).build()), "WIRE_BAD_FIELD"],
  ];
  for (const [name, run, code] of cases) {
    it(name, () => {
      const r = run();
      expect(r).toBeInstanceOf(WireError);
      expect((r as WireError).code).toBe(code);
      expect((r as WireError).errno).toBeGreaterThan(0);
    });
  }
});

describe("reply shapes other implementations send", () => {
  it("IO_FDS reply in libvfio-user's 48-byte entries: shadow fields at 28/32, datamatch at 40", () => {
    // gpa offset, size, fd_index, type, flags, shadow_mem_fd_index, shadow_offset, datamatch
    const entry = (offset: number, type: number, shadowFd: number, shadowOffset: number, datamatch: number) =>
      new Bytes().u64(offset).u64(4).u32(0).u32(type).u32(1).u32(shadowFd).u64(shadowOffset).u64(datamatch).build();
    const body = new Bytes().u32(16 + 2 * 48).u32(0).u32(1).u32(2).raw(entry(0x10, 0, 0, 0, 5)).raw(entry(0x20, 2, 1, 0x3000, 6)).build();
    expect(decodeRegionIoFdsReply(body)).toEqual({
      argsz: 112,
      flags: 0,
      index: 1,
      count: 2,
      subRegions: [
        { offset: 0x10n, size: 4n, fdIndex: 0, type: 0, flags: 1, datamatch: 5n, shadowFdIndex: 0, shadowOffset: 0n },
        { offset: 0x20n, size: 4n, fdIndex: 0, type: 2, flags: 1, datamatch: 6n, shadowFdIndex: 1, shadowOffset: 0x3000n },
      ],
    });
  });

  it("IO_FDS reply in the spec's 40-byte entries (padding at 28, datamatch at 32) is read too", () => {
    const entry = (offset: number, datamatch: number) => new Bytes().u64(offset).u64(2).u32(1).u32(0).u32(3).u32(0).u64(datamatch).build();
    const body = new Bytes().u32(16 + 2 * 40).u32(0).u32(4).u32(2).raw(entry(0x8, 0xbeef)).raw(entry(0xc, 7)).build();
    expect(decodeRegionIoFdsReply(body)).toEqual({
      argsz: 96,
      flags: 0,
      index: 4,
      count: 2,
      subRegions: [
        { offset: 0x8n, size: 2n, fdIndex: 1, type: 0, flags: 3, datamatch: 0xbeefn },
        { offset: 0xcn, size: 2n, fdIndex: 1, type: 0, flags: 3, datamatch: 7n },
      ],
    });
  });

  it("DMA_WRITE reply: 16-byte (u64 count), 12-byte (the spec table's u32 count) and header-only (QEMU) are accepted", () => {
    expect(decodeDmaWriteReply(new Bytes().u64(0x2000).u64(3).build())).toEqual({ address: 0x2000n, count: 3 });
    expect(decodeDmaWriteReply(new Bytes().u64(0x2000).u32(3).build())).toEqual({ address: 0x2000n, count: 3 });
    expect(decodeDmaWriteReply(new Uint8Array(0))).toEqual({});
    expect(decodeDmaWriteReply(new Uint8Array(8))).toBeInstanceOf(WireError);
    expect(decodeDmaWriteReply(new Uint8Array(20))).toBeInstanceOf(WireError);
  });
});

describe("VERSION capabilities", () => {
  const ver = (json: string | null, nul = true) => {
    const b = new Bytes().u16(0).u16(1);
    if (json !== null) {
      b.raw(new TextEncoder().encode(json));
      if (nul) b.u8(0);
    }
    return decodeVersion(b.build());
  };

  it("unknown capabilities (and unknown top-level keys) are ignored", () => {
    expect(ver('{"capabilities":{"max_msg_fds":4,"shiny_new_thing":{"x":1}},"vendor":true}')).toMatchObject({ capabilities: { maxMsgFds: 4 } });
  });
  it("no JSON at all, or no capabilities object, means defaults", () => {
    expect(ver(null)).toEqual({ major: 0, minor: 1 });
    expect(ver("{}")).toMatchObject({ capabilities: {} });
  });
  it("JSON without its NUL terminator is refused (EINVAL)", () => {
    const r = ver('{"capabilities":{"max_data_xfer_size":4096}}', false);
    expect(r).toBeInstanceOf(WireError);
    expect(r).toMatchObject({ errno: Errno.EINVAL });
    expect((r as WireError).message).toMatch(/not NUL-terminated/);
  });
  it("twin_socket and write_multiple are typed", () => {
    expect(ver('{"capabilities":{"write_multiple":true,"twin_socket":{"supported":true}}}')).toMatchObject({ capabilities: { writeMultiple: true, twinSocket: { supported: true } } });
  });
  const malformed: [string, Uint8Array | string][] = [
    ["not JSON", "{capabilities:"],
    ["JSON array", "[1,2]"],
    ["capabilities not an object", '{"capabilities":3}'],
    ["max_msg_fds a string", '{"capabilities":{"max_msg_fds":"8"}}'],
    ["max_msg_fds negative", '{"capabilities":{"max_msg_fds":-1}}'],
    ["max_data_xfer_size fractional", '{"capabilities":{"max_data_xfer_size":1.5}}'],
    ["max_data_xfer_size zero", '{"capabilities":{"max_data_xfer_size":0}}'],
    ["pgsizes zero", '{"capabilities":{"pgsizes":0}}'],
    ["migration not an object", '{"capabilities":{"migration":true}}'],
    ["migration pgsize not a power of two", '{"capabilities":{"migration":{"pgsize":3000}}}'],
    ["write_multiple not boolean", '{"capabilities":{"write_multiple":1}}'],
  ];
  for (const [name, json] of malformed) {
    it(`rejects ${name} with EINVAL`, () => {
      const r = ver(json as string);
      expect(r).toBeInstanceOf(WireError);
      expect((r as WireError).code).toBe("WIRE_BAD_VERSION_JSON");
      expect((r as WireError).errno).toBe(Errno.EINVAL);
    });
  }
  it("rejects invalid UTF-8 and bytes after the NUL", () => {
    const badUtf8 = new Bytes().u16(0).u16(1).raw([0x7b, 0xff, 0x7d, 0]).build();
    expect((decodeVersion(badUtf8) as WireError).code).toBe("WIRE_BAD_VERSION_JSON");
    const trailing = new Bytes().u16(0).u16(1).ascii("{}").u8(0).ascii("x").build();
    expect((decodeVersion(trailing) as WireError).code).toBe("WIRE_BAD_VERSION_JSON");
  });
  it("a payload shorter than 4 bytes is a length error", () => {
    expect((decodeVersion(new Uint8Array(3)) as WireError).code).toBe("WIRE_BAD_LENGTH");
  });
});

describe("writer and helpers", () => {
  it("batches several messages into one take(), then starts empty", () => {
    const w = new MessageWriter();
    writeRegionReadRequest(w, 1, 0, 0, 0, 4);
    writeRegionReadRequest(w, 2, 4, 0, 0, 4);
    expect(w.take().length).toBe(64);
    expect(w.length).toBe(0);
  });
  it("abandonLast() drops the last message begun, finished or not, and only that one", () => {
    const kept = new MessageWriter();
    writeRegionReadRequest(kept, 1, 0, 0, 0, 4);
    const w = new MessageWriter();
    writeRegionReadRequest(w, 1, 0, 0, 0, 4);
    writeRegionReadReplyInPlace(w, 2, 8, 0, 1, 4).set([1, 2, 3, 4]);
    w.abandonLast();
    w.abandonLast(); // a second call must not eat the message before
    expect(toHex(w.take())).toBe(toHex(kept.take()));
    writeRegionReadRequest(w, 3, 0, 0, 0, 4);
    w.take();
    w.abandonLast(); // nothing begun since take(): nothing to drop
    writeRegionReadRequest(w, 4, 0, 0, 0, 4);
    expect(w.take().length).toBe(32);
  });
  it("in-place read replies equal copied ones", () => {
    const a = new MessageWriter();
    writeRegionReadReplyInPlace(a, 3, 8, 0, 1, 4).set([1, 2, 3, 4]);
    const b = new MessageWriter();
    writeRegionReadReply(b, 3, 8, 0, 1, Uint8Array.of(1, 2, 3, 4));
    expect(toHex(a.take())).toBe(toHex(b.take()));
  });
  it("u64 halves convert exactly", () => {
    expect(joinU64(0xffff_ffff, 0xffff_ffff)).toBe(0xffff_ffff_ffff_ffffn);
    expect(u64PartsToSafeNumber(5, 0x1f_ffff)).toBe(0x1f_ffff * 2 ** 32 + 5);
    expect(u64PartsToSafeNumber(0, 0x20_0000)).toBeUndefined();
  });
  it("rejects out-of-range u64 values instead of wrapping", () => {
    const w = new MessageWriter();
    expect(() => writeDmaMapRequest(w, 1, { flags: 0, offset: -1n, address: 0n, size: 1n })).toThrow(RangeError);
  });
  it("message limit leaves room for control messages", () => {
    expect(maxMessageSizeFor(1 << 20)).toBeGreaterThan((1 << 20) + 32);
    expect(maxMessageSizeFor(16)).toBeGreaterThanOrEqual(20 + 2048 + 16);
  });
  it("header flag constants match the spec bits", () => {
    expect(HeaderFlag.NO_REPLY).toBe(0x10);
    expect(HeaderFlag.ERROR).toBe(0x20);
  });
});
