// wasmdev transport: the host layer both protocols stand on.
//
//  - Connection: a UNIX stream socket that sends bytes with fds attached (SCM_RIGHTS) and hands
//    its framer every received byte together with the fds that came with them.
//    listen(path) -> Server ('connection' events), connect(path), adoptFd(fd).
//  - socketpair(), spawnWithFds(): start a peer process with one end of a socket.
//  - memfdCreate(), mmapFd() -> MappedRegion (zero-copy ArrayBuffer, bounds checked with fstat,
//    charged to a MapBudget; memfds sealed against shrinking; a SIGBUS guard turns a peer
//    shrinking an unsealable file under a mapping into zero pages + MappedRegion.truncated),
//    fileSize(), fileSeals()/addFileSeals().
//  - RawSocket + watchFd: a socket read one recvmsg at a time with that read's fds, written
//    one sendmsg per message (mpqemu attributes fds by read; vfio-user uses Connection).
//  - EventFd: create/adopt, signal, read, onReadable (epoll on the event loop, no polling).
//  - ReceiveBuffer / SendBuffer: the framing buffers the protocols share.
//  - TransportError: the layer's single error class (stable `code`).
//
// fd ownership, everywhere: a function that returns an fd gives it to the caller (closeFd());
// functions that take fds borrow them unless documented to take ownership (adoptFd,
// EventFd.adopt). Received fds belong to the ReceiveBuffer until a framer takes them with
// takeFds(); anything not taken is closed when consumed or on close.

export { TransportError, type TransportErrorCode, type TransportErrorFields } from "./errors.js";
export { DEFAULT_LIMITS, DEFAULT_MAX_MAPPED_BYTES, KERNEL_MAX_FDS_PER_MESSAGE, MAX_MAPPINGS, type TransportLimits } from "./limits.js";
export { ReceiveBuffer, SendBuffer, type ReceiveBufferOptions } from "./buffers.js";
export {
  Connection,
  Server,
  listen,
  connect,
  adoptFd,
  type ConnectionOptions,
  type ConnectOptions,
  type ListenOptions,
  type CloseReason,
  type Receiver,
  type StreamConnection,
} from "./connection.js";
export { socketpair, closeFd, closeFdQuietly, dupFd, spawnWithFds, type SpawnWithFdsOptions, type SpawnedWithFds, type SpawnStdio } from "./fd.js";
export {
  memfdCreate,
  fileSize,
  mmapFd,
  MappedRegion,
  MapBudget,
  defaultMapBudget,
  FileSeal,
  fileSeals,
  addFileSeals,
  mappingGuardStats,
  type MapOptions,
} from "./shm.js";
export { EventFd, type EventFdOptions } from "./eventfd.js";
export { RawSocket, watchFd, RAW_SOCKET_MAX_RECV_FDS, type FdWatch, type RawReceived } from "./raw-socket.js";
