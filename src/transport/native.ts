// Loader and typed surface of the project's N-API addon (src/transport/native/transport.c).
// Hot calls return a non-negative result or a negative errno instead of throwing, so the
// callers decide what an errno means for them.

import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TransportError } from "./errors.js";

/** Poll event bits (same values as libuv's UV_READABLE / UV_WRITABLE). */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;
/** Stream mode (pollSetStream) callback bits: the watcher read (result in CTL_READ_RESULT)... */
export const POLL_RECEIVED = 4;
/** ...or its send of CTL_SEND_LENGTH bytes fell short (result in CTL_SEND_RESULT). */
export const POLL_SENT = 8;
/** Stream mode control words (Int32Array of CTL_WORDS), see pollSetStream. */
export const CTL_READ_OFFSET = 0;
export const CTL_READ_LENGTH = 1;
export const CTL_READ_RESULT = 2;
export const CTL_SEND_LENGTH = 3;
export const CTL_SEND_RESULT = 4;
export const CTL_WORDS = 8;

/** Opaque handle of a native uv_poll watcher. */
export type PollHandle = { readonly __poll: unique symbol };

export interface NativeTransport {
  socketpair(): number[] | number;
  listen(path: string, backlog: number, mode: number): number;
  accept(listenFd: number): number;
  connect(path: string): number;
  /** Checks that fd is an AF_UNIX SOCK_STREAM socket and makes it non-blocking + close-on-exec. */
  prepareStreamSocket(fd: number): number;
  /**
   * recvmsg into bytes[offset, offset+length). fdInfo[0] receives the fd count, fdInfo[1] is 1 when
   * the control data was truncated (more fds than fdInfo.length - 2; the extra ones are closed),
   * 2 when the kernel could not install fds that fitted (this process is out of fds), fds go to
   * fdInfo[2...].
   * Returns the byte count (0 = end of stream) or -errno.
   */
  recv(fd: number, bytes: Uint8Array, offset: number, length: number, fdInfo: Int32Array): number;
  /** sendmsg of bytes[offset, offset+length) with fds (or null). Returns bytes sent or -errno. */
  send(fd: number, bytes: Uint8Array, offset: number, length: number, fds: readonly number[] | null): number;
  /** sendmsg of several chunks (one iovec each) with fds (or null). Returns bytes sent or -errno. */
  sendv(fd: number, chunks: readonly Uint8Array[], fds: readonly number[] | null): number;
  setNonBlocking(fd: number): number;
  shutdownWrite(fd: number): number;
  close(fd: number): number;
  dup(fd: number): number;
  pollStart(fd: number, events: number, callback: (events: number) => void): PollHandle | number;
  pollSet(handle: PollHandle, events: number): number;
  /**
   * Stream mode: on readable the watcher itself reads (recvmsg) into input[control[CTL_READ_OFFSET],
   * + control[CTL_READ_LENGTH]) when that length is > 0, fds into fdInfo as for recv(), and calls
   * back once with POLL_RECEIVED and the result in control[CTL_READ_RESULT] (no call when
   * there was nothing to read). After the callback it sends output[0, control[CTL_SEND_LENGTH])
   * when that is > 0 (then zeroes it) and calls back with POLL_SENT only if the kernel did not
   * take it all (result in control[CTL_SEND_RESULT]). The arrays stay referenced until the
   * watcher closes or this is called again.
   */
  pollSetStream(handle: PollHandle, input: Uint8Array, fdInfo: Int32Array, control: Int32Array, output: Uint8Array): number;
  /** Stops at once (no callback after this returns); twice, or from the callback itself, is fine. */
  pollClose(handle: PollHandle): void;
  memfdCreate(name: string, size: number): number;
  fstatSize(fd: number): number;
  /**
   * fstat + fcntl(F_GETFL) of fd into out (Uint32Array of 8): [dev lo, dev hi, inode lo,
   * inode hi, size lo, size hi, open flags, 0]. Returns 0 or -errno.
   */
  fileIdentity(fd: number, out: Uint32Array): number;
  /**
   * Maps [offset, offset+length) of fd (any offset; page alignment handled inside). -ERANGE when
   * the range is not inside the file (fstat, exact 64-bit arithmetic), -ENOSPC when the SIGBUS
   * guard table is full. With sealShrink the file first gets F_SEAL_SHRINK when it allows it.
   * info[0] receives the mapping's guard slot, info[1] 1 when the file cannot shrink.
   */
  mmap(fd: number, offset: number, length: number, writable: boolean, sealShrink?: boolean, info?: Int32Array): ArrayBuffer | number;
  /**
   * The SIGBUS guard's per-slot flag words (Int32 each, process-wide, shared with the signal
   * handler): flags[slot] becomes 1 once a page of that mapping was replaced by zeros because
   * its file shrank. One ArrayBuffer per environment.
   */
  mappingGuard(): { flags: ArrayBuffer; slots: number };
  /** [guard slots, live mappings (whole process), pages replaced by zeros since start]. */
  mappingGuardStats(): [number, number, number];
  /** fcntl(F_GET_SEALS): the seals, or -errno (-EINVAL for files that cannot be sealed). */
  fileSeals(fd: number): number;
  /** fcntl(F_ADD_SEALS): 0 or -errno. */
  addFileSeals(fd: number, seals: number): number;
  /** Unmaps an ArrayBuffer returned by mmap and detaches it (views become empty). */
  munmap(buffer: ArrayBuffer): number;
  eventfd(initial: number, semaphore: boolean): number;
  /**
   * Adds value (an integer in [1, 2^53]) to the counter. -EAGAIN when the counter has no room,
   * also on a description a peer made blocking: never waits.
   */
  eventfdWrite(fd: number, value: number): number;
  /** Reads and resets the counter; -EAGAIN when it is zero, whatever O_NONBLOCK says: never waits. */
  eventfdRead(fd: number): number;
}

const ADDON = "wasmdev_transport.node";

let loaded: NativeTransport | null = null;
let loadError: unknown = null;

/**
 * Finds build/native/wasmdev_transport.node by walking up from this module: the source tree
 * (src/transport/), the bundle (dist/) and bundled benchmarks (build/bench/) all sit below the
 * package root.
 */
function locateAddon(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, "build", "native", ADDON);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return null;
}

/**
 * What a user who sees this error can do: the addon ships prebuilt and the package's install
 * script rebuilds it when it does not load, but npm 11 runs a dependency's install script only
 * once the project approved it (package.json "allowScripts").
 */
const REBUILD_HINT =
  "rebuild it from your project with `npm install-scripts approve wasmdev && npm rebuild wasmdev` " +
  "(npm before 11: `npm rebuild wasmdev`; the build needs make, a C compiler and python3); " +
  "in a wasmdev checkout, `npm run build:native`";

export function native(): NativeTransport {
  if (loaded !== null) return loaded;
  if (loadError === null) {
    try {
      const path = locateAddon();
      if (path === null) throw new Error(`${ADDON} not found in any build/native/ above this module`);
      loaded = createRequire(import.meta.url)(path) as NativeTransport;
      return loaded;
    } catch (err) {
      loadError = err;
    }
  }
  const reason = loadError instanceof Error ? loadError.message.split("\n")[0] : String(loadError);
  throw new TransportError(
    "ERR_NATIVE_UNAVAILABLE",
    `wasmdev: the native transport addon cannot be loaded (${reason}): ${REBUILD_HINT}`,
    { cause: loadError },
  );
}
