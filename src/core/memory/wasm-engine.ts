// MemoryEngine backed by build/core.wasm (assembly/memory). Host imports "mem_io_*" call the
// device callbacks of I/O regions; everything else runs inside wasm.
import { instantiateCore, type CoreBuild, type CoreRef, type HostImportFactory } from "../wasm.js";
import { TRACE_WORDS } from "../abi/memory.js";
import type { CoreExports } from "../abi/exports.js";
import type { EngineIoOps, EngineTrace, FlatRangeInfo, MemoryEngine, RegionInfo } from "./engine.js";

const TWO_32 = 4294967296;
const engines = new WeakMap<CoreRef, WasmMemoryEngine>();

/**
 * Device callbacks of one instance, shared by its host imports and its engine: the hot
 * imports reach a region's ops with one array load, without going through the engine.
 */
class IoCallbacks {
  readonly ops: (EngineIoOps | undefined)[] = [];
  /** The exception a device callback threw during the last failing access. */
  error: unknown = undefined;
}
const callbacks = new WeakMap<CoreRef, IoCallbacks>();

/**
 * The memory subsystem's host imports (see assembly/memory/dispatch.ts). `key` is
 * region << 4 | size. The two hot ones take (key, offset) with a 32-bit offset and return
 * or take 32-bit values; the *_wide ones handle 8-byte accesses and offsets >= 2^32. A
 * throwing callback is reported with mem_io_fail() (the access then carries MemTx.ERROR).
 * The instance must be attached (WasmMemoryEngine.attach) before any access.
 */
export const memoryHostImports: HostImportFactory = (ref: CoreRef) => {
  const io = new IoCallbacks();
  callbacks.set(ref, io);
  const ops = io.ops;
  const fail = (e: unknown): void => {
    io.error = e;
    ref.exports.mem_io_fail();
  };
  // The wide imports need the engine (scratch memory for the high half of 8-byte reads).
  let engine: WasmMemoryEngine | undefined;
  const bound = () => {
    engine = engines.get(ref);
    if (!engine) throw new Error("wasmdev memory core: instance not attached (use MemoryCore.attach(ref))");
    return engine;
  };
  return {
    mem_io_read: (key: number, offset: number): number => {
      try {
        const v = ops[key >>> 4]!.read(offset >>> 0, key & 15);
        return typeof v === "number" ? v | 0 : Number(BigInt.asIntN(32, v));
      } catch (e) {
        fail(e);
        return 0;
      }
    },
    mem_io_write: (key: number, offset: number, value: number): void => {
      try {
        ops[key >>> 4]!.write(offset >>> 0, key & 15, value >>> 0);
      } catch (e) {
        fail(e);
      }
    },
    mem_io_read_wide: (key: number, offLo: number, offHi: number): number => {
      try {
        const size = key & 15;
        const v = ops[key >>> 4]!.read((offHi >>> 0) * TWO_32 + (offLo >>> 0), size);
        if (size === 8) {
          const big = BigInt.asUintN(64, BigInt(v));
          (engine ?? bound()).setScratchHigh(Number(big >> 32n));
          return Number(big & 0xffffffffn) | 0;
        }
        return typeof v === "number" ? v | 0 : Number(BigInt.asIntN(32, v));
      } catch (e) {
        fail(e);
        return 0;
      }
    },
    mem_io_write_wide: (key: number, offLo: number, offHi: number, lo: number, hi: number): void => {
      try {
        const size = key & 15;
        ops[key >>> 4]!.write((offHi >>> 0) * TWO_32 + (offLo >>> 0), size, size === 8 ? (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0) : lo >>> 0);
      } catch (e) {
        fail(e);
      }
    },
    mem_io_accepts: (region: number, offLo: number, offHi: number, size: number, isWrite: number): number => {
      try {
        return ops[region]!.accepts!((offHi >>> 0) * TWO_32 + (offLo >>> 0), size, isWrite !== 0) ? 1 : 0;
      } catch (e) {
        io.error = e;
        return 0;
      }
    },
  };
};

export class WasmMemoryEngine implements MemoryEngine {
  readonly kind = "wasm" as const;
  private readonly x: CoreExports;
  private readonly memory: WebAssembly.Memory;
  private buf: ArrayBuffer;
  private u32: Uint32Array;
  private u8: Uint8Array;
  private readonly scratch: number; // u32 index of SCRATCH
  private readonly info: number;
  private readonly io: IoCallbacks;
  private bulkPtr = 0;
  private bulkCap = 0;
  private bulkDepth = 0;
  /** Regions freed inside the open transaction: their callbacks stay reachable until it commits. */
  private pendingOps: number[] = [];

