// Public host API of the memory core: MemoryCore, MemoryRegion, AddressSpace, AccessTrace.
// A thin layer over a MemoryEngine: argument checks, 64-bit splitting, status -> MemoryError.
import type { CoreBuild, CoreRef, HostImportFactory } from "../wasm.js";
import {
  IoFlag,
  MAX_BULK_ACCESS,
  MemTx,
  REGION_KIND_NAMES,
  RegionKind,
  TRACE_OP_WRITE,
  TRACE_WORDS,
  TopologyStatus,
  type RegionKindName,
} from "../abi/memory.js";
import type { EngineIoOps, EngineTrace, FlatRangeInfo, MemoryEngine } from "./engine.js";
import { MemoryError, accessError, topologyError } from "./errors.js";
import { WasmMemoryEngine, memoryHostImports } from "./wasm-engine.js";
import { ReferenceMemoryEngine } from "./reference-model.js";

/** A guest-physical / bus address or an offset: a non-negative safe integer or a bigint < 2^64. */
export type Address = number | bigint;
/** Access sizes in bytes. */
export type AccessSize = 1 | 2 | 4 | 8;
export type Endianness = "little" | "big" | "native";

/**
 * Access-size constraints of a callback region (QEMU MemoryRegionOps `valid` / `impl`; an
 * omitted field has the meaning of QEMU's 0, "unspecified"). `valid`: what the bus may issue;
 * anything else is a decode error. Without `valid.max`, every size is valid, and bus/byte
 * accesses are split into pieces of at most 4 bytes (QEMU memory_access_size). `impl`: what
 * the callback handles (default 1..4); other valid sizes are split or widened as QEMU's
 * access_with_adjusted_size does. The PCI function model (src/core/pci) uses the same type.
 */
export interface AccessConstraints {
  /** Smallest access size (default 1). */
  min?: AccessSize;
  /** Largest access size (`valid`: unset = any; `impl`: default 4). */
  max?: AccessSize;
  /** Whether accesses not aligned to their size are allowed (default false). */
  unaligned?: boolean;
}

/**
 * Device callbacks of an I/O region (QEMU MemoryRegionOps). Offsets are relative to the
 * region. `read` returns a number (sizes 1-4) or number/bigint (size 8); `write` receives a
 * number (sizes 1-4) or a bigint (size 8). Throwing reports a device error (MemTx.ERROR).
 */
export interface IoOps {
  read(offset: number, size: AccessSize): number | bigint;
  write(offset: number, size: AccessSize, value: number | bigint): void;
  /** QEMU valid.accepts: return false to refuse an access (decode error). */
  accepts?(offset: number, size: AccessSize, isWrite: boolean): boolean;
  /** Sizes/alignment the device accepts at all; others are decode errors. */
  valid?: AccessConstraints;
  /** Sizes the callbacks implement; the core splits or widens accesses to fit. */
  impl?: AccessConstraints;
  /** Device endianness; "native" = the target's (little-endian). Default "little". */
  endianness?: Endianness;
  /** Regions with the same owner share one re-entrancy guard (QEMU: per device). */
  owner?: object;
  /** QEMU disable_reentrancy_guard. Default true. */
  reentrancyGuard?: boolean;
}

export interface MemoryCoreOptions {
  /** "wasm" (default) or "reference" (the plain TypeScript model). */
  engine?: "wasm" | "reference";
  build?: CoreBuild;
  /** Extra host-import factories for other subsystems sharing this wasm instance. */
  imports?: HostImportFactory[];
}

export interface TraceResult {
  /** Records run. */
  count: number;
  /** Records whose status was not OK. */
  failed: number;
}

const TWO_32 = 4294967296;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const U64_MAX = (1n << 64n) - 1n;

function toBigAddress(a: Address, what: string): bigint {
  if (typeof a === "bigint") {
    if (a < 0n || a > U64_MAX) throw new MemoryError("BAD_ARGUMENT", `${what} must be within [0, 2^64): got ${a}`);
    return a;
  }
  if (!Number.isSafeInteger(a) || a < 0) throw new MemoryError("BAD_ARGUMENT", `${what} must be a non-negative safe integer or a bigint: got ${a}`);
  return BigInt(a);
}

