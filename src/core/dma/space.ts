// The device-facing DMA API (DmaApi): translation through the wasm IOMMU core, copies between
// device buffers and shared guest memory, zero-copy maps tracked as remote IOTLB entries, and
// the message hook for regions without shared memory.
import { DmaError } from "./errors.js";
import {
  DMA_PERM_READ, DMA_PERM_RW, DMA_PERM_WRITE,
  type DmaApi, type DmaDirection, type DmaInvalidateCallback, type DmaMapping, type DmaMessageHook,
  type DmaPerm, type DmaSegment, type DmaSgEntry, type DmaSgList,
} from "./api.js";
import type { DmaMapTable, RegionRecord } from "./map-table.js";
import type { IommuDomain, IommuEvent } from "../iommu/iommu.js";
import { S_OUT_FULL, statusError } from "../iommu/status.js";
import type { CoreExports } from "../abi/exports.js";

const U64_MAX = (1n << 64n) - 1n;
const MAX_LEN = 0xffffffff;
const TWO32 = 4294967296;
const IN_RECORD = 16;
// Output records of iommu_translate_list: segment address u64 (slot << 40 | offset), length u32.
const OUT_RECORD = 16;

export interface DmaSpaceOptions {
  table: DmaMapTable;
  /** The device's IOMMU stage (a "host" domain chaining to table.domain); default: none, the
   *  device's addresses are the table's IOVAs. */
  iommu?: IommuDomain;
  hook?: DmaMessageHook;
}

function accessOf(direction: DmaDirection): DmaPerm {
  switch (direction) {
    case "to-device": return DMA_PERM_READ;
    case "from-device": return DMA_PERM_WRITE;
    case "bidirectional": return DMA_PERM_RW;
    default: throw new DmaError("DMA_INVALID_ARGUMENT", `unknown DMA direction ${String(direction)}`);
  }
}

interface MappedPiece {
  slot: number;
  first: bigint; // table-space IOVA
  last: bigint;
}

class LiveMapping implements DmaMapping {
  live = true;
  constructor(
    private readonly owner: DmaSpace,
    readonly iova: bigint,
    readonly length: number,
    readonly direction: DmaDirection,
    readonly views: readonly Uint8Array[],
    readonly pieces: readonly MappedPiece[],
    readonly onInvalidate: DmaInvalidateCallback,
  ) {}

  release(): void {
    if (!this.live) return;
    this.live = false;
    this.owner.forget(this);
  }
}

export class DmaSpace implements DmaApi {
  readonly table: DmaMapTable;
  readonly top: IommuDomain;
  private readonly hook: DmaMessageHook | null;
  private readonly x: CoreExports;
  private inPtr = 0;
  private inCap = 0;
  private outPtr = 0;
  private outCap = 0;
  private readonly maps = new Set<LiveMapping>();
  private readonly unlisten: (() => void)[] = [];
  private m32: Uint32Array = new Uint32Array(0);
  private m64: BigUint64Array = new BigUint64Array(0);
  private readonly translateListFn: (domain: number, input: number, count: number, output: number, outCap: number) => number;
  // The range xlate() is translating, for error details (no closure per call).
  private xlateIova = 0n;
  private xlateLength = 0;
  private readonly describeXlate = () => ({ iova: this.xlateIova, length: this.xlateLength });
  private readonly word = new Uint8Array(8);
  private directOff = 0;
  private readonly wordView = new DataView(this.word.buffer);

  constructor(options: DmaSpaceOptions) {
    this.table = options.table;
    this.top = options.iommu ?? options.table.domain;
    this.hook = options.hook ?? null;
    this.x = this.table.core.x;
    this.translateListFn = this.x.iommu_translate_list;
    this.ensureIn(16);
    this.ensureOut(64);
    // Live maps behave as remote IOTLB entries: an unmap over their memory revokes them.
    this.unlisten.push(this.table.domain.listen({ unmap: true }, 0n, U64_MAX, (e) => this.onTableUnmap(e)));
    if (this.top !== this.table.domain) {
      this.unlisten.push(this.top.listen({ unmap: true }, 0n, U64_MAX, (e) => this.onTopUnmap(e)));
    }
  }

  // ------------------------------------------------------------------ scratch in linear memory

