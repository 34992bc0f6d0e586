// Framing buffers shared by the vfio-user and mpqemu framers.
//
// ReceiveBuffer: the connection reads straight into its free tail (no copy); the framer peeks
// at headers, declares a message's full size with need(), takes the fds that arrived with the
// message and consumes it. Leftover partial bytes stay for the next read.
//
// SendBuffer: a reused, growable little-endian writer. A serializer resets it, writes one or
// more messages, patches sizes, and hands bytes() to Connection.send(), which copies whatever
// the kernel did not take at once, so the buffer is free for reuse as soon as send() returns.

import { TransportError } from "./errors.js";
import { closeFdQuietly } from "./fd.js";

const DEFAULT_INITIAL_CAPACITY = 64 * 1024;

/**
 * fds that arrived with one read. `anchor` is the absolute stream offset of the last byte of
 * that read: Linux ends a recvmsg() right after the segment that carried SCM_RIGHTS data, and
 * that segment starts with the first byte of the sender's sendmsg(). So when every peer sends a
 * message and its fds with one sendmsg() that starts at the message (QEMU, libvfio-user and
 * Connection.send() all do), the fds belong to the message that contains the anchor byte.
 */
interface FdBatch {
  anchor: number;
  fds: number[];
}

export interface ReceiveBufferOptions {
  /** Starting capacity in bytes (default 64 KiB; at least 64 bytes, at most maxMessageSize). */
  initialCapacity?: number;
  /** Largest message a framer may declare with need(); the buffer never grows past it. */
  maxMessageSize?: number;
}

/**
 * Growable receive buffer. Bytes `[start, end)` of `bytes` are received and not yet consumed;
 * `offset` arguments of the peek helpers are relative to `start`.
 *
 * Views (`bytes`, `view`, subarray()) are replaced when the buffer grows or compacts, which only
 * happens inside reserveTail() (called by the connection between reads) and need(): never
 * cache them across those calls.
 *
 * fd ownership: fds handed to append()/commit() belong to the buffer until a framer takes them
 * with takeFds() (then the framer owns them and must close them) or they are dropped: consume()
 * closes every fd anchored in the consumed bytes that was not taken, and clear() closes all.
 */
export class ReceiveBuffer {
  bytes: Uint8Array;
  view: DataView;
  start = 0;
  end = 0;
  readonly maxMessageSize: number;
  /** Absolute stream offset of bytes[0]; absolute offset of bytes[i] is base + i. */
  private base = 0;
  private fdBatches: FdBatch[] = [];
  /** Size the framer declared for the message at `start` (0 = none declared). */
  private needed = 0;

  constructor(options: ReceiveBufferOptions = {}) {
    this.maxMessageSize = options.maxMessageSize ?? 4 * 1024 * 1024;
    if (!Number.isSafeInteger(this.maxMessageSize) || this.maxMessageSize < 1) {
      throw new TransportError("ERR_INVALID_ARGUMENT", `maxMessageSize must be a positive integer, got ${this.maxMessageSize}`);
    }
    const capacity = Math.max(64, Math.min(options.initialCapacity ?? DEFAULT_INITIAL_CAPACITY, this.maxMessageSize));
    this.bytes = new Uint8Array(capacity);
    this.view = new DataView(this.bytes.buffer);
  }

  /** Number of received, unconsumed bytes. */
  get available(): number {
    return this.end - this.start;
  }

  /** Absolute stream offset of the first unconsumed byte (bytes consumed so far). */
  get position(): number {
    return this.base + this.start;
  }

  /** Number of fds held (received, neither taken nor closed yet). */
  get pendingFdCount(): number {
    let n = 0;
    for (const b of this.fdBatches) n += b.fds.length;
    return n;
  }

  /**
   * Declares that the message starting at `start` is `size` bytes long (header included).
   * Rejects sizes above maxMessageSize before allocating (ERR_MESSAGE_TOO_LARGE), otherwise
   * makes room for the whole message so the next reads can complete it. Returns true when the
   * whole message is already buffered.
   */
  need(size: number): boolean {
    if (!(size <= this.maxMessageSize)) {
      throw new TransportError(
        "ERR_MESSAGE_TOO_LARGE",
        `message of ${size} bytes exceeds the limit of ${this.maxMessageSize} bytes`,
        { limit: this.maxMessageSize, actual: size },
      );
    }
    if (this.end - this.start >= size) return true;
    this.needed = size;
    if (this.bytes.length - this.start < size) this.relocate(size);
    return false;
  }

