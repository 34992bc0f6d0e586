// Dirty-page logging of device DMA writes, for migration: DEVICE_FEATURE DMA_LOGGING_START /
// STOP / REPORT and the dirty bitmap of DMA_UNMAP. The device's DMA API is wrapped so every
// write (copies, stores, and writable zero-copy maps, marked at map and again at release) marks
// the pages it touches while logging is on.
import type { DmaApi, DmaDirection, DmaInvalidateCallback, DmaMapping, DmaSegment, DmaSgEntry } from "../../core/dma/api.js";
import { Errno } from "../wire/constants.js";
import type { IovaRange } from "../wire/messages.js";
import { badRequest } from "./errors.js";

const U64_END = 1n << 64n;

export function isPowerOfTwoBig(v: bigint): boolean {
  return v > 0n && (v & (v - 1n)) === 0n;
}

export class DirtyLog {
  private active = false;
  /** log2 of the tracking page size. */
  private shift = 12n;
  private ranges: IovaRange[] = [];
  /** Dirty tracking pages (iova >> shift; below 2^52 for 4 KiB pages, so exact as numbers). */
  private pages = new Set<number>();

  get isActive(): boolean {
    return this.active;
  }

  get pageSize(): bigint {
    return 1n << this.shift;
  }

  /** Starts logging (DMA_LOGGING_START). Ranges empty = all of IOVA space. Returns the page size used. */
  start(pageSize: bigint, ranges: readonly IovaRange[]): bigint {
    if (this.active) throw badRequest(Errno.EBUSY, "DMA logging is already started");
    if (!isPowerOfTwoBig(pageSize)) throw badRequest(Errno.EINVAL, `DMA logging page size ${pageSize} is not a power of two`);
    for (const r of ranges) {
      if (r.length === 0n || r.iova + r.length > U64_END) throw badRequest(Errno.EINVAL, `DMA logging range ${r.iova}+${r.length} is empty or wraps`);
    }
    // Tracking below 4 KiB buys nothing and grows the set; report() replicates bits as needed.
    const used = pageSize < 4096n ? 4096n : pageSize;
    this.shift = BigInt(used.toString(2).length - 1);
    this.ranges = ranges.map((r) => ({ ...r }));
    this.pages.clear();
    this.active = true;
    return used;
  }

  stop(): void {
    if (!this.active) throw badRequest(Errno.EINVAL, "DMA logging is not started");
    this.active = false;
    this.pages.clear();
  }

  /** Drops all state (client disconnect, reset). */
  reset(): void {
    this.active = false;
    this.pages.clear();
  }

  /** Records a device write of `length` bytes at `iova`. */
  mark(iova: bigint, length: number): void {
    if (!this.active || length <= 0) return;
    const last = iova + BigInt(length) - 1n;
    if (this.ranges.length > 0 && !this.ranges.some((r) => iova < r.iova + r.length && last >= r.iova)) return;
    const first = Number(iova >> this.shift);
    const end = Number(last >> this.shift);
    for (let p = first; p <= end; p++) this.pages.add(p);
  }

  /**
   * The dirty bitmap of [iova, iova + length) at `pageSize` granularity (bit i = page i, u64
   * words little-endian), `bytes` long (at least what the range needs). Reported pages are
   * cleared, as VFIO's DMA_LOGGING_REPORT does.
   */
  report(iova: bigint, length: bigint, pageSize: bigint, bytes: number, clear = true): Uint8Array {
    const bitmap = new Uint8Array(bytes);
    if (this.pages.size === 0) return bitmap;
    const trackSize = 1n << this.shift;
    const end = iova + length;
    const hit: number[] = [];
    for (const p of this.pages) {
      const pStart = BigInt(p) << this.shift;
      const pEnd = pStart + trackSize;
      if (pEnd <= iova || pStart >= end) continue;
      const from = (pStart > iova ? pStart : iova) - iova;
      const to = (pEnd < end ? pEnd : end) - iova - 1n;
      for (let bit = from / pageSize; bit <= to / pageSize; bit++) {
        const b = Number(bit);
        bitmap[b >> 3] |= 1 << (b & 7);
      }
      hit.push(p);
    }
    if (clear) for (const p of hit) this.pages.delete(p);
    return bitmap;
  }

  /** Bytes of a bitmap covering `length` at `pageSize`, rounded up to whole u64 words. */
  static bitmapBytes(length: bigint, pageSize: bigint): bigint {
    const bits = (length + pageSize - 1n) / pageSize;
    return ((bits + 63n) / 64n) * 8n;
  }
}

/** A DmaApi that forwards to `inner` and marks device writes in `log`. */
export function trackDirtyPages(inner: DmaApi, log: DirtyLog): DmaApi {
  const writes = (d: DmaDirection) => d !== "to-device";
  return {
    readSync: (iova, dest) => inner.readSync(iova, dest),
    read: (iova, dest) => inner.read(iova, dest),
    writeSync(iova, src) {
      inner.writeSync(iova, src);
      log.mark(iova, src.length);
    },
    async write(iova, src) {
      await inner.write(iova, src);
      log.mark(iova, src.length);
    },
    readListSync: (list, dest) => inner.readListSync(list, dest),
    writeListSync(list, src) {
      inner.writeListSync(list, src);
      for (let i = 0; i < list.count; i++) log.mark(list.iova[i], list.length[i]);
    },
    readU8: (iova) => inner.readU8(iova),
    readU16: (iova) => inner.readU16(iova),
    readU32: (iova) => inner.readU32(iova),
    readU64: (iova) => inner.readU64(iova),
    writeU8(iova, v) {
      inner.writeU8(iova, v);
      log.mark(iova, 1);
    },
    writeU16(iova, v) {
      inner.writeU16(iova, v);
      log.mark(iova, 2);
    },
    writeU32(iova, v) {
      inner.writeU32(iova, v);
      log.mark(iova, 4);
    },
    writeU64(iova, v) {
      inner.writeU64(iova, v);
      log.mark(iova, 8);
    },
    map(iova: bigint, length: number, direction: DmaDirection, onInvalidate: DmaInvalidateCallback): DmaMapping {
      if (!writes(direction)) return inner.map(iova, length, direction, onInvalidate);
      // The device may write through the views at any time until release: mark at both ends
      // so a report taken in between cannot lose a write made after it.
      log.mark(iova, length);
      const m = inner.map(iova, length, direction, onInvalidate);
      return {
        get iova() {
          return m.iova;
        },
        get length() {
          return m.length;
        },
        get direction() {
          return m.direction;
        },
        get views() {
          return m.views;
        },
        get live() {
          return m.live;
        },
        release() {
          if (m.live) log.mark(iova, length);
          m.release();
        },
      };
    },
    translateList(list: readonly DmaSgEntry[], direction: DmaDirection): DmaSegment[] {
      const segs = inner.translateList(list, direction);
      if (writes(direction)) for (const e of list) log.mark(e.iova, e.length);
      return segs;
    },
  };
}
