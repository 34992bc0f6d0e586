// A stream socket driven by its owner one recvmsg/sendmsg at a time, for protocols that
// attribute fds by the read they arrived in and send each message at once: QEMU's mpqemu
// (AF_UNIX ends a read right after an SCM_RIGHTS batch, so the fds of one recvmsg belong to
// the message those bytes start). vfio-user, which numbers its fds per message, uses
// Connection instead. Both sit on the same addon and error type.
//
// RawSocket.watch() drives the socket in the addon's stream mode, as Connection does: on each
// wake-up the watcher itself does the first recvmsg, which the owner's next recv() returns
// without a system call, and the fd-less sends the owner makes while handling that wake-up (a
// reply) are staged and leave with one send() once the callback returns: a request/reply
// exchange costs one call from native code into JS and none back.
import {
  native, POLL_READABLE, POLL_WRITABLE, POLL_RECEIVED, POLL_SENT,
  CTL_READ_LENGTH, CTL_READ_OFFSET, CTL_READ_RESULT, CTL_SEND_LENGTH, CTL_SEND_RESULT, CTL_WORDS,
  type PollHandle,
} from "./native.js";
import { TransportError, syscallError } from "./errors.js";

const EAGAIN = 11;
const EINTR = 4;

/** fds accepted per recvmsg; more means the control data was truncated (and reported). */
export const RAW_SOCKET_MAX_RECV_FDS = 16;

/** Event-loop readiness of one fd (libuv poll; one watcher per fd). */
export interface FdWatch {
  /** Also (or no longer) report writability, e.g. while a send queue is blocked. */
  wantWritable(on: boolean): void;
  stop(): void;
}

/**
 * Calls `onReadable` whenever `fd` is readable or hung up (libuv reports a hang-up as
 * readable), and `onWritable` when writable while wantWritable(true), until stop(). A poll
 * error is reported as readable so the owner's next read surfaces it.
 */
export function watchFd(fd: number, onReadable: () => void, onWritable?: () => void): FdWatch {
  const n = native();
  let stopped = false;
  let writable = false;
  const handle = n.pollStart(fd, POLL_READABLE, (events: number) => {
    if (stopped) return;
    if (events < 0 || (events & POLL_READABLE) !== 0) onReadable();
    if (!stopped && writable && events > 0 && (events & POLL_WRITABLE) !== 0) onWritable?.();
  });
  if (typeof handle === "number") throw syscallError("uv_poll_init", -handle, { fd });
  const poll: PollHandle = handle;
  return {
    wantWritable(on: boolean) {
      if (stopped || on === writable) return;
      writable = on;
      n.pollSet(poll, POLL_READABLE | (on ? POLL_WRITABLE : 0));
    },
    stop() {
      if (stopped) return;
      stopped = true;
      n.pollClose(poll);
    },
  };
}

export interface RawReceived {
  /** Bytes received (0 = orderly hang-up); -1 when nothing is pending (EAGAIN). */
  n: number;
  /** View of the received bytes inside the socket's buffer (valid until the next recv). */
  data: Uint8Array;
  /** fds that came with these bytes (close-on-exec); the caller owns them. */
  fds: number[];
  /** The kernel dropped fds because more than RAW_SOCKET_MAX_RECV_FDS arrived. */
  truncatedFds: boolean;
}

/**
 * A non-blocking stream socket read with raw recvmsg into one reused buffer and written with
 * one sendmsg per call; the owner waits on the event loop (watchFd). Owns and closes its fd.
 */
export class RawSocket {
  readonly fd: number;
  private readonly n = native();
  private readonly buf: Uint8Array;
  private readonly fdInfo = new Int32Array(2 + RAW_SOCKET_MAX_RECV_FDS);
  private closed = false;
  // Stream mode (watch()): the words shared with the watcher, the staging buffer its send
  // after the callback takes, and the watcher's read waiting for the next recv().
  private control: Int32Array | null = null;
  private out: Uint8Array | null = null;
  private preRead: number | null = null;
  private inWake = false;
  /** Bytes of `out` handed to the watcher when the callback returned (for a short send). */
  private handedOff = 0;
  /** What the watcher could not send after a callback: goes before any later byte. */
  private unsent: Uint8Array | null = null;
  private sendError: TransportError | null = null;

