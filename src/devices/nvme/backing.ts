// Where a namespace's blocks live: process memory (the default) or a file. Offsets and
// lengths are bytes; the controller checks every range against `size` before calling in.
import { closeSync, constants, fdatasyncSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";

export interface NvmeBacking {
  readonly kind: "ram" | "file";
  /** Bytes. */
  readonly size: number;
  /** RAM backings: the bytes themselves, so DMA copies straight into/out of them. */
  readonly bytes?: Uint8Array;
  read(offset: number, dest: Uint8Array): void;
  write(offset: number, src: Uint8Array): void;
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
  return {
    kind: "ram",
    size,
    bytes,
    read: (offset, dest) => dest.set(bytes.subarray(offset, offset + dest.length)),
    write: (offset, src) => bytes.set(src, offset),
    zero: (offset, length) => bytes.fill(0, offset, offset + length),
    flush: () => {},
    close: () => {},
  };
}

const ZERO_CHUNK = new Uint8Array(1 << 20);

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
