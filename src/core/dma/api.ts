// Public, device-facing DMA API (issue #5). Device models (src/devices, #4) and the protocol
// servers (#6 vfio-user, #8 mpqemu) code against these types; the implementation lives in
// src/core/dma/{map-table,space}.ts and translates through the wasm IOMMU core
// (assembly/iommu).
import { MAX_REGIONS as IOMMU_MAX_REGIONS, MAX_REGION_SIZE as IOMMU_MAX_REGION_SIZE } from "../abi/iommu.js";
//
// Address kinds: an `iova` is what the device puts on the bus (a DMA address; with no vIOMMU
// it equals the address the VMM registered with DMA_MAP / SYNC_SYSMEM). 64-bit addresses are
// `bigint` in this API; lengths of one transfer are `number` (at most 2^32 - 1 bytes).

/** Which way data moves, from the device's point of view (QEMU's DMADirection). */
export type DmaDirection =
  /** The device reads guest memory (needs read permission). */
  | "to-device"
  /** The device writes guest memory (needs write permission). */
  | "from-device"
  /** Both (needs read and write permission). */
  | "bidirectional";

/** Permission bits of a DMA region or an IOMMU entry (QEMU's IOMMUAccessFlags). */
export const DMA_PERM_NONE = 0;
export const DMA_PERM_READ = 1;
export const DMA_PERM_WRITE = 2;
export const DMA_PERM_RW = 3;
export type DmaPerm = 0 | 1 | 2 | 3;

/**
 * A mapping of file-backed memory, as produced by mmap of a passed fd. `bytes` aliases the
 * shared memory (zero-copy). `unmap()` is called exactly once when the region is removed and
 * no live DmaMapping still refers to it.
 */
export interface MappedMemory {
  readonly bytes: Uint8Array;
  /**
   * `reusable` is true when no view of `bytes` ever left the DMA layer (no device was handed
   * one through map()): nothing outside can touch the memory afterwards, so the mapper may keep
   * it mapped for a later mapping of the same file range instead of unmapping at once. False:
   * unmap now, so stale views read as empty.
   */
  unmap(reusable?: boolean): void;
  /**
   * True once the file behind the mapping was found shrunk under it (the transport's SIGBUS
   * guard replaced the pages past the new end with zeros: MappedRegion.truncated). The DMA
   * space reads it after every access through the mapping; absent = cannot happen.
   */
  readonly truncated?: boolean;
}

/** Maps `length` bytes of `fd` at `offset` (the transport's mmap, #3). */
export type FdMapper = (fd: number, offset: bigint, length: number, writable: boolean) => MappedMemory;

/**
 * Where a DMA region's bytes live.
 * - `fd`: shared memory passed by the VMM (vfio-user DMA_MAP with an fd, mpqemu SYNC_SYSMEM);
 *   mapped with the table's FdMapper. The table does NOT take ownership of `fd` unless
 *   `closeFd` is true (then it closes it after unmapping).
 * - `memory`: an in-process buffer (tests, benchmarks, a VMM embedding the device).
 * - `message`: no memory is shared; every access is routed through the space's
 *   DmaMessageHook (vfio-user DMA_READ / DMA_WRITE requests to the client).
 */
export type DmaBacking =
  | { kind: "fd"; fd: number; offset: bigint; closeFd?: boolean }
  | { kind: "memory"; bytes: Uint8Array }
  | { kind: "message" };

/** One entry of the DMA map table: [iova, iova + size) → backing, with permissions. */
export interface DmaRegionSpec {
  iova: bigint;
  /** Bytes; > 0, iova + size ≤ 2^64, at most DMA_MAX_REGION_SIZE. */
  size: bigint;
  perm: DmaPerm;
  backing: DmaBacking;
}

/** Largest single DMA region (the core encodes region slot and offset in 64 bits). */
export const DMA_MAX_REGION_SIZE = IOMMU_MAX_REGION_SIZE;
/** Most regions one table holds at once. */
export const DMA_MAX_REGIONS = IOMMU_MAX_REGIONS;

/**
 * Routes accesses to regions without shared memory. The vfio-user server (#6) implements it
 * with DMA_READ / DMA_WRITE requests; `iova` is the address inside the map table's own IOVA
 * space (what the client registered), never more than one region at a time.
 */