  // Hot entry points, bound once.
  readonly asRead: (as: number, lo: number, hi: number, size: number) => number;
  readonly asRead32: (as: number, lo: number, hi: number, size: number) => number;
  readonly asWrite: (as: number, lo: number, hi: number, size: number, vlo: number, vhi: number) => number;

  static create(build?: CoreBuild, imports: HostImportFactory[] = []): WasmMemoryEngine {
    return WasmMemoryEngine.attach(instantiateCore([memoryHostImports, ...imports], build));
  }

  static attach(ref: CoreRef): WasmMemoryEngine {
    const existing = engines.get(ref);
    if (existing) return existing;
    const e = new WasmMemoryEngine(ref);
    engines.set(ref, e);
    return e;
  }

  private constructor(ref: CoreRef) {
    this.x = ref.exports;
    this.memory = ref.memory;
    // An instance built without memoryHostImports has no device callbacks to reach.
    this.io = callbacks.get(ref) ?? new IoCallbacks();
    this.x.mem_init();
    this.buf = this.memory.buffer;
    this.u32 = new Uint32Array(this.buf);
    this.u8 = new Uint8Array(this.buf);
    this.scratch = this.x.mem_scratch_ptr() >>> 2;
    this.info = this.x.mem_info_ptr();
    this.asRead = this.x.mem_as_read;
    this.asRead32 = this.x.mem_as_read32;
    this.asWrite = this.x.mem_as_write;
  }

  /** Re-creates the views when linear memory grew (memory.buffer changed identity). */
  private views(): void {
    if (this.memory.buffer !== this.buf) {
      this.buf = this.memory.buffer;
      this.u32 = new Uint32Array(this.buf);
      this.u8 = new Uint8Array(this.buf);
    }
  }

  /** @internal the high half of an 8-byte device read (read by the core after the import returns). */
  setScratchHigh(hi: number): void {
    this.views();
    this.u32[this.scratch + 2] = hi;
  }

  // ---- topology ----
  regionNew(kind: number, lastLo: number, lastHi: number): number {
    return this.x.mem_region_new(kind, lastLo, lastHi);
  }
  regionSetIo(id: number, flags: number, vmin: number, vmax: number, imin: number, imax: number, guard: number): number {
    return this.x.mem_region_set_io(id, flags, vmin, vmax, imin, imax, guard);
  }
  regionSetAlias(id: number, target: number, offLo: number, offHi: number): number {
    return this.x.mem_region_set_alias(id, target, offLo, offHi);
  }
  regionAddSubregion(parent: number, child: number, lo: number, hi: number, priority: number): number {
    return this.x.mem_region_add_subregion(parent, child, lo, hi, priority);
  }
  regionDelSubregion(parent: number, child: number): number {
    return this.x.mem_region_del_subregion(parent, child);
  }
  regionSetAddress(id: number, lo: number, hi: number): number {
    return this.x.mem_region_set_address(id, lo, hi);
  }
  regionSetEnabled(id: number, on: number): number {
    return this.x.mem_region_set_enabled(id, on);
  }
  regionSetReadonly(id: number, on: number): number {
    return this.x.mem_region_set_readonly(id, on);
  }
  regionSetAliasOffset(id: number, lo: number, hi: number): number {
    return this.x.mem_region_set_alias_offset(id, lo, hi);
  }
  regionSetRomd(id: number, on: number): number {
    return this.x.mem_region_set_romd(id, on);
  }
  regionFree(id: number): number {
    const st = this.x.mem_region_free(id);
    if (st === 0) {
      // A deferred free keeps the device callbacks: the old flat views may still call them.
      if (this.x.mem_region_pending_free(id)) this.pendingOps.push(id);
      else this.io.ops[id] = undefined;
    }
    return st;
  }
  regionPendingFree(id: number): boolean {
    return this.x.mem_region_pending_free(id) !== 0;
  }
  regionInfo(id: number): RegionInfo | null {
    if (!this.x.mem_region_info(id)) return null;
    this.views();
    const dv = new DataView(this.buf, this.info, 48);
    const state = dv.getUint32(4, true);
    return {
      kind: dv.getUint32(0, true),
      enabled: (state & 2) !== 0,
      readonly: (state & 4) !== 0,
      romd: (state & 8) !== 0,
      priority: dv.getInt32(8, true),
      container: dv.getUint32(12, true),
      size: dv.getBigUint64(16, true) + 1n,
      address: dv.getBigUint64(24, true),
      aliasOffset: dv.getBigUint64(32, true),
      aliasTarget: dv.getUint32(40, true),
    };
  }
  ramBytes(id: number): Uint8Array {
    const ptr = this.x.mem_region_ram(id) >>> 0;
    const info = this.regionInfo(id);
    if (!ptr || !info) return new Uint8Array(0);
    this.views();
    return new Uint8Array(this.buf, ptr, Number(info.size));
  }
  setIoOps(id: number, ops: EngineIoOps | undefined): void {
    this.io.ops[id] = ops;
  }
  takeIoError(): unknown {
    const e = this.io.error;
    this.io.error = undefined;
    return e;
  }
  transactionBegin(): void {
    this.x.mem_transaction_begin();
  }
  transactionCommit(): number {
    const st = this.x.mem_transaction_commit();
    // Deferred frees are released by the outermost commit (the only one that reaches depth 0
    // while frees are pending: a change made outside any transaction has nothing pending).
    if (this.pendingOps.length && this.x.mem_transaction_depth() === 0) {
      for (const id of this.pendingOps) this.io.ops[id] = undefined;
      this.pendingOps.length = 0;
    }
    return st;
  }
  transactionDepth(): number {
    return this.x.mem_transaction_depth();
  }
  asNew(root: number): number {
    return this.x.mem_as_new(root);
  }
  asFree(as: number): number {
    return this.x.mem_as_free(as);
  }
  asFlatView(as: number): FlatRangeInfo[] {
    const ptr = this.x.mem_as_flat_ptr(as) >>> 0;
    const n = this.x.mem_as_flat_count(as) >>> 0;
    const size = this.x.mem_flat_record_size() >>> 0;
    this.views();
    const dv = new DataView(this.buf);
    const out: FlatRangeInfo[] = [];
    // Record layout: assembly/memory/flatview.ts (region id in bits 0..23 at 24, mode byte at 27).
    for (let i = 0; i < n; i++) {
      const p = ptr + i * size;
      out.push({
        start: dv.getBigUint64(p, true),
        last: dv.getBigUint64(p + 8, true),
        offsetInRegion: dv.getBigUint64(p + 16, true),
        region: dv.getUint32(p + 24, true) & 0xffffff,
        readonly: (dv.getUint8(p + 27) & 16) !== 0,
      });
    }
    return out;
  }
  asRenderCount(as: number): number {
    return this.x.mem_as_render_count(as) >>> 0;
  }

