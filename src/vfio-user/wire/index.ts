// vfio-user wire format: pure encode/decode, no sockets, no timers. Shared by the server
// (src/vfio-user/server) and the client (src/vfio-user/client).
//
// Layouts follow QEMU docs/interop/vfio-user.rst and libvfio-user include/vfio-user.h. Every
// integer is little-endian (the spec says host order; every host this runs on is little-endian).
//
// HOW TO USE IT
//
// Receiving — one MessageParser per connection:
//
//   const parser = new MessageParser({ maxMessageSize });   // e.g. maxMessageSizeFor(xferSize)
//   socket.onData((chunk, fds) => parser.parse(chunk, fds, (ev) => {
//     if (ev.kind === "error") { ... ev.error is a WireError; ev.fatal => close the connection;
//                                 otherwise reply to ev.msgId/ev.command with ev.error.errno }
//     else { ... ev is a Frame: msgId, command, flags, error, size, body, fds }
//   }));
//   socket.onEnd(() => { const err = parser.end(); /* WIRE_TRUNCATED if mid-message */ });
//
//   * `frame.body` is a view valid only inside the callback — copy it (`body.slice()`) to keep it.
//   * `frame.fds` now belong to you: close the ones you do not keep. The parser closes fds of
//     every message it rejects, and whatever it holds at end()/dispose().
//   * fds are attached to the message they arrived with (see parser.ts for the exact rule).
//   * Size limits: a size field < 16 is fatal (no resync possible); > maxMessageSize is skipped
//     without allocating and reported (errno EMSGSIZE) with the stream still in sync.
//   * Helpers: isReply(flags), isCommand(flags), wantsReply(flags), hasError(flags).
//
// Decoding a payload — one decoder per message, returning a typed value or a WireError (never
// throwing). Structural checks only: lengths, counts that must match the payload.
//
//   const req = decodeRegionWriteRequest(frame.body);
//   if (req instanceof WireError) writeErrorReply(w, frame.msgId, frame.command, req.errno);
//
//   VERSION            decodeVersion (version.ts; JSON capabilities, unknown ones ignored)
//   DMA_MAP            decodeDmaMap
//   DMA_UNMAP          decodeDmaUnmap / decodeDmaUnmapReply (dirty bitmap when flagged)
//   DEVICE_GET_INFO    decodeDeviceInfo (request and reply)
//   GET_REGION_INFO    decodeRegionInfoRequest / decodeRegionInfoReply (sparse-mmap, type caps)
//   GET_REGION_IO_FDS  decodeRegionIoFdsRequest / decodeRegionIoFdsReply
//   GET_IRQ_INFO       decodeIrqInfo (request and reply)
//   SET_IRQS           decodeIrqSet
//   REGION_READ        decodeRegionReadRequest / decodeRegionReadReply
//   REGION_WRITE       decodeRegionWriteRequest / decodeRegionWriteReply
//   REGION_WRITE_MULTI decodeRegionWriteMulti / decodeRegionWriteMultiReply
//   DMA_READ/WRITE     decodeDma{Read,Write}{Request,Reply}
//   DEVICE_FEATURE     decodeDeviceFeature, then decodeMigrationFeature, decodeMigDeviceState,
//                      decodeDmaLoggingControl, decodeDmaLoggingReport for the data part
//   MIG_DATA_READ      decodeMigDataReadRequest / decodeMigDataReadReply
//   MIG_DATA_WRITE     decodeMigDataWriteRequest
//
// Sending — one MessageWriter per connection, one write function per message:
//
//   const w = new MessageWriter();
//   writeRegionReadRequest(w, id, offsetLo, offsetHi, region, 4);
//   writeRegionWriteRequest(w, id2, lo, hi, region, bytes, /* noReply */ true);
//   socket.write(w.take());          // take() returns every message written since the last take
//
//   * take() returns a view of the writer's buffer: send or copy it before writing again.
//   * Region offsets travel as two u32 halves (hot path, no BigInt); joinU64/u64PartsToSafeNumber
//     convert. Other 64-bit fields are bigint.
//   * Replies that VFIO truncates to the requester's argsz (writeRegionInfoReply,
//     writeRegionIoFdsReply) return whether the full reply fitted; send fds only then.
//
// Errors: WireError (errors.ts) with a stable `code`, the `errno` to answer with, and fields.
// Numbers: constants.ts (Command, HeaderFlag, PciRegion, PciIrq, flag sets, Errno, sizes).

export * from "./constants.js";
export * from "./errors.js";
export * from "./writer.js";
export * from "./parser.js";
export * from "./version.js";
export * from "./messages.js";

import { HEADER_SIZE } from "./constants.js";

/**
 * Message size limit for a negotiated max_data_xfer_size: the largest data message (a region or
 * DMA access head plus `count` bytes, or a migration data chunk) with room for the fixed layouts,
 * and never below 64 KiB so control messages (SET_IRQS booleans for 2048 MSI-X vectors,
 * REGION_WRITE_MULTI batches, region capabilities) always fit.
 *
 * For libvfio-user's default 1 MiB transfer size its server limit is 1 MiB + 32 (header plus a
 * region/DMA access head); ours is 1 MiB + 80, the extra 48 bytes being the DEVICE_FEATURE dirty
 * page report's preamble, whose bitmap may also reach max_data_xfer_size. A size field above the
 * limit fails the stream (see parser.ts): the peer gets EMSGSIZE and the connection closes.
 */
export function maxMessageSizeFor(maxDataXferSize: number): number {
  return Math.max(HEADER_SIZE + 64 + maxDataXferSize, 64 * 1024);
}
