// What the client needs from a connection: ordered bytes out (with fds attached to a message),
// chunks in with the fds that arrived with them, and close notification. The transport's
// Connection is adapted to this in connect.ts; tests may plug in anything that behaves the same.

import type { TraceEvent } from "../../log.js";
import { MessageTracer } from "../wire/trace.js";

export interface ClientChannel {
  /**
   * Queues whole messages — one, or several back to back (the client gathers posted writes) —
   * for sending, in call order; fds (which the channel only borrows) belong to the last message
   * and are only passed with a single one. The bytes are borrowed too: the client reuses the
   * buffer once send() returns, so what cannot be written at once must be copied. Throws if
   * the channel is closed. Must not call back synchronously.
   */
  send(bytes: Uint8Array, fds?: readonly number[]): void;
  /** Closes the connection; `onClose` fires once afterwards (if it has not already). */
  close(): void;
  /**
   * Installs the receive side. `onData` gets every received chunk (valid only during the call)
   * with the fds that came with it (the callee owns them). `onClose` fires once when the
   * connection ends, with the error if it ended abnormally.
   */
  start(onData: (chunk: Uint8Array, fds: number[]) => void, onClose: (error?: Error) => void): void;
  /** Closes an fd received from the peer (or created locally) that nobody kept. */
  closeFd(fd: number): void;
  /**
   * Backpressure (optional; without it the client cannot bound what a server that never reads
   * makes it queue): bytes accepted by send() and not yet written...
   */
  readonly writableLength?: number;
  /** ...stopping and restarting the delivery of received chunks... */
  pause?(): void;
  resume?(): void;
  /** ...and being told when everything queued has been written. */
  onDrain?(listener: () => void): void;
}

/** `channel`, reporting every message sent and received (vfio-user/wire/trace.ts). */
export function traceChannel(channel: ClientChannel, trace: (event: TraceEvent) => void): ClientChannel {
  const out = new MessageTracer("out", trace);
  const incoming = new MessageTracer("in", trace);
  return {
    send(bytes, fds) {
      out.feed(bytes, fds?.length ?? 0);
      channel.send(bytes, fds);
    },
    close: () => channel.close(),
    start(onData, onClose) {
      channel.start((chunk, fds) => {
        incoming.feed(chunk, fds.length);
        onData(chunk, fds);
      }, onClose);
    },
    closeFd: (fd) => channel.closeFd(fd),
    get writableLength() {
      return channel.writableLength;
    },
    pause: channel.pause && (() => channel.pause!()),
    resume: channel.resume && (() => channel.resume!()),
    onDrain: channel.onDrain && ((listener) => channel.onDrain!(listener)),
  };
}