  // ---- access ----
  resultLo(): number {
    this.views();
    return this.u32[this.scratch];
  }
  resultHi(): number {
    this.views();
    return this.u32[this.scratch + 1];
  }

  /** A linear-memory staging buffer; nested (re-entrant) calls get their own. */
  private bulk(len: number): number {
    if (this.bulkDepth > 0) return this.x.mem_alloc(Math.max(len, 1)) >>> 0;
    if (len > this.bulkCap) {
      if (this.bulkPtr) this.x.mem_free(this.bulkPtr);
      this.bulkCap = Math.max(len, 4096);
      this.bulkPtr = this.x.mem_alloc(this.bulkCap) >>> 0;
    }
    return this.bulkPtr;
  }

  asReadBytes(as: number, lo: number, hi: number, bytes: Uint8Array, offset: number, length: number): number {
    const ptr = this.bulk(length);
    const nested = this.bulkDepth++ > 0;
    try {
      const st = this.x.mem_as_rw(as, lo, hi, ptr, length, 0);
      this.views();
      bytes.set(this.u8.subarray(ptr, ptr + length), offset);
      return st;
    } finally {
      this.bulkDepth--;
      if (nested) this.x.mem_free(ptr);
    }
  }

  asWriteBytes(as: number, lo: number, hi: number, bytes: Uint8Array, offset: number, length: number): number {
    const ptr = this.bulk(length);
    const nested = this.bulkDepth++ > 0;
    try {
      this.views();
      this.u8.set(bytes.subarray(offset, offset + length), ptr);
      return this.x.mem_as_rw(as, lo, hi, ptr, length, 1);
    } finally {
      this.bulkDepth--;
      if (nested) this.x.mem_free(ptr);
    }
  }

  traceNew(capacity: number): EngineTrace {
    const bytes = capacity * TRACE_WORDS * 4;
    let ptr = this.x.mem_alloc(bytes) >>> 0;
    const engine = this;
    let cached: Uint32Array | null = null;
    let cachedBuf: ArrayBuffer | null = null;
    return {
      capacity,
      get ptr() {
        return ptr;
      },
      words(): Uint32Array {
        if (!ptr) throw new Error("trace was freed");
        engine.views();
        if (cachedBuf !== engine.buf) {
          cachedBuf = engine.buf;
          cached = new Uint32Array(engine.buf, ptr, capacity * TRACE_WORDS);
        }
        return cached!;
      },
      free(): void {
        if (ptr) engine.x.mem_free(ptr);
        ptr = 0;
      },
    } as EngineTrace & { ptr: number };
  }

  asReplay(as: number, trace: EngineTrace, count: number): number {
    return this.x.mem_as_replay(as, (trace as EngineTrace & { ptr: number }).ptr, count);
  }
}
