// The vfio-user server's single error class. Request validation and handling throw it with the
// errno the error reply carries; the session turns it into that reply in one place.
import { errnoName } from "../wire/constants.js";

export type VfioUserServerErrorCode =
  /** A request failed validation (bad index, range, size, flags, fds...). `errno` says why. */
  | "VFIO_USER_BAD_REQUEST"
  /** A request arrived before VERSION negotiation (or a second VERSION after it). */
  | "VFIO_USER_NOT_NEGOTIATED"
  /** The command number is not one the protocol defines for a client to send. */
  | "VFIO_USER_UNKNOWN_COMMAND"
  /** The device model raised an error while handling a valid request. */
  | "VFIO_USER_DEVICE_ERROR"
  /** A DMA map-table operation failed (overlap, unknown range, limits). */
  | "VFIO_USER_DMA_MAP_ERROR"
  /** A DMA_READ/DMA_WRITE request to the client failed (error reply, bad reply, timeout). */
  | "VFIO_USER_DMA_REQUEST_FAILED"
  /** An earlier posted (NO_REPLY) request failed; reported on the next request wanting a reply. */
  | "VFIO_USER_POSTED_FAILURE"
  /** The client is gone (pending server requests fail with this). */
  | "VFIO_USER_DISCONNECTED"
  /** The server could not start (socket path in use, bad options). */
  | "VFIO_USER_SERVER_SETUP";

export interface VfioUserServerErrorFields {
  errno?: number;
  command?: number;
  msgId?: number;
  region?: number;
  offset?: bigint | number;
  count?: number;
  cause?: unknown;
}

export class VfioUserServerError extends Error {
  readonly code: VfioUserServerErrorCode;
  /** errno for the error reply (EIO when none was given). */
  readonly errno: number;
  readonly command?: number;
  readonly msgId?: number;
  readonly region?: number;
  readonly offset?: bigint | number;
  readonly count?: number;

  constructor(code: VfioUserServerErrorCode, message: string, fields: VfioUserServerErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "VfioUserServerError";
    this.code = code;
    this.errno = fields.errno ?? 5;
    this.command = fields.command;
    this.msgId = fields.msgId;
    this.region = fields.region;
    this.offset = fields.offset;
    this.count = fields.count;
  }

  get errnoName(): string {
    return errnoName(this.errno);
  }
}

/** Shorthand for a validation failure with an errno. */
export function badRequest(errno: number, message: string, fields: Omit<VfioUserServerErrorFields, "errno"> = {}): VfioUserServerError {
  return new VfioUserServerError("VFIO_USER_BAD_REQUEST", message, { ...fields, errno });
}
