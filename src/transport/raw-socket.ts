// A stream socket driven by its owner one recvmsg/sendmsg at a time, for protocols that
// attribute fds by the read they arrived in and send each message at once: QEMU's mpqemu
// (AF_UNIX ends a read right after an SCM_RIGHTS batch, so the fds of one recvmsg belong to
// the message those bytes start). vfio-user, which numbers its fds per message, uses
// Connection instead. Both sit on the same addon and error type.
import { native, POLL_READABLE, POLL_WRITABLE, type PollHandle } from "./native.js";
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
    do r = this.n.recv(this.fd, this.buf, 0, this.buf.length, info);
    while (r === -EINTR);
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
    this.n.close(this.fd);
  }
}

const EMPTY = new Uint8Array(0);
const NO_FDS: number[] = [];
