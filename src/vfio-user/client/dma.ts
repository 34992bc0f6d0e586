// Client memory the server may reach: the client side of DMA_MAP. Each mapping is an IOVA range
// backed by bytes the client can access (and optionally by an fd the server mmaps). The server's
// DMA_READ / DMA_WRITE commands are answered from here, after bounds and permission checks; an
// access may span adjacent mappings, as a guest-physical access spans RAM blocks.
import { Errno } from "../wire/constants.js";

const U64_LIMIT = 1n << 64n;

export interface DmaMapping {
  iova: bigint;
  size: bigint;
  readable: boolean;
  writable: boolean;
  /** Bytes [iova, iova + size) as the client sees them. */
  memory: Uint8Array;
  /** The fd passed to the server with DMA_MAP, if any (borrowed, not owned by the table). */
  fd?: number;
  fileOffset: bigint;
}

export type DmaAccessResult<T> = { ok: true; value: T } | { ok: false; errno: number; reason: string };

export class DmaMemoryTable {
  /** Sorted by iova, non-overlapping. */
  private readonly entries: DmaMapping[] = [];

  get mappings(): readonly DmaMapping[] {
    return this.entries;
  }

  /** Problem with adding `m`, or undefined when it can be added. */
  checkAdd(m: DmaMapping): string | undefined {
    if (m.size <= 0n) return "DMA mapping size must be positive";
    if (m.iova < 0n || m.iova + m.size > U64_LIMIT) return "DMA mapping runs past 2^64";
    if (BigInt(m.memory.length) < m.size) return `DMA mapping of ${m.size} bytes is backed by only ${m.memory.length} bytes of memory`;
    if (!m.readable && !m.writable) return "DMA mapping must be readable, writable or both";
    for (const e of this.entries) {
      if (m.iova < e.iova + e.size && e.iova < m.iova + m.size) {
        return `DMA range [0x${m.iova.toString(16)}, +0x${m.size.toString(16)}) overlaps the mapping at 0x${e.iova.toString(16)}`;
      }
    }
    return undefined;
  }

  add(m: DmaMapping): void {
    const problem = this.checkAdd(m);
    if (problem) throw new RangeError(problem);
    let i = 0;
    while (i < this.entries.length && this.entries[i].iova < m.iova) i++;
    this.entries.splice(i, 0, m);
  }

  /** The mapping exactly matching (iova, size), or undefined. */
  find(iova: bigint, size: bigint): DmaMapping | undefined {
    return this.entries.find((e) => e.iova === iova && e.size === size);
  }

  remove(iova: bigint, size: bigint): DmaMapping | undefined {
    const i = this.entries.findIndex((e) => e.iova === iova && e.size === size);
    if (i < 0) return undefined;
    return this.entries.splice(i, 1)[0];
  }

  clear(): void {
    this.entries.length = 0;
  }

  /**
   * The pieces covering [address, address + count), each checked for permission. Fails with
   * EFAULT when any byte is unmapped and EPERM when a piece lacks the permission.
   */
  private pieces(address: bigint, count: bigint, write: boolean): DmaAccessResult<{ m: DmaMapping; from: number; length: number }[]> {
    if (address + count > U64_LIMIT) return { ok: false, errno: Errno.EFAULT, reason: "access wraps past 2^64" };
    const out: { m: DmaMapping; from: number; length: number }[] = [];
    let at = address;
    const end = address + count;
    while (at < end) {
      const m = this.entries.find((e) => e.iova <= at && at < e.iova + e.size);
      if (!m) return { ok: false, errno: Errno.EFAULT, reason: `IOVA 0x${at.toString(16)} is not mapped` };
      if (write ? !m.writable : !m.readable) {
        return { ok: false, errno: Errno.EPERM, reason: `IOVA 0x${at.toString(16)} is mapped without ${write ? "write" : "read"} permission` };
      }
      const stop = end < m.iova + m.size ? end : m.iova + m.size;
      out.push({ m, from: Number(at - m.iova), length: Number(stop - at) });
      at = stop;
    }
    return { ok: true, value: out };
  }

  /** Bytes [address, address + count) (a copy), for the server's DMA_READ. */
  read(address: bigint, count: number): DmaAccessResult<Uint8Array> {
    const p = this.pieces(address, BigInt(count), false);
    if (!p.ok) return p;
    const out = new Uint8Array(count);
    let o = 0;
    for (const { m, from, length } of p.value) {
      out.set(m.memory.subarray(from, from + length), o);
      o += length;
    }
    return { ok: true, value: out };
  }

  /** Stores `data` at `address`, for the server's DMA_WRITE. Nothing is written on failure. */
  write(address: bigint, data: Uint8Array): DmaAccessResult<number> {
    const p = this.pieces(address, BigInt(data.length), true);
    if (!p.ok) return p;
    let o = 0;
    for (const { m, from, length } of p.value) {
      m.memory.set(data.subarray(o, o + length), from);
      o += length;
    }
    return { ok: true, value: data.length };
  }
}