function toBigSize(s: Address, what: string): bigint {
  const v = typeof s === "bigint" ? s : Number.isSafeInteger(s) && s >= 0 ? BigInt(s) : -1n;
  if (v < 0n || v > 1n << 64n) throw new MemoryError("BAD_ARGUMENT", `${what} must be an integer in [1, 2^64]: got ${s}`);
  if (v === 0n) throw new MemoryError("SIZE_ZERO", `${what} is 0: regions must be at least 1 byte`);
  return v;
}

const hiOf = (v: bigint) => Number(v >> 32n);
const loOf = (v: bigint) => Number(v & 0xffffffffn);

function checkConstraint(c: AccessConstraints | undefined, what: string): void {
  if (!c) return;
  for (const k of ["min", "max"] as const) {
    const v = c[k];
    if (v !== undefined && v !== 1 && v !== 2 && v !== 4 && v !== 8) {
      throw new MemoryError("BAD_ACCESS_SIZES", `${what}.${k} must be 1, 2, 4 or 8: got ${v}`);
    }
  }
}

/**
 * One core instance: a table of regions and address spaces in one engine. Regions are
 * global to the core (like QEMU's memory regions); address spaces render a root region.
 */
export class MemoryCore {
  readonly engine: MemoryEngine;
  private readonly regions = new Map<number, MemoryRegion>();
  /** Live address spaces per root region id (destroy() of a viewed region needs the count). */
  private readonly spacesByRoot = new Map<number, number>();
  private readonly owners = new WeakMap<object, number>();
  private nextGuard = 1 << 20; // guard slots for shared owners live above region ids

  /**
   * Host-import factory of the memory subsystem, for a wasm instance shared with other
   * subsystems: `const ref = instantiateCore([MemoryCore.hostImports, ...]);
   * const mem = MemoryCore.attach(ref);`
   */
  static readonly hostImports: HostImportFactory = memoryHostImports;

  /** A core with its own engine instance. */
  static create(options: MemoryCoreOptions = {}): MemoryCore {
    if (options.engine === "reference") return new MemoryCore(new ReferenceMemoryEngine());
    return new MemoryCore(WasmMemoryEngine.create(options.build, options.imports));
  }

  /** The memory core of a wasm instance built with MemoryCore.hostImports among its factories. */
  static attach(ref: CoreRef): MemoryCore {
    return new MemoryCore(WasmMemoryEngine.attach(ref));
  }

  constructor(engine: MemoryEngine) {
    this.engine = engine;
  }

  /** A region that only holds subregions (QEMU memory_region_init). */
  container(name: string, size: Address): MemoryRegion {
    return this.newRegion(name, RegionKind.CONTAINER, size);
  }

  /** RAM, zero-filled unless `init` (copied) is given. At most 1 GiB. */
  ram(name: string, size: Address, init?: Uint8Array): MemoryRegion {
    return this.newBacked(name, RegionKind.RAM, size, init);
  }

  /** ROM: reads like RAM; guest writes are dropped. Load contents with `init` or ramBytes(). */
  rom(name: string, size: Address, init?: Uint8Array): MemoryRegion {
    return this.newBacked(name, RegionKind.ROM, size, init);
  }

  /** I/O region served by device callbacks (QEMU memory_region_init_io). At most 2^53 bytes. */
  io(name: string, size: Address, ops: IoOps): MemoryRegion {
    checkConstraint(ops.valid, `${name}: valid`);
    checkConstraint(ops.impl, `${name}: impl`);
    return this.withOps(this.newRegion(name, RegionKind.IO, size), name, ops);
  }

  /**
   * ROM device (QEMU memory_region_init_rom_device): RAM contents (zero-filled unless `init`)
   * plus device callbacks. In ROMD mode — the initial one — reads are served from the RAM
   * inside the core, without calling the device and without `valid`/`impl` checks (QEMU
   * memory_access_is_direct), while every write goes to `ops.write` (which may update the
   * bytes through ramBytes()); `setRomdMode(false)` sends reads to `ops.read` as well.
   * At most 1 GiB.
   */
  romDevice(name: string, size: Address, ops: IoOps, init?: Uint8Array): MemoryRegion {
    checkConstraint(ops.valid, `${name}: valid`);
    checkConstraint(ops.impl, `${name}: impl`);
    return this.withOps(this.newBacked(name, RegionKind.ROM_DEVICE, size, init), name, ops);
  }

