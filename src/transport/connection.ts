// UNIX stream connections with fd passing (SCM_RIGHTS), and the listener that accepts them.
//
// Receive path: one libuv poll watcher per socket, in the addon's stream mode. On each wake-up
// the watcher itself reads with recvmsg() straight into the free tail of the ReceiveBuffer (the
// connection keeps that tail armed in a shared control block), then calls JS once; the
// connection hands the buffer, holding every unconsumed byte, to the receiver (the protocol
// framer), which consumes all complete messages at once. A read that fills the tail is followed
// by another, so a burst of small messages costs one wake-up and one framer call per read, not
// per message. Sends the receiver makes (fd-less, up to BATCH_LIMIT) are gathered in the batch
// and the watcher sends them with one send() after the callback returns: a request/reply
// exchange costs one call from native code into JS and none back.
//
// Send path: the first send() of a tick calls sendmsg() at once (lowest latency for request /
// reply). Further fd-less sends in the same tick are copied into a batch that goes out as one
// sendmsg() when the tick's microtasks run (or when it reaches BATCH_LIMIT), so a burst of small
// messages (posted writes, replies to a batch of requests) costs one system call and one peer
// wake-up instead of one each. A send with fds flushes the batch first and goes out alone.
// Whatever the kernel does not take is copied to a queue (with duplicates of fds not yet sent)
// and flushed when the socket becomes writable; send() then returns false and 'drain' follows
// when the queue empties.

import { EventEmitter } from "node:events";
import { unlinkSync, lstatSync, type Stats } from "node:fs";
import {
  native,
  POLL_READABLE,
  POLL_WRITABLE,
  POLL_RECEIVED,
  POLL_SENT,
  CTL_READ_OFFSET,
  CTL_READ_LENGTH,
  CTL_READ_RESULT,
  CTL_SEND_LENGTH,
  CTL_SEND_RESULT,
  CTL_WORDS,
  type PollHandle,
  type NativeTransport,
} from "./native.js";
import { TransportError, syscallError } from "./errors.js";
import { DEFAULT_LIMITS, KERNEL_MAX_FDS_PER_MESSAGE, type TransportLimits } from "./limits.js";
import { ReceiveBuffer } from "./buffers.js";
import { closeFdQuietly } from "./fd.js";

const EINTR = 4;
const EAGAIN = 11;
const ENOTSOCK = 88;
const EPROTOTYPE = 91;
const EAFNOSUPPORT = 97;
const EMFILE = 24;
const ENFILE = 23;
const EADDRINUSE = 98;

/** Reads smaller than this are not worth a system call: compact or grow first. */
const MIN_READ = 4096;
/** Reads per wake-up before yielding to the event loop (keeps timers and signals responsive). */
const MAX_READS_PER_WAKEUP = 16;
/** Most chunks one send() passes to sendmsg() as separate iovecs (MAX_IOV in the addon). */
const MAX_IOV = 64;
/** Bytes coalesced from sends of one tick before they are written without waiting. */
const BATCH_LIMIT = 64 * 1024;

export interface ConnectionOptions {
  /** Limits for this connection (defaults: DEFAULT_LIMITS). */
  limits?: Partial<TransportLimits>;
  /** Initial receive buffer capacity in bytes (default 64 KiB, capped by maxMessageSize). */
  receiveBufferSize?: number;
}

/**
 * Why a connection closed, passed to the 'close' event.
 * - "local": destroy() or end() on this side;
 * - "eof": the peer closed its end with no partial message buffered;
 * - "error": `error` says what went wrong (a failed system call such as ECONNRESET, the peer
 *   closing mid-message, too many fds, an oversized message, or a receiver that threw).
 */
export interface CloseReason {
  kind: "local" | "eof" | "error";
  error?: TransportError;
  /** Bytes received but never consumed by the receiver when the connection closed. */
  unconsumedBytes: number;
}

/**
 * What a protocol endpoint uses of its connection. `Connection` is the socket one; an
 * in-memory one (fuzz targets, tests) drives an endpoint without a socket.
 * The contract is Connection's: fds given to the onData callback are its to close, 'close'
 * is emitted once, asynchronously, after destroy()/end() or the peer's hang-up.
 */
