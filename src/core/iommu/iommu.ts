// Host binding of the wasm IOMMU core (assembly/iommu): domains, translation, IOTLB control,
// map/unmap listeners and the host translation callback. The tables live in the core; this
// file only marshals arguments and dispatches the core's "host" imports.
import { instantiateCore, type CoreRef, type HostImportFactory } from "../wasm.js";
import type { CoreExports } from "../abi/exports.js";
import { DmaError } from "../dma/errors.js";
import type { DmaPerm } from "../dma/api.js";
import { S_OK, S_OUT_FULL, S_UNMAPPED, statusError } from "./status.js";

const M32 = 0xffffffffn;
const lo = (v: bigint) => Number(v & M32);
const hi = (v: bigint) => Number((v >> 32n) & M32);
const join = (l: number, h: number) => (BigInt(h >>> 0) << 32n) | BigInt(l >>> 0);

import { IO_ADDR, IO_INDEX, IO_LEN, IO_MISS, IO_SLOT } from "../abi/iommu.js";
export { NOTIFY_MAP, NOTIFY_UNMAP, SEGMENT_SHIFT, TERMINAL } from "../abi/iommu.js";
import { NOTIFY_MAP, NOTIFY_UNMAP, TERMINAL } from "../abi/iommu.js";

/** An IOMMUTLBEntry (include/exec/memory.h) as a translation callback returns it. */
export interface IommuTlbEntry {
  /** Output address (in `target`'s input space); bits under addrMask are ignored. */
  translatedAddr: bigint;
  /** 2^k - 1: the entry covers iova & ~addrMask … iova | addrMask. */
  addrMask: bigint;
  perm: DmaPerm;
  /** The next stage (usually the DMA map table's domain). */
  target: IommuDomain;
}

/** Called on an IOTLB miss of a host domain; return null (or perm 0) for "not mapped". It runs
 *  inside a translation: it must not change IOMMU tables (DMA_BUSY). */
export type IommuMissHandler = (iova: bigint, access: DmaPerm) => IommuTlbEntry | null;

/** A map/unmap event over the inclusive range [first, last], cropped to the listener. */
export interface IommuEvent {
  type: "map" | "unmap";
  first: bigint;
  last: bigint;
  translatedAddr: bigint;
  perm: DmaPerm;
}

export interface IommuCounters {
  hits: number;
  misses: number;
  faultsUnmapped: number;
  faultsPermission: number;
}

interface Binding {
  core: IommuCore;
}
const bindings = new WeakMap<CoreRef, Binding>();

/** The "host" imports of assembly/iommu; include it when instantiating a shared core. */
export const iommuImports: HostImportFactory = (ref) => ({
  iommu_miss: (domain: number, iovaLo: number, iovaHi: number, access: number, entry: number) => {
    const b = bindings.get(ref);
    return b ? b.core.onMiss(domain, join(iovaLo, iovaHi), access as DmaPerm, entry) : 1;
  },
  iommu_notify: (listener: number, type: number, fLo: number, fHi: number, lLo: number, lHi: number, tLo: number, tHi: number, perm: number) => {
    bindings.get(ref)?.core.queueEvent(listener, {
      type: type === NOTIFY_MAP ? "map" : "unmap",
      first: join(fLo, fHi),
      last: join(lLo, lHi),
      translatedAddr: join(tLo, tHi),
      perm: perm as DmaPerm,
    });
  },
});

/**
 * The IOMMU half of one wasm core instance. Create with `new IommuCore()` (own instance) or
 * `new IommuCore(ref)` for a core instantiated with `iommuImports` among its factories.
 */
export class IommuCore {
  readonly ref: CoreRef;
  readonly x: CoreExports;
  private readonly domains = new Map<number, IommuDomain>();
  private readonly listeners = new Map<number, (e: IommuEvent) => void>();
  private queued: { listener: number; event: IommuEvent }[] = [];
  private missError: unknown = undefined;
  private u32: Uint32Array | null = null;
  readonly ioPtr: number;

