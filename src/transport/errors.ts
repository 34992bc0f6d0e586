// The transport layer's single error class. Every failure below the protocol layer surfaces as a
// TransportError with a stable `code`; system-call failures also carry the errno name.

/** Stable error codes of the transport layer (never renamed once published). */
export type TransportErrorCode =
  /** A system call failed; `errno` and `syscall` say which and why. */
  | "ERR_SYSCALL"
  /** An argument was out of range or of the wrong kind (a negative fd, a zero-length map...). */
  | "ERR_INVALID_ARGUMENT"
  /** A message (or a declared message size) exceeds `limits.maxMessageSize`. */
  | "ERR_MESSAGE_TOO_LARGE"
  /** The peer attached more fds to one message than `limits.maxFdsPerMessage`; all were closed. */
  | "ERR_TOO_MANY_FDS"
  /** A send carried more fds than `limits.maxFdsPerMessage`. */
  | "ERR_SEND_TOO_MANY_FDS"
  /** A mapping would exceed the byte budget of its MapBudget (`maxMappedBytes`). */
  | "ERR_MAP_LIMIT"
  /** offset + length lies beyond the end of the file being mapped (checked with fstat). */
  | "ERR_MAP_OUT_OF_BOUNDS"
  /** The region was already unmapped. */
  | "ERR_UNMAPPED"
  /** The connection (or server, or eventfd) is closed. */
  | "ERR_CLOSED"
  /** The peer closed the stream while bytes of an unfinished message were still buffered. */
  | "ERR_PEER_CLOSED_MID_MESSAGE"
  /** The connection's receiver (framer) threw something other than a TransportError. */
  | "ERR_RECEIVER_THREW"
  /** adoptFd() was given an fd that is not a UNIX stream socket. */
  | "ERR_NOT_A_STREAM_SOCKET"
  /** connect() gave up after `timeoutMs` (the listener's backlog stayed full). */
  | "ERR_CONNECT_TIMEOUT"
  /** The native addon could not be loaded (the message says how to rebuild it). */
  | "ERR_NATIVE_UNAVAILABLE";

export interface TransportErrorFields {
  /** errno name, e.g. "EPIPE", for ERR_SYSCALL. */
  errno?: string;
  /** Numeric errno (positive), for ERR_SYSCALL. */
  errnoNumber?: number;
  /** The failing system call, e.g. "sendmsg". */
  syscall?: string;
  /** Socket path involved, if any. */
  path?: string;
  /** File descriptor involved, if any. */
  fd?: number;
  /** The limit that was exceeded. */
  limit?: number;
  /** The value that exceeded it. */
  actual?: number;
  /** Underlying error. */
  cause?: unknown;
}

export class TransportError extends Error {
  readonly code: TransportErrorCode;
  readonly errno?: string;
  readonly errnoNumber?: number;
  readonly syscall?: string;
  readonly path?: string;
  readonly fd?: number;
  readonly limit?: number;
  readonly actual?: number;

  constructor(code: TransportErrorCode, message: string, fields: TransportErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "TransportError";
    this.code = code;
    this.errno = fields.errno;
    this.errnoNumber = fields.errnoNumber;
    this.syscall = fields.syscall;
    this.path = fields.path;
    this.fd = fields.fd;
    this.limit = fields.limit;
    this.actual = fields.actual;
  }
}

/** errno numbers of Linux (x86_64 and arm64 agree on these) that the transport names. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 4: "EINTR", 5: "EIO", 9: "EBADF", 11: "EAGAIN", 12: "ENOMEM",
  13: "EACCES", 14: "EFAULT", 16: "EBUSY", 17: "EEXIST", 19: "ENODEV", 20: "ENOTDIR", 21: "EISDIR",
  22: "EINVAL", 23: "ENFILE", 24: "EMFILE", 27: "EFBIG", 28: "ENOSPC", 32: "EPIPE", 36: "ENAMETOOLONG",
  38: "ENOSYS", 88: "ENOTSOCK", 90: "EMSGSIZE", 91: "EPROTOTYPE", 95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 104: "ECONNRESET", 105: "ENOBUFS",
  107: "ENOTCONN", 110: "ETIMEDOUT", 111: "ECONNREFUSED",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** A TransportError for a failed system call; `errno` is positive. */
export function syscallError(syscall: string, errno: number, fields: TransportErrorFields = {}): TransportError {
  const name = errnoName(errno);
  const where = fields.path !== undefined ? ` (${fields.path})` : fields.fd !== undefined ? ` (fd ${fields.fd})` : "";
  return new TransportError("ERR_SYSCALL", `${syscall} failed: ${name}${where}`, {
    ...fields,
    errno: name,
    errnoNumber: errno,
    syscall,
  });
}