export interface StreamConnection {
  readonly isClosed: boolean;
  /** Bytes accepted by send() but not yet written (backpressure). */
  readonly writableLength: number;
  onData(callback: (chunk: Uint8Array, fds: number[]) => void): void;
  pause(): void;
  resume(): void;
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly number[]): boolean;
  end(): void;
  destroy(error?: TransportError): void;
  on(event: "close", listener: (reason: CloseReason) => void): this;
  on(event: "drain", listener: () => void): this;
  once(event: "close", listener: (reason: CloseReason) => void): this;
}

/** A framer: called after every read with the receive buffer holding all unconsumed bytes. */
export type Receiver = (buffer: ReceiveBuffer, connection: Connection) => void;

interface Pending {
  data: Uint8Array;
  offset: number;
  /** Our own duplicates of fds not yet sent (closed once sent or dropped). */
  fds: number[] | null;
}

function resolveLimits(partial: Partial<TransportLimits> | undefined): TransportLimits {
  const limits = { ...DEFAULT_LIMITS, ...partial };
  if (!Number.isInteger(limits.maxFdsPerMessage) || limits.maxFdsPerMessage < 0 || limits.maxFdsPerMessage > KERNEL_MAX_FDS_PER_MESSAGE) {
    throw new TransportError(
      "ERR_INVALID_ARGUMENT",
      `maxFdsPerMessage must be an integer in [0, ${KERNEL_MAX_FDS_PER_MESSAGE}], got ${limits.maxFdsPerMessage}`,
    );
  }
  if (!Number.isSafeInteger(limits.maxMessageSize) || limits.maxMessageSize < 1) {
    throw new TransportError("ERR_INVALID_ARGUMENT", `maxMessageSize must be a positive integer, got ${limits.maxMessageSize}`);
  }
  return limits;
}

/**
 * One end of a UNIX stream socket. Create with connect(), adoptFd(), or from a Server.
 *
 * Receiving starts when a receiver is installed (setReceiver() or onData()); until then bytes
 * wait in the kernel. Received fds are owned by the receive buffer until the receiver takes them
 * (ReceiveBuffer.takeFds); every fd not taken is closed when its bytes are consumed or the
 * connection closes, so a rejecting framer cannot leak them.
 *
 * Events: 'drain' () when queued sends have all been written; 'close' (reason: CloseReason),
 * emitted once, asynchronously, after the socket fd has been closed.
 *
 * The connection owns its socket fd: destroy()/end() close it; do not close `fd` yourself.
 */
export class Connection extends EventEmitter implements StreamConnection {
  /** The socket fd (-1 once closed). */
  fd: number;
  readonly limits: Readonly<TransportLimits>;
  readonly receiveBuffer: ReceiveBuffer;

  private readonly n: NativeTransport;
  private poll: PollHandle | null = null;
  private pollEvents = 0;
  private receiver: Receiver | null = null;
  private paused = false;
  private queue: Pending[] = [];
  private queuedBytes = 0;
  /** Sends coalesced during this tick (see the send path note at the top). */
  private batch: Uint8Array | null = null;
  private batchLength = 0;
  private sentThisTick = false;
  /**
   * True while the receiver runs: the first send of that tick then needs no microtask to end
   * its batch, readAvailable() ends it when the receiver returns (a request/reply server's
   * reply costs no microtask hop).
   */
  private inReceiver = false;
  private batchEndsWithReceive = false;
  private readonly endTick = () => {
    this.sentThisTick = false;
    if (this.batchLength !== 0 && !this.closed) this.flushBatch();
  };
  private ending = false;
  private closed = false;
  /** fdInfo[0] = fd count, fdInfo[1] = control data truncated, fdInfo[2..] = fds. */
  private readonly fdInfo: Int32Array;
  /** Stream mode words shared with the watcher (CTL_*). */
  private readonly control = new Int32Array(CTL_WORDS);
  /** The receive buffer array the watcher was given (re-registered when the buffer moves). */
  private streamInput: Uint8Array | null = null;
  /** Inside a callback that reported POLL_RECEIVED: the watcher sends the batch afterwards. */
  private inNativeWake = false;
  /** Bytes of the batch handed to the watcher to send (CTL_SEND_LENGTH), for POLL_SENT. */
  private nativeSendLength = 0;

