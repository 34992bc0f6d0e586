// Trace events for vfio-user messages as they cross a socket, decoded from the bytes alone: a
// MessageTracer is fed every chunk of one direction (in order, split anywhere) and reports each
// message once its header — and for accesses the first bytes of the payload — has arrived.
// Pure: no I/O. Only installed when a logger traces, so it costs nothing otherwise.
import type { TraceEvent } from "../../log.js";
import { Command, HEADER_SIZE, HeaderFlag, commandName, errnoName } from "./constants.js";

/** Header plus what identifies an access: REGION_* (offset u64, region u32, count u32), DMA_* (address u64, count u64). */
const PREFIX = HEADER_SIZE + 16;

export class MessageTracer {
  private readonly prefix = new Uint8Array(PREFIX);
  private readonly view = new DataView(this.prefix.buffer);
  /** Bytes of the current message's prefix held so far. */
  private held = 0;
  /** Bytes of the current message still to skip once it was reported. */
  private skip = 0;
  /** Fds seen since the last reported message, counted with the next one (senders pass fds with a message sent alone). */
  private fds = 0;
  private broken = false;

  constructor(
    private readonly direction: "in" | "out",
    private readonly emit: (event: TraceEvent) => void,
  ) {}

  feed(chunk: Uint8Array, fds: number): void {
    this.fds += fds;
    let at = 0;
    while (!this.broken) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        this.skip -= n;
        at += n;
        if (this.skip > 0) return;
        continue;
      }
      const target = this.held < HEADER_SIZE ? HEADER_SIZE : Math.min(PREFIX, this.view.getUint32(4, true));
      if (this.held < target) {
        if (at === chunk.length) return;
        const n = Math.min(target - this.held, chunk.length - at);
        this.prefix.set(chunk.subarray(at, at + n), this.held);
        this.held += n;
        at += n;
        continue;
      }
      const total = this.view.getUint32(4, true);
      if (total < HEADER_SIZE) {
        // The stream cannot be framed any further (the parser closes the connection).
        this.emit({ ...this.describe(total), flags: ["unframeable"] });
        this.broken = true;
        return;
      }
      this.emit(this.describe(total));
      this.fds = 0;
      this.skip = total - this.held;
      this.held = 0;
    }
  }

  private describe(size: number): TraceEvent {
    const v = this.view;
    const command = v.getUint16(2, true);
    const flags = v.getUint32(8, true);
    const reply = (flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_REPLY;
    const event: TraceEvent = { protocol: "vfio-user", direction: this.direction, command: commandName(command), type: reply ? "reply" : "command", id: v.getUint16(0, true), size, fds: this.fds };
    const named: string[] = [];
    if (flags & HeaderFlag.NO_REPLY) named.push("no-reply");
    if (flags & HeaderFlag.ERROR) {
      named.push("error");
      event.errno = v.getUint32(12, true);
      event.errnoName = errnoName(event.errno);
    }
    if (named.length > 0) event.flags = named;
    const payload = size - HEADER_SIZE;
    if (!(flags & HeaderFlag.ERROR) && payload >= 16) {
      if (command === Command.REGION_READ || command === Command.REGION_WRITE) {
        event.fields = { region: v.getUint32(24, true), offset: "0x" + v.getBigUint64(16, true).toString(16), count: v.getUint32(28, true) };
      } else if (command === Command.DMA_READ || command === Command.DMA_WRITE) {
        event.fields = { address: "0x" + v.getBigUint64(16, true).toString(16), count: Number(v.getBigUint64(24, true)) };
      }
    }
    return event;
  }
}