export interface DmaMessageHook {
  read(iova: bigint, length: number): Promise<Uint8Array>;
  write(iova: bigint, data: Uint8Array): Promise<void>;
}

/** A live zero-copy mapping returned by DmaSpace.map. */
export interface DmaMapping {
  readonly iova: bigint;
  readonly length: number;
  readonly direction: DmaDirection;
  /**
   * The mapped bytes in IOVA order, one view per contiguous piece of backing memory
   * (a transfer that straddles regions or pages with different backing yields several).
   * Valid until `release()` or until `onInvalidate` fired; never touch them afterwards.
   */
  readonly views: readonly Uint8Array[];
  /** False once released or invalidated. */
  readonly live: boolean;
  /** Ends the mapping (idempotent). Backing memory of a removed region is unmapped only
   *  after every mapping over it has been released. */
  release(): void;
}

/** Called synchronously when a live mapping's range is unmapped or loses a permission it
 *  needs. The owner must stop using `mapping.views` and should call `mapping.release()`. */
export type DmaInvalidateCallback = (mapping: DmaMapping) => void;

/** An IOVA range + length for batched translation (scatter/gather list element). */
export interface DmaSgEntry {
  iova: bigint;
  length: number;
}

/**
 * A scatter/gather list in parallel arrays: `count` ranges, range i at `iova[i]` of `length[i]`
 * bytes (1..2^32-1). Reusable without allocating per transfer (an NVMe PRP walk fills one).
 */
export interface DmaSgList {
  readonly iova: readonly bigint[];
  readonly length: readonly number[];
  readonly count: number;
}

/** One piece of translated memory. `region` is the map table slot, `offset` the byte offset
 *  inside that region's backing, `iova` the address in the map table's IOVA space. */
export interface DmaSegment {
  region: number;
  offset: number;
  length: number;
  iova: bigint;
}

/**
 * The device-facing DMA API. One DmaSpace per device (per IOMMU context). Every method checks
 * translation and permissions; failures throw DmaError with code:
 *   DMA_UNMAPPED   — some byte of the range has no mapping (QEMU: MEMTX_DECODE_ERROR)
 *   DMA_PERMISSION — mapped, but without the required permission (QEMU: MEMTX_ACCESS_ERROR)
 *   DMA_NO_SHARED_MEMORY — a synchronous/zero-copy call reached a `message` region
 *   DMA_INVALID_ARGUMENT — bad length, address wrap past 2^64, etc.
 *   DMA_BACKING_TRUNCATED — the file behind a region was shrunk by its owner (errno EFAULT):
 *     the bytes read are not guest memory (zeros) and writes did not reach it. The region is
 *     removed from the table before the error is thrown (live maps over it are invalidated).
 * Nothing is written unless the whole range translated (writes are all-or-nothing with
 * respect to translation faults).
 */
export interface DmaApi {
  /** Copies guest memory at `iova` into `dest` (any length; crosses regions and pages).
   *  Synchronous: throws DMA_NO_SHARED_MEMORY if a `message` region is involved. */
  readSync(iova: bigint, dest: Uint8Array): void;
  /** Copies `src` into guest memory at `iova`. Synchronous, as readSync. */
  writeSync(iova: bigint, src: Uint8Array): void;
  /** As readSync, but routes `message` regions through the DmaMessageHook. */
  read(iova: bigint, dest: Uint8Array): Promise<void>;
  /** As writeSync, but routes `message` regions through the DmaMessageHook. */
  write(iova: bigint, src: Uint8Array): Promise<void>;

  /**
   * Copies the guest ranges of `list`, in order, into `dest` (readListSync) or `src` into them
   * (writeListSync); the list's lengths must add up to the buffer's. The whole list is
   * translated in one call into the core, and nothing is copied unless every range translated
   * (DmaError with `index` = the failing range). Synchronous, as readSync.
   */
  readListSync(list: DmaSgList, dest: Uint8Array): void;
  writeListSync(list: DmaSgList, src: Uint8Array): void;

  /** Little-endian loads/stores (QEMU ldl_le_dma and friends); synchronous. */
  readU8(iova: bigint): number;
  readU16(iova: bigint): number;
  readU32(iova: bigint): number;
  readU64(iova: bigint): bigint;
  writeU8(iova: bigint, value: number): void;
  writeU16(iova: bigint, value: number): void;
  writeU32(iova: bigint, value: number): void;
  writeU64(iova: bigint, value: bigint): void;

