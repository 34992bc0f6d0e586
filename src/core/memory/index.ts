/**
 * # Memory core API
 *
 * QEMU's memory API (system/memory.c, docs/devel/memory.rst) with the hot path in wasm
 * (assembly/memory). Everything below is exported from the package entry ("wasmdev").
 *
 * ```ts
 * import { MemoryCore } from "wasmdev";
 * const mem = MemoryCore.create();                 // own wasm instance ({engine: "reference"} = TS model)
 * const sys = mem.container("system", 2n ** 64n);  // sizes: number | bigint, 1 .. 2^64
 * const ram = mem.ram("ram", 0x10000);             // RAM/ROM live in wasm linear memory (<= 1 GiB each)
 * const uart = mem.io("uart", 8, {
 *   read: (offset, size) => 0,                     // number (sizes 1-4) or bigint/number (8)
 *   write: (offset, size, value) => {},            // value: number (1-4) or bigint (8)
 *   valid: { min: 1, max: 4 }, impl: { min: 1, max: 1 }, endianness: "little",
 * });
 * mem.transaction(() => {                          // or mem.begin() ... mem.commit(); nests
 *   sys.addSubregion(0, ram);                      // QEMU memory_region_add_subregion
 *   sys.addSubregion(0x1000, uart, 1);             // ..._overlap: signed priority, higher wins
 * });
 * const as = mem.addressSpace("memory", sys);      // rendered flat view + page table
 * as.write(0x10, 4, 0xdeadbeef); as.read(0x10, 4); as.read64(0x10n);
 * as.readBytes(0, 4096); as.writeBytes(0x100, bytes);
 * const st = as.tryRead(0x1000, 1);                // MemTx bits instead of a throw; value in as.valueLo/valueHi
 * const t = mem.createTrace(1000); t.read(0x10, 4).write(0x1000, 1, 0x41);
 * as.replay(t);                                    // runs the whole list inside wasm; t.status(i), t.value(i)
 * ```
 *
 * Regions (MemoryRegion): `container`, `ram`, `rom` (guest writes dropped), `io` (IoOps:
 * read/write/accepts callbacks, `valid` and `impl` {min, max, unaligned}, endianness, owner
 * for a shared re-entrancy guard), `alias(name, target, offset, size)`, `romDevice(name, size,
 * ops, init?)` (QEMU memory_region_init_rom_device: RAM plus callbacks; in ROMD mode reads are
 * served from the RAM inside wasm — no callback, no valid/impl checks — and writes go to
 * `ops.write`; `setRomdMode(false)` sends reads to `ops.read`; the device keeps the bytes
 * current through `ramBytes()`). Topology:
 * `addSubregion(offset, child, priority = 0)`, `removeSubregion(child)`, `setAddress(offset)`
 * (memory_region_set_address), `setEnabled`, `setReadonly` (inherited below), `setAliasOffset`,
 * `destroy()` (inside a transaction the region's RAM and callbacks are released only by the
 * outermost commit, since the flat views rendered before it still reach them; QEMU defers the
 * free the same way, through RCU). Each change outside a transaction commits at once; inside begin()/commit() the
 * address spaces re-render once, at the outermost commit, and only those whose tree (from the
 * root down, through subregions and aliases) holds a changed region: a BAR move in one
 * device's space leaves every other space alone (`as.renderCount` counts renders).
 *
 * Address spaces (AddressSpace): accesses are little-endian (the target's byte order);
 * addresses are `number` (safe integer) or `bigint` up to 2^64-1. `read/read64/write/
 * readBytes/writeBytes` throw MemoryError; `tryRead/tryWrite/tryReadBytes/tryWriteBytes`
 * return MemTx bits: OK 0, ERROR 1 (device callback threw; `cause` on the thrown error),
 * DECODE_ERROR 2 (unassigned, or valid.* / accepts refused: reads give 0, writes dropped),
 * ACCESS_ERROR 4 (re-entrant access to an I/O region already in a callback).
 *
 * Region-relative access (vfio-user REGION_READ/WRITE on a BAR): `region.view()` is an
 * address space rooted at the region (offset 0 = start of the region), rendered like any
 * other, so a BAR container with an MSI-X table overlay dispatches correctly.
 *
 * PCI BAR mapping (#4): the memory and I/O address spaces are containers;
 * map = `mem.transaction(() => { bus.addSubregion(barAddr, bar, prio) })`,
 * move = `bar.setAddress(newAddr)`, decode off = `bar.setEnabled(false)` or
 * `bus.removeSubregion(bar)`. Bus accesses (mpqemu BAR_READ/BAR_WRITE) go through the bus
 * address space; all of these also exist at the AssemblyScript level (assembly/memory/api.ts)
 * for code running inside the core.
 *
 * Sharing one wasm instance with other subsystems:
 * `const ref = instantiateCore([MemoryCore.hostImports, ...]); const mem = MemoryCore.attach(ref);`
 *
 * Errors: MemoryError with a stable `code` (SIZE_ZERO, OVERFLOW, CYCLE,
 * IMPL_UNALIGNED_WITHOUT_VALID, BAD_ACCESS_SIZES, ALREADY_MAPPED, NOT_A_SUBREGION, WRONG_KIND,
 * IN_USE, RAM_TOO_LARGE, IO_TOO_LARGE, NO_TRANSACTION, OUT_OF_MEMORY, BAD_ARGUMENT, DESTROYED,
 * DECODE_ERROR, ACCESS_ERROR, DEVICE_ERROR) and fields region / addressSpace / address / size
 * / status / cause.
 *
 * Limits: RAM/ROM region <= 1 GiB; I/O region <= 2^53 bytes; 2^20 regions; 2^16 address
 * spaces; readBytes/writeBytes <= 1 GiB per call; trace capacity <= 2^26 records.
 * Views returned by ramBytes() are detached whenever the core allocates (wasm memory grows):
 * fetch them again after any call into the core instead of keeping them.
 */
export { MemoryCore, MemoryRegion, AddressSpace, AccessTrace } from "./api.js";
// AccessSize and AccessConstraints (defined in ./api.ts) are exported through src/core/pci.
export type { Address, Endianness, IoOps, MemoryCoreOptions, TraceResult } from "./api.js";
export { MemoryError } from "./errors.js";
export type { MemoryErrorCode, MemoryErrorFields } from "./errors.js";
export { MemTx, MAX_RAM_REGION_SIZE, MAX_IO_REGION_SIZE, MAX_REGIONS, MAX_ADDRESS_SPACES, MAX_BULK_ACCESS } from "../abi/memory.js";
export type { MemoryEngine, EngineIoOps, FlatRangeInfo, RegionInfo } from "./engine.js";
export { WasmMemoryEngine, memoryHostImports } from "./wasm-engine.js";
export { ReferenceMemoryEngine } from "./reference-model.js";