  private withOps(r: MemoryRegion, name: string, ops: IoOps): MemoryRegion {
    let flags = 0;
    if (ops.valid?.unaligned) flags |= IoFlag.VALID_UNALIGNED;
    if (ops.impl?.unaligned) flags |= IoFlag.IMPL_UNALIGNED;
    if (ops.endianness === "big") flags |= IoFlag.BIG_ENDIAN;
    if (ops.accepts) flags |= IoFlag.ACCEPTS;
    if (ops.reentrancyGuard === false) flags |= IoFlag.NO_REENTRANCY_GUARD;
    let guard = r.id;
    if (ops.owner) {
      let g = this.owners.get(ops.owner);
      if (g === undefined) this.owners.set(ops.owner, (g = this.nextGuard++));
      guard = g;
    }
    const st = this.engine.regionSetIo(r.id, flags, ops.valid?.min ?? 0, ops.valid?.max ?? 0, ops.impl?.min ?? 0, ops.impl?.max ?? 0, guard);
    if (st !== 0) {
      this.engine.regionFree(r.id);
      this.regions.delete(r.id);
      throw topologyError(st, `${r.kind} region "${name}"`, { region: name });
    }
    // Called as methods of `ops` (no bound wrappers on the hot path).
    this.engine.setIoOps(r.id, ops as EngineIoOps);
    return r;
  }

  /** A window onto [offset, offset + size) of `target` (QEMU memory_region_init_alias). */
  alias(name: string, target: MemoryRegion, offset: Address, size: Address): MemoryRegion {
    target.checkLive();
    const off = toBigAddress(offset, `alias "${name}" offset`);
    const r = this.newRegion(name, RegionKind.ALIAS, size);
    const st = this.engine.regionSetAlias(r.id, target.id, loOf(off), hiOf(off));
    if (st !== 0) {
      this.engine.regionFree(r.id);
      this.regions.delete(r.id);
      throw topologyError(st, `alias "${name}" -> "${target.name}"`, { region: name });
    }
    return r;
  }

  /** Opens a (nestable) transaction: topology changes render once, at the outermost commit. */
  begin(): void {
    this.engine.transactionBegin();
  }

  commit(): void {
    const st = this.engine.transactionCommit();
    if (st !== 0) throw topologyError(st, "commit");
  }

  /** Runs fn inside begin()/commit(); commits even when fn throws. */
  transaction<T>(fn: () => T): T {
    this.begin();
    try {
      return fn();
    } finally {
      this.commit();
    }
  }

  /** An address space rendering `root` (root's own address is ignored; it starts at 0). */
  addressSpace(name: string, root: MemoryRegion): AddressSpace {
    root.checkLive();
    const id = this.engine.asNew(root.id);
    if (id < 0) throw topologyError(-id, `address space "${name}"`, { addressSpace: name, region: root.name });
    this.spacesByRoot.set(root.id, (this.spacesByRoot.get(root.id) ?? 0) + 1);
    return new AddressSpace(this, id, name, root);
  }

  /** A reusable trace buffer of `capacity` accesses for AddressSpace.replay. */
  createTrace(capacity: number): AccessTrace {
    if (!Number.isSafeInteger(capacity) || capacity <= 0 || capacity > 1 << 26) {
      throw new MemoryError("BAD_ARGUMENT", `trace capacity must be 1..2^26: got ${capacity}`);
    }
    return new AccessTrace(this.engine.traceNew(capacity));
  }

  /** The region with this engine id (for ids coming from flatView or regionInfo). */
  regionById(id: number): MemoryRegion | undefined {
    return this.regions.get(id);
  }

  /** @internal */
  forget(id: number): void {
    this.regions.delete(id);
  }

  /** @internal live regions created by this core */
  liveRegions(): IterableIterator<MemoryRegion> {
    return this.regions.values();
  }

