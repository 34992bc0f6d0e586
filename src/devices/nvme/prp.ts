// Physical Region Page walking (NVMe base spec 1.4 §4.3): turns PRP1/PRP2 and the PRP lists
// they lead to into a list of guest-memory segments, adjacent pages merged.
//
//   PRP1 = first data page, may carry an offset (dword aligned)
//   PRP2 = unused                      when the transfer ends inside PRP1's page
//        = second data page (offset 0) when it ends inside the next page
//        = PRP list pointer            otherwise: qword entries to the end of that page; when
//          more entries are needed than fit, the page's last entry points to the next list
//          page (page aligned), as QEMU's nvme_map_prp chains them.
import type { DmaApi } from "../../core/dma/api.js";
import { STATUS } from "./constants.js";

/** Reused segment list: `count` valid entries in `iova`/`length`. */
export class PrpSegments {
  iova: bigint[] = [];
  length: number[] = [];
  count = 0;

  clear(): void {
    this.count = 0;
  }

  push(iova: bigint, length: number): void {
    const last = this.count - 1;
    if (last >= 0 && this.iova[last] + BigInt(this.length[last]) === iova) {
      this.length[last] += length;
      return;
    }
    this.iova[this.count] = iova;
    this.length[this.count] = length;
    this.count++;
  }
}

/** Failure of a PRP walk: the NVMe status to complete the command with. */
export interface PrpFault {
  status: number;
}

/**
 * Fills `out` with the segments of a `length`-byte transfer. Returns 0, or the status to
 * complete the command with: PRP Offset Invalid for a misaligned pointer, Data Transfer Error
 * when a PRP list cannot be read from guest memory. `scratch` holds one list page.
 */
export function walkPrps(dma: DmaApi, prp1: bigint, prp2: bigint, length: number, pageSize: number, scratch: Uint8Array, out: PrpSegments): number {
  out.clear();
  if (length === 0) return 0;
  if (prp1 & 3n) return STATUS.PRP_OFFSET_INVALID;
  const page = BigInt(pageSize);
  const mask = page - 1n;
  const first = Math.min(length, pageSize - Number(prp1 & mask));
  out.push(prp1, first);
  let remaining = length - first;
  if (remaining === 0) return 0;
  if (remaining <= pageSize) {
    if (prp2 & mask) return STATUS.PRP_OFFSET_INVALID;
    out.push(prp2, remaining);
    return 0;
  }
  if (prp2 & 7n) return STATUS.PRP_OFFSET_INVALID;
  let list = prp2;
  const view = new DataView(scratch.buffer, scratch.byteOffset, scratch.byteLength);
  for (;;) {
    const slots = Number((page - (list & mask)) >> 3n);
    const needed = Math.ceil(remaining / pageSize);
    const chained = needed > slots;
    const entries = chained ? slots : needed;
    try {
      dma.readSync(list, scratch.subarray(0, entries * 8));
    } catch {
      return STATUS.DATA_TRANSFER_ERROR;
    }
    const dataEntries = chained ? entries - 1 : entries;
    for (let i = 0; i < dataEntries; i++) {
      const entry = view.getBigUint64(i * 8, true);
      if (entry & mask) return STATUS.PRP_OFFSET_INVALID;
      const n = Math.min(remaining, pageSize);
      out.push(entry, n);
      remaining -= n;
    }
    if (!chained) return 0;
    list = view.getBigUint64(dataEntries * 8, true);
    if (list & mask) return STATUS.PRP_OFFSET_INVALID;
  }
}
