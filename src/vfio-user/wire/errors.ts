// The wire layer's single error type. Decoders and the parser *return* these (never throw), so a
// server can answer with `errno` in an error reply and keep serving.
import { errnoName } from "./constants.js";

/** Stable codes of the vfio-user wire layer. */
export type WireErrorCode =
  /** The header's size field is below the 16-byte header: the stream cannot be resynchronised. */
  | "WIRE_SIZE_BELOW_HEADER"
  /** The header's size field exceeds the negotiated maximum; the body was skipped unallocated. */
  | "WIRE_MESSAGE_TOO_LARGE"
  /** The stream ended inside a message (a header shorter than 16 bytes or a partial body). */
  | "WIRE_TRUNCATED"
  /** A payload is shorter or longer than its command's layout requires. */
  | "WIRE_BAD_LENGTH"
  /** A field holds a value its layout forbids (a count that disagrees with the payload...). */
  | "WIRE_BAD_FIELD"
  /** VERSION data is not valid UTF-8 JSON of the documented shape. */
  | "WIRE_BAD_VERSION_JSON";

export interface WireErrorFields {
  /** The errno a reply to this failure should carry. */
  errno: number;
  command?: number;
  msgId?: number;
  /** Field or structure at fault, e.g. "count". */
  field?: string;
  expected?: number;
  actual?: number;
  cause?: unknown;
}

export class WireError extends Error {
  readonly code: WireErrorCode;
  readonly errno: number;
  readonly command?: number;
  readonly msgId?: number;
  readonly field?: string;
  readonly expected?: number;
  readonly actual?: number;

  constructor(code: WireErrorCode, message: string, fields: WireErrorFields) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "WireError";
    this.code = code;
    this.errno = fields.errno;
    this.command = fields.command;
    this.msgId = fields.msgId;
    this.field = fields.field;
    this.expected = fields.expected;
    this.actual = fields.actual;
  }

  /** "EINVAL" etc. */
  get errnoName(): string {
    return errnoName(this.errno);
  }
}

export function isWireError(v: unknown): v is WireError {
  return v instanceof WireError;
}
