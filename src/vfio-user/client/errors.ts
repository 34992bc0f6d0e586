// The client layer's one error class. Every failure a caller can see from VfioUserClient is a
// VfioUserClientError with a stable string `code`, structured fields, and the cause attached.
import { errnoName } from "../wire/constants.js";

export type VfioUserClientErrorCode =
  /** Bad argument from the caller (region index, offset, size, flags); nothing was sent. */
  | "ERR_ARGUMENT"
  /** Could not connect to the socket path. */
  | "ERR_CONNECT"
  /** The server serves another client (it answers VERSION with EBUSY) and stayed busy until connectTimeoutMs. */
  | "ERR_BUSY"
  /** VERSION negotiation failed (incompatible major, malformed capabilities). */
  | "ERR_VERSION"
  /** The server answered with the error flag set; `errno` carries its errno (may be 0). */
  | "ERR_REMOTE"
  /** A reply claims more data than was asked for (E2BIG), or exceeds the client's size limit. */
  | "ERR_REPLY_TOO_BIG"
  /** The server transferred fewer bytes than asked; `transferred` says how many. */
  | "ERR_SHORT_TRANSFER"
  /** A reply was malformed for its command (bad size, wrong command, inconsistent fields). */
  | "ERR_PROTOCOL"
  /** No reply within the request's timeout. */
  | "ERR_TIMEOUT"
  /** The connection is closed (by us, by the server, or after an unrecoverable stream error). */
  | "ERR_CLOSED"
  /** A region mapping or DMA memory operation failed locally. */
  | "ERR_MAPPING"
  /**
   * The server shrank the file behind a mapped region under the mapping (errno EFAULT): the
   * access through it failed and the region was unmapped (later accesses use the socket).
   */
  | "ERR_REGION_TRUNCATED";

/** "EINVAL (22)" for a known errno, "errno 123" otherwise. */
export function describeErrno(errno: number): string {
  const name = errnoName(errno);
  return name.startsWith("errno") ? name : `${name} (${errno})`;
}

export interface VfioUserClientErrorFields {
  /** vfio-user command number of the request that failed, when there is one. */
  command?: number;
  /** Command name, e.g. "REGION_READ". */
  commandName?: string;
  msgId?: number;
  errno?: number;
  region?: number;
  offset?: bigint;
  count?: number;
  /** Bytes actually transferred (short transfers). */
  transferred?: number;
  /** Data actually read before a short read. */
  data?: Uint8Array;
  cause?: unknown;
}

export class VfioUserClientError extends Error {
  readonly code: VfioUserClientErrorCode;
  readonly command?: number;
  readonly commandName?: string;
  readonly msgId?: number;
  readonly errno?: number;
  readonly region?: number;
  readonly offset?: bigint;
  readonly count?: number;
  readonly transferred?: number;
  readonly data?: Uint8Array;

  constructor(code: VfioUserClientErrorCode, message: string, fields: VfioUserClientErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "VfioUserClientError";
    this.code = code;
    this.command = fields.command;
    this.commandName = fields.commandName;
    this.msgId = fields.msgId;
    this.errno = fields.errno;
    this.region = fields.region;
    this.offset = fields.offset;
    this.count = fields.count;
    this.transferred = fields.transferred;
    this.data = fields.data;
  }
}
