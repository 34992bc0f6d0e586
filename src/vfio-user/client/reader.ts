// Push-based framing of the server -> client byte stream: `push(chunk, fds)` for every read the
// socket delivers; complete messages come out through the sink with the fds that arrived with
// them. Pure: no socket code, so tests feed it bytes split at every offset.
//
// Fd attribution: the kernel ends a read right after the segment that carried SCM_RIGHTS, and a
// sender attaches fds to the first segment of the message they belong to. So the fds of one read
// belong to the last message that starts within that read, or — when no message starts in it —
// to the message in progress.
//
// Size limits: a message larger than `maxMessageSize` is never buffered: its header is reported
// ("oversized") and its body discarded as it streams past, so the stream stays in sync. A size
// field below the 16-byte header cannot be skipped and makes the stream unusable ("fatal").
import { HEADER_SIZE, readHeader, type Header } from "./protocol.js";

export type FrameEvent =
  /** `payload` views the read buffer: valid only during the sink call (copy what you keep). */
  | { kind: "message"; header: Header; payload: Uint8Array; fds: number[] }
  /** The message exceeded the limit; its body is being discarded and its fds were closed. */
  | { kind: "oversized"; header: Header }
  /** The stream cannot be framed any more (size field below the header size). */
  | { kind: "fatal"; problem: string };

const EMPTY = new Uint8Array(0);

export class MessageReader {
  private leftover: Uint8Array = EMPTY;
  /** Fds that arrived for the partial message held in `leftover`. */
  private carriedFds: number[] = [];
  /** Bytes of an oversized message body still to discard. */
  private skipRemaining = 0;
  private broken = false;

  constructor(
    private readonly maxMessageSize: number,
    private readonly sink: (event: FrameEvent) => void,
    private readonly closeFd: (fd: number) => void,
  ) {
    if (maxMessageSize < HEADER_SIZE) throw new RangeError(`maxMessageSize ${maxMessageSize} is below the header size`);
  }

  /** Bytes buffered for a message not yet complete. */
  get pendingBytes(): number {
    return this.leftover.length;
  }

  push(chunk: Uint8Array, fds: readonly number[] = []): void {
    if (this.broken) return this.closeAll(fds);
    if (this.skipRemaining > 0) {
      const n = Math.min(this.skipRemaining, chunk.length);
      this.skipRemaining -= n;
      if (n === chunk.length) return this.closeAll(fds); // fds of the discarded message
      chunk = chunk.subarray(n);
    }
    const chunkStart = this.leftover.length;
    let data: Uint8Array;
    if (chunkStart === 0) data = chunk;
    else {
      data = new Uint8Array(chunkStart + chunk.length);
      data.set(this.leftover, 0);
      data.set(chunk, chunkStart);
    }

    // Pass 1: where do messages start? (Only needed to attribute this read's fds.)
    let owner = 0; // start of the message owning this read's fds
    if (fds.length > 0) {
      for (let p = 0; p < data.length; ) {
        if (p >= chunkStart) owner = p;
        if (p + HEADER_SIZE > data.length) break;
        const size = readU32(data, p + 4);
        if (size < HEADER_SIZE) break;
        p += size;
      }
    }

    // Pass 2: emit complete messages.
    let p = 0;
    let ownerFds = fds.length > 0 ? [...fds] : [];
    let fdsForFirst = this.carriedFds;
    this.carriedFds = [];
    while (p + HEADER_SIZE <= data.length) {
      const header = readHeader(data, p);
      let mine = fdsForFirst;
      fdsForFirst = [];
      if (p === owner && ownerFds.length > 0) {
        mine = mine.length > 0 ? mine.concat(ownerFds) : ownerFds;
        ownerFds = [];
      }
      if (header.size < HEADER_SIZE) {
        this.broken = true;
        this.closeAll(mine);
        this.closeAll(ownerFds);
        this.leftover = EMPTY;
        this.sink({ kind: "fatal", problem: `message at stream offset has size ${header.size}, below the ${HEADER_SIZE}-byte header; the stream cannot be re-synchronised` });
        return;
      }
      if (header.size > this.maxMessageSize) {
        this.closeAll(mine);
        const available = data.length - p;
        if (header.size > available) {
          this.skipRemaining = header.size - available;
          p = data.length;
        } else p += header.size;
        this.sink({ kind: "oversized", header });
        continue;
      }
      if (p + header.size > data.length) {
        fdsForFirst = mine; // partial message: keep its fds with it
        break;
      }
      this.sink({ kind: "message", header, payload: data.subarray(p + HEADER_SIZE, p + header.size), fds: mine });
      p += header.size;
      if (this.broken) return this.closeAll(ownerFds); // the sink closed us
    }
    // Whatever remains is the start of one message (header possibly partial).
    this.carriedFds = fdsForFirst.length > 0 || ownerFds.length > 0 ? fdsForFirst.concat(ownerFds) : [];
    this.leftover = p < data.length ? data.slice(p) : EMPTY;
  }

  /** Drop buffered bytes and close fds held for a partial message (connection closing). */
  reset(): void {
    this.closeAll(this.carriedFds);
    this.carriedFds = [];
    this.leftover = EMPTY;
    this.skipRemaining = 0;
    this.broken = true;
  }

  private closeAll(fds: readonly number[]): void {
    for (const fd of fds) this.closeFd(fd);
  }
}

function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
}
