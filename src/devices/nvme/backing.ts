// Where a namespace's blocks live: process memory (the default) or a file. Offsets and
// lengths are bytes; the controller checks every range against `size` before calling in.
import { closeSync, constants, fdatasyncSync, fstatSync, ftruncateSync, openSync, readSync, readvSync, writeSync, writevSync } from "node:fs";

export interface NvmeBacking {
  readonly kind: "ram" | "file";
  /** Bytes. */
  readonly size: number;
  /** RAM backings: the bytes themselves, so DMA copies straight into/out of them. */
  readonly bytes?: Uint8Array;
  read(offset: number, dest: Uint8Array): void;
  write(offset: number, src: Uint8Array): void;
  /** Fills `dests` in order from `offset` on (one preadv for a file). */
  readv(offset: number, dests: readonly Uint8Array[]): void;
  /** Writes `srcs` in order from `offset` on (one pwritev for a file). */
  writev(offset: number, srcs: readonly Uint8Array[]): void;
  /** Zeroes [offset, offset + length) (Write Zeroes, deallocation). */
  zero(offset: number, length: number): void;
  /** Makes written data durable (Flush, FUA, shutdown): fdatasync for a file. */
  flush(): void;
  close(): void;
}

/** Largest RAM backing (one Uint8Array). */
export const NVME_MAX_RAM_BYTES = 2 ** 32;

export function createRamBacking(size: number): NvmeBacking {
  if (!Number.isSafeInteger(size) || size <= 0 || size > NVME_MAX_RAM_BYTES) {
    throw new RangeError(`nvme: RAM backing size ${size} must be between 1 byte and ${NVME_MAX_RAM_BYTES} bytes`);
  }
  const bytes = new Uint8Array(size);
  const read = (offset: number, dest: Uint8Array) => dest.set(bytes.subarray(offset, offset + dest.length));
  const write = (offset: number, src: Uint8Array) => bytes.set(src, offset);
  return {
    kind: "ram",
    size,
    bytes,
    read,
    write,
    readv: (offset, dests) => each(offset, dests, read),
    writev: (offset, srcs) => each(offset, srcs, write),
    zero: (offset, length) => bytes.fill(0, offset, offset + length),
    flush: () => {},
    close: () => {},
  };
}

const ZERO_CHUNK = new Uint8Array(1 << 20);
/** Most buffers one preadv/pwritev takes (Linux IOV_MAX). */
const IOV_MAX = 1024;

/** Applies a one-buffer transfer to each buffer in turn, from `offset` on. */
function each(offset: number, buffers: readonly Uint8Array[], one: (offset: number, buffer: Uint8Array) => void): void {
  for (const b of buffers) {
    one(offset, b);
    offset += b.length;
  }
}

/**
 * One vectored call per IOV_MAX buffers; a short transfer (a signal, the end of a shorter file)
 * finishes the buffer it stopped in and the rest one call each, through `one`.
 */
function vectored(offset: number, buffers: readonly Uint8Array[], call: (buffers: readonly Uint8Array[], position: number) => number, one: (offset: number, buffer: Uint8Array) => void): void {
  for (let first = 0; first < buffers.length; first += IOV_MAX) {
    const batch = first === 0 && buffers.length <= IOV_MAX ? buffers : buffers.slice(first, first + IOV_MAX);
    let want = 0;
    for (const b of batch) want += b.length;
    let done = call(batch, offset);
    if (done < want) {
      let at = offset;
      for (const b of batch) {
        if (done >= b.length) done -= b.length;
        else {
          one(at + done, b.subarray(done));
          done = 0;
        }
        at += b.length;
      }
    }
    offset += want;
  }
}

/**
 * A file (or block device) opened read-write. `size` defaults to the file's size; a larger
 * `size` extends a regular file with ftruncate (sparse), a smaller one uses its first bytes.
 * With `size`, a missing file is created (mode 0600).
 */
export function createFileBacking(path: string, size?: number): NvmeBacking {
  const fd = openSync(path, constants.O_RDWR | (size !== undefined ? constants.O_CREAT : 0), 0o600);
  try {
    const st = fstatSync(fd);
    const current = st.isBlockDevice() ? Number(st.size) : st.size;
    const want = size ?? current;
    if (!Number.isSafeInteger(want) || want <= 0) throw new RangeError(`nvme: ${path} is empty; give a size to extend it`);
    if (want > current) {
      if (!st.isFile()) throw new RangeError(`nvme: ${path} has ${current} bytes, fewer than the ${want} asked for`);
      ftruncateSync(fd, want);
    }
    let closed = false;
    const fullRead = (offset: number, dest: Uint8Array) => {
      let done = 0;
      while (done < dest.length) {
        const n = readSync(fd, dest, done, dest.length - done, offset + done);
        if (n === 0) {
          dest.fill(0, done); // past the end of a shorter file reads as zeros
          return;
        }
        done += n;
      }
    };
    const fullWrite = (offset: number, src: Uint8Array) => {
      let done = 0;
      while (done < src.length) done += writeSync(fd, src, done, src.length - done, offset + done);
    };
    return {
      kind: "file",
      size: want,
      read: fullRead,
      write: fullWrite,
      readv: (offset, dests) => vectored(offset, dests, (b, at) => readvSync(fd, b as Uint8Array[], at), fullRead),
      writev: (offset, srcs) => vectored(offset, srcs, (b, at) => writevSync(fd, b as Uint8Array[], at), fullWrite),
      zero(offset, length) {
        for (let done = 0; done < length; ) {
          const n = Math.min(ZERO_CHUNK.length, length - done);
          fullWrite(offset + done, ZERO_CHUNK.subarray(0, n));
          done += n;
        }
      },
      flush: () => fdatasyncSync(fd),
      close() {
        if (closed) return;
        closed = true;
        closeSync(fd);
      },
    };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