  /** @internal how many live address spaces render `root` */
  addressSpaceCount(root: MemoryRegion): number {
    return this.spacesByRoot.get(root.id) ?? 0;
  }

  /** @internal */
  addressSpaceGone(root: MemoryRegion): void {
    const n = (this.spacesByRoot.get(root.id) ?? 0) - 1;
    if (n > 0) this.spacesByRoot.set(root.id, n);
    else this.spacesByRoot.delete(root.id);
  }

  /** @internal apply a topology change (engines run each change as its own transaction). */
  change(what: string, region: MemoryRegion, fn: () => number): void {
    const st = fn();
    if (st !== 0) throw topologyError(st, what, { region: region.name });
  }

  private newRegion(name: string, kind: number, size: Address): MemoryRegion {
    const s = toBigSize(size, `region "${name}" size`);
    const last = s - 1n;
    const id = this.engine.regionNew(kind, loOf(last), hiOf(last));
    if (id < 0) throw topologyError(-id, `${REGION_KIND_NAMES[kind]} region "${name}"`, { region: name });
    const r = new MemoryRegion(this, id, name, REGION_KIND_NAMES[kind]);
    this.regions.set(id, r);
    return r;
  }

  private newBacked(name: string, kind: number, size: Address, init?: Uint8Array): MemoryRegion {
    const r = this.newRegion(name, kind, size);
    if (init) {
      const bytes = this.engine.ramBytes(r.id);
      if (init.length > bytes.length) {
        this.engine.regionFree(r.id);
        this.regions.delete(r.id);
        throw new MemoryError("BAD_ARGUMENT", `region "${name}": initial contents (${init.length} bytes) exceed its size (${bytes.length})`, { region: name });
      }
      bytes.set(init);
    }
    return r;
  }
}

/** A handle to one region. Topology setters outside a transaction commit immediately. */
export class MemoryRegion {
  private destroyed = false;
  private ownView: AddressSpace | null = null;

  /** @internal */
  constructor(
    readonly core: MemoryCore,
    readonly id: number,
    readonly name: string,
    readonly kind: RegionKindName,
  ) {}

  /** @internal */
  checkLive(): void {
    if (this.destroyed) throw new MemoryError("DESTROYED", `region "${this.name}" was destroyed`, { region: this.name });
  }

  private info() {
    this.checkLive();
    const i = this.core.engine.regionInfo(this.id);
    if (!i) throw new MemoryError("NO_SUCH_REGION", `region "${this.name}" is unknown to the engine`, { region: this.name });
    return i;
  }

  get size(): bigint { return this.info().size; }
  /** Offset inside its container (QEMU mr->addr). */
  get address(): bigint { return this.info().address; }
  get priority(): number { return this.info().priority; }
  get enabled(): boolean { return this.info().enabled; }
  get readonly(): boolean { return this.info().readonly; }
  /** ROM devices: whether reads are served from the RAM (QEMU romd_mode). */
  get romdMode(): boolean { return this.info().romd; }
  get container(): MemoryRegion | null {
    const c = this.info().container;
    return c ? (this.core.regionById(c) ?? null) : null;
  }
  get aliasOffset(): bigint { return this.info().aliasOffset; }

  /**
   * Maps `child` at `offset` inside this region (QEMU memory_region_add_subregion_overlap).
   * Higher priority wins where siblings overlap; among equal priorities the later one wins.
   */
  addSubregion(offset: Address, child: MemoryRegion, priority = 0): void {
    this.checkLive();
    child.checkLive();
    const off = toBigAddress(offset, `subregion "${child.name}" offset`);
    if (!Number.isInteger(priority) || priority < -(2 ** 31) || priority >= 2 ** 31) {
      throw new MemoryError("BAD_ARGUMENT", `priority must be a signed 32-bit integer: got ${priority}`, { region: child.name });
    }
    this.core.change(`add "${child.name}" to "${this.name}"`, child, () =>
      this.core.engine.regionAddSubregion(this.id, child.id, loOf(off), hiOf(off), priority | 0),
    );
  }

