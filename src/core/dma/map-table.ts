// The DMA map table: IOVA ranges → backing memory (mmapped fd, in-process buffer, or
// "message" for regions reached only through DMA_READ/DMA_WRITE). The ranges themselves live
// in the wasm core as a MAP_TABLE domain (lookup on IOTLB miss); this class owns what the OS
// side needs: mappings, fds and per-slot records.
import { DmaError } from "./errors.js";
import {
  DMA_MAX_REGIONS, DMA_MAX_REGION_SIZE,
  type DmaBacking, type DmaMapTableApi, type DmaPerm, type DmaRegionSpec, type DmaTruncatedRegion, type FdMapper,
  type MappedMemory,
} from "./api.js";
import type { IommuCore, IommuDomain } from "../iommu/iommu.js";
import { IO_SLOT, hi32, lo32 } from "../iommu/iommu.js";
import { S_OK, statusError } from "../iommu/status.js";
import { closeSync } from "node:fs";

const U64_END = 1n << 64n;
/** Largest backing a Uint8Array can view (Node's buffer.constants.MAX_LENGTH on 64-bit). */
export const DMA_MAX_VIEW_BYTES = 2 ** 32;

/** @internal one region of the table, indexed by slot. */
export interface RegionRecord {
  slot: number;
  iova: bigint;
  size: bigint;
  perm: DmaPerm;
  backing: DmaBacking;
  /** Shared memory for fd/memory regions; null for message regions. */
  bytes: Uint8Array | null;
  mapped: MappedMemory | null;
  /** A view of `bytes` was handed to a device (DmaSpace.map): unmap must revoke it. */
  viewsEscaped: boolean;
}

