// Shared memory: memfd creation and zero-copy mappings of fds (guest RAM, DMA regions, BARs).

import { constants as bufferConstants } from "node:buffer";
import { native } from "./native.js";
import { TransportError, syscallError } from "./errors.js";
import { DEFAULT_MAX_MAPPED_BYTES, MAX_MAPPINGS } from "./limits.js";

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

/** File seals (fcntl F_ADD_SEALS / F_GET_SEALS bits). */
export const FileSeal = Object.freeze({
  /** No further seals may be added. */
  SEAL: 1,
  /** The file may not shrink. */
  SHRINK: 2,
  /** The file may not grow. */
  GROW: 4,
  /** The contents may not be written. */
  WRITE: 8,
});

/** The seals of fd (a memfd created with sealing allowed has none; others may refuse: EINVAL). */
export function fileSeals(fd: number): number {
  const r = native().fileSeals(fd);
  if (r < 0) throw syscallError("fcntl(F_GET_SEALS)", -r, { fd });
  return r;
}

/** Adds seals to fd (EPERM once FileSeal.SEAL is set or when fd is not open for writing). */
export function addFileSeals(fd: number, seals: number): void {
  const r = native().addFileSeals(fd, seals);
  if (r < 0) throw syscallError("fcntl(F_ADD_SEALS)", -r, { fd });
}

/**
 * The addon's SIGBUS guard, process-wide: `slots` mappings at most (MAX_MAPPINGS), `liveMappings`
 * now (every thread's), `recoveredPages` = pages replaced by zeros since the process started
 * because a peer shrank a mapped file.
 */
export function mappingGuardStats(): { slots: number; liveMappings: number; recoveredPages: number } {
  const [slots, liveMappings, recoveredPages] = native().mappingGuardStats();
  return { slots, liveMappings, recoveredPages };
}

// The guard's per-slot "truncated" words, shared with the signal handler (fetched once).
let guardFlags: Int32Array | null = null;
function guardFlagWords(): Int32Array {
  if (guardFlags === null) guardFlags = new Int32Array(native().mappingGuard().flags);
  return guardFlags;
}
// Filled by each mmap call: [guard slot, 1 if the file cannot shrink].
const mapInfo = new Int32Array(2);

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
  /**
   * Add F_SEAL_SHRINK to the file before mapping it, when the file allows it (default true): a
   * peer then cannot shrink the file under the mapping (its ftruncate fails with EPERM). The
   * seal belongs to the file, so it binds every holder of it, this process included; files
   * that cannot be sealed (F_SEAL_SEAL set, not a memfd, not opened for writing) are mapped all
   * the same and rely on the SIGBUS guard (see MappedRegion).
   */
  sealShrink?: boolean;
}

const MAX_LENGTH = bufferConstants.MAX_LENGTH;
const ERANGE = 34;
const ENOSPC = 28;

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
 * A peer that shrinks the file: mmapFd() seals memfds against shrinking when they allow it
 * (`sealed`). For files that cannot be sealed, touching a page past the new end of the file
 * would raise SIGBUS and kill the process; the addon's SIGBUS guard instead puts a private zero
 * page there (reads see zeros, writes go nowhere) and sets `truncated`. Consumers check
 * `truncated` after each access through the mapping and treat a set flag as a failed access
 * (the contents can no longer be trusted), then unmap.
 */
export class MappedRegion {
  private mapped: ArrayBuffer | null;
  private token = {};
  private truncatedAtUnmap = false;

  /** @internal use mmapFd() */
  constructor(
    buffer: ArrayBuffer,
    readonly fd: number,
    readonly offset: number,
    readonly length: number,
    readonly writable: boolean,
    private readonly budget: MapBudget,
    /** @internal the SIGBUS guard slot */
    private readonly slot: number,
    /** True when the file cannot shrink (F_SEAL_SHRINK was present or added at map time). */
    readonly sealed: boolean,
  ) {
    this.mapped = buffer;
    // Keyed on the buffer: the addon unmaps when the buffer itself is collected.
    unreclaimed.register(buffer, { budget, length }, this.token);
  }

  get isMapped(): boolean {
    return this.mapped !== null;
  }

  /**
   * True once a page of this mapping was found past the end of its (shrunk) file and replaced
   * by zeros. One load from memory shared with the signal handler; after unmap(), the value it
   * had then.
   */
  get truncated(): boolean {
    if (this.mapped === null) return this.truncatedAtUnmap;
    return guardFlagWords()[this.slot] !== 0;
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
    const truncated = this.truncated;
    const r = native().munmap(buffer);
    if (r < 0) throw syscallError("munmap", -r, { fd: this.fd });
    this.mapped = null;
    this.truncatedAtUnmap = truncated;
    this.budget.mappedBytes -= this.length;
    unreclaimed.unregister(this.token);
  }
}

/**
 * Maps `length` bytes of `fd` starting at `offset` (any offset: page alignment is handled
 * inside) as shared memory. Checks, in order: length > 0, offset/length are safe integers,
 * length ≤ buffer.constants.MAX_LENGTH (4 GiB on Node 20: map larger files in pieces),
 * offset + length ≤ the file's size (fstat; ERR_MAP_OUT_OF_BOUNDS), the budget
 * (ERR_MAP_LIMIT), the process-wide count of mappings (MAX_MAPPINGS, ERR_MAP_LIMIT). The fd is
 * borrowed, not taken. Memfds are sealed against shrinking first unless `sealShrink` is false.
 */
export function mmapFd(fd: number, offset: number | bigint, length: number, options: MapOptions = {}): MappedRegion {
  const writable = options.writable ?? true;
  const budget = options.budget ?? defaultMapBudget;
  const sealShrink = options.sealShrink ?? true;
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
  // The file size is checked by the addon (fstat right before mmap, exact 64-bit sums): one
  // fstat per mapping, none of it here; the error path asks for the size to report it.
  if (budget.mappedBytes + length > budget.maxMappedBytes) {
    throw new TransportError(
      "ERR_MAP_LIMIT",
      `mapping ${length} bytes would exceed the mapping budget of ${budget.maxMappedBytes} bytes (${budget.mappedBytes} in use)`,
      { fd, limit: budget.maxMappedBytes, actual: budget.mappedBytes + length },
    );
  }
  guardFlagWords(); // fetched before mapping, so `truncated` can never fail afterwards
  const r = native().mmap(fd, start, length, writable, sealShrink, mapInfo);
  if (r === -ENOSPC) {
    throw new TransportError(
      "ERR_MAP_LIMIT",
      `the process already holds ${MAX_MAPPINGS} mappings, the most the SIGBUS guard tracks`,
      { fd, limit: MAX_MAPPINGS, actual: MAX_MAPPINGS + 1 },
    );
  }
  if (r === -ERANGE) {
    // The addon checks with exact 64-bit sizes (a double sum rounds past 2^53, and a page beyond
    // the end of the file would raise SIGBUS when touched) just before mmap.
    const size = fileSize(fd);
    throw new TransportError(
      "ERR_MAP_OUT_OF_BOUNDS",
      `mapping [${offset}, ${BigInt(start) + BigInt(length)}) exceeds the file size ${size}`,
      { fd, limit: size, actual: start + length },
    );
  }
  if (typeof r === "number") throw syscallError("mmap", -r, { fd });
  budget.mappedBytes += length;
  return new MappedRegion(r, fd, start, length, writable, budget, mapInfo[0], mapInfo[1] === 1);
}
