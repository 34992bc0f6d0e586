// The reference model: the memory core's semantics in plain TypeScript, with the same
// algorithmic choices as assembly/memory (the same render into a gap-filled flat view, the
// same 5-level page table with subpages and MRU range, no allocation per access, 64-bit
// addresses as u32 halves on the hot path). It is the differential oracle of the property
// tests and the baseline of bench/dispatch.bench.ts. Topology code uses bigint (not hot).
import { IoFlag, MAX_ADDRESS_SPACES, MAX_IO_REGION_SIZE, MAX_RAM_REGION_SIZE, MAX_REGIONS, MemTx, RegionKind, TRACE_WORDS, TopologyStatus as T } from "../abi/memory.js";
import type { EngineIoOps, EngineTrace, FlatRangeInfo, MemoryEngine, RegionInfo } from "./engine.js";

const U64_MAX = (1n << 64n) - 1n;
const TWO_32 = 4294967296;
const IO_UNASSIGNED = 32;
const MODE_RAM = 1;
const MODE_ROM = 2;
const MODE_IO = 3;
const MODE_ROMD = 4; // ROM device in ROMD mode: reads from its RAM, writes to its callback
const FLAT_READONLY = 16;
const FW = 8; // flat record words: startLo startHi lastLo lastHi offLo offHi region mode

interface Region {
  alive: boolean;
  kind: number;
  enabled: boolean;
  readonly: boolean;
  /** ROM devices: reads served from `ram` (QEMU romd_mode). */
  romd: boolean;
  /** Freed inside an open transaction; released at the outermost commit. */
  pendingFree: boolean;
  ioFlags: number;
  vmin: number;
  vmax: number;
  imin: number;
  imax: number;
  priority: number;
  container: number;
  last: bigint;
  addr: bigint;
  aliasOffset: bigint;
  aliasTarget: number;
  children: number[]; // priority order (QEMU subregions list)
  ram: Uint8Array | null;
  ramView: DataView | null;
  guard: number;
  aliasRefs: number;
}

interface TmpRange {
  start: bigint;
  last: bigint;
  offset: bigint;
  region: number;
  readonly: boolean;
}

class ModelAddressSpace {
  root: number;
  flat = new Uint32Array(0); // FW words per range
  count = 0;
  ram: (DataView | null)[] = []; // per flat range: the region's bytes
  ramBytes: (Uint8Array | null)[] = [];
  ramBase = new Float64Array(0); // per flat range: byte index of `start` in its region
  arena = new Uint32Array(0);
  arenaUsed = 0; // bytes
  mru = 0;
  hiKey = 0; // high half of the last address walked, and its level-2 entry (see flatview.ts)
  hiEntry = 0;
  renders = 0;
  constructor(root: number) {
    this.root = root;
  }
}

export class ReferenceMemoryEngine implements MemoryEngine {
  readonly kind = "reference" as const;
  private regions: Region[] = [];
  private freeIds: number[] = []; // LIFO, like the wasm free list, so ids match
  private spaces: (ModelAddressSpace | null)[] = [null];
  private ops: (EngineIoOps | undefined)[] = [];
  private guards = new Uint8Array(256);
  private depth = 0;
  private dirty = false;
  /** Regions freed inside the open transaction, in free order. */
  private pending: number[] = [];
  private ioError: unknown = undefined;
  // Results of the last read / dispatch (u32 halves).
  private rLo = 0;
  private rHi = 0;
  private dLo = 0;
  private dHi = 0;

  constructor() {
    this.regions.push(this.blank(RegionKind.IO, U64_MAX));
    this.regions[0].ioFlags = IO_UNASSIGNED;
  }

  private blank(kind: number, last: bigint): Region {
    return {
      alive: true, kind, enabled: true, readonly: false, romd: kind === RegionKind.ROM_DEVICE, pendingFree: false, ioFlags: 0, vmin: 0, vmax: 0, imin: 0, imax: 0,
      priority: 0, container: 0, last, addr: 0n, aliasOffset: 0n, aliasTarget: 0, children: [],
      ram: null, ramView: null, guard: 0, aliasRefs: 0,
    };
  }

  private live(id: number): Region | null {
    const r = this.regions[id];
    return id > 0 && r && r.alive ? r : null;
  }

  // ---------------------------------------------------------------- topology
  private begin(): void {
    this.depth++;
  }
  private finish(st: number): number {
    this.transactionCommit();
    return st;
  }

  transactionBegin(): void {
    this.depth++;
  }
  transactionCommit(): number {
    if (this.depth === 0) return T.NO_TRANSACTION;
    this.depth--;
    if (this.depth !== 0) return T.OK;
    if (this.dirty) {
      this.dirty = false;
      for (let i = 1; i < this.spaces.length; i++) if (this.spaces[i]) this.render(this.spaces[i]!);
    }
    // The views are current: release the frees deferred meanwhile, in the order the wasm
    // core's pending list gives them back (so both hand out the same ids afterwards).
    for (let i = this.pending.length - 1; i >= 0; i--) this.release(this.pending[i]);
    this.pending.length = 0;
    return T.OK;
  }
  transactionDepth(): number {
    return this.depth;
  }

