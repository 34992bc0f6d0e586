// Push-based framer for vfio-user streams. The socket layer forwards each received chunk with the
// fds that arrived alongside it; the parser keeps partial bytes itself and emits one event per
// complete message (or per framing error), in stream order.
//
// Which message owns an fd: a peer sends each message (header, payload, fds) with one sendmsg(),
// and Linux attaches the fds to the first socket buffer of that sendmsg. A recvmsg() may return
// bytes of earlier buffers first, but it stops right after the buffer that carries fds. So fds
// that arrive with a chunk belong to the LAST message that begins inside that chunk (found by
// walking the chunk's size fields before anything is delivered). If no message begins in the chunk
// they go to the message the chunk continues. Senders (ours included) must therefore put an
// fd-carrying message last in its sendmsg. Every fd the parser does not hand out in a Frame it
// closes: a failed stream, and whatever is pending at end()/dispose().
//
// A size field below the header or above the limit is fatal: the rest of the stream cannot be
// trusted to be framed (skipping a claimed 4 GiB body would hang the connection), so the parser
// reports the header (for an error reply) and drops everything after it; the endpoint closes.
import { closeSync } from "node:fs";
import { HEADER_SIZE, HeaderFlag, Errno, commandName } from "./constants.js";
import { WireError } from "./errors.js";
import { readU16, readU32 } from "./writer.js";

/** One complete message. */
export interface Frame {
  kind: "frame";
  msgId: number;
  command: number;
  /** Whole flags word; see `HeaderFlag`. */
  flags: number;
  /** The header's error field (meaningful in replies with the ERROR flag). */
  error: number;
  /** Message size including the header. */
  size: number;
  /**
   * Payload bytes after the header. A view into the chunk or into the parser's buffer that is
   * valid only until the onMessage callback returns: copy it (`body.slice()`) to keep it.
   */
  body: Uint8Array;
  /** Fds that came with this message; the receiver of the frame owns (and must close) them. */
  fds: number[];
}

/** A framing failure, delivered in stream order. */
export interface FrameError {
  kind: "error";
  error: WireError;
  /**
   * Header of the rejected message when it could be read (for addressing an error reply).
   * Absent when no reply can be addressed.
   */
  msgId?: number;
  command?: number;
  flags?: number;
  /**
   * True when the stream can no longer be framed (size field below 16 or above the limit): the
   * parser drops all further input and the connection should be closed. False when the
   * offending message was consumed and the stream is still in sync.
   */
  fatal: boolean;
}

export type ParseEvent = Frame | FrameError;

export interface ParserOptions {
  /** Largest accepted message, header included. A larger size field fails the stream. */
  maxMessageSize: number;
  /** How rejected fds are closed (default fs.closeSync, errors ignored). */
  closeFd?: (fd: number) => void;
  /**
   * Deliver every frame in one reused Frame object (no allocation per message besides the body
   * view): the frame itself, not only its body, is then valid only until onMessage returns.
   * For receivers that handle each message synchronously (the server's session).
   */
  reuseFrames?: boolean;
}

interface PendingFds {
  /** Stream position of the chunk the fds arrived with. */
  at: number;
  fds: number[];
}

export function isReply(flags: number): boolean {
  return (flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_REPLY;
}
export function isCommand(flags: number): boolean {
  return (flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND;
}
export function wantsReply(flags: number): boolean {
  return (flags & HeaderFlag.NO_REPLY) === 0;
}
export function hasError(flags: number): boolean {
  return (flags & HeaderFlag.ERROR) !== 0;
}

function defaultCloseFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed or never valid: nothing left to release
  }
}

export class MessageParser {
  private maxSize: number;
  private readonly closeFd: (fd: number) => void;
  /** Partial message bytes (header and body) carried over between chunks. */
  private buf = new Uint8Array(256);
  private buffered = 0;
  /** Stream position of the first byte not yet consumed. */
  private streamPos = 0;
  /** Fds of the message in progress (taken when it began). */
  private currentFds: number[] | null = null;
  private pending: PendingFds[] = [];
  private failed = false;
  /** Bumped by dispose(): a parse() whose callback ended the parser stops at once. */
  private generation = 0;
  /** The frame handed out again and again with reuseFrames (null: a new one per message). */
  private readonly shared: Frame | null;
  /** fds array of shared frames that came without fds (emptied after each message). */
  private readonly noFds: number[] = [];

  constructor(options: ParserOptions) {
    this.maxSize = options.maxMessageSize;
    this.closeFd = options.closeFd ?? defaultCloseFd;
    this.shared = options.reuseFrames ? { kind: "frame", msgId: 0, command: 0, flags: 0, error: 0, size: 0, body: EMPTY_BODY, fds: this.noFds } : null;
  }

  /** Changes the size limit, e.g. after VERSION negotiation. Applies to messages not yet begun. */
  setMaxMessageSize(size: number): void {
    this.maxSize = size;
  }

  get maxMessageSize(): number {
    return this.maxSize;
  }

  /** True after a fatal framing error: all further input is dropped. */
  get isFailed(): boolean {
    return this.failed;
  }

