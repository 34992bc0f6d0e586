// Posted writes gathered into one reused buffer.
//
// A posted write needs no reply, so nothing is gained by handing each one to the socket on its
// own: the client encodes posted stores straight into this buffer (no per-write allocation) and
// sends it as one channel.send() before the event loop next waits, when it is full, or as soon as
// any other message must go out — that message is appended and the lot leaves together, so the
// socket order is the call order (a read issued after posts is behind them on the wire, and the
// server, handling requests in order, performs the posts first).
//
//   buffer: | msg | msg | msg | ... | (free)          length = bytes of whole messages
//           0                         length      capacity (64 KiB)
import { Command, HEADER_SIZE, HeaderFlag } from "../wire/constants.js";

/** Bytes gathered before the batch is sent at once. */
export const SEND_BATCH_CAPACITY = 64 * 1024;
/** Header + REGION_READ/WRITE head (offset u64, region u32, count u32). */
export const REGION_ACCESS_HEAD = HEADER_SIZE + 16;
const ACCESS_HEAD = REGION_ACCESS_HEAD;
const POSTED_FLAGS = HeaderFlag.TYPE_COMMAND | HeaderFlag.NO_REPLY;

export class SendBatch {
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  /** Bytes of whole messages waiting to be sent. */
  length = 0;

  constructor(capacity = SEND_BATCH_CAPACITY) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }

  get capacity(): number {
    return this.buf.length;
  }

  /** True when `n` more bytes fit. */
  fits(n: number): boolean {
    return this.length + n <= this.buf.length;
  }

  /**
   * Appends a posted REGION_WRITE of a little-endian `width`-byte value given as two u32 halves
   * (`valueHi` is used only for width 8). The caller checked that it fits.
   */
  postStore(msgId: number, offsetLo: number, offsetHi: number, region: number, width: number, valueLo: number, valueHi: number): void {
    const v = this.view;
    const p = this.length;
    const size = ACCESS_HEAD + width;
    v.setUint32(p, msgId | (Command.REGION_WRITE << 16), true);
    v.setUint32(p + 4, size, true);
    v.setUint32(p + 8, POSTED_FLAGS, true);
    v.setUint32(p + 12, 0, true);
    v.setUint32(p + 16, offsetLo, true);
    v.setUint32(p + 20, offsetHi, true);
    v.setUint32(p + 24, region, true);
    v.setUint32(p + 28, width, true);
    if (width === 4) v.setUint32(p + 32, valueLo, true);
    else if (width === 8) {
      v.setUint32(p + 32, valueLo, true);
      v.setUint32(p + 36, valueHi, true);
    } else if (width === 2) v.setUint16(p + 32, valueLo, true);
    else v.setUint8(p + 32, valueLo);
    this.length = p + size;
  }

  /** Appends a posted REGION_WRITE carrying `data`. The caller checked that it fits. */
  postBytes(msgId: number, offsetLo: number, offsetHi: number, region: number, data: Uint8Array): void {
    const v = this.view;
    const p = this.length;
    const size = ACCESS_HEAD + data.length;
    v.setUint32(p, msgId | (Command.REGION_WRITE << 16), true);
    v.setUint32(p + 4, size, true);
    v.setUint32(p + 8, POSTED_FLAGS, true);
    v.setUint32(p + 12, 0, true);
    v.setUint32(p + 16, offsetLo, true);
    v.setUint32(p + 20, offsetHi, true);
    v.setUint32(p + 24, region, true);
    v.setUint32(p + 28, data.length, true);
    const b = this.buf;
    const at = p + ACCESS_HEAD;
    if (data.length <= 16) for (let i = 0; i < data.length; i++) b[at + i] = data[i]; // cheaper than set() for a register's bytes
    else b.set(data, at);
    this.length = p + size;
  }

  /** Appends a REGION_READ request (reply wanted). The caller checked that it fits. */
  readRequest(msgId: number, offsetLo: number, offsetHi: number, region: number, count: number): void {
    const v = this.view;
    const p = this.length;
    v.setUint32(p, msgId | (Command.REGION_READ << 16), true);
    v.setUint32(p + 4, ACCESS_HEAD, true);
    v.setUint32(p + 8, HeaderFlag.TYPE_COMMAND, true);
    v.setUint32(p + 12, 0, true);
    v.setUint32(p + 16, offsetLo, true);
    v.setUint32(p + 20, offsetHi, true);
    v.setUint32(p + 24, region, true);
    v.setUint32(p + 28, count, true);
    this.length = p + ACCESS_HEAD;
  }

  /** Appends whole encoded messages. The caller checked that they fit. */
  append(bytes: Uint8Array): void {
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }

  /**
   * Everything gathered, and empties the batch. The view aliases the reused buffer: it must be
   * sent (the channel copies what it cannot write at once) before the next append.
   */
  take(): Uint8Array {
    const out = this.buf.subarray(0, this.length);
    this.length = 0;
    return out;
  }
}