  /** @internal use connect(), adoptFd() or a Server; `fd` must be a prepared socket. */
  constructor(fd: number, options: ConnectionOptions = {}) {
    super();
    this.n = native();
    this.fd = fd;
    this.limits = Object.freeze(resolveLimits(options.limits));
    this.receiveBuffer = new ReceiveBuffer({
      maxMessageSize: this.limits.maxMessageSize,
      initialCapacity: options.receiveBufferSize,
    });
    // One slot more than allowed so that "exactly one too many" is seen as such, not truncated.
    this.fdInfo = new Int32Array(2 + this.limits.maxFdsPerMessage + 1);
    const poll = this.n.pollStart(fd, 0, (events) => this.onPoll(events));
    if (typeof poll === "number") throw syscallError("uv_poll_init", -poll, { fd });
    this.poll = poll;
    this.batch = new Uint8Array(BATCH_LIMIT);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes accepted by send() but not yet written to the socket. */
  get writableLength(): number {
    return this.queuedBytes + this.batchLength + this.control[CTL_SEND_LENGTH];
  }

  /**
   * Installs the framer and starts reading. The receiver must consume every complete message
   * it can (ReceiveBuffer.consume) and leave partial ones; it may call need() to declare the
   * size of the message it is waiting for. Throwing a TransportError from it (e.g. need()'s
   * ERR_MESSAGE_TOO_LARGE) destroys the connection with that error.
   */
  setReceiver(receiver: Receiver): void {
    this.receiver = receiver;
    this.updatePoll();
  }

  /**
   * Raw mode: `callback(chunk, fds)` for every read. `chunk` is a view valid only during the
   * callback (copy what you keep); `fds` arrived with it and now belong to the callback, which
   * must close them. Installs a receiver that consumes everything.
   */
  onData(callback: (chunk: Uint8Array, fds: number[]) => void): void {
    this.setReceiver((buffer) => {
      const length = buffer.available;
      const fds = buffer.takeFds(length);
      const chunk = buffer.subarray(0, length);
      buffer.consume(length);
      callback(chunk, fds);
    });
  }

  /** Stops reading (the peer's sends then block once the socket buffers fill). */
  pause(): void {
    this.paused = true;
    this.updatePoll();
  }

  resume(): void {
    this.paused = false;
    this.updatePoll();
  }

  /**
   * Sends `data` (one buffer, or several sent as one sendmsg with an iovec each) with `fds`
   * attached. The fds are borrowed: the peer receives its own copies, and the caller may close
   * its fds as soon as send() returns (if they must be queued, the connection keeps duplicates).
   * For the peer to attach fds to the right message, a send that carries fds must contain
   * exactly that one message.
   *
   * Returns true when the bytes went to the kernel or into this tick's batch (written when the
   * tick's microtasks run), false when some bytes had to be queued because the socket is full
   * (wait for 'drain' before sending much more). Throws ERR_CLOSED after close or end(),
   * ERR_SEND_TOO_MANY_FDS above limits.maxFdsPerMessage, ERR_INVALID_ARGUMENT for fds without
   * bytes. A failing socket (EPIPE, ECONNRESET...) destroys the connection: send() returns false
   * and 'close' reports the error.
   */
  send(data: Uint8Array | readonly Uint8Array[], fds?: readonly number[]): boolean {
    if (this.closed || this.ending) {
      throw new TransportError("ERR_CLOSED", "cannot send on a closed connection", { fd: this.fd });
    }
    const withFds = fds !== undefined && fds.length !== 0 ? fds : null;
    if (withFds !== null && withFds.length > this.limits.maxFdsPerMessage) {
      throw new TransportError(
        "ERR_SEND_TOO_MANY_FDS",
        `cannot send ${withFds.length} fds in one message (limit ${this.limits.maxFdsPerMessage})`,
        { limit: this.limits.maxFdsPerMessage, actual: withFds.length },
      );
    }
    let single: Uint8Array | null;
    let total: number;
    if (data instanceof Uint8Array) {
      single = data;
      total = data.length;
    } else {
      total = 0;
      for (const chunk of data) total += chunk.length;
      single = data.length === 1 ? data[0] : null;
      if (data.length > MAX_IOV) {
        // More chunks than one sendmsg takes (the addon's iovec limit): send one joined copy.
        single = new Uint8Array(total);
        let at = 0;
        for (const chunk of data) {
          single.set(chunk, at);
          at += chunk.length;
        }
        data = single;
      }
    }
    if (total === 0) {
      if (withFds !== null) throw new TransportError("ERR_INVALID_ARGUMENT", "fds need at least one byte to travel with");
      return true;
    }
    if (this.control[CTL_SEND_LENGTH] !== 0) {
      // Sent from a microtask after the receiver, before the watcher sent the receiver's batch:
      // that batch goes first.
      this.sendHandedOffBatch();
      if (this.closed) return false;
    }
    if (this.queue.length !== 0) {
      this.enqueue(data, 0, withFds === null ? null : this.duplicate(withFds));
      return false;
    }
    if (this.inNativeWake && withFds === null && this.batchLength + total <= BATCH_LIMIT) {
      // The watcher sends the batch when the callback returns (see the top of this file).
      this.appendToBatch(data, total);
      return true;
    }
    if (this.sentThisTick && withFds === null && this.batchLength + total <= BATCH_LIMIT) {
      this.appendToBatch(data, total);
      return true;
    }
    if (this.batchLength !== 0 && !this.flushBatch()) {
      if (this.closed) return false;
      this.enqueue(data, 0, withFds === null ? null : this.duplicate(withFds));
      return false;
    }
    if (!this.sentThisTick) {
      this.sentThisTick = true;
      if (this.inReceiver) this.batchEndsWithReceive = true;
      else queueMicrotask(this.endTick);
    }
    let sent: number;
    do {
      sent = single !== null
        ? this.n.send(this.fd, single, 0, total, withFds)
        : this.n.sendv(this.fd, data as readonly Uint8Array[], withFds);
    } while (sent === -EINTR);
    if (sent === total) return true;
    if (sent === -EAGAIN) sent = 0;
    if (sent < 0) {
      this.destroy(syscallError("sendmsg", -sent, { fd: this.fd }));
      return false;
    }
    // Linux sends the fds with the first byte that goes out, so they are gone when sent > 0.
    this.enqueue(data, sent, sent === 0 && withFds !== null ? this.duplicate(withFds) : null);
    return false;
  }

  /**
   * Orderly close: flushes queued sends, shuts down the write side, and closes once the peer
   * closes its end ('close' with kind "local"). Received data keeps flowing to the receiver
   * meanwhile. Use destroy() to close at once.
   */
  end(): void {
    if (this.closed || this.ending) return;
    if (this.control[CTL_SEND_LENGTH] !== 0) this.sendHandedOffBatch();
    if (this.batchLength !== 0 && !this.closed) this.flushBatch();
    if (this.closed) return;
    this.ending = true;
    this.updatePoll();
    if (this.queue.length === 0) this.shutdownWrite();
  }

  /**
   * Abrupt close: closes the socket, drops queued sends, closes every received fd not taken.
   * 'close' follows asynchronously with kind "error" when `error` is given, else "local".
   */
  destroy(error?: TransportError): void {
    this.closeWith(error === undefined ? { kind: "local" } : { kind: "error", error });
  }

  private closeWith(reason: { kind: CloseReason["kind"]; error?: TransportError }): void {
    if (this.closed) return;
    this.closed = true;
    // What send() took into the batch (a receiver's last reply before it closes, e.g. an error
    // reply to a message that broke framing) gets one non-blocking attempt, as a send() outside
    // a receive wake-up would have made at once. Queued bytes are dropped.
    const pending = this.control[CTL_SEND_LENGTH] + this.batchLength;
    this.control[CTL_SEND_LENGTH] = 0;
    if (pending !== 0 && this.queue.length === 0 && reason.kind !== "error") this.n.send(this.fd, this.batch!, 0, pending, null);
    if (this.poll !== null) this.n.pollClose(this.poll);
    this.poll = null;
    this.n.close(this.fd);
    this.fd = -1;
    const unconsumedBytes = this.receiveBuffer.available;
    this.receiveBuffer.clear();
    for (const pending of this.queue) if (pending.fds !== null) for (const fd of pending.fds) closeFdQuietly(fd);
    this.queue = [];
    this.queuedBytes = 0;
    this.batchLength = 0;
    const full: CloseReason = { ...reason, unconsumedBytes };
    process.nextTick(() => this.emit("close", full));
  }

  /** Sends, from JS, the batch bytes the watcher was about to send. */
  private sendHandedOffBatch(): void {
    const length = this.control[CTL_SEND_LENGTH];
    this.control[CTL_SEND_LENGTH] = 0;
    this.nativeSendLength = 0;
    this.batchLength = length;
    this.flushBatch();
  }

  /** POLL_SENT: the watcher's send of the batch fell short; queue what the kernel refused. */
  private onNativeSendShort(): void {
    const length = this.nativeSendLength;
    this.nativeSendLength = 0;
    let sent = this.control[CTL_SEND_RESULT];
    if (this.closed || length === 0) return;
    if (sent === -EAGAIN) sent = 0;
    if (sent < 0) {
      this.destroy(syscallError("sendmsg", -sent, { fd: this.fd }));
      return;
    }
    this.enqueue(this.batch!.subarray(0, length), sent, null);
  }

  /**
   * Points the watcher at the free tail of the receive buffer (or tells it not to read), and
   * hands it the batch gathered during a receive wake-up. Called whenever JS returns to the
   * watcher.
   */
  private armStream(): void {
    const control = this.control;
    if (this.batchLength !== 0 && this.inNativeWake && !this.closed) {
      control[CTL_SEND_LENGTH] = this.batchLength;
      this.nativeSendLength = this.batchLength;
      this.batchLength = 0;
    }
    if (this.inNativeWake && this.batchEndsWithReceive) {
      // A send with fds during the wake-up started a tick batch: it was handed off above.
      this.batchEndsWithReceive = false;
      this.sentThisTick = false;
    }
    this.inNativeWake = false;
    const reading = !this.closed && (this.ending || (this.receiver !== null && !this.paused));
    if (!reading) {
      control[CTL_READ_LENGTH] = 0;
      return;
    }
    const buffer = this.receiveBuffer;
    const room = buffer.reserveTailRoom(MIN_READ);
    if (room === 0 || this.poll === null) {
      // Full: the JS read path reports it on the next wake-up.
      control[CTL_READ_LENGTH] = 0;
      return;
    }
    if (buffer.bytes !== this.streamInput) {
      const r = this.n.pollSetStream(this.poll, buffer.bytes, this.fdInfo, control, this.batch!);
      if (r < 0) {
        control[CTL_READ_LENGTH] = 0;
        return;
      }
      this.streamInput = buffer.bytes;
    }
    control[CTL_READ_OFFSET] = buffer.end;
    control[CTL_READ_LENGTH] = room;
  }

  private appendToBatch(data: Uint8Array | readonly Uint8Array[], total: number): void {
    if (this.batch === null) this.batch = new Uint8Array(BATCH_LIMIT);
    const batch = this.batch;
    if (data instanceof Uint8Array) {
      batch.set(data, this.batchLength);
    } else {
      let at = this.batchLength;
      for (const chunk of data) {
        batch.set(chunk, at);
        at += chunk.length;
      }
    }
    this.batchLength += total;
  }

  /** Writes the batch; what the kernel refuses moves to the queue. False unless all was written. */
  private flushBatch(): boolean {
    const length = this.batchLength;
    this.batchLength = 0;
    let sent: number;
    do sent = this.n.send(this.fd, this.batch!, 0, length, null);
    while (sent === -EINTR);
    if (sent === length) return true;
    if (sent === -EAGAIN) sent = 0;
    if (sent < 0) {
      this.destroy(syscallError("sendmsg", -sent, { fd: this.fd }));
      return false;
    }
    this.enqueue(this.batch!.subarray(0, length), sent, null);
    return false;
  }

  private duplicate(fds: readonly number[]): number[] {
    const copies: number[] = [];
    for (const fd of fds) {
      const copy = this.n.dup(fd);
      if (copy < 0) {
        for (const c of copies) closeFdQuietly(c);
        throw syscallError("dup", -copy, { fd });
      }
      copies.push(copy);
    }
    return copies;
  }

  private enqueue(data: Uint8Array | readonly Uint8Array[], skip: number, fds: number[] | null): void {
    let copy: Uint8Array;
    if (data instanceof Uint8Array) {
      copy = data.slice(skip);
    } else {
      let total = 0;
      for (const chunk of data) total += chunk.length;
      copy = new Uint8Array(total - skip);
      let at = -skip;
      for (const chunk of data) {
        if (at >= 0) copy.set(chunk, at);
        else if (at + chunk.length > 0) copy.set(chunk.subarray(-at), 0);
        at += chunk.length;
      }
    }
    this.queue.push({ data: copy, offset: 0, fds });
    this.queuedBytes += copy.length;
    this.updatePoll();
  }

  private flush(): void {
    while (this.queue.length !== 0) {
      const head = this.queue[0];
      const length = head.data.length - head.offset;
      const sent = this.n.send(this.fd, head.data, head.offset, length, head.fds);
      if (sent === -EINTR) continue;
      if (sent === -EAGAIN) return;
      if (sent < 0) {
        this.destroy(syscallError("sendmsg", -sent, { fd: this.fd }));
        return;
      }
      if (head.fds !== null) {
        for (const fd of head.fds) closeFdQuietly(fd);
        head.fds = null;
      }
      head.offset += sent;
      this.queuedBytes -= sent;
      if (sent < length) return;
      this.queue.shift();
    }
    this.updatePoll();
    if (this.ending) this.shutdownWrite();
    this.emit("drain");
  }

  private shutdownWrite(): void {
    const r = this.n.shutdownWrite(this.fd);
    if (r < 0 && !this.closed) this.destroy(syscallError("shutdown", -r, { fd: this.fd }));
  }

  private updatePoll(): void {
    if (this.poll === null) return;
    if (!this.inReceiver && !this.inNativeWake) this.armStream();
    // After end() the connection must see the peer's end of stream even without a receiver.
    const reading = (this.receiver !== null && !this.paused) || this.ending;
    const events = (reading ? POLL_READABLE : 0) | (this.queue.length !== 0 ? POLL_WRITABLE : 0);
    if (events === this.pollEvents) return;
    this.pollEvents = events;
    const r = this.n.pollSet(this.poll, events);
    if (r < 0) this.destroy(syscallError("uv_poll_start", -r, { fd: this.fd }));
  }

  private onPoll(events: number): void {
    if (events < 0) {
      this.destroy(syscallError("poll", -events, { fd: this.fd }));
      return;
    }
    if ((events & POLL_SENT) !== 0) {
      this.onNativeSendShort();
    } else {
      if ((events & POLL_WRITABLE) !== 0 && this.queue.length !== 0) this.flush();
      if ((events & POLL_RECEIVED) !== 0) {
        this.inNativeWake = true;
        this.readAvailable(this.control[CTL_READ_RESULT], this.control[CTL_READ_LENGTH]);
      } else if ((events & POLL_READABLE) !== 0) {
        this.readAvailable(undefined, 0);
      }
    }
    if (!this.closed) this.armStream();
    else this.inNativeWake = false;
  }

  /** Reads and hands data to the receiver; `firstGot` is the watcher's read of `firstRoom` bytes. */
  private readAvailable(firstGot: number | undefined, firstRoom: number): void {
    const buffer = this.receiveBuffer;
    const info = this.fdInfo;
    for (let reads = 0; reads < MAX_READS_PER_WAKEUP; reads++) {
      if (this.closed || (this.paused && !this.ending) || (this.receiver === null && !this.ending)) return;
      let got: number;
      let room: number;
      if (reads === 0 && firstGot !== undefined) {
        // The watcher already read into the tail armStream() gave it.
        got = firstGot;
        room = firstRoom;
      } else {
        room = buffer.reserveTailRoom(MIN_READ);
        if (room === 0) {
          this.destroy(new TransportError(
            "ERR_MESSAGE_TOO_LARGE",
            `${buffer.available} unconsumed bytes fill the receive buffer (limit ${buffer.maxMessageSize} bytes)`,
            { limit: buffer.maxMessageSize, actual: buffer.available },
          ));
          return;
        }
        got = this.n.recv(this.fd, buffer.bytes, buffer.end, room, info);
      }
      if (got === -EAGAIN) return;
      if (got === -EINTR) continue;
      if (got < 0) {
        this.destroy(syscallError("recvmsg", -got, { fd: this.fd }));
        return;
      }
      let fds: number[] | undefined;
      const fdCount = info[0];
      if (fdCount !== 0 || info[1] !== 0) {
        fds = [];
        for (let i = 0; i < fdCount; i++) fds.push(info[2 + i]);
        if (info[1] === 2) {
          // Not the peer's fault: this process ran out of fds and the kernel dropped some.
          for (const fd of fds) closeFdQuietly(fd);
          this.destroy(syscallError("recvmsg", EMFILE, {
            fd: this.fd,
            cause: new Error("the kernel could not install received fds (MSG_CTRUNC with room left)"),
          }));
          return;
        }
        if (info[1] !== 0 || fdCount > this.limits.maxFdsPerMessage) {
          for (const fd of fds) closeFdQuietly(fd);
          this.destroy(new TransportError(
            "ERR_TOO_MANY_FDS",
            `the peer attached more than ${this.limits.maxFdsPerMessage} fds to one message; all were closed`,
            { limit: this.limits.maxFdsPerMessage, actual: fdCount },
          ));
          return;
        }
      }
      if (got === 0) {
        this.onEndOfStream();
        return;
      }
      buffer.commit(got, fds);
      if (this.receiver === null) {
        // Ending with nobody to read: discard (closing any fds) while waiting for end of stream.
        buffer.consume(buffer.available);
        continue;
      }
      this.inReceiver = true;
      try {
        this.receiver(buffer, this);
      } catch (err) {
        this.endReceiverBatch();
        this.destroy(err instanceof TransportError ? err : new TransportError(
          "ERR_RECEIVER_THREW",
          `the receiver threw: ${(err as Error)?.message ?? String(err)}`,
          { cause: err },
        ));
        return;
      }
      this.endReceiverBatch();
      if (got < room) return;
    }
  }

  /** The receiver returned: sends it made leave now (see inReceiver). */
  private endReceiverBatch(): void {
    this.inReceiver = false;
    if (this.batchEndsWithReceive && !this.inNativeWake) {
      this.batchEndsWithReceive = false;
      this.endTick();
    }
  }

  private onEndOfStream(): void {
    const partial = this.receiveBuffer.available;
    if (partial !== 0) {
      this.closeWith({
        kind: "error",
        error: new TransportError(
          "ERR_PEER_CLOSED_MID_MESSAGE",
          `the peer closed the connection with ${partial} bytes of an unfinished message buffered`,
          { actual: partial },
        ),
      });
    } else {
      this.closeWith({ kind: this.ending ? "local" : "eof" });
    }
  }
}

/**
 * Takes ownership of an open UNIX stream socket fd (e.g. the socketpair end QEMU hands a remote
 * process as `fd=N`): checks it is one, makes it non-blocking and close-on-exec, and wraps it.
 * The connection closes the fd when it closes. If this throws, the caller still owns the fd.
 */
export function adoptFd(fd: number, options: ConnectionOptions = {}): Connection {
  if (!Number.isInteger(fd) || fd < 0) throw new TransportError("ERR_INVALID_ARGUMENT", `bad fd ${fd}`, { fd });
  const r = native().prepareStreamSocket(fd);
  if (r === -ENOTSOCK || r === -EPROTOTYPE || r === -EAFNOSUPPORT) {
    throw new TransportError("ERR_NOT_A_STREAM_SOCKET", `fd ${fd} is not a UNIX stream socket`, { fd, cause: syscallError("getsockopt", -r, { fd }) });
  }
  if (r < 0) throw syscallError("fcntl", -r, { fd });
  return new Connection(fd, options);
}

export interface ConnectOptions extends ConnectionOptions {
  /** How long to keep retrying while the listener's backlog is full (default 5000 ms). */
  timeoutMs?: number;
}

/**
 * Connects to a listening UNIX socket at `path`. Rejects with ERR_SYSCALL (ENOENT: nothing
 * there, ECONNREFUSED: nobody listening) or ERR_CONNECT_TIMEOUT.
 */
export async function connect(path: string, options: ConnectOptions = {}): Promise<Connection> {
  const n = native();
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    const fd = n.connect(path);
    if (fd >= 0) {
      try {
        return new Connection(fd, options);
      } catch (err) {
        n.close(fd);
        throw err;
      }
    }
    if (fd !== -EAGAIN && fd !== -EINTR) throw syscallError("connect", -fd, { path });
    if (Date.now() >= deadline) {
      throw new TransportError("ERR_CONNECT_TIMEOUT", `connecting to ${path} timed out: the listener is not accepting`, { path });
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

export interface ListenOptions {
  /** File mode of the socket path, set as bind() creates it (default 0o600: only this user may connect). */
  mode?: number;
  /** listen() backlog (default 16). */
  backlog?: number;
  /**
   * Remove a stale socket at `path` first: one nobody listens on (a connect probe is refused).
   * A socket someone listens on, and any other file type, still fail with EADDRINUSE. Default
   * false: anything at `path` is EADDRINUSE.
   */
  replaceExisting?: boolean;
  /** Options of every accepted connection. */
  connection?: ConnectionOptions;
}

/**
 * A listening UNIX socket. Events: 'connection' (Connection) for each accepted peer — the
 * listener owns the connection; with no listener the connection is closed at once — and
 * 'error' (TransportError) when accept fails (e.g. EMFILE; accepting resumes after 100 ms), only
 * emitted when someone listens for it. close() stops accepting and removes the socket path if
 * it is still the socket this server created (not one another process put there since).
 */
export class Server extends EventEmitter {
  private fd: number;
  private poll: PollHandle | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  /** The socket file bind() created, to recognise it at close. */
  private readonly created: Stats | undefined;

  /** @internal use listen() */
  constructor(fd: number, readonly path: string, private readonly connectionOptions: ConnectionOptions) {
    super();
    this.fd = fd;
    this.created = lstatSync(path, { throwIfNoEntry: false });
    const poll = native().pollStart(fd, POLL_READABLE, () => this.acceptAll());
    if (typeof poll === "number") {
      native().close(fd);
      this.removeSocketPath();
      throw syscallError("uv_poll_init", -poll, { path });
    }
    this.poll = poll;
  }

  get isClosed(): boolean {
    return this.fd < 0;
  }

  /** Stops accepting and removes the socket path. Open connections stay open. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    if (this.poll !== null) native().pollClose(this.poll);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.poll = null;
    native().close(this.fd);
    this.fd = -1;
    this.removeSocketPath();
  }

  /** Unlinks the path only while it is the file bind() created (same device and inode). */
  private removeSocketPath(): void {
    const now = lstatSync(this.path, { throwIfNoEntry: false });
    if (!now || !this.created || now.dev !== this.created.dev || now.ino !== this.created.ino) return;
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone (someone removed it); nothing to clean up.
    }
  }

  private acceptAll(): void {
    const n = native();
    for (let i = 0; i < 64 && this.fd >= 0; i++) {
      const fd = n.accept(this.fd);
      if (fd === -EAGAIN) return;
      if (fd === -EINTR) continue;
      if (fd < 0) {
        const error = syscallError("accept", -fd, { path: this.path });
        if (fd === -EMFILE || fd === -ENFILE) this.backOff();
        if (this.listenerCount("error") !== 0) this.emit("error", error);
        return;
      }
      let connection: Connection;
      try {
        connection = new Connection(fd, this.connectionOptions);
      } catch (err) {
        n.close(fd);
        if (this.listenerCount("error") !== 0) this.emit("error", err);
        continue;
      }
      if (this.listenerCount("connection") === 0) connection.destroy();
      else this.emit("connection", connection);
    }
  }

  /** Out of fds: stop watching the listener for a while instead of spinning on it. */
  private backOff(): void {
    if (this.poll === null) return;
    native().pollSet(this.poll, 0);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.poll !== null) native().pollSet(this.poll, POLL_READABLE);
    }, 100);
  }
}