  constructor(ref?: CoreRef) {
    this.ref = ref ?? instantiateCore([iommuImports]);
    if (bindings.has(this.ref)) throw new DmaError("DMA_INVALID_ARGUMENT", "this core already has an IommuCore attached");
    bindings.set(this.ref, { core: this });
    this.x = this.ref.exports;
    this.ioPtr = this.x.iommu_io();
  }

  /** A Uint32Array over the whole linear memory, refreshed when memory grew. Growing a
   *  (non-shared) wasm memory detaches its old buffer, which empties every view of it: checking
   *  the view's length costs far less than reading memory.buffer (an API call, ~25 ns). */
  mem32(): Uint32Array {
    let v = this.u32;
    if (v === null || v.length === 0) v = this.u32 = new Uint32Array(this.ref.memory.buffer);
    return v;
  }

  createDomain(kind: "map-table", onMiss?: undefined, sets?: number): IommuDomain;
  createDomain(kind: "host", onMiss: IommuMissHandler, sets?: number): IommuDomain;
  createDomain(kind: "map-table" | "host", onMiss?: IommuMissHandler, sets = 256): IommuDomain {
    const id = this.x.iommu_domain_create(kind === "host" ? 1 : 0, sets);
    if (id < 0) throw statusError(-id, "cannot create an IOMMU domain");
    const d = new IommuDomain(this, id, kind, onMiss ?? null);
    this.domains.set(id, d);
    return d;
  }

  /** Runs a core call that may deliver notifications, then dispatches them (listeners never
   *  run inside wasm, so a throwing listener cannot leave the core half-updated). */
  call(fn: () => number): number {
    let status: number;
    try {
      status = fn();
    } finally {
      this.flushEvents();
    }
    const err = this.missError;
    if (err !== undefined) {
      this.missError = undefined;
      throw new DmaError("DMA_UNMAPPED", "the IOMMU translation callback threw", { cause: err });
    }
    return status;
  }

  /** Takes the error a miss handler threw during the last translation (if any). */
  takeMissError(): unknown {
    const e = this.missError;
    this.missError = undefined;
    return e;
  }

  addListener(domain: IommuDomain, flags: number, first: bigint, last: bigint, fn: (e: IommuEvent) => void): () => void {
    const id = this.x.iommu_listener_add(domain.id, flags, lo(first), hi(first), lo(last), hi(last));
    if (id < 0) throw statusError(-id, "cannot add an IOMMU listener");
    this.listeners.set(id, fn);
    return () => {
      if (this.listeners.delete(id)) this.x.iommu_listener_remove(id);
    };
  }

  /** @internal iommu_notify import. */
  queueEvent(listener: number, event: IommuEvent): void {
    this.queued.push({ listener, event });
  }

