// An in-memory StreamConnection: the server end of a fuzzed session without a socket. What the
// server sends is handed to `onSend` synchronously (copied); `deliver()` plays a chunk (with
// fds) into the server's data callback as a read would. 'close' follows destroy()/end() or
// hangUp() asynchronously, once, as on a socket.
import { EventEmitter } from "node:events";
import type { CloseReason, StreamConnection } from "../../../src/transport/connection.js";
import type { TransportError } from "../../../src/transport/errors.js";

export class MemoryConnection extends EventEmitter implements StreamConnection {
  private receiver: ((chunk: Uint8Array, fds: number[]) => void) | null = null;
  private closed = false;
  paused = false;
  /** How the connection closed, once it has. */
  closeReason: CloseReason | null = null;
  /** Pretend the peer is slow: reported as unsent bytes (backpressure). */
  writableLength = 0;

  constructor(private readonly onSend: (bytes: Uint8Array, fds: readonly number[]) => void) {
    super();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  onData(callback: (chunk: Uint8Array, fds: number[]) => void): void {
    this.receiver = callback;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly number[]): boolean {
    if (this.closed) throw new Error("send on a closed connection");
    const parts = data instanceof Uint8Array ? [data] : data;
    let total = 0;
    for (const p of parts) total += p.length;
    const copy = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      copy.set(p, at);
      at += p.length;
    }
    this.onSend(copy, fds ?? []);
    return true;
  }

  /** Plays one received chunk; returns false when the connection no longer reads. */
  deliver(chunk: Uint8Array, fds: number[]): boolean {
    if (this.closed || this.receiver === null) return false;
    this.receiver(chunk, fds);
    return true;
  }

  end(): void {
    this.closeWith({ kind: "local", unconsumedBytes: 0 });
  }

  destroy(error?: TransportError): void {
    this.closeWith(error ? { kind: "error", error, unconsumedBytes: 0 } : { kind: "local", unconsumedBytes: 0 });
  }

  /** The peer hung up. */
  hangUp(): void {
    this.closeWith({ kind: "eof", unconsumedBytes: 0 });
  }

  private closeWith(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    process.nextTick(() => this.emit("close", reason));
  }
}