  /** QEMU memory_region_del_subregion. */
  removeSubregion(child: MemoryRegion): void {
    this.checkLive();
    child.checkLive();
    this.core.change(`remove "${child.name}" from "${this.name}"`, child, () => this.core.engine.regionDelSubregion(this.id, child.id));
  }

  /** Moves the region inside its container (QEMU memory_region_set_address). */
  setAddress(offset: Address): void {
    this.checkLive();
    const off = toBigAddress(offset, `region "${this.name}" address`);
    this.core.change(`move "${this.name}"`, this, () => this.core.engine.regionSetAddress(this.id, loOf(off), hiOf(off)));
  }

  /** QEMU memory_region_set_enabled: a disabled region (and its subtree) is not rendered. */
  setEnabled(enabled: boolean): void {
    this.checkLive();
    this.core.change(`enable "${this.name}"`, this, () => this.core.engine.regionSetEnabled(this.id, enabled ? 1 : 0));
  }

  /** QEMU memory_region_set_readonly: inherited by everything rendered below this region. */
  setReadonly(readonly: boolean): void {
    this.checkLive();
    this.core.change(`readonly "${this.name}"`, this, () => this.core.engine.regionSetReadonly(this.id, readonly ? 1 : 0));
  }

  /**
   * ROM devices only (QEMU memory_region_rom_device_set_romd): `true` serves reads from the
   * RAM, `false` hands them to `ops.read`. Writes reach `ops.write` either way.
   */
  setRomdMode(romd: boolean): void {
    this.checkLive();
    this.core.change(`romd mode "${this.name}"`, this, () => this.core.engine.regionSetRomd(this.id, romd ? 1 : 0));
  }

  /** QEMU memory_region_set_alias_offset. */
  setAliasOffset(offset: Address): void {
    this.checkLive();
    const off = toBigAddress(offset, `alias "${this.name}" offset`);
    this.core.change(`alias offset "${this.name}"`, this, () => this.core.engine.regionSetAliasOffset(this.id, loOf(off), hiOf(off)));
  }

  /**
   * The RAM/ROM/ROM-device contents: a fresh view of the core's linear memory. It is detached
   * (length 0) as soon as the core's memory grows — any call that may allocate in the core
   * (creating regions, commits, traces, bulk accesses, device code running such calls) — so
   * fetch it again rather than keeping it.
   */
  ramBytes(): Uint8Array {
    this.checkLive();
    if (this.kind !== "ram" && this.kind !== "rom" && this.kind !== "rom-device")
      throw new MemoryError("WRONG_KIND", `region "${this.name}" is ${this.kind}, not RAM/ROM/ROM device`, { region: this.name });
    return this.core.engine.ramBytes(this.id);
  }

  /**
   * This region as its own address space starting at offset 0, for region-relative access
   * (vfio-user REGION_READ/WRITE on a BAR): view().read(offset, 4). Created on first use.
   */
  view(): AddressSpace {
    this.checkLive();
    if (!this.ownView) this.ownView = this.core.addressSpace(`${this.name}[view]`, this);
    return this.ownView;
  }

  /**
   * Frees the region (and its RAM). It must be unmapped, without subregions, not aliased.
   * Inside an open transaction the handle is dead at once but the RAM and the device callbacks
   * are released only by the outermost commit: until then the address spaces keep the flat
   * view rendered before the transaction, which may still reach the region (QEMU likewise
   * frees a region only after the old flat views are retired).
   */
  destroy(): void {
    if (this.destroyed) return;
    if (this.ownView) {
      // The view is an address space rooted here, so the engine would refuse the free while it
      // lives: check every other reason first, so that a refused destroy leaves the region and
      // its view exactly as they were.
      this.checkFreeableBesidesView();
      this.ownView.destroy();
      this.ownView = null;
    }
    const st = this.core.engine.regionFree(this.id);
    if (st !== 0) throw topologyError(st, `destroy "${this.name}"`, { region: this.name });
    this.destroyed = true;
    this.core.forget(this.id);
  }