  regionNew(kind: number, lastLo: number, lastHi: number): number {
    const last = u64(lastHi, lastLo);
    if (kind < 0 || kind > RegionKind.ROM_DEVICE) return -T.WRONG_KIND;
    const backed = kind === RegionKind.RAM || kind === RegionKind.ROM || kind === RegionKind.ROM_DEVICE;
    if (backed && last >= BigInt(MAX_RAM_REGION_SIZE)) return -T.RAM_TOO_LARGE;
    if (kind === RegionKind.IO && last > BigInt(MAX_IO_REGION_SIZE) - 1n) return -T.IO_TOO_LARGE;
    let id = this.freeIds.length ? this.freeIds.pop()! : -1;
    if (id < 0) {
      if (this.regions.length >= MAX_REGIONS) return -T.TOO_MANY;
      id = this.regions.length;
      this.regions.push(this.blank(kind, last));
    }
    const r = this.blank(kind, last);
    r.guard = id;
    if (backed) {
      r.ram = new Uint8Array(Number(last) + 1);
      r.ramView = new DataView(r.ram.buffer);
    }
    this.regions[id] = r;
    return id;
  }

  regionSetIo(id: number, flags: number, vmin: number, vmax: number, imin: number, imax: number, guard: number): number {
    const r = this.live(id);
    if (!r) return T.NO_SUCH_REGION;
    if (r.kind !== RegionKind.IO && r.kind !== RegionKind.ROM_DEVICE) return T.WRONG_KIND;
    const ok = (s: number) => s === 0 || s === 1 || s === 2 || s === 4 || s === 8;
    if (!ok(vmin) || !ok(vmax) || !ok(imin) || !ok(imax)) return T.BAD_ACCESS_SIZES;
    if ((vmin && vmax && vmin > vmax) || (imin && imax && imin > imax)) return T.BAD_ACCESS_SIZES;
    if (flags & IoFlag.IMPL_UNALIGNED && !(flags & IoFlag.VALID_UNALIGNED)) return T.IMPL_UNALIGNED_WITHOUT_VALID;
    if (guard >= 2 << 20) return T.TOO_MANY;
    while (guard >= this.guards.length) {
      const g = new Uint8Array(this.guards.length * 2);
      g.set(this.guards);
      this.guards = g;
    }
    r.ioFlags = flags & ~IO_UNASSIGNED;
    r.vmin = vmin;
    r.vmax = vmax;
    r.imin = imin;
    r.imax = imax;
    r.guard = guard;
    return T.OK;
  }

  private reaches(from: number, to: number, seen = new Set<number>()): boolean {
    if (from === to) return true;
    if (seen.has(from)) return false;
    seen.add(from);
    const r = this.regions[from];
    if (r.aliasTarget && this.reaches(r.aliasTarget, to, seen)) return true;
    for (const c of r.children) if (this.reaches(c, to, seen)) return true;
    return false;
  }

  regionSetAlias(id: number, target: number, offLo: number, offHi: number): number {
    const r = this.live(id);
    const t = this.live(target);
    if (!r || !t) return T.NO_SUCH_REGION;
    if (r.kind !== RegionKind.ALIAS) return T.WRONG_KIND;
    if (r.aliasTarget) return T.IN_USE;
    const off = u64(offHi, offLo);
    if (off > U64_MAX - r.last) return T.OVERFLOW;
    if (target === id || this.reaches(target, id)) return T.CYCLE;
    this.begin();
    r.aliasTarget = target;
    r.aliasOffset = off;
    t.aliasRefs++;
    this.dirty = true;
    return this.finish(T.OK);
  }

  private link(parent: Region, id: number): void {
    const prio = this.regions[id].priority;
    let i = 0;
    while (i < parent.children.length && prio < this.regions[parent.children[i]].priority) i++;
    parent.children.splice(i, 0, id);
  }

  regionAddSubregion(parent: number, child: number, lo: number, hi: number, priority: number): number {
    const p = this.live(parent);
    const c = this.live(child);
    if (!p || !c) return T.NO_SUCH_REGION;
    if (p.kind === RegionKind.ALIAS) return T.WRONG_KIND;
    if (c.container) return T.ALREADY_MAPPED;
    const addr = u64(hi, lo);
    if (addr > U64_MAX - c.last) return T.OVERFLOW;
    if (parent === child || this.reaches(child, parent)) return T.CYCLE;
    this.begin();
    c.addr = addr;
    c.priority = priority | 0;
    c.container = parent;
    this.link(p, child);
    this.dirty = true;
    return this.finish(T.OK);
  }

  regionDelSubregion(parent: number, child: number): number {
    const p = this.live(parent);
    const c = this.live(child);
    if (!p || !c) return T.NO_SUCH_REGION;
    if (c.container !== parent) return T.NOT_A_SUBREGION;
    this.begin();
    p.children.splice(p.children.indexOf(child), 1);
    c.container = 0;
    this.dirty = true;
    return this.finish(T.OK);
  }

  regionSetAddress(id: number, lo: number, hi: number): number {
    const r = this.live(id);
    if (!r) return T.NO_SUCH_REGION;
    const addr = u64(hi, lo);
    if (addr > U64_MAX - r.last) return T.OVERFLOW;
    if (r.addr === addr) return T.OK;
    this.begin();
    r.addr = addr;
    if (r.container) {
      const p = this.regions[r.container];
      p.children.splice(p.children.indexOf(id), 1);
      this.link(p, id);
      this.dirty = true;
    }
    return this.finish(T.OK);
  }

  regionSetEnabled(id: number, on: number): number {
    return this.setFlag(id, "enabled", on);
  }

