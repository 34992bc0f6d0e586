// eventfds: interrupt lines (irqfd), ioeventfds and doorbells between processes.

import { readlinkSync } from "node:fs";
import { native, POLL_READABLE, type PollHandle } from "./native.js";
import { TransportError, syscallError } from "./errors.js";

const EAGAIN = 11;

/** Whether fd is an eventfd (by what the kernel calls the file: anon_inode:[eventfd]). */
function isEventFd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === "anon_inode:[eventfd]";
  } catch {
    return false;
  }
}

export interface EventFdOptions {
  /** Initial counter value (default 0). */
  initial?: number;
  /** EFD_SEMAPHORE: each read returns 1 and decrements the counter by one. */
  semaphore?: boolean;
}

/**
 * An eventfd owned by this object: close() closes the fd. Create one to hand to a peer (send
 * `fd` over a Connection; the peer gets its own copy), or adopt one received from a peer.
 *
 * onReadable() watches the fd on the event loop (epoll through libuv, no polling): when the
 * counter becomes non-zero the counter is read (which resets it) and the callback gets the
 * value, i.e. how many signals arrived since the last read (1 per read in semaphore mode).
 *
 * signal() and read() never block, even when a peer sharing the eventfd switched it to blocking
 * (O_NONBLOCK belongs to the open file, which every holder shares; QEMU does that to each fd it
 * receives).
 */
export class EventFd {
  private poll: PollHandle | null = null;
  private closed = false;

  private constructor(readonly fd: number) {}

  /** A new non-blocking, close-on-exec eventfd. */
  static create(options: EventFdOptions = {}): EventFd {
    const initial = options.initial ?? 0;
    if (!Number.isInteger(initial) || initial < 0 || initial > 0xffffffff) {
      throw new TransportError("ERR_INVALID_ARGUMENT", `eventfd initial value must be a u32, got ${initial}`);
    }
    const r = native().eventfd(initial, options.semaphore ?? false);
    if (r < 0) throw syscallError("eventfd", -r);
    return new EventFd(r);
  }

  /**
   * Takes ownership of an eventfd received from a peer (close() closes it). Anything that is not
   * an eventfd (a pipe, a socket, a file a peer passed instead) is refused with
   * ERR_INVALID_ARGUMENT: signalling would write 8 bytes into it, and a readable end of file
   * would wake onReadable() forever. If this throws, the caller still owns the fd. The file's
   * flags are left alone (they are shared with the peer).
   */
  static adopt(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) throw new TransportError("ERR_INVALID_ARGUMENT", `bad fd ${fd}`, { fd });
    if (!isEventFd(fd)) throw new TransportError("ERR_INVALID_ARGUMENT", `fd ${fd} is not an eventfd`, { fd });
    return new EventFd(fd);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Adds `value` (default 1, an integer in [1, 2^53 - 1]) to the counter, waking whoever waits
   * on it. A counter with no room left for `value` (it tops out at 2^64 - 2) is already
   * signalled and its reader is due, so that is not an error: the signal folds into it, as in
   * QEMU's event_notifier_set().
   */
  signal(value = 1): void {
    this.checkOpen();
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new TransportError("ERR_INVALID_ARGUMENT", `eventfd signal value must be an integer in [1, 2^53 - 1], got ${value}`, { fd: this.fd });
    }
    const r = native().eventfdWrite(this.fd, value);
    if (r < 0 && r !== -EAGAIN) throw syscallError("write", -r, { fd: this.fd });
  }

  /** Reads and resets the counter without blocking; 0 when nothing was signalled. */
  read(): number {
    this.checkOpen();
    const r = native().eventfdRead(this.fd);
    if (r === -EAGAIN) return 0;
    if (r < 0) throw syscallError("read", -r, { fd: this.fd });
    return r;
  }

  /**
   * Calls `callback(count)` on the event loop each time the eventfd is signalled (the counter is
   * read for you). Pass null to stop watching. Replaces any earlier callback.
   */
  onReadable(callback: ((count: number) => void) | null): void {
    this.checkOpen();
    const n = native();
    if (this.poll !== null) {
      n.pollClose(this.poll);
      this.poll = null;
    }
    if (callback === null) return;
    const fd = this.fd;
    const handle = n.pollStart(fd, POLL_READABLE, () => {
      const r = n.eventfdRead(fd);
      if (r > 0) callback(r);
      else if (r !== -EAGAIN && this.poll === handle) {
        // Readable yet unreadable (cannot happen for an eventfd): stop rather than spin.
        n.pollClose(handle as PollHandle);
        this.poll = null;
      }
    });
    if (typeof handle === "number") throw syscallError("uv_poll_start", -handle, { fd });
    this.poll = handle;
  }

  /** Stops watching and closes the fd. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll !== null) native().pollClose(this.poll);
    this.poll = null;
    native().close(this.fd);
  }

  private checkOpen(): void {
    if (this.closed) throw new TransportError("ERR_CLOSED", "the eventfd is closed", { fd: this.fd });
  }
}