  /**
   * The engine's IN_USE rule (mapped, has subregions, aliased, root of an address space) with
   * this region's own view left out. Scans the core's live regions: only destroy() of a region
   * whose view() was used pays for it.
   */
  private checkFreeableBesidesView(): void {
    const inUse = () => topologyError(TopologyStatus.IN_USE, `destroy "${this.name}"`, { region: this.name });
    if (this.info().container !== 0 || this.core.addressSpaceCount(this) > 1) throw inUse();
    for (const other of this.core.liveRegions()) {
      if (other === this) continue;
      const i = this.core.engine.regionInfo(other.id);
      if (i && (i.container === this.id || i.aliasTarget === this.id)) throw inUse();
    }
  }
}

/**
 * An address space: the flat view of a root region, rendered at every commit. Accesses follow
 * QEMU's address_space_rw: split by flat range and memory_access_size, I/O chunks dispatched
 * with access_with_adjusted_size. Multi-byte values are little-endian (the target's order).
 */
export class AddressSpace {
  private destroyed = false;
  /** Low/high 32 bits of the last tryRead value. */
  valueLo = 0;
  valueHi = 0;

  /** @internal */
  constructor(
    readonly core: MemoryCore,
    readonly id: number,
    readonly name: string,
    readonly root: MemoryRegion,
  ) {}

  /** Reads 1, 2 or 4 bytes; throws MemoryError (DECODE_ERROR / ACCESS_ERROR / DEVICE_ERROR). */
  read(addr: Address, size: 1 | 2 | 4): number {
    if (typeof addr === "number" && addr >= 0 && addr <= MAX_SAFE && (size === 1 || size === 2 || size === 4) && !this.destroyed) {
      const lo = addr >>> 0;
      const hi = (addr - lo) / TWO_32; // an integer exactly when addr is one
      if (hi >>> 0 === hi) {
        const r = this.core.engine.asRead32(this.id, lo, hi, size);
        if (r >= 0) return r;
        throw this.fail(-r, "read", addr, size);
      }
    }
    const st = this.tryRead(addr, size);
    if (st !== 0) throw this.fail(st, "read", addr, size);
    return this.valueLo;
  }

  /** Reads 8 bytes as a bigint; throws like read(). */
  read64(addr: Address): bigint {
    const st = this.tryRead(addr, 8);
    if (st !== 0) throw this.fail(st, "read", addr, 8);
    return (BigInt(this.valueHi) << 32n) | BigInt(this.valueLo);
  }

  /** Writes 1, 2, 4 or 8 bytes; throws like read(). A failed write was dropped (in part). */
  write(addr: Address, size: AccessSize, value: number | bigint): void {
    const st = this.tryWrite(addr, size, value);
    if (st !== 0) throw this.fail(st, "write", addr, size);
  }

  /** Returns MemTx bits; the value (0 where nothing decoded) is in valueLo/valueHi. */
  tryRead(addr: Address, size: AccessSize): number {
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new MemoryError("BAD_ARGUMENT", `access size must be 1, 2, 4 or 8: got ${size}`);
    const e = this.core.engine;
    let st: number;
    const alo = typeof addr === "number" ? addr >>> 0 : 0;
    const ahi = typeof addr === "number" ? (addr - alo) / TWO_32 : -1;
    if (ahi >>> 0 === ahi && addr >= 0 && addr <= MAX_SAFE && !this.destroyed) {
      st = e.asRead(this.id, alo, ahi, size);
    } else {
      const a = this.checkAccess(addr, size);
      st = e.asRead(this.id, loOf(a), hiOf(a), size);
    }
    this.valueLo = e.resultLo();
    this.valueHi = e.resultHi();
    return st;
  }