  u8(offset: number): number {
    return this.bytes[this.start + offset];
  }
  u16(offset: number): number {
    return this.view.getUint16(this.start + offset, true);
  }
  u32(offset: number): number {
    return this.view.getUint32(this.start + offset, true);
  }
  i32(offset: number): number {
    return this.view.getInt32(this.start + offset, true);
  }
  u64(offset: number): bigint {
    return this.view.getBigUint64(this.start + offset, true);
  }
  /** A view of `length` bytes at `offset` (no copy; invalid after the buffer moves). */
  subarray(offset: number, length: number): Uint8Array {
    const from = this.start + offset;
    return this.bytes.subarray(from, from + length);
  }

  /**
   * Takes ownership of the fds that arrived with the next `length` unconsumed bytes (see
   * FdBatch for the attribution rule). The caller now owns them and must close them.
   */
  takeFds(length: number): number[] {
    const batches = this.fdBatches;
    if (batches.length === 0) return EMPTY_FDS;
    const limit = this.base + this.start + length;
    let taken: number[] | null = null;
    let i = 0;
    while (i < batches.length && batches[i].anchor < limit) {
      taken = taken === null ? batches[i].fds : taken.concat(batches[i].fds);
      i++;
    }
    if (i > 0) batches.splice(0, i);
    return taken ?? EMPTY_FDS;
  }

  /** Drops `length` bytes from the front; fds anchored in them and not taken are closed. */
  consume(length: number): void {
    if (length < 0 || length > this.end - this.start) {
      throw new TransportError("ERR_INVALID_ARGUMENT", `cannot consume ${length} of ${this.end - this.start} bytes`);
    }
    this.start += length;
    this.needed = 0;
    if (this.fdBatches.length !== 0) this.closeFdsBefore(this.base + this.start);
    if (this.start === this.end) {
      this.base += this.start;
      this.start = this.end = 0;
    }
  }

  /** Copies bytes in (for framers fed from somewhere other than a Connection, e.g. tests). */
  append(chunk: Uint8Array, fds: readonly number[] = EMPTY_FDS): void {
    const tail = this.reserveTail(chunk.length);
    if (tail.length < chunk.length) {
      // The caller pushed more than the buffer may hold: release the fds before failing.
      for (const fd of fds) closeFdQuietly(fd);
      throw new TransportError(
        "ERR_MESSAGE_TOO_LARGE",
        `${this.available + chunk.length} unconsumed bytes exceed the limit of ${this.maxMessageSize} bytes`,
        { limit: this.maxMessageSize, actual: this.available + chunk.length },
      );
    }
    tail.set(chunk);
    this.commit(chunk.length, fds);
  }

  /**
   * Free tail to read into: at least `minimum` bytes when the limit allows, compacting or
   * growing (doubling, up to maxMessageSize) as needed. Used by the connection before a read.
   */
  reserveTail(minimum = 1): Uint8Array {
    this.reserveTailRoom(minimum);
    return this.bytes.subarray(this.end);
  }

  /** reserveTail() without the view: the free bytes at `end` (no allocation unless it grows). */
  reserveTailRoom(minimum = 1): number {
    if (this.start === this.end && this.start !== 0) {
      this.base += this.start;
      this.start = this.end = 0;
    }
    const wanted = Math.max(minimum, this.needed - this.available);
    if (this.bytes.length - this.end < wanted) {
      this.relocate(Math.max(this.available + wanted, this.available * 2, this.bytes.length));
    }
    return this.bytes.length - this.end;
  }

  /** Marks `length` bytes written into the tail as received, with the fds that came with them. */
  commit(length: number, fds: readonly number[] = EMPTY_FDS): void {
    this.end += length;
    if (fds.length !== 0) {
      // An fd batch with no bytes (length 0) belongs with the next byte to arrive.
      this.fdBatches.push({ anchor: this.base + this.end - (length === 0 ? 0 : 1), fds: fds.slice() });
    }
  }