  /** Refreshes the views after memory grew: growing detaches the old buffer and empties its
   *  views (reading memory.buffer on every call would cost ~25 ns). */
  private mem(): void {
    if (this.m32.length === 0) {
      const b = this.table.core.ref.memory.buffer;
      this.m32 = new Uint32Array(b);
      this.m64 = new BigUint64Array(b);
    }
  }

  private ensureIn(records: number): void {
    if (records <= this.inCap) return;
    if (this.inPtr) this.x.iommu_free(this.inPtr);
    this.inCap = Math.max(records, this.inCap * 2);
    this.inPtr = this.x.iommu_alloc(this.inCap * IN_RECORD);
  }

  private ensureOut(records: number): void {
    if (records <= this.outCap) return;
    if (this.outPtr) this.x.iommu_free(this.outPtr);
    this.outCap = Math.max(records, this.outCap * 2);
    this.outPtr = this.x.iommu_alloc(this.outCap * OUT_RECORD);
  }

  /** Runs the batched translation over `count` input records; returns the number of output
   *  segments (in the out scratch), growing it as needed. Throws DmaError on faults. */
  private run(count: number, describe: (index: number) => { iova: bigint; length: number }): number {
    for (;;) {
      const n = this.translateListFn(this.top.id, this.inPtr, count, this.outPtr, this.outCap);
      if (n >= 0) return n;
      if (-n === S_OUT_FULL) {
        // The input records stay where they are (growing memory keeps its contents).
        this.ensureOut(this.outCap * 2);
        continue;
      }
      this.mem();
      const index = this.m32[(this.table.core.ioPtr + 16) >>> 2];
      const at = describe(index);
      throw statusError(-n, "DMA translation failed", { ...at, index, cause: this.table.core.takeMissError() });
    }
  }