  /** Returns MemTx bits. Numbers must be safe integers (negative ones are two's complement). */
  tryWrite(addr: Address, size: AccessSize, value: number | bigint): number {
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new MemoryError("BAD_ARGUMENT", `access size must be 1, 2, 4 or 8: got ${size}`);
    let lo: number, hi: number;
    if (typeof value === "number" && value >>> 0 === value) {
      lo = value;
      hi = 0;
    } else {
      if (typeof value === "number" && !Number.isSafeInteger(value)) {
        throw new MemoryError("BAD_ARGUMENT", `value must be a safe integer or a bigint: got ${value}`);
      }
      const v = BigInt.asUintN(64, BigInt(value));
      lo = Number(v & 0xffffffffn);
      hi = Number(v >> 32n);
    }
    const e = this.core.engine;
    const alo = typeof addr === "number" ? addr >>> 0 : 0;
    const ahi = typeof addr === "number" ? (addr - alo) / TWO_32 : -1;
    if (ahi >>> 0 === ahi && addr >= 0 && addr <= MAX_SAFE && !this.destroyed) {
      return e.asWrite(this.id, alo, ahi, size, lo, hi);
    }
    const a = this.checkAccess(addr, size);
    return e.asWrite(this.id, loOf(a), hiOf(a), size, lo, hi);
  }

  /** Reads `length` bytes (or fills `into`); throws on any failed chunk. */
  readBytes(addr: Address, lengthOrInto: number | Uint8Array): Uint8Array {
    const into = typeof lengthOrInto === "number" ? new Uint8Array(this.checkLength(lengthOrInto)) : lengthOrInto;
    const st = this.tryReadBytes(addr, into);
    if (st !== 0) throw this.fail(st, "readBytes", addr, into.length);
    return into;
  }

  /** Writes all of `data`; throws on any failed chunk (the other chunks were written). */
  writeBytes(addr: Address, data: Uint8Array): void {
    const st = this.tryWriteBytes(addr, data);
    if (st !== 0) throw this.fail(st, "writeBytes", addr, data.length);
  }

  /** Returns MemTx bits OR-ed over the chunks; undecoded bytes read as 0. */
  tryReadBytes(addr: Address, into: Uint8Array): number {
    const length = this.checkLength(into.length);
    // A safe non-negative number address splits into halves without a bigint (the hot path).
    if (typeof addr === "number" && addr >= 0 && addr <= MAX_SAFE && Number.isInteger(addr) && !this.destroyed) {
      const lo = addr >>> 0;
      return this.core.engine.asReadBytes(this.id, lo, (addr - lo) / TWO_32, into, 0, length);
    }
    const a = this.checkAccess(addr, length);
    return this.core.engine.asReadBytes(this.id, loOf(a), hiOf(a), into, 0, length);
  }

  tryWriteBytes(addr: Address, data: Uint8Array): number {
    const length = this.checkLength(data.length);
    if (typeof addr === "number" && addr >= 0 && addr <= MAX_SAFE && Number.isInteger(addr) && !this.destroyed) {
      const lo = addr >>> 0;
      return this.core.engine.asWriteBytes(this.id, lo, (addr - lo) / TWO_32, data, 0, length);
    }
    const a = this.checkAccess(addr, length);
    return this.core.engine.asWriteBytes(this.id, loOf(a), hiOf(a), data, 0, length);
  }

  /** Runs the first `count` (default all) records of `trace` inside the engine in one call. */
  replay(trace: AccessTrace, count = trace.length): TraceResult {
    this.checkLive();
    if (!Number.isInteger(count) || count < 0 || count > trace.length) {
      throw new MemoryError("BAD_ARGUMENT", `replay count must be 0..${trace.length}: got ${count}`, { addressSpace: this.name });
    }
    const failed = this.core.engine.asReplay(this.id, trace.engineTrace, count);
    return { count, failed };
  }

  /**
   * How many flat views this address space has had rendered: 1 at creation, +1 at each
   * commit that changed its tree. (The wasm core leaves address spaces whose tree did not
   * change alone; the reference model re-renders all of them.)
   */
  get renderCount(): number {
    this.checkLive();
    return this.core.engine.asRenderCount(this.id);
  }

  /** The rendered flat view (like QEMU's `info mtree -f`), gaps omitted. */
  flatView(): { start: bigint; last: bigint; region: MemoryRegion | null; offsetInRegion: bigint; readonly: boolean }[] {
    this.checkLive();
    return this.core.engine
      .asFlatView(this.id)
      .filter((r: FlatRangeInfo) => r.region !== 0)
      .map((r) => ({ start: r.start, last: r.last, region: this.core.regionById(r.region) ?? null, offsetInRegion: r.offsetInRegion, readonly: r.readonly }));
  }