export class DmaMapTable implements DmaMapTableApi {
  readonly domain: IommuDomain;
  /** Records by slot (the core's segment addresses carry the slot). */
  readonly slots: (RegionRecord | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  /** Told about each region dropped because its file shrank (DmaContextOptions.onBackingTruncated). */
  onBackingTruncated: ((region: DmaTruncatedRegion) => void) | null = null;
  /**
   * When set, a removed region's memory is unmapped (and an owned fd closed) by the function
   * this is handed instead of at once. The region is out of the table, the IOTLB and every live
   * map before remove() returns either way; a protocol uses this to answer first.
   */
  deferRelease: ((release: () => void) => void) | null = null;

  constructor(readonly core: IommuCore, private readonly mapFd: FdMapper | null, iotlbSets = 256) {
    this.domain = core.createDomain("map-table", undefined, iotlbSets);
  }

  add(spec: DmaRegionSpec): number {
    const { iova, size, perm, backing } = spec;
    if (typeof iova !== "bigint" || typeof size !== "bigint" || iova < 0n || iova >= U64_END) {
      throw new DmaError("DMA_INVALID_ARGUMENT", "DMA region iova and size must be bigints within 64 bits", { iova });
    }
    if (size <= 0n || iova + size > U64_END) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `DMA region size ${size} is zero or wraps past 2^64`, { iova, length: size });
    }
    if (perm !== 0 && perm !== 1 && perm !== 2 && perm !== 3) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `DMA region permissions ${perm} are not 0..3`, { iova });
    }
    if (size > DMA_MAX_REGION_SIZE) {
      throw new DmaError("DMA_LIMIT", `DMA region of ${size} bytes exceeds the ${DMA_MAX_REGION_SIZE}-byte limit; split it`, { iova, length: size });
    }
    if (backing.kind !== "message" && size > BigInt(DMA_MAX_VIEW_BYTES)) {
      throw new DmaError("DMA_LIMIT", `shared DMA region of ${size} bytes exceeds ${DMA_MAX_VIEW_BYTES} bytes (one view); split it`, { iova, length: size });
    }
    const slot = this.freeSlots.length ? this.freeSlots[this.freeSlots.length - 1] : this.slots.length;
    if (slot >= DMA_MAX_REGIONS) throw new DmaError("DMA_LIMIT", `the DMA map table holds at most ${DMA_MAX_REGIONS} regions`, { iova });

    // Check for overlap before mapping anything (the core checks again, atomically).
    const last = iova + size - 1n;
    let bytes: Uint8Array | null = null;
    let mapped: MappedMemory | null = null;
    if (this.overlaps(iova, last)) {
      throw statusError(3, "cannot add DMA region", { iova, length: size });
    }
    if (backing.kind === "memory") {
      if (!(backing.bytes instanceof Uint8Array) || BigInt(backing.bytes.length) < size) {
        throw new DmaError("DMA_INVALID_ARGUMENT", `memory backing must be a Uint8Array of at least ${size} bytes`, { iova });
      }
      bytes = backing.bytes.subarray(0, Number(size));
    } else if (backing.kind === "fd") {
      if (!this.mapFd) throw new DmaError("DMA_INVALID_ARGUMENT", "no fd mapper configured for fd-backed DMA regions", { iova });
      try {
        mapped = this.mapFd(backing.fd, backing.offset, Number(size), (perm & 2) !== 0);
      } catch (cause) {
        throw new DmaError("DMA_INVALID_ARGUMENT", `cannot mmap fd ${backing.fd} at offset ${backing.offset} for ${size} bytes`, { iova, length: size, cause });
      }
      bytes = mapped.bytes;
    } else if (backing.kind !== "message") {
      throw new DmaError("DMA_INVALID_ARGUMENT", `unknown DMA backing kind ${(backing as { kind: string }).kind}`, { iova });
    }
    const st = this.core.call(() =>
      this.core.x.iommu_region_add(this.domain.id, lo32(iova), hi32(iova), lo32(last), hi32(last), slot, perm),
    );
    if (st !== S_OK) {
      mapped?.unmap();
      throw statusError(st, "cannot add DMA region", { iova, length: size });
    }
    if (slot === this.slots.length) this.slots.push(undefined);
    else this.freeSlots.pop();
    this.slots[slot] = { slot, iova, size, perm, backing, bytes, mapped, viewsEscaped: false };
    return slot;
  }

  private overlaps(first: bigint, last: bigint): boolean {
    return this.core.x.iommu_region_overlaps(this.domain.id, lo32(first), hi32(first), lo32(last), hi32(last)) !== 0;
  }

  remove(iova: bigint, size: bigint): void {
    if (typeof iova !== "bigint" || typeof size !== "bigint" || size <= 0n || iova < 0n || iova + size > U64_END) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `invalid DMA unmap range (iova ${iova}, size ${size})`, { iova, length: size });
    }
    const last = iova + size - 1n;
    // The core drops the range, purges the IOTLB and notifies listeners (live DmaMappings are
    // invalidated by their DmaSpace) before this call returns.
    let listenerError: unknown;
    let st: number;
    try {
      st = this.core.call(() => this.core.x.iommu_region_remove(this.domain.id, lo32(iova), hi32(iova), lo32(last), hi32(last)));
    } catch (e) {
      listenerError = e;
      st = S_OK;
    }
    if (st !== S_OK) throw statusError(st, "cannot remove DMA region", { iova, length: size });
    const slot = this.core.ioWord(IO_SLOT);
    this.release(slot);
    if (listenerError !== undefined) throw listenerError;
  }

  private release(slot: number): void {
    const r = this.slots[slot];
    if (!r) return;
    this.slots[slot] = undefined;
    this.freeSlots.push(slot);
    const finish = () => {
      try {
        r.mapped?.unmap(!r.viewsEscaped);
      } finally {
        if (r.backing.kind === "fd" && r.backing.closeFd) {
          try { closeSync(r.backing.fd); } catch { /* already closed by its owner */ }
        }
      }
    };
    if (this.deferRelease !== null && (r.mapped !== null || r.backing.kind === "fd")) this.deferRelease(finish);
    else finish();
  }


  /**
   * @internal Drops a region whose file shrank under its mapping (found by the DMA space after
   * an access): removed like an unmap (IOTLB purged, live maps invalidated, memory unmapped, an
   * owned fd closed), then reported to onBackingTruncated. Returns the first error a listener
   * threw, for the caller to attach as the cause.
   */
  dropTruncated(r: RegionRecord): unknown {
    if (this.slots[r.slot] !== r) return undefined; // already removed
    let first: unknown;
    try {
      this.remove(r.iova, r.size);
    } catch (e) {
      first = e;
    }
    if (this.onBackingTruncated !== null && r.backing.kind === "fd") {
      try {
        this.onBackingTruncated({ iova: r.iova, size: r.size, fd: r.backing.fd, offset: r.backing.offset });
      } catch (e) {
        first ??= e;
      }
    }
    return first;
  }

  protect(iova: bigint, size: bigint, perm: DmaPerm): void {
    if (typeof iova !== "bigint" || typeof size !== "bigint" || size <= 0n || iova < 0n || iova + size > U64_END) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `invalid DMA protect range (iova ${iova}, size ${size})`, { iova, length: size });
    }
    if (perm !== 0 && perm !== 1 && perm !== 2 && perm !== 3) throw new DmaError("DMA_INVALID_ARGUMENT", `permissions ${perm} are not 0..3`, { iova });
    const last = iova + size - 1n;
    const st = this.core.call(() => this.core.x.iommu_region_protect(this.domain.id, lo32(iova), hi32(iova), lo32(last), hi32(last), perm));
    if (st !== S_OK) throw statusError(st, "cannot change DMA region permissions", { iova, length: size });
    const r = this.slots[this.core.ioWord(IO_SLOT)];
    if (r) r.perm = perm;
  }

  clear(): void {
    let first: unknown;
    for (const r of this.slots) {
      if (!r) continue;
      try {
        this.remove(r.iova, r.size);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  regions() {
    return this.slots
      .filter((r): r is RegionRecord => r !== undefined)
      .sort((a, b) => (a.iova < b.iova ? -1 : 1))
      .map((r) => ({ slot: r.slot, iova: r.iova, size: r.size, perm: r.perm, backing: r.backing.kind }));
  }
}