  private flushEvents(): void {
    if (this.queued.length === 0) return;
    const q = this.queued;
    this.queued = [];
    let first: unknown;
    for (const { listener, event } of q) {
      try {
        this.listeners.get(listener)?.(event);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  /** @internal iommu_miss import: fills the entry at `entry` or returns 1 (not mapped). */
  onMiss(domainId: number, iova: bigint, access: DmaPerm, entry: number): number {
    const d = this.domains.get(domainId);
    if (!d?.onMiss) return 1;
    let e: IommuTlbEntry | null;
    try {
      e = d.onMiss(iova, access);
    } catch (err) {
      this.missError = err;
      return 1;
    }
    if (!e || e.perm === 0) return 1;
    const m = this.mem32();
    const w = entry >>> 2;
    const t = e.translatedAddr & 0xffffffffffffffffn;
    const mask = e.addrMask & 0xffffffffffffffffn;
    m[w] = lo(t);
    m[w + 1] = hi(t);
    m[w + 2] = lo(mask);
    m[w + 3] = hi(mask);
    m[w + 4] = e.perm;
    m[w + 5] = e.target.core === this ? e.target.id : 0xfffffffe;
    return 0;
  }

  ioWord(offset: number): number {
    return this.mem32()[(this.ioPtr + offset) >>> 2];
  }

  /** @internal */
  forget(id: number): void {
    this.domains.delete(id);
  }
}

export { IO_ADDR, IO_LEN, IO_INDEX, IO_SLOT, IO_MISS, join as joinU64, lo as lo32, hi as hi32 };

/** One translation stage with its IOTLB. */
export class IommuDomain {
  constructor(
    readonly core: IommuCore,
    readonly id: number,
    readonly kind: "map-table" | "host",
    readonly onMiss: IommuMissHandler | null,
  ) {}

  /**
   * Translates [iova, iova + length) for `access` through this domain and its chain.
   * Returns the terminal segment address and the usable length (≤ length, clamped at every
   * entry end). Throws DmaError DMA_UNMAPPED / DMA_PERMISSION / DMA_CHAIN_TOO_DEEP.
   */
  translate(iova: bigint, length: number, access: DmaPerm): { address: bigint; length: number } {
    const st = this.translateRaw(lo(iova), hi(iova), length, access);
    if (st !== S_OK) throw statusError(st, "IOMMU translation failed", { iova, length, cause: this.core.takeMissError() });
    return { address: join(this.core.ioWord(IO_ADDR), this.core.ioWord(IO_ADDR + 4)), length: this.core.ioWord(IO_LEN) };
  }

  /** Status-returning translation for hot paths; results via core.ioWord(IO_ADDR / IO_LEN). */
  translateRaw(iovaLo: number, iovaHi: number, length: number, access: number): number {
    return this.core.x.iommu_translate(this.id, iovaLo, iovaHi, length, access);
  }

  /** Drops cached entries meeting [first, last]. */
  invalidate(first: bigint, last: bigint): void {
    const st = this.core.x.iommu_invalidate(this.id, lo(first), hi(first), lo(last), hi(last));
    if (st !== S_OK) throw statusError(st, "IOTLB invalidation failed");
  }

  invalidateAll(): void {
    const st = this.core.x.iommu_invalidate_all(this.id);
    if (st !== S_OK) throw statusError(st, "IOTLB invalidation failed");
  }

  /** A map/unmap event from the VMM-side IOMMU: purges cached entries over the range and
   *  forwards the event (cropped) to this domain's listeners. */
  notify(event: IommuEvent): void {
    const t = event.translatedAddr;
    const st = this.core.call(() =>
      this.core.x.iommu_notify(this.id, event.type === "map" ? NOTIFY_MAP : NOTIFY_UNMAP,
        lo(event.first), hi(event.first), lo(event.last), hi(event.last), lo(t), hi(t), event.perm),
    );
    if (st !== S_OK) throw statusError(st, "IOMMU notification rejected");
  }

  /** Listens to map and/or unmap events over [first, last]; events are cropped to it.
   *  Returns a function that removes the listener. */
  listen(types: { map?: boolean; unmap?: boolean }, first: bigint, last: bigint, fn: (e: IommuEvent) => void): () => void {
    const flags = (types.map ? NOTIFY_MAP : 0) | (types.unmap ? NOTIFY_UNMAP : 0);
    return this.core.addListener(this, flags, first, last, fn);
  }

  counters(): IommuCounters {
    const c = (w: number) => this.core.x.iommu_counter(this.id, w) as number;
    return { hits: c(0), misses: c(1), faultsUnmapped: c(2), faultsPermission: c(3) };
  }

  resetCounters(): void {
    this.core.x.iommu_counters_reset(this.id);
  }

  /** Occupied IOTLB entries. */
  cachedEntries(): number {
    return this.core.x.iommu_tlb_occupancy(this.id);
  }

  destroy(): void {
    this.core.x.iommu_domain_destroy(this.id);
    this.core.forget(this.id);
  }
}

export { S_OK, S_OUT_FULL, S_UNMAPPED };