  destroy(): void {
    if (this.destroyed) return;
    this.core.engine.asFree(this.id);
    this.destroyed = true;
    this.core.addressSpaceGone(this.root);
  }

  private checkLive(): void {
    if (this.destroyed) throw new MemoryError("DESTROYED", `address space "${this.name}" was destroyed`, { addressSpace: this.name });
  }

  private checkLength(n: number): number {
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_BULK_ACCESS) {
      throw new MemoryError("BAD_ARGUMENT", `length must be 0..${MAX_BULK_ACCESS}: got ${n}`, { addressSpace: this.name });
    }
    return n;
  }

  private checkAccess(addr: Address, size: number): bigint {
    this.checkLive();
    return toBigAddress(addr, "address");
  }

  private fail(status: number, op: string, addr: Address, size: number): MemoryError {
    return accessError(status, `${this.name}: ${op}`, {
      addressSpace: this.name,
      address: typeof addr === "bigint" ? addr : BigInt(addr),
      size,
      cause: this.core.engine.takeIoError(),
    });
  }
}

/**
 * A list of accesses kept in engine memory, replayed by AddressSpace.replay in one call.
 * After replay, status(i) and value(i)/value64(i) hold each record's outcome.
 */
export class AccessTrace {
  length = 0;

  /** @internal */
  constructor(readonly engineTrace: EngineTrace) {}

  get capacity(): number {
    return this.engineTrace.capacity;
  }

  clear(): void {
    this.length = 0;
  }

  read(addr: Address, size: AccessSize): this {
    return this.push(addr, size, false, 0);
  }

  write(addr: Address, size: AccessSize, value: number | bigint): this {
    return this.push(addr, size, true, value);
  }

  status(i: number): number {
    return this.engineTrace.words()[this.index(i) + 5];
  }

  /** Low 32 bits of record i's value (as read, or as written). */
  value(i: number): number {
    return this.engineTrace.words()[this.index(i) + 3];
  }

  value64(i: number): bigint {
    const w = this.engineTrace.words();
    const k = this.index(i);
    return (BigInt(w[k + 4]) << 32n) | BigInt(w[k + 3]);
  }

  free(): void {
    this.engineTrace.free();
    this.length = 0;
  }

  private index(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new MemoryError("BAD_ARGUMENT", `trace record ${i} out of 0..${this.length - 1}`);
    return i * TRACE_WORDS;
  }

  private push(addr: Address, size: AccessSize, isWrite: boolean, value: number | bigint): this {
    if (this.length >= this.engineTrace.capacity) throw new MemoryError("TOO_MANY", `trace is full (${this.engineTrace.capacity} records)`);
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new MemoryError("BAD_ARGUMENT", `access size must be 1, 2, 4 or 8: got ${size}`);
    let aLo: number, aHi: number, vLo: number, vHi: number;
    const lo = typeof addr === "number" ? addr >>> 0 : 0;
    const hi = typeof addr === "number" ? (addr - lo) / TWO_32 : -1;
    if (hi >>> 0 === hi && addr <= MAX_SAFE && addr >= 0) {
      aLo = lo;
      aHi = hi;
    } else {
      const a = toBigAddress(addr, "trace address");
      aLo = loOf(a);
      aHi = hiOf(a);
    }
    if (typeof value === "number" && value >>> 0 === value) {
      vLo = value;
      vHi = 0;
    } else {
      if (typeof value === "number" && !Number.isSafeInteger(value)) throw new MemoryError("BAD_ARGUMENT", `value must be a safe integer or a bigint: got ${value}`);
      const v = BigInt.asUintN(64, BigInt(value));
      vLo = Number(v & 0xffffffffn);
      vHi = Number(v >> 32n);
    }
    const w = this.engineTrace.words();
    const k = this.length * TRACE_WORDS;
    w[k] = size | (isWrite ? TRACE_OP_WRITE : 0);
    w[k + 1] = aLo;
    w[k + 2] = aHi;
    w[k + 3] = vLo;
    w[k + 4] = vHi;
    w[k + 5] = 0;
    this.length++;
    return this;
  }
}

export { MemTx };