  /** Discards everything and closes every fd held. */
  clear(): void {
    for (const b of this.fdBatches) for (const fd of b.fds) closeFdQuietly(fd);
    this.fdBatches = [];
    this.base += this.end;
    this.start = this.end = 0;
    this.needed = 0;
  }

  private closeFdsBefore(limit: number): void {
    const batches = this.fdBatches;
    let i = 0;
    while (i < batches.length && batches[i].anchor < limit) {
      for (const fd of batches[i].fds) closeFdQuietly(fd);
      i++;
    }
    if (i > 0) batches.splice(0, i);
  }

  /** Moves unconsumed bytes to the front of a buffer of at least `capacity` bytes. */
  private relocate(capacity: number): void {
    const live = this.end - this.start;
    const limit = Math.max(this.maxMessageSize, this.bytes.length);
    capacity = Math.min(capacity, limit);
    if (capacity > this.bytes.length) {
      const grown = new Uint8Array(Math.min(limit, Math.max(capacity, this.bytes.length * 2)));
      grown.set(this.bytes.subarray(this.start, this.end));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    } else if (this.start !== 0) {
      this.bytes.copyWithin(0, this.start, this.end);
    }
    this.base += this.start;
    this.start = 0;
    this.end = live;
  }
}

const EMPTY_FDS: number[] = [];
Object.freeze(EMPTY_FDS);

/**
 * Reused little-endian writer for serializers. Write with the typed helpers (each appends at
 * `length`), patch earlier fields with the *At helpers (e.g. a size known at the end), then pass
 * bytes() to Connection.send(). bytes() is a view that the next write may invalidate.
 */
export class SendBuffer {
  bytes: Uint8Array;
  view: DataView;
  length = 0;

  constructor(initialCapacity = 4096) {
    this.bytes = new Uint8Array(Math.max(16, initialCapacity));
    this.view = new DataView(this.bytes.buffer);
  }

  /** Starts a new batch of messages (keeps the storage). */
  reset(): this {
    this.length = 0;
    return this;
  }

  /** Ensures room for `extra` more bytes and returns the offset they start at. */
  reserve(extra: number): number {
    const at = this.length;
    const needed = at + extra;
    if (needed > this.bytes.length) {
      let capacity = this.bytes.length * 2;
      while (capacity < needed) capacity *= 2;
      const grown = new Uint8Array(capacity);
      grown.set(this.bytes.subarray(0, at));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    this.length = needed;
    return at;
  }

  u8(value: number): this {
    const at = this.reserve(1);
    this.bytes[at] = value;
    return this;
  }
  u16(value: number): this {
    const at = this.reserve(2); // before reading this.view: reserve() may replace it
    this.view.setUint16(at, value, true);
    return this;
  }
  u32(value: number): this {
    const at = this.reserve(4); // before reading this.view: reserve() may replace it
    this.view.setUint32(at, value, true);
    return this;
  }
  i32(value: number): this {
    const at = this.reserve(4); // before reading this.view: reserve() may replace it
    this.view.setInt32(at, value, true);
    return this;
  }
  u64(value: bigint): this {
    const at = this.reserve(8); // before reading this.view: reserve() may replace it
    this.view.setBigUint64(at, value, true);
    return this;
  }
  i64(value: bigint): this {
    const at = this.reserve(8); // before reading this.view: reserve() may replace it
    this.view.setBigInt64(at, value, true);
    return this;
  }
  /** Appends `count` zero bytes (padding). */
  zeros(count: number): this {
    const at = this.reserve(count);
    this.bytes.fill(0, at, at + count);
    return this;
  }
  bytesFrom(source: Uint8Array): this {
    const at = this.reserve(source.length);
    this.bytes.set(source, at);
    return this;
  }

  u32At(offset: number, value: number): this {
    this.view.setUint32(offset, value, true);
    return this;
  }
  u64At(offset: number, value: bigint): this {
    this.view.setBigUint64(offset, value, true);
    return this;
  }

  /** The bytes written since reset() (a view; invalidated by the next write that grows). */
  bytesView(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }
}