  regionSetReadonly(id: number, on: number): number {
    return this.setFlag(id, "readonly", on);
  }

  /** Sets a boolean that shapes the flat views; re-renders only when it changes. */
  private setFlag(id: number, flag: "enabled" | "readonly" | "romd", on: number): number {
    const r = this.live(id);
    if (!r) return T.NO_SUCH_REGION;
    if (flag === "romd" && r.kind !== RegionKind.ROM_DEVICE) return T.WRONG_KIND;
    if (r[flag] === (on !== 0)) return T.OK;
    this.begin();
    r[flag] = on !== 0;
    this.dirty = true;
    return this.finish(T.OK);
  }

  regionSetAliasOffset(id: number, lo: number, hi: number): number {
    const r = this.live(id);
    if (!r) return T.NO_SUCH_REGION;
    if (r.kind !== RegionKind.ALIAS) return T.WRONG_KIND;
    const off = u64(hi, lo);
    if (off > U64_MAX - r.last) return T.OVERFLOW;
    if (r.aliasOffset === off) return T.OK;
    this.begin();
    r.aliasOffset = off;
    this.dirty = true;
    return this.finish(T.OK);
  }

  regionSetRomd(id: number, on: number): number {
    return this.setFlag(id, "romd", on);
  }

  regionFree(id: number): number {
    const r = this.live(id);
    if (!r) return T.NO_SUCH_REGION;
    if (r.container || r.children.length || r.aliasRefs || this.spaces.some((s) => s && s.root === id)) return T.IN_USE;
    if (r.aliasTarget) this.regions[r.aliasTarget].aliasRefs--;
    r.alive = false;
    if (this.depth > 0) {
      // The current flat views may still reach it: keep RAM and callbacks until the commit.
      r.pendingFree = true;
      this.pending.push(id);
    } else this.release(id);
    return T.OK;
  }

  private release(id: number): void {
    const r = this.regions[id];
    r.pendingFree = false;
    r.ram = null;
    r.ramView = null;
    this.ops[id] = undefined;
    this.freeIds.push(id);
  }

  regionPendingFree(id: number): boolean {
    return this.regions[id]?.pendingFree ?? false;
  }

  regionInfo(id: number): RegionInfo | null {
    const r = this.live(id);
    if (!r) return null;
    return {
      kind: r.kind, size: r.last + 1n, address: r.addr, priority: r.priority, enabled: r.enabled, readonly: r.readonly, romd: r.romd,
      container: r.container, aliasTarget: r.aliasTarget, aliasOffset: r.aliasOffset,
    };
  }

  ramBytes(id: number): Uint8Array {
    return this.live(id)?.ram ?? new Uint8Array(0);
  }
  setIoOps(id: number, ops: EngineIoOps | undefined): void {
    this.ops[id] = ops;
  }
  takeIoError(): unknown {
    const e = this.ioError;
    this.ioError = undefined;
    return e;
  }

  asNew(root: number): number {
    if (!this.live(root)) return -T.NO_SUCH_REGION;
    let id = this.spaces.indexOf(null, 1);
    if (id < 0) {
      if (this.spaces.length >= MAX_ADDRESS_SPACES) return -T.TOO_MANY;
      id = this.spaces.length;
      this.spaces.push(null);
    }
    const s = new ModelAddressSpace(root);
    this.spaces[id] = s;
    this.render(s);
    return id;
  }
  asFree(as: number): number {
    if (!this.spaces[as] || as === 0) return T.NO_SUCH_ADDRESS_SPACE;
    this.spaces[as] = null;
    return T.OK;
  }

  asRenderCount(as: number): number {
    return this.spaces[as]?.renders ?? 0;
  }

  asFlatView(as: number): FlatRangeInfo[] {
    const s = this.spaces[as];
    if (!s) return [];
    const out: FlatRangeInfo[] = [];
    const w = s.flat;
    for (let i = 0; i < s.count; i++) {
      const k = i * FW;
      out.push({
        start: u64(w[k + 1], w[k]),
        last: u64(w[k + 3], w[k + 2]),
        offsetInRegion: u64(w[k + 5], w[k + 4]),
        region: w[k + 6],
        readonly: (w[k + 7] & FLAT_READONLY) !== 0,
      });
    }
    return out;
  }

  // ---------------------------------------------------------------- rendering
  private tmp: TmpRange[] = [];

  private fillGaps(region: number, start: bigint, last: bigint, offset: bigint, readonly: boolean): void {
    const v = this.tmp;
    let lo = 0;
    let hi = v.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (v[mid].last < start) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    let cursor = start;
    while (i < v.length) {
      const rs = v[i].start;
      const rl = v[i].last;
      if (cursor < rs) {
        const gapLast = last < rs - 1n ? last : rs - 1n;
        v.splice(i, 0, { start: cursor, last: gapLast, offset: offset + (cursor - start), region, readonly });
        i++;
        if (gapLast === last) return;
      }
      if (rl >= last) return;
      cursor = rl + 1n;
      i++;
    }
    v.splice(i, 0, { start: cursor, last, offset: offset + (cursor - start), region, readonly });
  }