  /** True when bytes of an unfinished message are held. */
  get hasPartial(): boolean {
    return this.buffered > 0;
  }

  /**
   * Feeds one received chunk and the fds that arrived with it. Calls `onMessage` for every message
   * (or framing error) the chunk completes, in order, before returning. `onMessage` must not throw;
   * it may call end() or dispose() (the connection is closing), which drops the rest of the chunk.
   */
  parse(chunk: Uint8Array, fds: readonly number[] | null | undefined, onMessage: (event: ParseEvent) => void): void {
    if (this.failed) {
      if (fds) for (const fd of fds) this.closeFd(fd);
      return;
    }
    const generation = this.generation;
    if (fds && fds.length > 0) this.assignFds(chunk, fds.slice());

    let p = 0;
    const n = chunk.length;

    // Complete a message begun in an earlier chunk.
    if (this.buffered > 0 && p < n) {
      p = this.continueBuffered(chunk, p, onMessage);
      if (this.generation !== generation) return;
    }

    // Fast path: whole messages straight out of the chunk, no copy.
    while (!this.failed && this.buffered === 0 && p < n) {
      const avail = n - p;
      if (avail < HEADER_SIZE) {
        this.beginMessage(this.streamPos + p);
        this.append(chunk, p, avail);
        p = n;
        break;
      }
      const size = readU32(chunk, p + 4);
      const start = this.streamPos + p;
      if (size < HEADER_SIZE || size > this.maxSize) {
        this.beginMessage(start);
        p = this.rejectSize(chunk, p, size, avail, onMessage);
        if (this.generation !== generation) return;
        continue;
      }
      if (size > avail) {
        this.beginMessage(start);
        this.ensureCapacity(size);
        this.append(chunk, p, avail);
        p = n;
        break;
      }
      const frameFds = this.takeFdsFor(start);
      p += size;
      this.deliver(chunk, p - size, size, frameFds, onMessage);
      if (this.generation !== generation) return;
    }

    this.streamPos += n;
  }

  /**
   * The stream ended. Returns an error if it ended inside a message; closes every fd the parser
   * still holds either way. The parser can be reused afterwards as if new.
   */
  end(): WireError | undefined {
    let err: WireError | undefined;
    if (!this.failed && this.buffered > 0) {
      const got = this.buffered;
      err = new WireError(
        "WIRE_TRUNCATED",
        got > 0 && got < HEADER_SIZE
          ? `stream ended after ${got} bytes of a 16-byte message header`
          : `stream ended inside a message (${got} bytes buffered)`,
        { errno: Errno.EPROTO, actual: got },
      );
    }
    this.dispose();
    return err;
  }

  /** Closes every fd held and resets the parser. */
  dispose(): void {
    if (this.currentFds) for (const fd of this.currentFds) this.closeFd(fd);
    for (const group of this.pending) for (const fd of group.fds) this.closeFd(fd);
    this.currentFds = null;
    this.pending = [];
    this.buffered = 0;
    this.streamPos = 0;
    this.failed = false;
    this.generation++;
  }

  // --- internals ---

  private continueBuffered(chunk: Uint8Array, p: number, onMessage: (event: ParseEvent) => void): number {
    const n = chunk.length;
    if (this.buffered < HEADER_SIZE) {
      const take = Math.min(HEADER_SIZE - this.buffered, n - p);
      this.append(chunk, p, take);
      p += take;
      if (this.buffered < HEADER_SIZE) return p;
      const size = readU32(this.buf, 4);
      if (size < HEADER_SIZE || size > this.maxSize) {
        // Header complete but the size is unacceptable: reject, using the buffered header.
        const head = this.buf.slice(0, HEADER_SIZE);
        this.buffered = 0;
        const remaining = n - p;
        return p + this.rejectSizeWithHeader(head, size, remaining, onMessage);
      }
      this.ensureCapacity(size);
    }
    const size = readU32(this.buf, 4);
    const take = Math.min(size - this.buffered, n - p);
    this.append(chunk, p, take);
    p += take;
    if (this.buffered === size) {
      const fds = this.currentFds ?? EMPTY_FDS;
      this.currentFds = null;
      this.buffered = 0;
      this.deliver(this.buf, 0, size, fds, onMessage);
    }
    return p;
  }

  /** Rejects a message whose header starts at chunk[p]; returns the new chunk position. */
  private rejectSize(chunk: Uint8Array, p: number, size: number, avail: number, onMessage: (event: ParseEvent) => void): number {
    const head = chunk.subarray(p, p + HEADER_SIZE);
    return p + HEADER_SIZE + this.rejectSizeWithHeader(head, size, avail - HEADER_SIZE, onMessage);
  }