  constructor(fd: number, recvCapacity = 64 * 1024) {
    this.fd = fd;
    this.buf = new Uint8Array(recvCapacity);
    const r = this.n.setNonBlocking(fd);
    if (r < 0) throw syscallError("fcntl(O_NONBLOCK)", -r, { fd });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Largest chunk one recv() returns; a shorter chunk means the socket was drained then. */
  get recvCapacity(): number {
    return this.buf.length;
  }

  /**
   * Sends `bytes` with `fds` attached to the first byte. Returns bytes sent; 0 means the socket
   * buffer is full (EAGAIN). Throws ERR_SYSCALL on other errors (EPIPE / ECONNRESET when the
   * peer is gone), ERR_CLOSED after close().
   */
  send(bytes: Uint8Array, fds: readonly number[] = NO_FDS): number {
    if (this.closed) throw new TransportError("ERR_CLOSED", "socket is closed", { fd: this.fd });
    if (this.control !== null) {
      if (this.sendError !== null) throw this.sendError;
      if (this.unsent !== null && !this.sendUnsent()) return 0;
      const ctl = this.control;
      const staged = ctl[CTL_SEND_LENGTH];
      if (this.inWake && fds.length === 0 && staged + bytes.length <= this.out!.length) {
        this.out!.set(bytes, staged);
        ctl[CTL_SEND_LENGTH] = staged + bytes.length;
        return bytes.length;
      }
      // Anything staged goes first; if the kernel does not take all of it, nothing after may.
      if (staged !== 0) {
        ctl[CTL_SEND_LENGTH] = 0;
        const sent = this.rawSend(this.out!.subarray(0, staged), NO_FDS);
        if (sent < staged) {
          this.unsent = this.out!.slice(sent, staged);
          this.updateWatch();
          return 0;
        }
      }
    }
    return this.rawSend(bytes, fds);
  }

  private rawSend(bytes: Uint8Array, fds: readonly number[]): number {
    for (;;) {
      const r = this.n.send(this.fd, bytes, 0, bytes.length, fds.length > 0 ? fds : null);
      if (r >= 0) return r;
      if (r === -EINTR) continue;
      if (r === -EAGAIN) return 0;
      throw syscallError("sendmsg", -r, { fd: this.fd });
    }
  }

  /** One non-blocking recvmsg. */
  recv(): RawReceived {
    if (this.closed) throw new TransportError("ERR_CLOSED", "socket is closed", { fd: this.fd });
    const info = this.fdInfo;
    let r: number;
    if (this.preRead !== null) {
      // The watcher's read of this wake-up (bytes in buf, fds in fdInfo).
      r = this.preRead;
      this.preRead = null;
      if (r === -EINTR) r = -EAGAIN;
    } else {
      do r = this.n.recv(this.fd, this.buf, 0, this.buf.length, info);
      while (r === -EINTR);
    }
    if (r === -EAGAIN) return { n: -1, data: EMPTY, fds: NO_FDS, truncatedFds: false };
    if (r < 0) throw syscallError("recvmsg", -r, { fd: this.fd });
    let fds = NO_FDS;
    const count = info[0];
    if (count > 0) {
      fds = new Array<number>(count);
      for (let i = 0; i < count; i++) fds[i] = info[2 + i];
    }
    return { n: r, data: this.buf.subarray(0, r), fds, truncatedFds: info[1] !== 0 };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopWatch?.();
    this.n.close(this.fd);
  }

  private pollHandle: PollHandle | null = null;
  private stopWatch: (() => void) | null = null;
  private ownerWantsWritable = false;
  private pollEvents = 0;

  /**
   * Watches this socket in stream mode (see the top of this file); use it instead of
   * watchFd(socket.fd, ...), once. `onReadable` is called when the socket is readable or hung
   * up (its recv() calls then drain it as usual); `onWritable` when writable while the owner
   * asked for it with wantWritable(true). During onReadable, send() of fd-less bytes returns
   * their full length at once (staged, written when onReadable returns; if the kernel takes
   * only part, the rest goes before any later byte, and send() returns 0 until it has).
   */
  watch(onReadable: () => void, onWritable?: () => void): FdWatch {
    if (this.control !== null) throw new TransportError("ERR_INVALID_ARGUMENT", "the socket is already watched", { fd: this.fd });
    const n = this.n;
    const ctl = new Int32Array(CTL_WORDS);
    this.out = new Uint8Array(64 * 1024);
    let stopped = false;
    const handle = n.pollStart(this.fd, POLL_READABLE, (events: number) => {
      if (stopped) return;
      if (events > 0 && (events & POLL_SENT) !== 0) {
        this.onShortSend(ctl[CTL_SEND_RESULT]);
        return;
      }
      if (events > 0 && (events & POLL_RECEIVED) !== 0) {
        this.preRead = ctl[CTL_READ_RESULT];
        ctl[CTL_READ_LENGTH] = 0; // the next wake-up must not read over it
      }
      if (events < 0 || (events & (POLL_READABLE | POLL_RECEIVED)) !== 0) {
        this.inWake = true;
        try {
          onReadable();
        } finally {
          this.inWake = false;
        }
      }
      if (!stopped && events > 0 && (events & POLL_WRITABLE) !== 0) {
        if (this.unsent === null || this.sendUnsent()) {
          if (this.ownerWantsWritable) onWritable?.();
        }
        this.updateWatch();
      }
      if (stopped) return;
      // The watcher sends the staged bytes right after this returns.
      this.handedOff = ctl[CTL_SEND_LENGTH];
      if (this.preRead === null) ctl[CTL_READ_LENGTH] = this.buf.length;
    });
    if (typeof handle === "number") throw syscallError("uv_poll_init", -handle, { fd: this.fd });
    ctl[CTL_READ_OFFSET] = 0;
    ctl[CTL_READ_LENGTH] = this.buf.length;
    const r = n.pollSetStream(handle, this.buf, this.fdInfo, ctl, this.out);
    if (r < 0) {
      n.pollClose(handle);
      throw syscallError("pollSetStream", -r, { fd: this.fd });
    }
    this.control = ctl;
    this.pollHandle = handle;
    this.pollEvents = POLL_READABLE;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      n.pollClose(handle);
      this.pollHandle = null;
    };
    this.stopWatch = stop;
    return {
      wantWritable: (on: boolean) => {
        this.ownerWantsWritable = on;
        this.updateWatch();
      },
      stop,
    };
  }

  private updateWatch(): void {
    if (this.pollHandle === null) return;
    const events = POLL_READABLE | (this.ownerWantsWritable || this.unsent !== null ? POLL_WRITABLE : 0);
    if (events === this.pollEvents) return;
    this.pollEvents = events;
    this.n.pollSet(this.pollHandle, events);
  }

  /** The watcher's send after a callback fell short (`result` bytes sent, or -errno). */
  private onShortSend(result: number): void {
    const length = this.handedOff;
    this.handedOff = 0;
    if (result < 0 && result !== -EAGAIN) {
      this.sendError = syscallError("sendmsg", -result, { fd: this.fd });
      return;
    }
    const sent = Math.max(result, 0);
    this.unsent = this.out!.slice(sent, length);
    this.updateWatch();
  }

  /** Sends what the watcher left over; true once all of it went. */
  private sendUnsent(): boolean {
    const rest = this.unsent!;
    const sent = this.rawSend(rest, NO_FDS);
    if (sent === rest.length) {
      this.unsent = null;
      this.updateWatch();
      return true;
    }
    this.unsent = rest.subarray(sent);
    return false;
  }
}

const EMPTY = new Uint8Array(0);
const NO_FDS: number[] = [];