  /** QEMU render_memory_region in the region's own coordinates (see assembly/memory/flatview.ts). */
  private renderRegion(id: number, cs: bigint, cl: bigint, delta: bigint, readonly: boolean): void {
    const r = this.regions[id];
    if (!r.enabled) return;
    const ro = readonly || r.readonly;
    if (r.kind === RegionKind.ALIAS) {
      if (!r.aliasTarget) return;
      const ts = cs + r.aliasOffset;
      let tl = cl + r.aliasOffset;
      const tLast = this.regions[r.aliasTarget].last;
      if (ts > tLast) return;
      if (tl > tLast) tl = tLast;
      this.renderRegion(r.aliasTarget, ts, tl, BigInt.asUintN(64, delta - r.aliasOffset), ro);
      return;
    }
    for (const c of r.children) {
      const cr = this.regions[c];
      const ca = cr.addr;
      const cLast = ca + cr.last;
      const s = cs > ca ? cs : ca;
      const l = cl < cLast ? cl : cLast;
      if (s <= l) this.renderRegion(c, s - ca, l - ca, BigInt.asUintN(64, delta + ca), ro);
    }
    if (r.kind === RegionKind.CONTAINER) return;
    this.fillGaps(id, BigInt.asUintN(64, cs + delta), BigInt.asUintN(64, cl + delta), cs, ro);
  }

  private render(s: ModelAddressSpace): void {
    s.renders++;
    this.tmp = [];
    this.renderRegion(s.root, 0n, this.regions[s.root].last, 0n, false);
    // flatview_simplify
    const v = this.tmp;
    const merged: TmpRange[] = [];
    for (const r of v) {
      const a = merged[merged.length - 1];
      if (a && a.region === r.region && a.readonly === r.readonly && a.last !== U64_MAX && a.last + 1n === r.start && a.offset + (a.last - a.start + 1n) === r.offset) {
        a.last = r.last;
      } else merged.push({ ...r });
    }
    // Fill the gaps with region 0, offset = address.
    const all: TmpRange[] = [];
    let cursor = 0n;
    let covered = false;
    for (const r of merged) {
      if (r.start > cursor) all.push({ start: cursor, last: r.start - 1n, offset: cursor, region: 0, readonly: false });
      all.push(r);
      if (r.last === U64_MAX) covered = true;
      else cursor = r.last + 1n;
    }
    if (!covered) all.push({ start: cursor, last: U64_MAX, offset: cursor, region: 0, readonly: false });
    s.count = all.length;
    s.flat = new Uint32Array(all.length * FW);
    s.ram = new Array(all.length).fill(null);
    s.ramBytes = new Array(all.length).fill(null);
    s.ramBase = new Float64Array(all.length);
    all.forEach((r, i) => {
      const k = i * FW;
      const w = s.flat;
      w[k] = Number(r.start & 0xffffffffn);
      w[k + 1] = Number(r.start >> 32n);
      w[k + 2] = Number(r.last & 0xffffffffn);
      w[k + 3] = Number(r.last >> 32n);
      w[k + 4] = Number(r.offset & 0xffffffffn);
      w[k + 5] = Number(r.offset >> 32n);
      w[k + 6] = r.region;
      const reg = this.regions[r.region];
      let mode = MODE_IO;
      if (reg.kind === RegionKind.ROM_DEVICE) {
        // memory_access_is_direct: only ROMD-mode reads are direct; readonly changes nothing.
        if (reg.romd) {
          mode = MODE_ROMD;
          s.ram[i] = reg.ramView;
          s.ramBytes[i] = reg.ram;
          s.ramBase[i] = Number(r.offset);
        }
      } else if (reg.kind !== RegionKind.IO) {
        mode = reg.kind === RegionKind.ROM || r.readonly ? MODE_ROM : MODE_RAM;
        s.ram[i] = reg.ramView;
        s.ramBytes[i] = reg.ram;
        s.ramBase[i] = Number(r.offset);
      }
      w[k + 7] = mode | (r.readonly ? FLAT_READONLY : 0);
    });
    s.mru = 0;
    this.buildPageTable(s, all);
  }

  // ---------------------------------------------------------------- page table
  private arenaAlloc(s: ModelAddressSpace, bytes: number): number {
    const used = s.arenaUsed;
    if (used + bytes > s.arena.length * 4) {
      let cap = Math.max(65536, s.arena.length * 4);
      while (used + bytes > cap) cap *= 2;
      const a = new Uint32Array(cap / 4);
      a.set(s.arena.subarray(0, used / 4));
      s.arena = a;
    }
    s.arenaUsed = used + bytes;
    return used;
  }

  private newNode(s: ModelAddressSpace, entries: number, fill: number): number {
    const off = this.arenaAlloc(s, entries * 4);
    s.arena.fill(fill, off / 4, off / 4 + entries);
    return off;
  }

