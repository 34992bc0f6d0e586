// A reused, growable output buffer that serializers append whole messages to. Several messages
// may be appended before the caller flushes them with one socket write (`take()`), which is how a
// burst of pipelined requests gets its replies in one syscall.
import { HEADER_SIZE } from "./constants.js";

const INITIAL_CAPACITY = 4096;

export class MessageWriter {
  private buf: Uint8Array;
  /** Bytes of finished and in-progress messages. */
  private pos = 0;
  /** Start of the message being written, or -1 between messages. */
  private msgStart = -1;
  /** Start of the last message begun since take() (for abandonLast), or -1. */
  private lastStart = -1;

  constructor(initialCapacity = INITIAL_CAPACITY) {
    this.buf = new Uint8Array(Math.max(64, initialCapacity));
  }

  /** Bytes waiting to be taken. */
  get length(): number {
    return this.pos;
  }

  /**
   * Starts a message: writes a 16-byte header whose size field `end()` fills in.
   * `flags` is the whole flags word (type | NO_REPLY | ERROR).
   */
  begin(msgId: number, command: number, flags: number, error = 0): this {
    if (this.msgStart !== -1) throw new Error("MessageWriter.begin() called inside an unfinished message");
    this.msgStart = this.pos;
    this.lastStart = this.pos;
    this.reserve(HEADER_SIZE);
    const b = this.buf;
    const p = this.pos;
    b[p] = msgId & 0xff;
    b[p + 1] = (msgId >>> 8) & 0xff;
    b[p + 2] = command & 0xff;
    b[p + 3] = (command >>> 8) & 0xff;
    // size (p + 4..7) is patched by end()
    writeU32(b, p + 8, flags);
    writeU32(b, p + 12, error);
    this.pos = p + HEADER_SIZE;
    return this;
  }

  /** Finishes the current message by patching its size field. */
  end(): void {
    if (this.msgStart === -1) throw new Error("MessageWriter.end() without begin()");
    writeU32(this.buf, this.msgStart + 4, this.pos - this.msgStart);
    this.msgStart = -1;
  }

  u8(v: number): this {
    this.reserve(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.reserve(2);
    const b = this.buf;
    b[this.pos] = v & 0xff;
    b[this.pos + 1] = (v >>> 8) & 0xff;
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.reserve(4);
    writeU32(this.buf, this.pos, v);
    this.pos += 4;
    return this;
  }

  /** A u64 from its two u32 halves (the hot-path form: no BigInt). */
  u64Parts(lo: number, hi: number): this {
    this.reserve(8);
    writeU32(this.buf, this.pos, lo);
    writeU32(this.buf, this.pos + 4, hi);
    this.pos += 8;
    return this;
  }

  /** A u64 from a bigint (0 <= v < 2^64) or a non-negative safe integer. */
  u64(v: bigint | number): this {
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 field needs a non-negative safe integer, got ${v}`);
      return this.u64Parts(v >>> 0, Math.floor(v / 0x1_0000_0000));
    }
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`u64 field out of range: ${v}`);
    return this.u64Parts(Number(v & 0xffff_ffffn), Number(v >> 32n));
  }

  bytes(src: Uint8Array): this {
    this.reserve(src.length);
    this.buf.set(src, this.pos);
    this.pos += src.length;
    return this;
  }

  zeros(n: number): this {
    this.reserve(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
    return this;
  }

  /**
   * Reserves `n` bytes at the write position and returns a view of them to fill in place (e.g.
   * a device read straight into the reply). The view is valid until the next write.
   */
  claim(n: number): Uint8Array {
    this.reserve(n);
    const view = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return view;
  }

  /** Drops the message being written (e.g. when its payload could not be produced). */
  abandon(): void {
    if (this.msgStart !== -1) {
      this.pos = this.msgStart;
      this.msgStart = -1;
    }
  }

  /**
   * Drops the last message begun, finished or not (e.g. a reply written in place whose data
   * could not be produced). Once only: the one before it stays.
   */
  abandonLast(): void {
    if (this.lastStart === -1) return;
    this.pos = this.lastStart;
    this.msgStart = -1;
    this.lastStart = -1;
  }

  /**
   * Returns every finished message written since the last take() and empties the writer.
   * The view aliases the internal buffer: send or copy it before writing the next message.
   */
  take(): Uint8Array {
    if (this.msgStart !== -1) throw new Error("MessageWriter.take() inside an unfinished message");
    const out = this.buf.subarray(0, this.pos);
    this.pos = 0;
    this.lastStart = -1;
    return out;
  }

  /** Discards everything written. */
  clear(): void {
    this.pos = 0;
    this.msgStart = -1;
    this.lastStart = -1;
  }

  private reserve(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }
}

export function writeU32(b: Uint8Array, p: number, v: number): void {
  b[p] = v & 0xff;
  b[p + 1] = (v >>> 8) & 0xff;
  b[p + 2] = (v >>> 16) & 0xff;
  b[p + 3] = (v >>> 24) & 0xff;
}

export function readU16(b: Uint8Array, p: number): number {
  return b[p] | (b[p + 1] << 8);
}

export function readU32(b: Uint8Array, p: number): number {
  return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
}

export function readU64(b: Uint8Array, p: number): bigint {
  return (BigInt(readU32(b, p + 4)) << 32n) | BigInt(readU32(b, p));
}

/** Joins two u32 halves into a bigint. */
export function joinU64(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** The exact number for halves below 2^53, or undefined when a number would lose bits. */
export function u64PartsToSafeNumber(lo: number, hi: number): number | undefined {
  return hi < 0x20_0000 ? hi * 0x1_0000_0000 + (lo >>> 0) : undefined;
}

/** The parts joined into one array (the part itself when there is only one: no copy). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
