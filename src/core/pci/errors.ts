// The error class of the PCI layer: a stable string `code`, the errno a protocol server
// answers with, structured fields, and the cause attached.
import type { PciErrorCode } from "./api.js";

const ERRNO: Record<PciErrorCode, number> = {
  PCI_INVALID_SPEC: 22, // EINVAL
  PCI_CONFIG_RANGE: 22, // EINVAL
  PCI_CONFIG_ALIGN: 22, // EINVAL
  PCI_REGION_INDEX: 22, // EINVAL
  PCI_REGION_RANGE: 22, // EINVAL
  PCI_ACCESS_SIZE: 22, // EINVAL
  PCI_ACCESS_INVALID: 5, // EIO (a master abort on the bus)
  PCI_DEVICE_ERROR: 5, // EIO
  PCI_STATE_FORMAT: 22, // EINVAL
  PCI_NO_DMA: 5, // EIO
  PCI_RESOURCE: 24, // EMFILE: what eventfd creation fails with in practice
};

export interface PciErrorFields {
  region?: number;
  offset?: number | bigint;
  size?: number;
  field?: string;
  cause?: unknown;
}

export class PciError extends Error {
  readonly code: PciErrorCode;
  /** Positive errno for protocol error replies. */
  readonly errno: number;
  readonly region?: number;
  readonly offset?: number | bigint;
  readonly size?: number;
  /** For PCI_INVALID_SPEC: the offending declaration field, e.g. "bars[2].size". */
  readonly field?: string;

  constructor(code: PciErrorCode, message: string, fields: PciErrorFields = {}) {
    super(message, fields.cause !== undefined ? { cause: fields.cause } : undefined);
    this.name = "PciError";
    this.code = code;
    this.errno = ERRNO[code];
    this.region = fields.region;
    this.offset = fields.offset;
    this.size = fields.size;
    this.field = fields.field;
  }
}
