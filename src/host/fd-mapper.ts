// Shared-memory mappings for DMA regions backed by a peer's fd (vfio-user DMA_MAP with an fd,
// mpqemu SYNC_SYSMEM). The core's DMA table takes any FdMapper; these are the ones both servers
// use, built on the transport's mmap.
import type { FdMapper, MappedMemory } from "../core/dma/api.js";
import { mmapFd, type MappedRegion } from "../transport/shm.js";
import { native } from "../transport/native.js";
import { TransportError } from "../transport/errors.js";

/** mmap through the transport: shared, bounds-checked against the file size, charged to the
 *  process mapping budget, memfds sealed against shrinking where they allow it (others are
 *  covered by the SIGBUS guard: `truncated`); unmap detaches the views so stale ones read as
 *  empty. Every call maps anew (see FdMappingCache for the mapper the servers use). */
export const hostFdMapper: FdMapper = (fd, offset, length, writable) => {
  const region = mmapFd(fd, offset, length, { writable });
  return {
    bytes: region.bytes(),
    unmap: () => region.unmap(),
    get truncated() {
      return region.truncated;
    },
  };
};

/** How long a mapping nobody uses stays mapped for reuse: between this and twice this (ms). */
export const FD_MAPPING_LINGER_MS = 100;
/** Most unused mappings a cache keeps (the oldest goes first). */
export const FD_MAPPING_MAX_IDLE = 16;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const O_ACCMODE = 3;
const O_RDONLY = 0;
const O_RDWR = 2;
const O_PATH = 0o10000000;

interface Entry {
  devLo: number;
  devHi: number;
  inoLo: number;
  inoHi: number;
  offset: number;
  length: number;
  writable: boolean;
  region: MappedRegion;
  bytes: Uint8Array;
  /** In use by a region; false = idle (in `idle`, unmapped when it has lingered). */
  used: boolean;
  idleSince: number;
}

/**
 * An FdMapper that reuses mappings: a mapping whose region was removed with `unmap(true)` (no
 * view of it ever reached a device) stays mapped for FD_MAPPING_LINGER_MS, and the next mapping
 * of the same file (device + inode), offset, length and writability takes it over, so a peer
 * that re-maps the same range (a VMM re-mapping guest RAM, DMA_MAP after DMA_UNMAP) costs one
 * fstat + fcntl and no mmap, munmap or new ArrayBuffer. Two live regions never share a mapping,
 * so removing one still detaches every view a device got of it. Guarantees:
 * - a hit needs the same file identity, a descriptor whose access mode allows the mapping (a
 *   read-only fd never gets a writable mapping), the range inside the file's current size
 *   unless the file is sealed against shrinking, and a mapping the SIGBUS guard never found
 *   truncated;
 * - `unmap(false)` (views escaped) unmaps at once (views detached);
 * - idle mappings still count against the transport's mapping budget; when a new mapping does
 *   not fit, the idle ones are unmapped first;
 * - close() unmaps every idle mapping at once and makes later unmaps immediate: a session's
 *   end leaves nothing mapped.
 * The peer's pages stay pinned by an idle mapping for at most twice FD_MAPPING_LINGER_MS after
 * DMA_UNMAP (the device can no longer reach them: they are out of the DMA table); a peer that
 * frees memory by punching holes in the file is unaffected.
 */
export class FdMappingCache {
  private readonly byInode = new Map<number, Entry[]>();
  private readonly idle = new Set<Entry>();
  private readonly identity = new Uint32Array(8);
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  readonly mapFd: FdMapper = (fd, offset, length, writable) => this.map(fd, offset, length, writable);

  /** Mappings held (in use or idle). */
  get size(): number {
    let n = 0;
    for (const list of this.byInode.values()) n += list.length;
    return n;
  }

  /** Mappings nobody uses, kept for reuse. */
  get idleCount(): number {
    return this.idle.size;
  }

  map(fd: number, offset: bigint, length: number, writable: boolean): MappedMemory {
    // Not cacheable (no identity: the fd is bad, or the cache is closed): map and unmap as is.
    if (this.closed || offset < 0n || offset > MAX_SAFE || native().fileIdentity(fd, this.identity) !== 0) {
      return hostFdMapper(fd, offset, length, writable);
    }
    let entry = this.find(Number(offset), length, writable);
    if (entry === undefined) {
      entry = this.mapNew(fd, offset, length, writable);
      let list = this.byInode.get(entry.inoLo);
      if (list === undefined) this.byInode.set(entry.inoLo, (list = []));
      list.push(entry);
    } else {
      this.idle.delete(entry);
    }
    entry.used = true;
    return new CachedMapping(this, entry);
  }

