// The wasm IOMMU core's status codes (src/core/abi/iommu.ts) as DmaErrors.
import { DmaError } from "../dma/errors.js";
import type { DmaErrorCode } from "../dma/api.js";

import {
  S_BAD_ENTRY, S_BUSY, S_CHAIN_TOO_DEEP, S_EXISTS, S_INVALID, S_LIMIT, S_NO_DOMAIN, S_NOT_FOUND, S_PERMISSION, S_UNMAPPED,
} from "../abi/iommu.js";
export { S_OK, S_OUT_FULL, S_UNMAPPED } from "../abi/iommu.js";

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