/**
 * Listens on a UNIX socket at `path` (created with `mode`, default 0o600). Throws ERR_SYSCALL
 * with EADDRINUSE if something already exists there (unless replaceExisting and it is a socket).
 */
export function listen(path: string, options: ListenOptions = {}): Server {
  if (options.replaceExisting) removeStaleSocket(path);
  // Every option is checked before the socket exists: a throw below must not leave it behind.
  resolveLimits(options.connection?.limits);
  const mode = options.mode ?? 0o600;
  const backlog = options.backlog ?? 16;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new TransportError("ERR_INVALID_ARGUMENT", `socket mode must be an integer in [0, 0o777], got ${String(mode)}`, { path });
  }
  if (!Number.isInteger(backlog) || backlog < 0 || backlog > 0x7fffffff) {
    throw new TransportError("ERR_INVALID_ARGUMENT", `backlog must be a non-negative integer, got ${String(backlog)}`, { path });
  }
  const fd = native().listen(path, backlog, mode);
  if (fd < 0) throw syscallError("listen", -fd, { path });
  return new Server(fd, path, options.connection ?? {});
}

/**
 * Unlinks a socket at `path` that nobody listens on. A connect that succeeds or finds the
 * backlog full (EAGAIN) means a live listener: EADDRINUSE, naming it. Other files stay (bind
 * then fails with EADDRINUSE).
 */
function removeStaleSocket(path: string): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st?.isSocket()) return;
  const n = native();
  const fd = n.connect(path);
  if (fd >= 0 || fd === -EAGAIN || fd === -EINTR) {
    if (fd >= 0) n.close(fd);
    const err = syscallError("listen", EADDRINUSE, { path });
    err.message = `listen failed: EADDRINUSE (${path}): a listener is accepting on this socket`;
    throw err;
  }
  try {
    unlinkSync(path);
  } catch {
    // Someone removed it first.
  }
}
