// Numeric codes shared with the host (src/core/abi/memory.ts mirrors this file; test/architecture/abi.test.ts compares them).

// Access results: bits OR-ed over the chunks of one access (QEMU MemTxResult).
export const MEMTX_OK: u32 = 0;
export const MEMTX_ERROR: u32 = 1; // the device callback failed
export const MEMTX_DECODE_ERROR: u32 = 2; // nothing decodes there / size or alignment refused
export const MEMTX_ACCESS_ERROR: u32 = 4; // re-entrant access refused by the guard

// Topology results (0 = OK); *_new functions return them negated.
export const TOPO_OK: i32 = 0;
export const TOPO_NO_SUCH_REGION: i32 = 1;
export const TOPO_SIZE_ZERO: i32 = 2;
export const TOPO_OVERFLOW: i32 = 3;
export const TOPO_CYCLE: i32 = 4;
export const TOPO_IMPL_UNALIGNED_WITHOUT_VALID: i32 = 5;
export const TOPO_BAD_ACCESS_SIZES: i32 = 6;
export const TOPO_ALREADY_MAPPED: i32 = 7;
export const TOPO_NOT_A_SUBREGION: i32 = 8;
export const TOPO_WRONG_KIND: i32 = 9;
export const TOPO_IN_USE: i32 = 10;
export const TOPO_RAM_TOO_LARGE: i32 = 11;
export const TOPO_IO_TOO_LARGE: i32 = 12;
export const TOPO_NO_TRANSACTION: i32 = 13;
export const TOPO_OUT_OF_MEMORY: i32 = 14;
export const TOPO_NO_SUCH_ADDRESS_SPACE: i32 = 15;
export const TOPO_TOO_MANY: i32 = 16;

// Region kinds.
export const KIND_CONTAINER: u32 = 0;
export const KIND_RAM: u32 = 1;
export const KIND_ROM: u32 = 2;
export const KIND_IO: u32 = 3;
export const KIND_ALIAS: u32 = 4;
/** QEMU memory_region_init_rom_device: RAM contents plus device callbacks. In ROMD mode (the
 *  default) reads are served from the RAM and writes go to the write callback; with ROMD mode
 *  off (memory_region_rom_device_set_romd) reads go to the read callback too. */
export const KIND_ROM_DEVICE: u32 = 5;

// I/O flags (regionSetIo).
export const IO_VALID_UNALIGNED: u32 = 1;
export const IO_IMPL_UNALIGNED: u32 = 2;
export const IO_BIG_ENDIAN: u32 = 4;
export const IO_ACCEPTS: u32 = 8;
export const IO_NO_GUARD: u32 = 16;
export const IO_UNASSIGNED: u32 = 32; // region 0 only: every access is a decode error

// Limits.
export const MAX_RAM_REGION_SIZE: u64 = 1 << 30;
export const MAX_IO_REGION_LAST: u64 = (<u64>1 << 53) - 1;
export const MAX_REGIONS: u32 = 1 << 20;
export const MAX_ADDRESS_SPACES: u32 = 1 << 16;
/** Guard slots: region ids below MAX_REGIONS, shared owner groups above. */
export const MAX_GUARD_SLOTS: u32 = 2 << 20;