  /** Unmaps every idle mapping; from now on a mapping goes as soon as its last user lets go. */
  close(): void {
    this.closed = true;
    this.flushIdle(Infinity);
  }

  private find(start: number, length: number, writable: boolean): Entry | undefined {
    const id = this.identity;
    const list = this.byInode.get(id[2]);
    if (list === undefined) return undefined;
    const flags = id[6];
    if ((flags & O_PATH) !== 0) return undefined;
    const mode = flags & O_ACCMODE;
    if (writable ? mode !== O_RDWR : mode !== O_RDONLY && mode !== O_RDWR) return undefined;
    for (const e of list) {
      if (e.inoLo !== id[2] || e.inoHi !== id[3] || e.devLo !== id[0] || e.devHi !== id[1]) continue;
      if (e.used || e.offset !== start || e.length !== length || e.writable !== writable) continue;
      if (!e.region.isMapped || e.region.truncated) continue;
      // A file that can still shrink must still hold the range (the size is from this fstat).
      if (!e.region.sealed && start + length > id[5] * 2 ** 32 + id[4]) continue;
      return e;
    }
    return undefined;
  }

  private mapNew(fd: number, offset: bigint, length: number, writable: boolean): Entry {
    const id = this.identity;
    const key = { devLo: id[0], devHi: id[1], inoLo: id[2], inoHi: id[3] };
    let region: MappedRegion;
    try {
      region = mmapFd(fd, offset, length, { writable });
    } catch (e) {
      // Idle mappings hold budget and guard slots: give them back and try once more.
      if (!(e instanceof TransportError && e.code === "ERR_MAP_LIMIT") || this.idle.size === 0) throw e;
      this.flushIdle(Infinity);
      region = mmapFd(fd, offset, length, { writable });
    }
    return { ...key, offset: Number(offset), length, writable, region, bytes: region.bytes(), used: false, idleSince: 0 };
  }

  /** @internal CachedMapping.unmap */
  release(entry: Entry, reusable: boolean): void {
    entry.used = false;
    if (this.closed || !reusable || entry.region.truncated) {
      this.drop(entry);
      return;
    }
    entry.idleSince = performance.now();
    this.idle.add(entry);
    if (this.idle.size > FD_MAPPING_MAX_IDLE) this.drop(this.idle.values().next().value as Entry);
    if (this.timer === null) {
      this.timer = setTimeout(this.sweep, FD_MAPPING_LINGER_MS);
      this.timer.unref();
    }
  }

  private readonly sweep = () => {
    this.timer = null;
    this.flushIdle(performance.now() - FD_MAPPING_LINGER_MS);
    if (this.idle.size !== 0) {
      this.timer = setTimeout(this.sweep, FD_MAPPING_LINGER_MS);
      this.timer.unref();
    }
  };

  /** Unmaps idle mappings that went idle before `before` (a performance.now() time). */
  private flushIdle(before: number): void {
    for (const e of this.idle) {
      if (e.idleSince > before) break; // insertion order is idle order
      this.drop(e);
    }
    if (this.idle.size === 0 && this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Takes the entry out of the lookup (later maps of the range map anew). */
  private retire(entry: Entry): void {
    const list = this.byInode.get(entry.inoLo);
    if (list === undefined) return;
    const at = list.indexOf(entry);
    if (at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) this.byInode.delete(entry.inoLo);
  }

  private drop(entry: Entry): void {
    this.idle.delete(entry);
    this.retire(entry);
    if (entry.region.isMapped) entry.region.unmap();
  }
}

/** What the DMA table holds for one region mapped through an FdMappingCache. */
class CachedMapping implements MappedMemory {
  readonly bytes: Uint8Array;
  private released = false;

  constructor(private readonly cache: FdMappingCache, private readonly entry: Entry) {
    this.bytes = entry.bytes;
  }

  get truncated(): boolean {
    return this.entry.region.truncated;
  }

  unmap(reusable?: boolean): void {
    if (this.released) return;
    this.released = true;
    this.cache.release(this.entry, reusable === true);
  }
}
