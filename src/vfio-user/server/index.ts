// vfio-user server (device side): serve a PciFunction over the full protocol.
//
//   import { VfioUserServer } from "wasmdev";
//   const server = VfioUserServer.listen({ device: fn, socketPath: "./wasmdev.sock", log: console.log });
//   await server.close();
//
// Errno choices (error replies):
//   EINVAL  malformed payload, bad flags, region/IRQ index out of range, offset + count past the
//           region end (or past 2^64), write payload != count, zero-length access, unexpected or
//           surplus fds (closed), requests before VERSION, a second VERSION, a message typed
//           neither command nor reply
//   E2BIG   count above max_data_xfer_size (also MIG_DATA_*, dirty bitmaps above the limit)
//   EMSGSIZE a message larger than the negotiated maximum (skipped without allocating)
//   ENOSYS  unknown command numbers
//   EEXIST  DMA_MAP over an existing mapping (overlapping or identical)
//   ENOENT  DMA_UNMAP of a range that is not exactly one mapping
//   ENOSPC  DMA map table full
//   EBUSY   a second client while one is connected (then the connection is closed)
//   EOPNOTSUPP an unsupported DEVICE_FEATURE / action
//   EIO     the device model failed (a master abort on the bus, a thrown error)
// A reply that answers none of the server's DMA requests is dropped and logged, not answered.
// Posted (NO_REPLY) requests that fail are not lost: the next request that wants a reply is
// answered with that failure's errno instead of being performed, and the client may retry it.
export { VfioUserServer, type VfioUserServerOptions } from "./server.js";
export { Session as VfioUserSession, type SessionConfig as VfioUserSessionConfig } from "./session.js";
export { VfioUserServerError, type VfioUserServerErrorCode, type VfioUserServerErrorFields } from "./errors.js";
export { IrqTable, type IrqCounters } from "./irqs.js";
export { DirtyLog, trackDirtyPages } from "./dirty.js";
export { MigrationFsm, migrationStateName } from "./migration.js";