  /** Translates one range; returns the segment count (records in the out scratch). */
  private xlate(iova: bigint, length: number, access: DmaPerm): number {
    if (typeof iova !== "bigint" || iova < 0n || iova > U64_MAX) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `iova must be a bigint within 64 bits, got ${String(iova)}`);
    }
    if (!(length >= 1 && length <= MAX_LEN) || !Number.isInteger(length)) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `DMA length must be 1..2^32-1, got ${length}`, { iova, length });
    }
    this.mem();
    const w = this.inPtr >>> 2;
    this.m64[w >>> 1] = iova;
    this.m32[w + 2] = length;
    this.m32[w + 3] = access;
    this.xlateIova = iova;
    this.xlateLength = length;
    return this.run(1, this.describeXlate);
  }

  private record(slot: number): RegionRecord {
    const r = this.table.slots[slot];
    if (!r) throw new DmaError("DMA_UNMAPPED", `DMA region slot ${slot} vanished during translation`);
    return r;
  }

  /**
   * After an access through `rec`'s shared memory: when the peer shrank the file behind it (the
   * transport's SIGBUS guard put zero pages past the new end), the access never reached guest
   * memory. The region is dropped from the table and the access fails with EFAULT.
   */
  private checkBacking(rec: RegionRecord, iova: bigint, length: number): void {
    const mapped = rec.mapped;
    if (mapped !== null && mapped.truncated === true) this.failTruncated(rec, iova, length);
  }

  private failTruncated(rec: RegionRecord, iova: bigint, length: number): never {
    const cause = this.table.dropTruncated(rec);
    throw new DmaError(
      "DMA_BACKING_TRUNCATED",
      `the file behind DMA region 0x${rec.iova.toString(16)}+0x${rec.size.toString(16)} was shrunk under its mapping by its owner; the access failed and the region was removed`,
      { iova, length, cause },
    );
  }

  /** Checks the backing of the `n` segments of the last translation (see checkBacking). */
  private checkSegments(n: number, iova: bigint, length: number): void {
    const base = this.outPtr >>> 2;
    for (let i = 0; i < n; i++) {
      const rec = this.table.slots[this.m32[base + i * 4 + 1] >>> 8];
      if (rec !== undefined) this.checkBacking(rec, iova, length);
    }
  }

  /** Shared memory of every segment, or throws DMA_NO_SHARED_MEMORY (nothing copied yet). */
  private requireShared(n: number, iova: bigint, length: number): void {
    const base = this.outPtr >>> 2;
    for (let i = 0; i < n; i++) {
      if (!this.record(this.m32[base + i * 4 + 1] >>> 8).bytes) {
        throw new DmaError("DMA_NO_SHARED_MEMORY", "this DMA range includes a region without shared memory; use the async read/write", { iova, length });
      }
    }
  }

  // ------------------------------------------------------------------ copies

  readSync(iova: bigint, dest: Uint8Array): void {
    const length = dest.length;
    if (length === 0) return;
    const n = this.xlate(iova, length, DMA_PERM_READ);
    const rec = this.singleShared(n);
    if (rec === null) return this.copySegments(n, iova, dest, false);
    dest.set(rec.bytes!.subarray(this.directOff, this.directOff + length));
    if (rec.mapped !== null) this.checkBacking(rec, iova, length);
  }

  writeSync(iova: bigint, src: Uint8Array): void {
    const length = src.length;
    if (length === 0) return;
    const n = this.xlate(iova, length, DMA_PERM_WRITE);
    const rec = this.singleShared(n);
    if (rec === null) return this.copySegments(n, iova, src, true);
    rec.bytes!.set(src, this.directOff);
    if (rec.mapped !== null) this.checkBacking(rec, iova, length);
  }

  readListSync(list: DmaSgList, dest: Uint8Array): void {
    this.copyList(list, dest, false);
  }

  writeListSync(list: DmaSgList, src: Uint8Array): void {
    this.copyList(list, src, true);
  }

  private copyList(list: DmaSgList, data: Uint8Array, toGuest: boolean): void {
    const count = list.count;
    if (!Number.isInteger(count) || count < 0 || count > list.iova.length || count > list.length.length) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `scatter/gather list count ${count} does not match its ${list.iova.length} entries`);
    }
    this.ensureIn(count);
    this.mem();
    const access = toGuest ? DMA_PERM_WRITE : DMA_PERM_READ;
    let total = 0;
    for (let i = 0; i < count; i++) {
      const iova = list.iova[i];
      const length = list.length[i];
      if (typeof iova !== "bigint" || iova < 0n || iova > U64_MAX || !Number.isInteger(length) || length < 1 || length > MAX_LEN) {
        throw new DmaError("DMA_INVALID_ARGUMENT", `scatter/gather element ${i} is invalid (iova ${String(iova)}, length ${length})`, { index: i });
      }
      const w = (this.inPtr >>> 2) + i * 4;
      this.m64[w >>> 1] = iova;
      this.m32[w + 2] = length;
      this.m32[w + 3] = access;
      total += length;
    }
    if (total !== data.length) {
      throw new DmaError("DMA_INVALID_ARGUMENT", `scatter/gather list covers ${total} bytes, the buffer has ${data.length}`);
    }
    if (count === 0) return;
    const n = this.run(count, (i) => ({ iova: list.iova[i], length: list.length[i] }));
    this.copySegments(n, list.iova[0], data, toGuest);
  }

  /** Copies `data` to (toGuest) or from the `n` segments of the last translation; every
   *  segment must have shared memory (DMA_NO_SHARED_MEMORY before anything is copied). */
  private copySegments(n: number, iova: bigint, data: Uint8Array, toGuest: boolean): void {
    this.mem();
    this.requireShared(n, iova, data.length);
    const m = this.m32;
    const base = this.outPtr >>> 2;
    let pos = 0;
    for (let i = 0; i < n; i++) {
      const r = base + i * 4;
      const bytes = this.table.slots[m[r + 1] >>> 8]!.bytes!;
      const off = (m[r + 1] & 0xff) * TWO32 + m[r];
      const len = m[r + 2];
      if (toGuest) bytes.set(data.subarray(pos, pos + len), off);
      else data.set(bytes.subarray(off, off + len), pos);
      pos += len;
    }
    this.checkSegments(n, iova, data.length);
  }

  /** Segments of the last translation as plain objects (survive awaits). */
  private collect(n: number): { rec: RegionRecord; offset: number; length: number }[] {
    this.mem();
    const m = this.m32;
    const base = this.outPtr >>> 2;
    const out = [];
    for (let i = 0; i < n; i++) {
      const r = base + i * 4;
      out.push({ rec: this.record(m[r + 1] >>> 8), offset: (m[r + 1] & 0xff) * TWO32 + m[r], length: m[r + 2] });
    }
    return out;
  }

  private needHook(iova: bigint, length: number): DmaMessageHook {
    if (!this.hook) {
      throw new DmaError("DMA_NO_SHARED_MEMORY", "this DMA range includes a region without shared memory and no message hook is configured", { iova, length });
    }
    return this.hook;
  }

  async read(iova: bigint, dest: Uint8Array): Promise<void> {
    const length = dest.length;
    if (length === 0) return;
    const segs = this.collect(this.xlate(iova, length, DMA_PERM_READ));
    if (segs.some((s) => !s.rec.bytes)) this.needHook(iova, length);
    // Shared-memory pieces are copied now; message pieces are requested in order.
    const pending: { rec: RegionRecord; offset: number; length: number; pos: number }[] = [];
    let pos = 0;
    for (const s of segs) {
      if (s.rec.bytes) dest.set(s.rec.bytes.subarray(s.offset, s.offset + s.length), pos);
      else pending.push({ ...s, pos });
      pos += s.length;
    }
    for (const s of segs) this.checkBacking(s.rec, iova, length);
    for (const p of pending) {
      const data = await this.hook!.read(p.rec.iova + BigInt(p.offset), p.length);
      if (!(data instanceof Uint8Array) || data.length !== p.length) {
        throw new DmaError("DMA_INVALID_ARGUMENT", `DMA message hook returned ${data?.length} bytes for a read of ${p.length}`, { iova: p.rec.iova + BigInt(p.offset), length: p.length });
      }
      dest.set(data, p.pos);
    }
  }

  async write(iova: bigint, src: Uint8Array): Promise<void> {
    const length = src.length;
    if (length === 0) return;
    const segs = this.collect(this.xlate(iova, length, DMA_PERM_WRITE));
    if (segs.some((s) => !s.rec.bytes)) this.needHook(iova, length);
    const pending: Promise<void>[] = [];
    let pos = 0;
    for (const s of segs) {
      const piece = src.subarray(pos, pos + s.length);
      if (s.rec.bytes) s.rec.bytes.set(piece, s.offset);
      else pending.push(this.hook!.write(s.rec.iova + BigInt(s.offset), piece.slice()));
      pos += s.length;
    }
    try {
      for (const s of segs) this.checkBacking(s.rec, iova, length);
    } catch (e) {
      // The message pieces are on their way; their outcome no longer changes this one.
      Promise.all(pending).catch(() => {});
      throw e;
    }
    await Promise.all(pending);
  }

  // ------------------------------------------------------------------ little-endian helpers

  /** Single-segment fast path: the region (its bytes at directOff), or null (straddles /
   *  message). */
  private direct(iova: bigint, size: number, access: DmaPerm): RegionRecord | null {
    return this.singleShared(this.xlate(iova, size, access));
  }

  /** After a translation into `n` segments: the region when it is one segment with shared
   *  memory (its bytes at directOff), else null. */
  private singleShared(n: number): RegionRecord | null {
    if (n !== 1) return null;
    this.mem();
    const base = this.outPtr >>> 2;
    const hi = this.m32[base + 1];
    const rec = this.record(hi >>> 8);
    if (!rec.bytes) return null;
    this.directOff = (hi & 0xff) * TWO32 + this.m32[base];
    return rec;
  }

  private loadWord(iova: bigint, size: number): Uint8Array {
    const rec = this.direct(iova, size, DMA_PERM_READ);
    const w = this.word.subarray(0, size);
    if (rec) {
      w.set(rec.bytes!.subarray(this.directOff, this.directOff + size));
      if (rec.mapped !== null) this.checkBacking(rec, iova, size);
    } else {
      this.readSync(iova, w);
    }
    return this.word;
  }

  private storeWord(iova: bigint, size: number): void {
    const rec = this.direct(iova, size, DMA_PERM_WRITE);
    if (rec) {
      rec.bytes!.set(this.word.subarray(0, size), this.directOff);
      if (rec.mapped !== null) this.checkBacking(rec, iova, size);
    } else {
      this.writeSync(iova, this.word.subarray(0, size));
    }
  }

  readU8(iova: bigint): number {
    return this.loadWord(iova, 1)[0];
  }
  readU16(iova: bigint): number {
    this.loadWord(iova, 2);
    return this.wordView.getUint16(0, true);
  }
  readU32(iova: bigint): number {
    this.loadWord(iova, 4);
    return this.wordView.getUint32(0, true);
  }
  readU64(iova: bigint): bigint {
    this.loadWord(iova, 8);
    return this.wordView.getBigUint64(0, true);
  }
  writeU8(iova: bigint, value: number): void {
    this.wordView.setUint8(0, value);
    this.storeWord(iova, 1);
  }
  writeU16(iova: bigint, value: number): void {
    this.wordView.setUint16(0, value, true);
    this.storeWord(iova, 2);
  }
  writeU32(iova: bigint, value: number): void {
    this.wordView.setUint32(0, value, true);
    this.storeWord(iova, 4);
  }
  writeU64(iova: bigint, value: bigint): void {
    this.wordView.setBigUint64(0, BigInt.asUintN(64, value), true);
    this.storeWord(iova, 8);
  }

  // ------------------------------------------------------------------ zero-copy maps

  map(iova: bigint, length: number, direction: DmaDirection, onInvalidate: DmaInvalidateCallback): DmaMapping {
    if (typeof onInvalidate !== "function") throw new DmaError("DMA_INVALID_ARGUMENT", "map() needs an onInvalidate callback", { iova, length });
    const n = this.xlate(iova, length, accessOf(direction));
    this.requireShared(n, iova, length);
    // A region already found shrunk is not handed out again (views would show zeros).
    this.checkSegments(n, iova, length);
    const segs = this.collect(n);
    const views = segs.map((s) => {
      s.rec.viewsEscaped = true; // its unmap must detach these views (MappedMemory.unmap)
      return s.rec.bytes!.subarray(s.offset, s.offset + s.length);
    });
    const pieces = segs.map((s) => {
      const first = s.rec.iova + BigInt(s.offset);
      return { slot: s.rec.slot, first, last: first + BigInt(s.length) - 1n };
    });
    const m = new LiveMapping(this, iova, length, direction, views, pieces, onInvalidate);
    this.maps.add(m);
    return m;
  }

  /** Live (unreleased, not invalidated) mappings. */
  get liveMappings(): number {
    return this.maps.size;
  }

  /** @internal */
  forget(m: LiveMapping): void {
    this.maps.delete(m);
  }

  private revoke(pred: (m: LiveMapping) => boolean): void {
    let first: unknown;
    for (const m of [...this.maps]) {
      if (!pred(m)) continue;
      m.live = false;
      this.maps.delete(m);
      try {
        m.onInvalidate(m);
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  }

  private onTableUnmap(e: IommuEvent): void {
    this.revoke((m) => m.pieces.some((p) => p.first <= e.last && p.last >= e.first));
  }

  private onTopUnmap(e: IommuEvent): void {
    this.revoke((m) => m.iova <= e.last && m.iova + BigInt(m.length) - 1n >= e.first);
  }

  // ------------------------------------------------------------------ batched translation

  translateList(list: readonly DmaSgEntry[], direction: DmaDirection): DmaSegment[] {
    const access = accessOf(direction);
    if (list.length === 0) return [];
    this.ensureIn(list.length);
    this.mem();
    for (let i = 0; i < list.length; i++) {
      const { iova, length } = list[i];
      if (typeof iova !== "bigint" || iova < 0n || iova > U64_MAX || !Number.isInteger(length) || length < 1 || length > MAX_LEN) {
        throw new DmaError("DMA_INVALID_ARGUMENT", `scatter/gather element ${i} is invalid (iova ${String(iova)}, length ${length})`, { index: i });
      }
      const w = (this.inPtr >>> 2) + i * 4;
      this.m64[w >>> 1] = iova;
      this.m32[w + 2] = length;
      this.m32[w + 3] = access;
    }
    const n = this.run(list.length, (i) => list[i]);
    return this.collect(n).map((s) => ({
      region: s.rec.slot,
      offset: s.offset,
      length: s.length,
      iova: s.rec.iova + BigInt(s.offset),
    }));
  }

  /** Revokes every live mapping (callbacks fire) and stops listening. */
  close(): void {
    try {
      this.revoke(() => true);
    } finally {
      for (const u of this.unlisten.splice(0)) u();
      if (this.inPtr) this.x.iommu_free(this.inPtr);
      if (this.outPtr) this.x.iommu_free(this.outPtr);
      this.inPtr = this.outPtr = this.inCap = this.outCap = 0;
    }
  }
}
