// Raw file descriptors: socketpair, close, dup, and handing fds to a child process.
//
// Ownership rule of the whole transport: a function that returns an fd gives it to the caller,
// who closes it with closeFd() (or hands it to something documented to take ownership, such as
// adoptFd() or EventFd.adopt()). Functions that take an fd as an argument only borrow it unless
// their doc says otherwise. Every fd the transport creates is close-on-exec.

import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { native } from "./native.js";
import { TransportError, syscallError } from "./errors.js";

function checkFd(fd: number, what = "fd"): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw new TransportError("ERR_INVALID_ARGUMENT", `${what} must be a non-negative integer, got ${fd}`, { fd });
  }
}

/**
 * Creates a connected pair of UNIX stream sockets (close-on-exec, blocking until adopted).
 * The caller owns both fds: typically one is adopted with adoptFd() and the other given to a
 * child with spawnWithFds() and then closed in this process.
 */
export function socketpair(): [number, number] {
  const r = native().socketpair();
  if (typeof r === "number") throw syscallError("socketpair", -r);
  return [r[0], r[1]];
}

/** Closes an fd the caller owns. Throws ERR_SYSCALL (e.g. EBADF) on failure. */
export function closeFd(fd: number): void {
  checkFd(fd);
  const r = native().close(fd);
  if (r < 0) throw syscallError("close", -r, { fd });
}

/** Closes an fd on a cleanup path where nothing useful can be done about a failure. */
export function closeFdQuietly(fd: number): void {
  if (Number.isInteger(fd) && fd >= 0) native().close(fd);
}

/** Duplicates an fd (close-on-exec). The caller owns the copy. */
export function dupFd(fd: number): number {
  checkFd(fd);
  const r = native().dup(fd);
  if (r < 0) throw syscallError("dup", -r, { fd });
  return r;
}

export interface SpawnWithFdsOptions extends Omit<SpawnOptions, "stdio"> {
  /** stdin, stdout, stderr of the child (default: ignore, inherit, inherit). */
  stdio?: [SpawnStdio, SpawnStdio, SpawnStdio];
}
export type SpawnStdio = "pipe" | "ignore" | "inherit" | number;

export interface SpawnedWithFds {
  child: ChildProcess;
  /** The fd number each passed fd has in the child, in order (3, 4, ...). */
  childFds: number[];
  /**
   * Signals the child only while it runs; returns whether a signal was sent. Prefer this to
   * child.kill(): a child that failed to start (ENOENT, EACCES...) has no pid, and Node's
   * child.kill() then signals pid 0, which is this whole process group, this process included.
   */
  kill(signal?: NodeJS.Signals | number): boolean;
}

/**
 * Starts `command` with `fds` installed as fds 3, 4, ... in the child (through spawn's stdio
 * array, so close-on-exec does not matter). `args` may be a function of those child fd numbers
 * (e.g. to write `fd=3` into a QEMU option). The parent keeps its own copies: close them with
 * closeFd() once the child has started if this process no longer needs them, otherwise the
 * peer never sees end-of-stream when the child exits.
 */
export function spawnWithFds(
  command: string,
  args: readonly string[] | ((childFds: number[]) => string[]),
  fds: readonly number[],
  options: SpawnWithFdsOptions = {},
): SpawnedWithFds {
  fds.forEach((fd) => checkFd(fd));
  const childFds = fds.map((_, i) => 3 + i);
  const argv = typeof args === "function" ? args(childFds) : [...args];
  const { stdio = ["ignore", "inherit", "inherit"], ...rest } = options;
  const child = spawn(command, argv, { ...rest, stdio: [...stdio, ...fds] });
  const kill = (signal: NodeJS.Signals | number = "SIGTERM"): boolean =>
    child.pid !== undefined && child.exitCode === null && child.signalCode === null && child.kill(signal);
  return { child, childFds, kill };
}
