// The OS pieces mpqemu uses, on top of the transport (#3): its N-API addon for the hot path
// (recvmsg/sendmsg with SCM_RIGHTS, libuv poll) and its fd / memfd / mmap / eventfd helpers.
//
// mpqemu drives the socket itself rather than through transport's Connection because its
// parser takes each recvmsg's bytes together with that recvmsg's fds (AF_UNIX stops a read
// right after an SCM_RIGHTS batch, which is how fds are attributed to messages), and because
// replies must go out immediately, one message per sendmsg.
import { fstatSync } from "node:fs";
import { native, POLL_READABLE, POLL_WRITABLE, type PollHandle } from "../transport/native.js";
import { socketpair as transportSocketpair, closeFdQuietly } from "../transport/fd.js";
import { memfdCreate as transportMemfd, mmapFd, fileSize as transportFileSize } from "../transport/shm.js";
import { MpqemuError } from "./errors.js";

export const EAGAIN = 11;
export const EINTR = 4;

function sysError(call: string, errno: number): MpqemuError {
  return new MpqemuError("MPQEMU_SYSTEM", `mpqemu: ${call} failed (errno ${errno})`, { errno });
}

/** A connected AF_UNIX stream socketpair, close-on-exec (spawn's stdio array clears that in the child). */
export function socketpair(): [number, number] {
  return transportSocketpair();
}

/** Closes an fd we own; -1 and already-closed fds are ignored (cleanup paths). */
export function closeFd(fd: number): void {
  closeFdQuietly(fd);
}

/** Whether `fd` is open in this process. */
export function fdIsOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** A new non-blocking, close-on-exec eventfd. */
export function eventfd(): number {
  const r = native().eventfd(0, false);
  if (r < 0) throw sysError("eventfd", -r);
  return r;
}

/** Adds 1 to an eventfd counter (event_notifier_set). */
export function eventfdSignal(fd: number): void {
  const r = native().eventfdWrite(fd, 1);
  if (r < 0) throw sysError("eventfd write", -r);
}

/**
 * Reads and clears an eventfd counter (event_notifier_test_and_clear); 0 when nothing is
 * pending on a non-blocking fd. Call it only when the fd polled readable: O_NONBLOCK lives in
 * the file description shared with the peer, and QEMU switches every fd it receives over
 * SCM_RIGHTS to blocking, so an unconditional read could stall the event loop.
 */
export function eventfdDrain(fd: number): bigint {
  const r = native().eventfdRead(fd);
  if (r === -EAGAIN) return 0n;
  if (r < 0) throw sysError("eventfd read", -r);
  return BigInt(r);
}

export function memfdCreate(name: string, size: bigint): number {
  return transportMemfd(name, Number(size));
}

export function fileSize(fd: number): bigint {
  return BigInt(transportFileSize(fd));
}

/** A shared mapping of a file; `bytes` aliases it until unmap(). */
export interface Mapping {
  readonly bytes: Uint8Array;
  readonly length: number;
  unmap(): void;
}

/** mmap(MAP_SHARED) of `length` bytes of `fd` at `offset`, bounds-checked against the file size. */
export function mapFd(fd: number, offset: bigint, length: number, writable = true): Mapping {
  const region = mmapFd(fd, offset, length, { writable });
  let live = true;
  return {
    bytes: region.bytes(),
    length,
    unmap() {
      if (!live) return;
      live = false;
      region.unmap();
    },
  };
}

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
  if (typeof handle === "number") throw sysError("uv_poll_init", -handle);
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

/** Readability only (eventfds). */
export function watchReadable(fd: number, onReadable: () => void): FdWatch {
  return watchFd(fd, onReadable);
}

/** fds accepted per recvmsg; more means the control data was truncated (and reported). */
const MAX_RECV_FDS = 16;

export interface Received {
  /** Bytes received (0 = orderly hang-up); -1 when nothing is pending (EAGAIN). */
  n: number;
  /** View of the received bytes inside the socket's buffer (valid until the next recv). */
  data: Uint8Array;
  fds: number[];
  /** The kernel dropped fds because more arrived than MAX_RECV_FDS. */
  truncatedFds: boolean;
}

/**
 * A non-blocking stream socket driven with raw recvmsg/sendmsg into one reused buffer; the
 * owner waits on the event loop (watchFd). The socket owns and closes its fd.
 */
export class RawSocket {
  readonly fd: number;
  private readonly n = native();
  private readonly buf: Uint8Array;
  private readonly fdInfo = new Int32Array(2 + MAX_RECV_FDS);
  private closed = false;

  constructor(fd: number, recvCapacity = 64 * 1024) {
    this.fd = fd;
    this.buf = new Uint8Array(recvCapacity);
    const r = this.n.setNonBlocking(fd);
    if (r < 0) throw sysError("fcntl(O_NONBLOCK)", -r);
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
   * buffer is full (EAGAIN). Throws MPQEMU_SYSTEM on other errors (EPIPE / ECONNRESET when the
   * peer is gone).
   */
  send(bytes: Uint8Array, fds: readonly number[] = NO_FDS): number {
    if (this.closed) throw new MpqemuError("MPQEMU_CLOSED", "mpqemu: socket is closed");
    for (;;) {
      const r = this.n.send(this.fd, bytes, 0, bytes.length, fds.length > 0 ? fds : null);
      if (r >= 0) return r;
      if (r === -EINTR) continue;
      if (r === -EAGAIN) return 0;
      throw sysError("sendmsg", -r);
    }
  }

  /** One non-blocking recvmsg (received fds are close-on-exec). */
  recv(): Received {
    if (this.closed) throw new MpqemuError("MPQEMU_CLOSED", "mpqemu: socket is closed");
    const info = this.fdInfo;
    let r: number;
    do r = this.n.recv(this.fd, this.buf, 0, this.buf.length, info);
    while (r === -EINTR);
    if (r === -EAGAIN) return { n: -1, data: EMPTY, fds: NO_FDS, truncatedFds: false };
    if (r < 0) throw sysError("recvmsg", -r);
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
