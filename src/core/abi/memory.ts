// Numeric contract between the host and the memory engines (build/core.wasm and the
// reference model): the host side of assembly/memory/status.ts and assembly/memory/regions.ts.
// test/architecture/abi.test.ts checks every value against the assembly source.

/** Region kinds (QEMU: container, RAM, ROM, I/O, alias, ROM device). */
export const RegionKind = {
  CONTAINER: 0,
  RAM: 1,
  ROM: 2,
  IO: 3,
  ALIAS: 4,
  /** RAM plus device callbacks (QEMU memory_region_init_rom_device); ROMD mode starts on. */
  ROM_DEVICE: 5,
} as const;
export type RegionKindCode = (typeof RegionKind)[keyof typeof RegionKind];
export const REGION_KIND_NAMES = ["container", "ram", "rom", "io", "alias", "rom-device"] as const;
export type RegionKindName = (typeof REGION_KIND_NAMES)[number];

/**
 * Access results, a bit set OR-ed over the chunks of one access (QEMU MemTxResult):
 * 0 = OK, 1 = the device reported an error, 2 = nothing decodes there (unassigned, invalid
 * size/alignment, accepts veto), 4 = access refused (re-entrant access to a guarded region).
 */
export const MemTx = {
  OK: 0,
  ERROR: 1,
  DECODE_ERROR: 2,
  ACCESS_ERROR: 4,
} as const;

/** Topology / construction result codes (0 = OK). Engines return them negated from *_new. */
export const TopologyStatus = {
  OK: 0,
  NO_SUCH_REGION: 1,
  SIZE_ZERO: 2,
  OVERFLOW: 3,
  CYCLE: 4,
  IMPL_UNALIGNED_WITHOUT_VALID: 5,
  BAD_ACCESS_SIZES: 6,
  ALREADY_MAPPED: 7,
  NOT_A_SUBREGION: 8,
  WRONG_KIND: 9,
  IN_USE: 10,
  RAM_TOO_LARGE: 11,
  IO_TOO_LARGE: 12,
  NO_TRANSACTION: 13,
  OUT_OF_MEMORY: 14,
  NO_SUCH_ADDRESS_SPACE: 15,
  TOO_MANY: 16,
} as const;

export const TOPOLOGY_CODES: Record<number, string> = {
  1: "NO_SUCH_REGION",
  2: "SIZE_ZERO",
  3: "OVERFLOW",
  4: "CYCLE",
  5: "IMPL_UNALIGNED_WITHOUT_VALID",
  6: "BAD_ACCESS_SIZES",
  7: "ALREADY_MAPPED",
  8: "NOT_A_SUBREGION",
  9: "WRONG_KIND",
  10: "IN_USE",
  11: "RAM_TOO_LARGE",
  12: "IO_TOO_LARGE",
  13: "NO_TRANSACTION",
  14: "OUT_OF_MEMORY",
  15: "NO_SUCH_ADDRESS_SPACE",
  16: "TOO_MANY",
};

/** I/O region flag bits passed to regionSetIo. */
export const IoFlag = {
  VALID_UNALIGNED: 1,
  IMPL_UNALIGNED: 2,
  BIG_ENDIAN: 4,
  ACCEPTS: 8,
  NO_REENTRANCY_GUARD: 16,
} as const;

/** Largest RAM/ROM region (bytes): its contents live in 32-bit linear memory. */
export const MAX_RAM_REGION_SIZE = 1 << 30;
/** Largest I/O region (bytes): offsets reach device callbacks as exact JS numbers. */
export const MAX_IO_REGION_SIZE = 2 ** 53;
/** Most regions one core holds (ids are u32 table indices; region 0 is "unassigned"). */
export const MAX_REGIONS = 1 << 20;
/** Most address spaces one core holds. */
export const MAX_ADDRESS_SPACES = 1 << 16;
/** Largest single readBytes/writeBytes (bytes). */
export const MAX_BULK_ACCESS = 1 << 30;

/**
 * One access trace record = 6 u32 words, replayed in order by replay():
 *   [0] op: size in bits 0..3 (1, 2, 4 or 8), bit 4 = write
 *   [1] address low 32 bits   [2] address high 32 bits
 *   [3] value low 32 bits     [4] value high 32 bits   (written for writes; filled in for reads)
 *   [5] status (MemTx bits), filled in by replay
 */
export const TRACE_WORDS = 6;
export const TRACE_OP_WRITE = 16;