  /**
   * Handles a header whose size field is unacceptable (below the header or above the limit): the
   * stream fails, every fd held is closed, and one fatal event carries the header so the
   * endpoint can address an error reply before it closes. Consumes the rest of the chunk.
   */
  private rejectSizeWithHeader(head: Uint8Array, size: number, remaining: number, onMessage: (event: ParseEvent) => void): number {
    const msgId = readU16(head, 0);
    const command = readU16(head, 2);
    const flags = readU32(head, 8);
    if (this.currentFds) for (const fd of this.currentFds) this.closeFd(fd);
    this.currentFds = null;
    this.failed = true;
    for (const group of this.pending) for (const fd of group.fds) this.closeFd(fd);
    this.pending = [];
    const below = size < HEADER_SIZE;
    const error = below
      ? new WireError("WIRE_SIZE_BELOW_HEADER", `message size ${size} is below the 16-byte header (${commandName(command)}, id ${msgId}); the stream cannot be resynchronised`, {
          errno: Errno.EINVAL, command, msgId, field: "size", expected: HEADER_SIZE, actual: size,
        })
      : new WireError("WIRE_MESSAGE_TOO_LARGE", `message size ${size} exceeds the limit of ${this.maxSize} bytes (${commandName(command)}, id ${msgId}); the stream cannot be trusted past it`, {
          errno: Errno.EMSGSIZE, command, msgId, field: "size", expected: this.maxSize, actual: size,
        });
    onMessage({ kind: "error", fatal: true, msgId, command, flags, error });
    return remaining;
  }

  /**
   * Decides which message owns fds that arrived with `chunk` (see the top of this file), before
   * any of the chunk is consumed.
   */
  private assignFds(chunk: Uint8Array, fds: number[]): void {
    const chunkStart = this.streamPos;
    const chunkEnd = chunkStart + chunk.length;
    // Stream position of the first message boundary at or after the chunk's first byte.
    let next: number;
    if (this.buffered > 0) {
      const size = this.sizeOfMessageInProgress(chunk);
      next = size === undefined || size < HEADER_SIZE ? Infinity : chunkStart - this.buffered + size;
    } else next = chunkStart;
    let owner = -1;
    while (next < chunkEnd) {
      owner = next;
      const at = next - chunkStart;
      if (chunk.length - at < 8) break;
      const size = readU32(chunk, at + 4);
      if (size < HEADER_SIZE) break;
      next += size;
    }
    if (owner >= 0) this.pending.push({ at: owner, fds });
    else if (this.buffered > 0) (this.currentFds ??= []).push(...fds);
    else this.pending.push({ at: chunkStart, fds });
  }

  /** Size field of the buffered message, completed from `chunk` if needed; undefined if unknown yet. */
  private sizeOfMessageInProgress(chunk: Uint8Array): number | undefined {
    if (this.buffered >= 8) return readU32(this.buf, 4);
    const need = 8 - this.buffered;
    if (chunk.length < need) return undefined;
    const head = new Uint8Array(8);
    head.set(this.buf.subarray(0, this.buffered));
    head.set(chunk.subarray(0, need), this.buffered);
    return readU32(head, 4);
  }

  /** A message begins at stream position `start`: it takes the fds of chunks that began at or before it. */
  private beginMessage(start: number): void {
    const fds = this.takeFdsFor(start);
    this.currentFds = fds.length > 0 ? fds : null;
  }

  /** `fds` is EMPTY_FDS (never handed out: replaced by a fresh or the shared empty array) or owned. */
  private deliver(src: Uint8Array, start: number, size: number, fds: number[], onMessage: (event: ParseEvent) => void): void {
    const f = this.shared;
    if (f === null) {
      onMessage(makeFrame(src, start, size, fds === EMPTY_FDS ? [] : fds));
      return;
    }
    f.msgId = readU16(src, start);
    f.command = readU16(src, start + 2);
    f.flags = readU32(src, start + 8);
    f.error = readU32(src, start + 12);
    f.size = size;
    f.body = src.subarray(start + HEADER_SIZE, start + size);
    f.fds = fds === EMPTY_FDS ? this.noFds : fds;
    try {
      onMessage(f);
    } finally {
      // Whatever the receiver did with the array, the next message starts without fds.
      this.noFds.length = 0;
      f.fds = this.noFds;
      f.body = EMPTY_BODY;
    }
  }

  private takeFdsFor(start: number): number[] {
    if (this.pending.length === 0) return EMPTY_FDS;
    let out: number[] = EMPTY_FDS;
    while (this.pending.length > 0 && this.pending[0].at <= start) {
      const group = this.pending.shift()!;
      out = out === EMPTY_FDS ? group.fds : out.concat(group.fds);
    }
    return out;
  }

  private append(src: Uint8Array, p: number, len: number): void {
    this.ensureCapacity(this.buffered + len);
    this.buf.set(src.subarray(p, p + len), this.buffered);
    this.buffered += len;
  }

  private ensureCapacity(n: number): void {
    if (n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.buffered));
    this.buf = next;
  }
}

/** Marker for "no fds" inside the parser; never handed to a receiver. */
const EMPTY_FDS: number[] = [];
const EMPTY_BODY = new Uint8Array(0);

function makeFrame(src: Uint8Array, start: number, size: number, fds: number[]): Frame {
  return {
    kind: "frame",
    msgId: readU16(src, start),
    command: readU16(src, start + 2),
    flags: readU32(src, start + 8),
    error: readU32(src, start + 12),
    size,
    body: src.subarray(start + HEADER_SIZE, start + size),
    fds,
  };
}
