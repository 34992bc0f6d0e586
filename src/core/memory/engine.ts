// The engine contract: what the public API (api.ts) needs from a memory engine. Two
// implementations: WasmMemoryEngine (build/core.wasm, the product) and ReferenceMemoryEngine
// (plain TypeScript, same algorithms: the differential oracle and the benchmark baseline).
// 64-bit quantities cross as (lo, hi) u32 halves; sizes cross as `last = size - 1` so a
// region may span all 2^64 bytes.

/** Device callbacks of one I/O region, as the engine calls them. */
export interface EngineIoOps {
  /** Returns the value (number for size <= 4, number or bigint for 8). Throwing = device error. */
  read(offset: number, size: number): number | bigint;
  /** `value` is a number for size <= 4 and a bigint for size 8. Throwing = device error. */
  write(offset: number, size: number, value: number | bigint): void;
  /** QEMU valid.accepts: false vetoes the access (decode error). Called only when set. */
  accepts?(offset: number, size: number, isWrite: boolean): boolean;
}

export interface RegionInfo {
  kind: number;
  size: bigint;
  address: bigint;
  priority: number;
  enabled: boolean;
  readonly: boolean;
  /** ROM devices: whether reads are served from the RAM (ROMD mode); false for other kinds. */
  romd: boolean;
  /** 0 when the region is not a subregion. */
  container: number;
  aliasTarget: number;
  aliasOffset: bigint;
}

/** One entry of a rendered flat view ("info mtree -f"). Region 0 = unassigned gap. */
export interface FlatRangeInfo {
  start: bigint;
  /** Inclusive last address. */
  last: bigint;
  region: number;
  offsetInRegion: bigint;
  readonly: boolean;
}

/** A trace buffer: TRACE_WORDS u32 words per record (see abi.ts). */
export interface EngineTrace {
  readonly capacity: number;
  /** Current view of the records (re-fetch after any call that may allocate in the engine). */
  words(): Uint32Array;
  free(): void;
}

export interface MemoryEngine {
  readonly kind: "wasm" | "reference";

  // ---- topology (not hot) ----
  /** Returns the new region id (>= 1) or a negated TopologyStatus. */
  regionNew(kind: number, lastLo: number, lastHi: number): number;
  regionSetIo(id: number, flags: number, validMin: number, validMax: number, implMin: number, implMax: number, guard: number): number;
  regionSetAlias(id: number, target: number, offLo: number, offHi: number): number;
  regionAddSubregion(parent: number, child: number, addrHi: number, addrLo: number, priority: number): number;
  regionDelSubregion(parent: number, child: number): number;
  regionSetAddress(id: number, lo: number, hi: number): number;
  regionSetEnabled(id: number, enabled: number): number;
  regionSetReadonly(id: number, readonly: number): number;
  regionSetAliasOffset(id: number, lo: number, hi: number): number;
  /** ROM devices only (QEMU memory_region_rom_device_set_romd). */
  regionSetRomd(id: number, romd: number): number;
  /**
   * Frees a region nothing refers to. Inside an open transaction the release (RAM, id, device
   * callbacks) is deferred to the outermost commit: flat views rendered before it may still
   * reach the region until then (QEMU frees after the RCU grace period).
   */
  regionFree(id: number): number;
  /** Whether a freed region still waits for the outermost commit to be released. */
  regionPendingFree(id: number): boolean;
  regionInfo(id: number): RegionInfo | null;
  /** Fresh view of a RAM/ROM region's bytes (invalid after the engine allocates). */
  ramBytes(id: number): Uint8Array;
  setIoOps(id: number, ops: EngineIoOps | undefined): void;
  /** The exception a device callback threw during the last failing access, if any. */
  takeIoError(): unknown;

  transactionBegin(): void;
  /** Renders the changed address spaces when the outermost transaction ends. */
  transactionCommit(): number;
  transactionDepth(): number;

  /** Returns the new address-space id (>= 1) or a negated TopologyStatus. */
  asNew(root: number): number;
  asFree(as: number): number;
  asFlatView(as: number): FlatRangeInfo[];
  /**
   * How many flat views address space `as` has had rendered (0 if not live). The wasm core
   * re-renders at a commit only the address spaces whose tree changed; the reference model
   * re-renders every address space at every commit that changed anything (the simple rule,
   * so that it checks the wasm core's selection in the property tests).
   */
  asRenderCount(as: number): number;

  // ---- access (hot) ----
  /** size 1, 2, 4 or 8. Returns MemTx bits; the value is then in resultLo()/resultHi(). */
  asRead(as: number, lo: number, hi: number, size: number): number;
  /** size 1, 2 or 4: returns the value when OK, else -(MemTx bits) (value then in resultLo()). */
  asRead32(as: number, lo: number, hi: number, size: number): number;
  resultLo(): number;
  resultHi(): number;
  asWrite(as: number, lo: number, hi: number, size: number, valueLo: number, valueHi: number): number;
  /** Any length; bytes[offset, offset+length). Returns MemTx bits OR-ed over all chunks. */
  asReadBytes(as: number, lo: number, hi: number, bytes: Uint8Array, offset: number, length: number): number;
  asWriteBytes(as: number, lo: number, hi: number, bytes: Uint8Array, offset: number, length: number): number;
  traceNew(capacity: number): EngineTrace;
  /** Runs records [0, count) of the trace; returns how many failed (status != 0). */
  asReplay(as: number, trace: EngineTrace, count: number): number;
}
