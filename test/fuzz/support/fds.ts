// The fds and mappings a fuzzed peer can make a server hold, counted.
//
// Fds are real (eventfds and memfds from the transport's addon), so a server that forgets one
// is seen in /proc/self/fd. DMA mappings go through a fake FdMapper: each memfd stands for a
// file of FAKE_FILE_SIZE bytes, a mapping is a window of an in-process buffer, and every map
// and unmap is counted and checked against what the peer offered. Files are told apart by
// inode, so the check holds after the fd crossed a socket (and got a new number).
import { fstatSync, readdirSync } from "node:fs";
import type { FdMapper, MappedMemory } from "../../../src/core/dma/api.js";
import { native } from "../../../src/transport/native.js";
import { check } from "./input.js";

/** Bytes of the file each fd stands for in the fake mapper. */
export const FAKE_FILE_SIZE = 64 * 1024;

/** Open fds of this process. */
export function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

/** A fresh memfd (a RAM file to offer for DMA) the caller must close. */
export function newMemFd(): number {
  const fd = native().memfdCreate("wasmdev-fuzz", FAKE_FILE_SIZE);
  check(fd >= 0, `memfd_create() failed with errno ${-fd}`);
  return fd;
}

/** A fresh eventfd the caller (or whoever it is given to) must close. */
export function newEventFd(): number {
  const fd = native().eventfd(0, false);
  check(fd >= 0, `eventfd() failed with errno ${-fd}`);
  return fd;
}

export interface GivenRange {
  ino: bigint;
  offset: bigint;
  size: bigint;
}

/**
 * An FdMapper over fake files. `allow(fd, offset, size)` records that the peer offered that
 * window of fd (a DMA_MAP or SYNC_SYSMEM entry); mapping anything else is recorded in
 * `violations` (the target fails the input on any). A window outside the file fails as mmap
 * would.
 */
export class FakeMapper {
  live = 0;
  maps = 0;
  /** Broken invariants, collected: the server catches what its mapper throws (and answers EIO). */
  readonly violations: string[] = [];
  private readonly files = new Map<bigint, Uint8Array>();
  private readonly given: GivenRange[] = [];

  allow(fd: number, offset: bigint, size: bigint): void {
    this.given.push({ ino: inode(fd), offset, size });
  }

  private fileOf(ino: bigint): Uint8Array {
    let f = this.files.get(ino);
    if (!f) this.files.set(ino, (f = new Uint8Array(FAKE_FILE_SIZE)));
    return f;
  }

  readonly mapFd: FdMapper = (fd, offset, length, _writable): MappedMemory => {
    const end = offset + BigInt(length);
    const ino = inode(fd);
    if (!this.given.some((g) => g.ino === ino && offset >= g.offset && end <= g.offset + g.size)) {
      this.violations.push(`mapped fd ${fd} [0x${offset.toString(16)}, 0x${end.toString(16)}) which the peer never offered`);
    }
    if (end > BigInt(FAKE_FILE_SIZE) || length <= 0) throw new RangeError(`window [${offset}, ${end}) is outside the ${FAKE_FILE_SIZE}-byte file`);
    const bytes = this.fileOf(ino).subarray(Number(offset), Number(end));
    this.live++;
    this.maps++;
    let mapped = true;
    return {
      bytes,
      unmap: () => {
        if (!mapped) this.violations.push(`fd ${fd} window unmapped twice`);
        mapped = false;
        this.live--;
      },
      truncated: false,
    };
  };
}

function inode(fd: number): bigint {
  return fstatSync(fd, { bigint: true }).ino;
}
