// Numeric contract of the wasm IOMMU core: the host side of assembly/iommu/domain.ts.
// test/architecture/abi.test.ts checks every value against the assembly source.

/** Status codes of the iommu_* exports (0 = OK). */
export const S_OK = 0;
export const S_UNMAPPED = 1;
export const S_PERMISSION = 2;
export const S_EXISTS = 3;
export const S_NOT_FOUND = 4;
export const S_INVALID = 5;
export const S_LIMIT = 6;
export const S_CHAIN_TOO_DEEP = 7;
export const S_BUSY = 8;
export const S_NO_DOMAIN = 9;
export const S_OUT_FULL = 10;
export const S_BAD_ENTRY = 11;

/** Listener flags and notification types (IOMMU_NOTIFIER_MAP / _UNMAP). */
export const NOTIFY_MAP = 1;
export const NOTIFY_UNMAP = 2;

/** Offsets in the I/O block at iommu_io(). */
export const IO_ADDR = 0;
export const IO_LEN = 8;
export const IO_INDEX = 16;
export const IO_SLOT = 20;
export const IO_MISS = 32;

/** Segment addresses: slot << 40 | offset. */
export const SEGMENT_SHIFT = 40n;
/** "No target": a translation that ends in the map table. */
export const TERMINAL = 0xffffffff;
/** Most regions one domain holds. */
export const MAX_REGIONS = 65536;
/** Largest region (bytes). */
export const MAX_REGION_SIZE = 1n << 39n;
