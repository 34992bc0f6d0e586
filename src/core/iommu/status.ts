// Status codes returned by the wasm IOMMU core (assembly/iommu/domain.ts S_*), and their
// mapping to DmaError codes.
import { DmaError } from "../dma/errors.js";
import type { DmaErrorCode } from "../dma/api.js";

export const S_OK = 0;
export const S_UNMAPPED = 1;
export const S_PERMISSION = 2;
export const S_EXISTS = 3;
export const S_NOT_FOUND = 4;
export const S_INVALID = 5;
export const S_LIMIT = 6;
export const S_CHAIN_TOO_DEEP = 7;
export const S_BUSY = 8;
export const S_NO_DOMAIN = 9;
export const S_OUT_FULL = 10;
export const S_BAD_ENTRY = 11;

const CODES: Record<number, [DmaErrorCode, string]> = {
  [S_UNMAPPED]: ["DMA_UNMAPPED", "no mapping for this IOVA (check the DMA map / IOMMU)"],
  [S_PERMISSION]: ["DMA_PERMISSION", "the mapping does not allow this access direction"],
  [S_EXISTS]: ["DMA_REGION_EXISTS", "the range overlaps an existing DMA region; unmap it first"],
  [S_NOT_FOUND]: ["DMA_REGION_NOT_FOUND", "no DMA region has exactly this range (unknown or partial unmap)"],
  [S_INVALID]: ["DMA_INVALID_ARGUMENT", "invalid argument (zero length, wrap past 2^64, or bad flags)"],
  [S_LIMIT]: ["DMA_LIMIT", "a core limit was exceeded (region size, region count, domains or listeners)"],
  [S_CHAIN_TOO_DEEP]: ["DMA_CHAIN_TOO_DEEP", "IOMMU translation chain deeper than 8 stages (a cycle?)"],
  [S_BUSY]: ["DMA_BUSY", "IOMMU tables cannot change while a translation callback runs"],
  [S_NO_DOMAIN]: ["DMA_INVALID_ARGUMENT", "no such IOMMU domain"],
  [S_BAD_ENTRY]: ["DMA_INVALID_ARGUMENT", "the translation callback returned an invalid entry (mask not 2^k-1, perm > 3, or unknown target)"],
};

export function statusError(status: number, what: string, fields: { iova?: bigint; length?: number | bigint; index?: number; cause?: unknown } = {}): DmaError {
  const [code, why] = CODES[status] ?? ["DMA_INVALID_ARGUMENT", `core status ${status}`];
  const where = fields.iova !== undefined ? ` at iova 0x${fields.iova.toString(16)}` : "";
  return new DmaError(code, `${what}${where}: ${why}`, fields);
}
