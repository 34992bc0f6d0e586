// The few OS calls mpqemu needs, through koffi (libc FFI): socketpair, sendmsg/recvmsg with
// SCM_RIGHTS, eventfd, memfd + mmap, poll, and event-loop readiness (libuv poll via koffi).
// Kept small and private to src/mpqemu; the shared transport layer (src/transport, #3) is the
// long-term home of these primitives.
//
// Hot-path calls use one preallocated native block per socket so a send or receive passes
// only integers and pointers across the FFI (no struct marshalling per call):
//
//   block: +0 msghdr (56) | +64 iovec (16) | +80 cmsg (16 + 4*MAX_FDS, 8-aligned) | +256 data
import koffi from "koffi";
import { MpqemuError } from "./errors.js";

const libc = koffi.load("libc.so.6");

const c_socketpair = libc.func("int socketpair(int, int, int, _Out_ int *sv)");
const c_close = libc.func("int close(int)");
const c_sendmsg = libc.func("long sendmsg(int, void *msg, int)");
const c_recvmsg = libc.func("long recvmsg(int, void *msg, int)");
const c_eventfd = libc.func("int eventfd(unsigned int, int)");
const c_read = libc.func("long read(int, void *buf, unsigned long)");
const c_write = libc.func("long write(int, void *buf, unsigned long)");
const c_poll = libc.func("int poll(void *fds, unsigned long nfds, int timeout)");
const c_memfd_create = libc.func("int memfd_create(const char *name, unsigned int flags)");
const c_ftruncate = libc.func("int ftruncate(int, int64_t)");
const c_lseek = libc.func("int64_t lseek(int, int64_t, int)");
const c_mmap = libc.func("void *mmap(void *addr, unsigned long len, int prot, int flags, int fd, int64_t off)");
const c_munmap = libc.func("int munmap(void *addr, unsigned long len)");
const c_fcntl = libc.func("int fcntl(int, int, int)");
const c_shutdown = libc.func("int shutdown(int, int)");

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_CTRUNC = 0x8;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const MFD_CLOEXEC = 1;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const POLLIN = 1;
const SEEK_END = 2;
export const EAGAIN = 11;
export const EINTR = 4;
export const EBADF = 9;

function sysError(call: string, errno = koffi.errno()): MpqemuError {
  return new MpqemuError("MPQEMU_SYSTEM", `mpqemu: ${call} failed (errno ${errno})`, { errno });
}

export function errno(): number {
  return koffi.errno();
}

/** A connected AF_UNIX stream socketpair, close-on-exec (spawn's stdio array clears that in the child). */
export function socketpair(): [number, number] {
  const sv = new Int32Array(2);
  if (c_socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw sysError("socketpair");
  return [sv[0], sv[1]];
}

export function closeFd(fd: number): void {
  if (fd >= 0) c_close(fd);
}

export function setNonBlocking(fd: number, on: boolean): void {
  const flags = c_fcntl(fd, F_GETFL, 0);
  if (flags < 0) throw sysError("fcntl(F_GETFL)");
  if (c_fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0) throw sysError("fcntl(F_SETFL)");
}

/** Whether `fd` is open (fcntl F_GETFL succeeds). */
export function fdIsOpen(fd: number): boolean {
  return c_fcntl(fd, F_GETFL, 0) >= 0;
}

export function shutdownWrite(fd: number): void {
  c_shutdown(fd, 1);
}

export function eventfd(nonBlocking = true): number {
  const fd = c_eventfd(0, EFD_CLOEXEC | (nonBlocking ? EFD_NONBLOCK : 0));
  if (fd < 0) throw sysError("eventfd");
  return fd;
}

const counterBuf = Buffer.alloc(8);

/** Adds 1 to an eventfd counter (event_notifier_set). */
export function eventfdSignal(fd: number): void {
  counterBuf.writeBigUInt64LE(1n);
  if (c_write(fd, counterBuf, 8) !== 8) throw sysError("eventfd write");
}

/**
 * Reads and clears an eventfd counter (event_notifier_test_and_clear); 0 when nothing pending.
 * Polls first: O_NONBLOCK lives in the shared file description and QEMU switches every fd it
 * receives over SCM_RIGHTS to blocking, so a bare read could block the event loop.
 */
export function eventfdDrain(fd: number): bigint {
  if (!waitReadable(fd, 0)) return 0n;
  const n = c_read(fd, counterBuf, 8);
  if (n === 8) return counterBuf.readBigUInt64LE();
  const e = koffi.errno();
  if (e === EAGAIN) return 0n;
  throw sysError("eventfd read", e);
}

export function memfdCreate(name: string, size: bigint): number {
  const fd = c_memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) throw sysError("memfd_create");
  if (c_ftruncate(fd, size) < 0) {
    const e = koffi.errno();
    c_close(fd);
    throw sysError("ftruncate", e);
  }
  return fd;
}

/** Size of the file behind `fd` (lseek to its end). */
export function fileSize(fd: number): bigint {
  const r = c_lseek(fd, 0, SEEK_END);
  const v = BigInt(r);
  if (v < 0n) throw sysError("lseek");
  return v;
}

