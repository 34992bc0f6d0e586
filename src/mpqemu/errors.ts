// One error class for the mpqemu layer (wire, remote, proxy). `code` is stable; the
// structured fields say which message / command / access failed.

export type MpqemuErrorCode =
  /** Header names a command this build does not know. */
  | "MPQEMU_UNKNOWN_COMMAND"
  /** Command known, but the message travels the wrong way (e.g. a request sent to a proxy). */
  | "MPQEMU_UNEXPECTED_COMMAND"
  /** Payload size does not match the command. */
  | "MPQEMU_BAD_SIZE"
  /** Wrong number of file descriptors for the command. */
  | "MPQEMU_BAD_FDS"
  /** Payload larger than the protocol's union (192 bytes); skipped, stream still framed. */
  | "MPQEMU_OVERSIZED"
  /** Payload so large the stream cannot be trusted any more; the connection must close. */
  | "MPQEMU_FRAMING"
  /** A field inside an otherwise well-formed payload is invalid (region size 0, overflow...). */
  | "MPQEMU_BAD_FIELD"
  /** The socket closed with part of a message buffered. */
  | "MPQEMU_TRUNCATED"
  /** The peer stopped answering (heartbeat or request timeout) or hung up. */
  | "MPQEMU_LOST_CONTACT"
  /** The connection is closed; no more requests. */
  | "MPQEMU_CLOSED"
  /** An operating-system call failed (errno attached). */
  | "MPQEMU_SYSTEM"
  /** The remote answered a request with the all-ones error value. */
  | "MPQEMU_REMOTE_FAILED"
  /** A caller passed an argument outside what the protocol can carry. */
  | "MPQEMU_BAD_ARGUMENT";

export interface MpqemuErrorFields {
  cmd?: number;
  size?: number;
  fds?: number;
  errno?: number;
  address?: bigint;
  cause?: unknown;
}

export class MpqemuError extends Error {
  readonly code: MpqemuErrorCode;
  readonly cmd?: number;
  readonly size?: number;
  readonly fds?: number;
  readonly errno?: number;
  readonly address?: bigint;

  constructor(code: MpqemuErrorCode, message: string, fields: MpqemuErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "MpqemuError";
    this.code = code;
    this.cmd = fields.cmd;
    this.size = fields.size;
    this.fds = fields.fds;
    this.errno = fields.errno;
    this.address = fields.address;
  }
}