  private buildSubpage(s: ModelAddressSpace, all: TmpRange[], page: bigint): number {
    const pageLast = page + 4095n;
    let first = 0;
    let lo = 0;
    let hi = all.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (all[mid].start <= page) lo = mid;
      else hi = mid - 1;
    }
    first = lo;
    let shift = 12;
    for (let i = first; i < all.length && all[i].start <= pageLast; i++) {
      if (all[i].start > page) {
        const o = Number(all[i].start - page);
        const z = 31 - Math.clz32(o & -o);
        if (z < shift) shift = z;
      }
    }
    const entries = 4096 >>> shift;
    const pad = (64 - (s.arenaUsed & 63)) & 63; // low 6 bits of the entry: tag and shift
    const off = this.arenaAlloc(s, pad + entries * 4) + pad;
    const base = off / 4;
    for (let i = first; i < all.length && all[i].start <= pageLast; i++) {
      const from = all[i].start <= page ? 0 : Number((all[i].start - page) >> BigInt(shift));
      const to = all[i].last >= pageLast ? entries - 1 : Number((all[i].last - page) >> BigInt(shift));
      s.arena.fill(i, base + from, base + to + 1);
    }
    return off | (shift << 2) | 2;
  }

  private mapRange(s: ModelAddressSpace, all: TmpRange[], node: number, level: number, nodeBase: bigint, start: bigint, last: bigint, idx: number): void {
    const shift = BigInt(level === 0 ? 52 : 52 - 10 * level);
    const spanLast = (1n << shift) - 1n;
    const i0 = Number((start - nodeBase) >> shift);
    const i1 = Number((last - nodeBase) >> shift);
    for (let i = i0; i <= i1; i++) {
      const eBase = nodeBase + (BigInt(i) << shift);
      const eLast = eBase + spanLast;
      const slot = node / 4 + i;
      if (start <= eBase && last >= eLast) {
        s.arena[slot] = ((idx << 2) | 1) >>> 0;
        continue;
      }
      const e = s.arena[slot];
      if (level < 4) {
        let child = e;
        if ((e & 3) !== 0) {
          child = this.newNode(s, 1024, e);
          s.arena[slot] = child;
        }
        this.mapRange(s, all, child, level + 1, eBase, start > eBase ? start : eBase, last < eLast ? last : eLast, idx);
      } else if ((e & 3) !== 2) {
        s.arena[slot] = this.buildSubpage(s, all, eBase);
      }
    }
  }

  private buildPageTable(s: ModelAddressSpace, all: TmpRange[]): void {
    s.arenaUsed = 0;
    const root = this.newNode(s, 4096, 1);
    all.forEach((r, i) => this.mapRange(s, all, root, 0, 0n, r.start, r.last, i));
    s.hiKey = 0;
    s.hiEntry = this.walkTop(s, 0);
  }

  /** Levels 0-2: the entry covering the 4 GiB window whose high half is `hi`. */
  private walkTop(s: ModelAddressSpace, hi: number): number {
    const a = s.arena;
    let e = a[hi >>> 20];
    if ((e & 3) === 0) {
      e = a[(e >>> 2) + ((hi >>> 10) & 1023)];
      if ((e & 3) === 0) e = a[(e >>> 2) + (hi & 1023)];
    }
    return e;
  }

  /** Page-table walk with the address as u32 halves. */
  private lookup(s: ModelAddressSpace, hi: number, lo: number): number {
    const a = s.arena;
    let e: number;
    if (hi === s.hiKey) e = s.hiEntry;
    else {
      e = this.walkTop(s, hi);
      s.hiKey = hi;
      s.hiEntry = e;
    }
    if ((e & 3) === 0) {
      e = a[(e >>> 2) + (lo >>> 22)];
      if ((e & 3) === 0) e = a[(e >>> 2) + ((lo >>> 12) & 1023)];
    }
    if ((e & 3) === 2) return a[((e & ~63) >>> 2) + ((lo & 4095) >>> ((e >>> 2) & 15))];
    return e >>> 2;
  }

  /** Flat index of (hi, lo): MRU range first, then the page table. */
  private flatFor(s: ModelAddressSpace, hi: number, lo: number): number {
    const w = s.flat;
    const k = s.mru * FW;
    const sHi = w[k + 1];
    const lHi = w[k + 3];
    if ((hi > sHi || (hi === sHi && lo >= w[k])) && (hi < lHi || (hi === lHi && lo <= w[k + 2]))) return s.mru;
    const idx = this.lookup(s, hi, lo);
    s.mru = idx;
    return idx;
  }

  // ---------------------------------------------------------------- dispatch
  private memoryAccessSize(r: Region, len: number, addr1Lo: number): number {
    let max = r.vmax || 4;
    if (!(r.ioFlags & IoFlag.IMPL_UNALIGNED)) {
      const align = addr1Lo & -addr1Lo; // low bits decide (max <= 8)
      if (align !== 0 && (align >>> 0) < max) max = align >>> 0;
    }
    const l = len < max ? len : max;
    return 1 << (31 - Math.clz32(l));
  }

  private accessValid(id: number, r: Region, addr1: number, addr1Lo: number, size: number, isWrite: boolean): boolean {
    if (r.ioFlags & IO_UNASSIGNED) return false;
    if (r.ioFlags & IoFlag.ACCEPTS) {
      let ok = false;
      try {
        ok = this.ops[id]!.accepts!(addr1, size, isWrite);
      } catch (e) {
        this.ioError = e;
      }
      if (!ok) return false;
    }
    if (!(r.ioFlags & IoFlag.VALID_UNALIGNED) && (addr1Lo & (size - 1)) !== 0) return false;
    if (r.vmax === 0) return true;
    return size <= r.vmax && size >= r.vmin;
  }

  /** QEMU memory_region_dispatch_read; value in dLo/dHi. */
  private dispatchRead(id: number, addr1: number, addr1Lo: number, size: number): number {
    this.dLo = 0;
    this.dHi = 0;
    const r = this.regions[id];
    if (!this.accessValid(id, r, addr1, addr1Lo, size, false)) return MemTx.DECODE_ERROR;
    const guarded = !(r.ioFlags & IoFlag.NO_REENTRANCY_GUARD);
    if (guarded) {
      if (this.guards[r.guard]) return MemTx.ACCESS_ERROR;
      this.guards[r.guard] = 1;
    }
    const accessSize = adjustedAccessSize(r, size);
    const big = (r.ioFlags & IoFlag.BIG_ENDIAN) !== 0;
    const ops = this.ops[id];
    let vLo = 0;
    let vHi = 0;
    let status = 0;
    for (let i = 0; i < size; i += accessSize) {
      let tLo = 0;
      let tHi = 0;
      try {
        const v = ops!.read(addr1 + i, accessSize);
        if (accessSize === 8) {
          if (typeof v === "number") {
            tLo = v >>> 0;
            tHi = Math.floor(v / TWO_32) >>> 0;
          } else {
            const b = BigInt.asUintN(64, v);
            tLo = Number(b & 0xffffffffn);
            tHi = Number(b >> 32n);
          }
        } else {
          tLo = typeof v === "number" ? v >>> 0 : Number(BigInt.asUintN(32, v));
          if (accessSize < 4) tLo &= (1 << (accessSize * 8)) - 1;
        }
      } catch (e) {
        this.ioError = e;
        status |= MemTx.ERROR;
      }
      const shift = big ? (size - accessSize - i) * 8 : i * 8;
      if (shift >= 32) {
        vHi |= tLo << (shift - 32);
      } else if (shift > 0) {
        vLo |= tLo << shift;
        vHi |= (tLo >>> (32 - shift)) | (tHi << shift);
      } else if (shift === 0) {
        vLo |= tLo;
        vHi |= tHi;
      } else if (shift > -32) {
        const sh = -shift;
        vLo |= (tLo >>> sh) | (tHi << (32 - sh));
        vHi |= tHi >>> sh;
      } else {
        vLo |= tHi >>> (-shift - 32);
      }
    }
    if (guarded) this.guards[r.guard] = 0;
    // mask to size, then adjust_endianness
    if (size < 8) {
      vHi = 0;
      if (size < 4) vLo &= (1 << (size * 8)) - 1;
    }
    if (big) this.bswap(vLo >>> 0, vHi >>> 0, size);
    else {
      this.dLo = vLo >>> 0;
      this.dHi = vHi >>> 0;
    }
    return status;
  }

  private bswap(lo: number, hi: number, size: number): void {
    const b32 = (x: number) => (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
    if (size === 2) {
      this.dLo = ((lo & 0xff) << 8) | ((lo >>> 8) & 0xff);
      this.dHi = 0;
    } else if (size === 4) {
      this.dLo = b32(lo);
      this.dHi = 0;
    } else if (size === 8) {
      this.dLo = b32(hi);
      this.dHi = b32(lo);
    } else {
      this.dLo = lo;
      this.dHi = hi;
    }
  }

  /** QEMU memory_region_dispatch_write. */
  private dispatchWrite(id: number, addr1: number, addr1Lo: number, size: number, lo: number, hi: number): number {
    const r = this.regions[id];
    if (!this.accessValid(id, r, addr1, addr1Lo, size, true)) return MemTx.DECODE_ERROR;
    if (size < 8) {
      hi = 0;
      if (size < 4) lo &= (1 << (size * 8)) - 1;
    }
    const big = (r.ioFlags & IoFlag.BIG_ENDIAN) !== 0;
    if (big) {
      this.bswap(lo >>> 0, hi >>> 0, size);
      lo = this.dLo;
      hi = this.dHi;
    }
    const guarded = !(r.ioFlags & IoFlag.NO_REENTRANCY_GUARD);
    if (guarded) {
      if (this.guards[r.guard]) return MemTx.ACCESS_ERROR;
      this.guards[r.guard] = 1;
    }
    const accessSize = adjustedAccessSize(r, size);
    const ops = this.ops[id];
    let status = 0;
    for (let i = 0; i < size; i += accessSize) {
      const shift = big ? (size - accessSize - i) * 8 : i * 8;
      let tLo: number;
      let tHi: number;
      if (shift >= 32) {
        tLo = hi >>> (shift - 32);
        tHi = 0;
      } else if (shift > 0) {
        tLo = (lo >>> shift) | (hi << (32 - shift));
        tHi = hi >>> shift;
      } else if (shift === 0) {
        tLo = lo;
        tHi = hi;
      } else if (shift > -32) {
        const sh = -shift;
        tLo = lo << sh;
        tHi = (hi << sh) | (lo >>> (32 - sh));
      } else {
        tLo = 0;
        tHi = lo << (-shift - 32);
      }
      if (accessSize < 8) {
        tHi = 0;
        if (accessSize < 4) tLo &= (1 << (accessSize * 8)) - 1;
      }
      try {
        ops!.write(addr1 + i, accessSize, accessSize === 8 ? u64(tHi, tLo) : tLo >>> 0);
      } catch (e) {
        this.ioError = e;
        status |= MemTx.ERROR;
      }
    }
    if (guarded) this.guards[r.guard] = 0;
    return status;
  }

  // ---------------------------------------------------------------- access entry points
  /** Reads `size` (1..8) bytes into rLo/rHi. */
  private readScalar(s: ModelAddressSpace, hi: number, lo: number, size: number): number {
    let f = this.flatFor(s, hi, lo);
    const w = s.flat;
    let k = f * FW;
    let mode = w[k + 7] & 15;
    // bytes of the range after (hi, lo); exact when small, which is all that matters
    let rem = (w[k + 3] - hi) * TWO_32 + (w[k + 2] - lo);
    if (mode !== MODE_IO && rem >= size - 1) {
      const dv = s.ram[f]!;
      const at = s.ramBase[f] + ((hi - w[k + 1]) * TWO_32 + (lo - w[k]));
      if (size === 4) {
        this.rLo = dv.getUint32(at, true);
        this.rHi = 0;
      } else if (size === 8) {
        this.rLo = dv.getUint32(at, true);
        this.rHi = dv.getUint32(at + 4, true);
      } else if (size === 2) {
        this.rLo = dv.getUint16(at, true);
        this.rHi = 0;
      } else if (size === 1) {
        this.rLo = dv.getUint8(at);
        this.rHi = 0;
      } else {
        this.rLo = 0;
        this.rHi = 0;
        for (let i = 0; i < size; i++) this.orByte(i, dv.getUint8(at + i));
      }
      return 0;
    }
    this.rLo = 0;
    this.rHi = 0;
    let status = 0;
    let done = 0;
    for (;;) {
      const want = size - done;
      let l = rem < want - 1 ? rem + 1 : want;
      if (mode !== MODE_IO) {
        const dv = s.ram[f]!;
        const at = s.ramBase[f] + ((hi - w[k + 1]) * TWO_32 + (lo - w[k]));
        for (let i = 0; i < l; i++) this.orByte(done + i, dv.getUint8(at + i));
      } else {
        const region = w[k + 6];
        const delta = (hi - w[k + 1]) * TWO_32 + (lo - w[k]);
        const addr1 = w[k + 5] * TWO_32 + w[k + 4] + delta;
        const addr1Lo = (w[k + 4] + delta) >>> 0;
        l = this.memoryAccessSize(this.regions[region], l, addr1Lo);
        status |= this.dispatchRead(region, addr1, addr1Lo, l);
        for (let i = 0; i < l; i++) this.orByte(done + i, (i < 4 ? this.dLo >>> (i * 8) : this.dHi >>> ((i - 4) * 8)) & 0xff);
      }
      done += l;
      if (done >= size) break;
      lo += l;
      if (lo >= TWO_32) {
        lo -= TWO_32;
        hi = (hi + 1) >>> 0;
      }
      f = this.flatFor(s, hi, lo);
      k = f * FW;
      mode = w[k + 7] & 15;
      rem = (w[k + 3] - hi) * TWO_32 + (w[k + 2] - lo);
    }
    return status;
  }

  private orByte(i: number, b: number): void {
    if (i < 4) this.rLo = (this.rLo | (b << (i * 8))) >>> 0;
    else this.rHi = (this.rHi | (b << ((i - 4) * 8))) >>> 0;
  }

  private writeScalar(s: ModelAddressSpace, hi: number, lo: number, size: number, vLo: number, vHi: number): number {
    let f = this.flatFor(s, hi, lo);
    const w = s.flat;
    let k = f * FW;
    let mode = w[k + 7] & 15;
    let rem = (w[k + 3] - hi) * TWO_32 + (w[k + 2] - lo);
    if (mode === MODE_RAM && rem >= size - 1) {
      const dv = s.ram[f]!;
      const at = s.ramBase[f] + ((hi - w[k + 1]) * TWO_32 + (lo - w[k]));
      if (size === 4) dv.setUint32(at, vLo, true);
      else if (size === 8) {
        dv.setUint32(at, vLo, true);
        dv.setUint32(at + 4, vHi, true);
      } else if (size === 2) dv.setUint16(at, vLo, true);
      else if (size === 1) dv.setUint8(at, vLo);
      else for (let i = 0; i < size; i++) dv.setUint8(at + i, byteOf(vLo, vHi, i));
      return 0;
    }
    let status = 0;
    let done = 0;
    for (;;) {
      const want = size - done;
      let l = rem < want - 1 ? rem + 1 : want;
      if (mode === MODE_RAM) {
        const dv = s.ram[f]!;
        const at = s.ramBase[f] + ((hi - w[k + 1]) * TWO_32 + (lo - w[k]));
        for (let i = 0; i < l; i++) dv.setUint8(at + i, byteOf(vLo, vHi, done + i));
      } else if (mode >= MODE_IO) {
        // I/O, or a ROM device's write callback
        const region = w[k + 6];
        const delta = (hi - w[k + 1]) * TWO_32 + (lo - w[k]);
        const addr1 = w[k + 5] * TWO_32 + w[k + 4] + delta;
        const addr1Lo = (w[k + 4] + delta) >>> 0;
        l = this.memoryAccessSize(this.regions[region], l, addr1Lo);
        let pLo = 0;
        let pHi = 0;
        for (let i = 0; i < l; i++) {
          const b = byteOf(vLo, vHi, done + i);
          if (i < 4) pLo |= b << (i * 8);
          else pHi |= b << ((i - 4) * 8);
        }
        status |= this.dispatchWrite(region, addr1, addr1Lo, l, pLo >>> 0, pHi >>> 0);
      } // MODE_ROM: dropped
      done += l;
      if (done >= size) break;
      lo += l;
      if (lo >= TWO_32) {
        lo -= TWO_32;
        hi = (hi + 1) >>> 0;
      }
      f = this.flatFor(s, hi, lo);
      k = f * FW;
      mode = w[k + 7] & 15;
      rem = (w[k + 3] - hi) * TWO_32 + (w[k + 2] - lo);
    }
    return status;
  }

  asRead(as: number, lo: number, hi: number, size: number): number {
    const s = this.spaces[as];
    if (!s || size < 1 || size > 8) {
      this.rLo = this.rHi = 0;
      return MemTx.DECODE_ERROR;
    }
    return this.readScalar(s, hi >>> 0, lo >>> 0, size);
  }

  asRead32(as: number, lo: number, hi: number, size: number): number {
    const st = this.asRead(as, lo, hi, size);
    return st === 0 ? this.rLo : -st;
  }

  resultLo(): number {
    return this.rLo;
  }
  resultHi(): number {
    return this.rHi;
  }

  asWrite(as: number, lo: number, hi: number, size: number, vLo: number, vHi: number): number {
    const s = this.spaces[as];
    if (!s || size < 1 || size > 8) return MemTx.DECODE_ERROR;
    return this.writeScalar(s, hi >>> 0, lo >>> 0, size, vLo >>> 0, vHi >>> 0);
  }

  private accessBuffer(as: number, hi: number, lo: number, bytes: Uint8Array, offset: number, length: number, isWrite: boolean): number {
    const s = this.spaces[as];
    if (!s) return MemTx.DECODE_ERROR;
    hi >>>= 0;
    lo >>>= 0;
    let status = 0;
    const w = s.flat;
    while (length > 0) {
      const f = this.flatFor(s, hi, lo);
      const k = f * FW;
      const mode = w[k + 7] & 15;
      const rem = (w[k + 3] - hi) * TWO_32 + (w[k + 2] - lo);
      let l = rem < length - 1 ? rem + 1 : length;
      if (mode < MODE_IO || (mode === MODE_ROMD && !isWrite)) {
        const ram = s.ramBytes[f]!;
        const at = s.ramBase[f] + ((hi - w[k + 1]) * TWO_32 + (lo - w[k]));
        if (!isWrite) bytes.set(ram.subarray(at, at + l), offset);
        else if (mode === MODE_RAM) ram.set(bytes.subarray(offset, offset + l), at);
      } else {
        const region = w[k + 6];
        const delta = (hi - w[k + 1]) * TWO_32 + (lo - w[k]);
        const addr1 = w[k + 5] * TWO_32 + w[k + 4] + delta;
        const addr1Lo = (w[k + 4] + delta) >>> 0;
        l = this.memoryAccessSize(this.regions[region], l > 8 ? 8 : l, addr1Lo);
        if (isWrite) {
          let pLo = 0;
          let pHi = 0;
          for (let i = 0; i < l; i++) {
            if (i < 4) pLo |= bytes[offset + i] << (i * 8);
            else pHi |= bytes[offset + i] << ((i - 4) * 8);
          }
          status |= this.dispatchWrite(region, addr1, addr1Lo, l, pLo >>> 0, pHi >>> 0);
        } else {
          status |= this.dispatchRead(region, addr1, addr1Lo, l);
          for (let i = 0; i < l; i++) bytes[offset + i] = (i < 4 ? this.dLo >>> (i * 8) : this.dHi >>> ((i - 4) * 8)) & 0xff;
        }
      }
      length -= l;
      offset += l;
      lo += l;
      if (lo >= TWO_32) {
        lo -= TWO_32;
        hi = (hi + 1) >>> 0;
      }
    }
    return status;
  }

  asReadBytes(as: number, lo: number, hi: number, bytes: Uint8Array, offset: number, length: number): number {
    return this.accessBuffer(as, hi, lo, bytes, offset, length, false);
  }
  asWriteBytes(as: number, lo: number, hi: number, bytes: Uint8Array, offset: number, length: number): number {
    return this.accessBuffer(as, hi, lo, bytes, offset, length, true);
  }

  traceNew(capacity: number): EngineTrace {
    let words: Uint32Array | null = new Uint32Array(capacity * TRACE_WORDS);
    return {
      capacity,
      words: () => {
        if (!words) throw new Error("trace was freed");
        return words;
      },
      free: () => {
        words = null;
      },
    };
  }

  asReplay(as: number, trace: EngineTrace, count: number): number {
    const s = this.spaces[as];
    const w = trace.words();
    let failed = 0;
    for (let i = 0; i < count; i++) {
      const k = i * TRACE_WORDS;
      const op = w[k];
      const size = op & 15;
      let st: number;
      if (!s || size < 1 || size > 8) st = MemTx.DECODE_ERROR;
      else if (op & 16) st = this.writeScalar(s, w[k + 2], w[k + 1], size, w[k + 3], w[k + 4]);
      else {
        st = this.readScalar(s, w[k + 2], w[k + 1], size);
        w[k + 3] = this.rLo;
        w[k + 4] = this.rHi;
      }
      w[k + 5] = st;
      if (st !== 0) failed++;
    }
    return failed;
  }
}

function byteOf(lo: number, hi: number, i: number): number {
  return (i < 4 ? lo >>> (i * 8) : hi >>> ((i - 4) * 8)) & 0xff;
}

/** 64-bit value from its u32 halves. */
function u64(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** QEMU access_with_adjusted_size: the size of each callback call for an access of `size`. */
function adjustedAccessSize(r: Region, size: number): number {
  const imin = r.imin || 1;
  const imax = r.imax || 4;
  return size < imax ? (size > imin ? size : imin) : imax > imin ? imax : imin;
}