/** A shared mapping of a file; `bytes` aliases it until unmap(). */
export interface Mapping {
  readonly bytes: Uint8Array;
  readonly length: number;
  unmap(): void;
}

/**
 * mmap(MAP_SHARED) of `length` bytes of `fd` at `offset`, bounds-checked against the file size
 * (a mapping past EOF would fault with SIGBUS on access).
 */
export function mapFd(fd: number, offset: bigint, length: number, writable = true): Mapping {
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: mapping length ${length} is not a positive integer`);
  }
  if (offset < 0n || (offset & 0xfffn) !== 0n) {
    throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: mapping offset ${offset} is not page aligned`);
  }
  const size = fileSize(fd);
  if (offset + BigInt(length) > size) {
    throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: mapping [${offset}, +${length}) exceeds the ${size}-byte file`);
  }
  const ptr = c_mmap(null, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, offset);
  if (ptr === null || koffi.address(ptr) === 0xffff_ffff_ffff_ffffn) throw sysError("mmap");
  const bytes = new Uint8Array(koffi.view(ptr, length));
  let live = true;
  return {
    bytes,
    length,
    unmap() {
      if (!live) return;
      live = false;
      c_munmap(ptr, length);
    },
  };
}

/** Blocks up to `timeoutMs` (-1 = forever) for `fd` to become readable. */
const pollfdBuf = Buffer.alloc(8);

export function waitReadable(fd: number, timeoutMs: number): boolean {
  const pfd = pollfdBuf;
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(0, 6);
  pfd.writeInt16LE(POLLIN, 4);
  const r = c_poll(pfd, 1, timeoutMs);
  return r > 0;
}

/** Event-loop readiness of one fd (libuv poll; one watcher per fd). */
export interface FdWatch {
  /** Also (or no longer) report writability, e.g. while a send queue is blocked. */
  wantWritable(on: boolean): void;
  stop(): void;
  /** Keeps (true) or stops (false) the watch from holding the process alive. */
  ref(on: boolean): void;
}

/**
 * Calls `onReadable` whenever `fd` is readable or hung up, and `onWritable` when writable
 * while wantWritable(true), until stop().
 */
export function watchFd(fd: number, onReadable: () => void, onWritable?: () => void): FdWatch {
  let stopped = false;
  let writable = false;
  const handle = koffi.node.poll(fd, { readable: true, disconnect: true }, callback as any);
  function callback(status: number, ev: { readable: boolean; writable: boolean; disconnect: boolean }) {
    if (stopped) return;
    if (status < 0 || ev.readable || ev.disconnect) onReadable();
    if (!stopped && writable && ev?.writable) onWritable?.();
  }
  return {
    wantWritable(on: boolean) {
      if (stopped || on === writable) return;
      writable = on;
      handle.start({ readable: true, disconnect: true, writable: on }, callback as any);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      handle.close();
    },
    ref(on: boolean) {
      if (on) handle.ref();
      else handle.unref();
    },
  };
}

/** Readability only (eventfds). */
export function watchReadable(fd: number, onReadable: () => void): FdWatch {
  return watchFd(fd, onReadable);
}

const MAX_CMSG_FDS = 16;
const OFF_MSGHDR = 0;
const OFF_IOV = 64;
const OFF_CMSG = 80;
const CMSG_SPACE_MAX = 16 + 4 * MAX_CMSG_FDS;
const OFF_DATA = 256;

export interface Received {
  /** Bytes received (0 = orderly hang-up); -1 with errno EAGAIN when nothing is pending. */
  n: number;
  /** View of the received bytes inside the socket's buffer (valid until the next recv). */
  data: Uint8Array;
  fds: number[];
  /** The kernel dropped fds because the control buffer was too small. */
  truncatedFds: boolean;
}

/**
 * A stream socket driven with raw sendmsg/recvmsg. Non-blocking; the owner waits on the event
 * loop (watchFd).
 */
export class RawSocket {
  readonly fd: number;
  private readonly block: any;
  private readonly mem: DataView;
  private readonly bytes: Uint8Array;
  private readonly base: bigint;
  private readonly dataCapacity: number;
  private readonly cmsgAddrLo: number;
  private readonly cmsgAddrHi: number;
  private closed = false;

  constructor(fd: number, recvCapacity = 64 * 1024) {
    this.fd = fd;
    this.dataCapacity = recvCapacity;
    const total = OFF_DATA + recvCapacity;
    this.block = koffi.alloc("uint8_t", total);
    const ab = koffi.view(this.block, total);
    this.mem = new DataView(ab);
    this.bytes = new Uint8Array(ab);
    this.base = koffi.address(this.block);
    // msghdr: name=NULL, namelen=0, iov=&iovec, iovlen=1, control=&cmsg
    this.mem.setBigUint64(OFF_MSGHDR + 16, this.base + BigInt(OFF_IOV), true);
    this.mem.setBigUint64(OFF_MSGHDR + 24, 1n, true);
    this.mem.setBigUint64(OFF_IOV, this.base + BigInt(OFF_DATA), true);
    const cmsgAddr = this.base + BigInt(OFF_CMSG);
    this.cmsgAddrLo = Number(cmsgAddr & 0xffffffffn);
    this.cmsgAddrHi = Number(cmsgAddr >> 32n);
    setNonBlocking(fd, true);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Largest chunk one recv() returns; a shorter chunk means the socket was drained then. */
  get recvCapacity(): number {
    return this.dataCapacity;
  }

  /**
   * Sends `bytes` with `fds` attached to the first byte. Returns bytes sent; 0 with nothing
   * sent means the socket buffer is full (EAGAIN). Throws MPQEMU_SYSTEM on other errors
   * (EPIPE / ECONNRESET when the peer is gone).
   */
  send(bytes: Uint8Array, fds: readonly number[] = []): number {
    if (this.closed) throw new MpqemuError("MPQEMU_CLOSED", "mpqemu: socket is closed");
    if (bytes.length > this.dataCapacity) {
      throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: ${bytes.length}-byte send exceeds the ${this.dataCapacity}-byte buffer`);
    }
    if (fds.length > MAX_CMSG_FDS) throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: at most ${MAX_CMSG_FDS} fds per message`);
    this.bytes.set(bytes, OFF_DATA);
    this.mem.setUint32(OFF_IOV + 8, bytes.length, true);
    this.mem.setUint32(OFF_IOV + 12, 0, true);
    this.setControl(fds);
    const n = Number(c_sendmsg(this.fd, this.block, MSG_NOSIGNAL | MSG_DONTWAIT));
    if (n < 0) {
      const e = koffi.errno();
      if (e === EAGAIN) return 0;
      throw sysError("sendmsg", e);
    }
    return n;
  }

  private setControl(fds: readonly number[]): void {
    if (fds.length === 0) {
      // msg_control = NULL, msg_controllen = 0
      this.mem.setUint32(OFF_MSGHDR + 32, 0, true);
      this.mem.setUint32(OFF_MSGHDR + 36, 0, true);
      this.mem.setUint32(OFF_MSGHDR + 40, 0, true);
      this.mem.setUint32(OFF_MSGHDR + 44, 0, true);
      return;
    }
    const len = 16 + 4 * fds.length;
    const space = (len + 7) & ~7;
    this.mem.setBigUint64(OFF_MSGHDR + 32, this.base + BigInt(OFF_CMSG), true);
    this.mem.setBigUint64(OFF_MSGHDR + 40, BigInt(space), true);
    this.mem.setBigUint64(OFF_CMSG, BigInt(len), true);
    this.mem.setInt32(OFF_CMSG + 8, SOL_SOCKET, true);
    this.mem.setInt32(OFF_CMSG + 12, SCM_RIGHTS, true);
    fds.forEach((fd, i) => this.mem.setInt32(OFF_CMSG + 16 + 4 * i, fd, true));
  }

  /** One non-blocking recvmsg (received fds are close-on-exec). */
  recv(): Received {
    if (this.closed) throw new MpqemuError("MPQEMU_CLOSED", "mpqemu: socket is closed");
    const m = this.mem;
    m.setUint32(OFF_IOV + 8, this.dataCapacity, true);
    m.setUint32(OFF_IOV + 12, 0, true);
    m.setUint32(OFF_MSGHDR + 32, this.cmsgAddrLo, true);
    m.setUint32(OFF_MSGHDR + 36, this.cmsgAddrHi, true);
    m.setUint32(OFF_MSGHDR + 40, CMSG_SPACE_MAX, true);
    m.setUint32(OFF_MSGHDR + 44, 0, true);
    m.setInt32(OFF_MSGHDR + 48, 0, true);
    const n = Number(c_recvmsg(this.fd, this.block, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (n < 0) {
      const e = koffi.errno();
      if (e === EAGAIN || e === EINTR) return { n: -1, data: EMPTY, fds: NO_FDS, truncatedFds: false };
      throw sysError("recvmsg", e);
    }
    let fds = NO_FDS;
    const controllen = m.getUint32(OFF_MSGHDR + 40, true);
    if (controllen >= 16) {
      // Walk the cmsg list (normally one SCM_RIGHTS entry).
      let off = 0;
      while (off + 16 <= controllen) {
        const clen = Number(this.mem.getBigUint64(OFF_CMSG + off, true));
        if (clen < 16) break;
        const level = this.mem.getInt32(OFF_CMSG + off + 8, true);
        const type = this.mem.getInt32(OFF_CMSG + off + 12, true);
        if (level === SOL_SOCKET && type === SCM_RIGHTS) {
          const count = (clen - 16) >> 2;
          if (fds === NO_FDS) fds = [];
          for (let i = 0; i < count; i++) fds.push(this.mem.getInt32(OFF_CMSG + off + 16 + 4 * i, true));
        }
        off += (clen + 7) & ~7;
      }
    }
    const flags = this.mem.getInt32(OFF_MSGHDR + 48, true);
    return { n, data: this.bytes.subarray(OFF_DATA, OFF_DATA + n), fds, truncatedFds: (flags & MSG_CTRUNC) !== 0 };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    c_close(this.fd);
    koffi.free(this.block);
  }
}

const EMPTY = new Uint8Array(0);
const NO_FDS: number[] = [];
