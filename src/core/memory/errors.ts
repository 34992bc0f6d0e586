// The memory layer's one error class. `code` is stable; the structured fields say which
// region / address / size was involved; `cause` carries a device callback's own exception.
import { MemTx, TOPOLOGY_CODES } from "../abi/memory.js";

export type MemoryErrorCode =
  | "NO_SUCH_REGION"
  | "SIZE_ZERO"
  | "OVERFLOW"
  | "CYCLE"
  | "IMPL_UNALIGNED_WITHOUT_VALID"
  | "BAD_ACCESS_SIZES"
  | "ALREADY_MAPPED"
  | "NOT_A_SUBREGION"
  | "WRONG_KIND"
  | "IN_USE"
  | "RAM_TOO_LARGE"
  | "IO_TOO_LARGE"
  | "NO_TRANSACTION"
  | "OUT_OF_MEMORY"
  | "NO_SUCH_ADDRESS_SPACE"
  | "TOO_MANY"
  | "BAD_ARGUMENT"
  | "DESTROYED"
  // access results
  | "DECODE_ERROR"
  | "ACCESS_ERROR"
  | "DEVICE_ERROR";

export interface MemoryErrorFields {
  region?: string;
  addressSpace?: string;
  address?: bigint;
  size?: number;
  /** MemTx bits of a failed access. */
  status?: number;
  cause?: unknown;
}

export class MemoryError extends Error {
  readonly code: MemoryErrorCode;
  readonly region?: string;
  readonly addressSpace?: string;
  readonly address?: bigint;
  readonly size?: number;
  readonly status?: number;

  constructor(code: MemoryErrorCode, message: string, fields: MemoryErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = "MemoryError";
    this.code = code;
    this.region = fields.region;
    this.addressSpace = fields.addressSpace;
    this.address = fields.address;
    this.size = fields.size;
    this.status = fields.status;
  }
}

const TOPOLOGY_HINTS: Record<string, string> = {
  NO_SUCH_REGION: "the region does not exist (destroyed?)",
  SIZE_ZERO: "regions must be at least 1 byte",
  OVERFLOW: "the range would end past 2^64 - 1; use a smaller size or offset",
  CYCLE: "this would make the region reachable from itself through subregions/aliases",
  IMPL_UNALIGNED_WITHOUT_VALID: "impl.unaligned requires valid.unaligned (QEMU rejects it too)",
  BAD_ACCESS_SIZES: "access sizes must be 1, 2, 4 or 8 with min <= max",
  ALREADY_MAPPED: "the region already has a container; remove it first",
  NOT_A_SUBREGION: "the region is not a subregion of this container",
  WRONG_KIND: "the operation does not apply to this kind of region",
  IN_USE: "the region is still mapped, has subregions, is aliased, or is an address-space root",
  RAM_TOO_LARGE: "RAM/ROM regions are limited to 1 GiB each (they live in wasm linear memory)",
  IO_TOO_LARGE: "I/O regions are limited to 2^53 bytes (offsets reach callbacks as numbers)",
  NO_TRANSACTION: "commit() without a matching begin()",
  OUT_OF_MEMORY: "the core's linear memory cannot grow any further",
  NO_SUCH_ADDRESS_SPACE: "the address space does not exist (destroyed?)",
  TOO_MANY: "the core's region or address-space limit is reached",
};

/** Maps a topology status code from an engine to a MemoryError. */
export function topologyError(status: number, what: string, fields: MemoryErrorFields = {}): MemoryError {
  const code = (TOPOLOGY_CODES[status] ?? "BAD_ARGUMENT") as MemoryErrorCode;
  const hint = TOPOLOGY_HINTS[code] ?? `engine status ${status}`;
  return new MemoryError(code, `${what}: ${hint}`, fields);
}

/** Maps MemTx bits of a failed access to a MemoryError (DEVICE_ERROR > ACCESS_ERROR > DECODE_ERROR). */
export function accessError(status: number, what: string, fields: MemoryErrorFields): MemoryError {
  const code: MemoryErrorCode =
    status & MemTx.ERROR ? "DEVICE_ERROR" : status & MemTx.ACCESS_ERROR ? "ACCESS_ERROR" : "DECODE_ERROR";
  const addr = fields.address !== undefined ? ` at 0x${fields.address.toString(16)}` : "";
  const why =
    code === "DEVICE_ERROR"
      ? "the device callback failed"
      : code === "ACCESS_ERROR"
        ? "re-entrant access to an I/O region that is already being accessed"
        : "nothing accepts this access (unassigned address, or a size/alignment the region does not allow)";
  return new MemoryError(code, `${what}${addr} (${fields.size ?? "?"} bytes): ${why}`, { ...fields, status });
}