  /** Zero-copy map (QEMU dma_memory_map). Throws as above; `message` regions cannot be mapped. */
  map(iova: bigint, length: number, direction: DmaDirection, onInvalidate: DmaInvalidateCallback): DmaMapping;

  /** Translates a whole scatter/gather list in one call into the core. Returns the segments
   *  in order; throws DmaError (with `index` = the failing element) on a fault. */
  translateList(list: readonly DmaSgEntry[], direction: DmaDirection): DmaSegment[];
}

/** Stable error codes of the DMA / IOMMU layer. */
export type DmaErrorCode =
  | "DMA_UNMAPPED"
  | "DMA_PERMISSION"
  | "DMA_NO_SHARED_MEMORY"
  | "DMA_INVALID_ARGUMENT"
  | "DMA_REGION_EXISTS" // errno EEXIST
  | "DMA_REGION_NOT_FOUND" // errno ENOENT
  | "DMA_LIMIT" // a documented limit was exceeded
  | "DMA_CHAIN_TOO_DEEP"
  | "DMA_BUSY" // table modified from inside a translation callback
  | "DMA_BACKING_TRUNCATED"; // errno EFAULT: the region's file shrank under its mapping

/**
 * The DMA map table (vfio-user DMA_MAP/DMA_UNMAP, mpqemu SYNC_SYSMEM). Servers own one per
 * client connection and call `clear()` on disconnect.
 */
export interface DmaMapTableApi {
  /** Adds a region. Throws DMA_REGION_EXISTS (errno EEXIST) if it overlaps any existing
   *  region (identical ranges included), DMA_INVALID_ARGUMENT for size 0 / wrap past 2^64,
   *  DMA_LIMIT past DMA_MAX_REGION_SIZE / DMA_MAX_REGIONS or the mapper's limit.
   *  Returns the region's slot number. */
  add(spec: DmaRegionSpec): number;
  /** Removes exactly the region [iova, iova + size). Throws DMA_REGION_NOT_FOUND (errno
   *  ENOENT) if no region has exactly that range (unknown or partial). Invalidates the IOTLB
   *  over the range and every live DmaMapping that uses it (their callbacks fire before this
   *  returns). */
  remove(iova: bigint, size: bigint): void;
  /** Changes the permissions of exactly the region [iova, iova + size). Shrinking invalidates
   *  cached translations and live mappings that need the lost permission. */
  protect(iova: bigint, size: bigint, perm: DmaPerm): void;
  /** Removes every region (client disconnect). */
  clear(): void;
  /** Current regions, in IOVA order. */
  regions(): { slot: number; iova: bigint; size: bigint; perm: DmaPerm; backing: DmaBacking["kind"] }[];
}

/**
 * Options of `createDmaContext(options)` (src/core/dma/context.ts), which builds the wasm
 * IOMMU core, a DmaMapTableApi and a DmaApi bound together:
 *
 *   const { table, dma, close } = createDmaContext({ mapFd, hook });
 *   table.add({ iova, size, perm: DMA_PERM_RW, backing: { kind: "fd", fd, offset: 0n } });
 *   dma.writeSync(iova + 0x10n, bytes);
 */
export interface DmaContextOptions {
  /** mmap for `fd` regions (src/host: hostFdMapper); without it `fd` regions are refused. */
  mapFd?: FdMapper;
  /** Route for `message` regions; without it they fail with DMA_NO_SHARED_MEMORY. */
  hook?: DmaMessageHook;
  /** IOTLB sets (power of two, default 256) × 4 ways. */
  iotlbSets?: number;
  /**
   * Called when an access found a region's file shrunk under its mapping, after the region was
   * removed from the table (the access itself fails with DMA_BACKING_TRUNCATED). For logging,
   * and for a server to tell its peer; the region is gone either way.
   */
  onBackingTruncated?: (region: DmaTruncatedRegion) => void;
}

/** A region removed because its backing file shrank (see DmaContextOptions.onBackingTruncated). */
export interface DmaTruncatedRegion {
  iova: bigint;
  size: bigint;
  /** The fd it was mapped from (closed already when the table owned it). */
  fd: number;
  offset: bigint;
}
