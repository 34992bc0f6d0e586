// The error class of the DMA / IOMMU layer: a stable string `code`, the errno a protocol
// server answers with, structured fields, and the cause attached.
import type { DmaErrorCode } from "./api.js";

const ERRNO: Record<DmaErrorCode, number> = {
  DMA_UNMAPPED: 14, // EFAULT
  DMA_PERMISSION: 13, // EACCES
  DMA_NO_SHARED_MEMORY: 95, // EOPNOTSUPP
  DMA_INVALID_ARGUMENT: 22, // EINVAL
  DMA_REGION_EXISTS: 17, // EEXIST
  DMA_REGION_NOT_FOUND: 2, // ENOENT
  DMA_LIMIT: 28, // ENOSPC
  DMA_CHAIN_TOO_DEEP: 40, // ELOOP
  DMA_BUSY: 16, // EBUSY
  DMA_BACKING_TRUNCATED: 14, // EFAULT: the memory the peer gave is no longer there
};

export interface DmaErrorFields {
  iova?: bigint;
  length?: number | bigint;
  /** Index of the failing scatter/gather element (translateList). */
  index?: number;
  cause?: unknown;
}

export class DmaError extends Error {
  readonly code: DmaErrorCode;
  /** Positive errno for protocol error replies. */
  readonly errno: number;
  readonly iova?: bigint;
  readonly length?: number | bigint;
  readonly index?: number;

  constructor(code: DmaErrorCode, message: string, fields: DmaErrorFields = {}) {
    super(message, fields.cause !== undefined ? { cause: fields.cause } : undefined);
    this.name = "DmaError";
    this.code = code;
    this.errno = ERRNO[code];
    this.iova = fields.iova;
    this.length = fields.length;
    this.index = fields.index;
  }
}
