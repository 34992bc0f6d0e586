// Shared memory: memfd creation and zero-copy mappings of fds (guest RAM, DMA regions, BARs).

import { constants as bufferConstants } from "node:buffer";
import { native } from "./native.js";
import { TransportError, syscallError } from "./errors.js";
import { DEFAULT_MAX_MAPPED_BYTES } from "./limits.js";

/**
 * Creates an anonymous memory file of `size` bytes (memfd_create with close-on-exec and
 * sealing allowed, then ftruncate). The caller owns the fd; the memory lives while any fd or
 * mapping of it does.
 */
export function memfdCreate(name: string, size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new TransportError("ERR_INVALID_ARGUMENT", `memfd size must be a non-negative integer, got ${size}`);
  }
  const r = native().memfdCreate(name, size);
  if (r < 0) throw syscallError("memfd_create", -r);
  return r;
}

/** Current size of the file behind fd (fstat st_size). */
export function fileSize(fd: number): number {
  const r = native().fstatSize(fd);
  if (r < 0) throw syscallError("fstat", -r, { fd });
  return r;
}

/**
 * A byte budget for mappings (the `maxMappedBytes` limit). mmapFd() charges a region's length
 * to its budget and unmap() refunds it; exceeding the budget fails with ERR_MAP_LIMIT before
 * anything is mapped. Give each peer its own budget to bound what one client can pin.
 */
export class MapBudget {
  mappedBytes = 0;
  constructor(public maxMappedBytes: number = DEFAULT_MAX_MAPPED_BYTES) {}

  /** Bytes still available. */
  get remaining(): number {
    return this.maxMappedBytes - this.mappedBytes;
  }
}

/** The process-wide budget used when mmapFd() is not given one. */
export const defaultMapBudget = new MapBudget();

export interface MapOptions {
  /** Map read-write (default) or read-only (PROT_READ; writes through the view then fault). */
  writable?: boolean;
  /** Budget to charge (default: defaultMapBudget). */
  budget?: MapBudget;
}

const MAX_LENGTH = bufferConstants.MAX_LENGTH;
const ERANGE = 34;

// Mappings dropped without unmap() are unmapped by the addon's finalizer; refund their budget.
const unreclaimed = new FinalizationRegistry<{ budget: MapBudget; length: number }>((held) => {
  held.budget.mappedBytes -= held.length;
});

/**
 * A shared mapping of [offset, offset + length) of a file. `buffer` is the mapped memory itself
 * (no copy): writes are visible to every process mapping the same file. After unmap() the
 * buffer is detached, so views of it read as empty instead of touching unmapped memory.
 *
 * Ownership: the mapping does not own the fd it came from (closing the fd does not unmap it);
 * unmap() when done. A region that is garbage-collected is unmapped then, but do not rely on it.
 *
 * Caveat: if another process shrinks the file below a mapped page, touching that page raises
 * SIGBUS; seal memfds you create (F_SEAL_SHRINK) when peers are untrusted.
 */
export class MappedRegion {
  private mapped: ArrayBuffer | null;
  private token = {};

  /** @internal use mmapFd() */
  constructor(
    buffer: ArrayBuffer,
    readonly fd: number,
    readonly offset: number,
    readonly length: number,
    readonly writable: boolean,
    private readonly budget: MapBudget,
  ) {
    this.mapped = buffer;
    // Keyed on the buffer: the addon unmaps when the buffer itself is collected.
    unreclaimed.register(buffer, { budget, length }, this.token);
  }

  get isMapped(): boolean {
    return this.mapped !== null;
  }

  /** The mapped memory. Throws ERR_UNMAPPED after unmap(). */
  get buffer(): ArrayBuffer {
    if (this.mapped === null) throw new TransportError("ERR_UNMAPPED", "the region was unmapped", { fd: this.fd });
    return this.mapped;
  }

  /** A fresh Uint8Array over the whole mapping. */
  bytes(): Uint8Array {
    return new Uint8Array(this.buffer);
  }

  /** Unmaps the region and refunds its budget. Calling it twice is an error (ERR_UNMAPPED). */
  unmap(): void {
    const buffer = this.buffer;
    const r = native().munmap(buffer);
    if (r < 0) throw syscallError("munmap", -r, { fd: this.fd });
    this.mapped = null;
    this.budget.mappedBytes -= this.length;
    unreclaimed.unregister(this.token);
  }
}

/**
 * Maps `length` bytes of `fd` starting at `offset` (any offset: page alignment is handled
 * inside) as shared memory. Checks, in order: length > 0, offset/length are safe integers,
 * length ≤ buffer.constants.MAX_LENGTH (4 GiB on Node 20: map larger files in pieces),
 * offset + length ≤ the file's size (fstat; ERR_MAP_OUT_OF_BOUNDS), the budget
 * (ERR_MAP_LIMIT). The fd is borrowed, not taken.
 */
export function mmapFd(fd: number, offset: number | bigint, length: number, options: MapOptions = {}): MappedRegion {
  const writable = options.writable ?? true;
  const budget = options.budget ?? defaultMapBudget;
  const start = typeof offset === "bigint" ? Number(offset) : offset;
  if (typeof offset === "bigint" && BigInt(start) !== offset) {
    throw new TransportError("ERR_MAP_OUT_OF_BOUNDS", `offset ${offset} is beyond any mappable file`, { fd });
  }
  if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(length) || length <= 0) {
    throw new TransportError("ERR_INVALID_ARGUMENT", `cannot map offset ${offset} length ${length}`, { fd });
  }
  if (length > MAX_LENGTH) {
    throw new TransportError(
      "ERR_INVALID_ARGUMENT",
      `one mapping is limited to ${MAX_LENGTH} bytes (the largest ArrayBuffer Node allows); map ${length} bytes in pieces`,
      { fd, limit: MAX_LENGTH, actual: length },
    );
  }
  const size = fileSize(fd);
  if (start + length > size) {
    throw new TransportError(
      "ERR_MAP_OUT_OF_BOUNDS",
      `mapping [${start}, ${start + length}) exceeds the file size ${size}`,
      { fd, limit: size, actual: start + length },
    );
  }
  if (budget.mappedBytes + length > budget.maxMappedBytes) {
    throw new TransportError(
      "ERR_MAP_LIMIT",
      `mapping ${length} bytes would exceed the mapping budget of ${budget.maxMappedBytes} bytes (${budget.mappedBytes} in use)`,
      { fd, limit: budget.maxMappedBytes, actual: budget.mappedBytes + length },
    );
  }
  const r = native().mmap(fd, start, length, writable);
  if (r === -ERANGE) {
    // The addon re-checks with exact 64-bit sizes (the double sum above rounds past 2^53, and a
    // page beyond the end of the file would raise SIGBUS when touched) and just before mmap.
    throw new TransportError(
      "ERR_MAP_OUT_OF_BOUNDS",
      `mapping [${offset}, ${BigInt(start) + BigInt(length)}) exceeds the file size`,
      { fd, actual: start + length },
    );
  }
  if (typeof r === "number") throw syscallError("mmap", -r, { fd });
  budget.mappedBytes += length;
  return new MappedRegion(r, fd, start, length, writable, budget);
}
