// Access dispatch inside one BAR: sections (the device's callbacks, RAM, ROM, shadow
// windows, the MSI-X table and PBA), QEMU's splitting rules (physmem.c memory_access_size,
// memory.c memory_region_access_valid / access_with_adjusted_size) and value <-> byte
// conversion. A BAR with no overlays and a callback region takes the single-call fast path.
//
// TODO(#2 integration): when the wasm memory core exposes regions and address spaces, each
// BAR becomes a container region there (callback region + RAM + overlays) and this module
// shrinks to the callback adapter.
import type { AccessSize, RegionOps } from "./api.js";

/** Callbacks plus normalised constraints. Offsets passed to read/write are relative to the
 *  ops' own region (the BAR for device ops, the table/PBA start for MSI-X). */
export interface SectionOps {
  read(offset: number, size: AccessSize): number | bigint;
  write(offset: number, size: AccessSize, value: number | bigint): void;
  /** 0 = any size valid (QEMU's "zero means compatibility all valid"). */
  validMin: number;
  validMax: number;
  validUnaligned: boolean;
  implMin: number;
  implMax: number;
  implUnaligned: boolean;
}

/**
 * A piece of a BAR, [start, end). Reads come from `readMemory` when present (RAM, ROM,
 * shadow windows), else from `ops`; writes go to `writeMemory` (RAM), are dropped
 * (`writeIgnored`, ROM), or go to `ops`. `opsBase` is subtracted from BAR offsets before
 * calling ops.
 */
export interface Section {
  start: number;
  end: number;
  readMemory?: Uint8Array;
  /** BAR offset of readMemory[0] / writeMemory[0]. */
  memoryBase: number;
  writeMemory?: Uint8Array;
  writeIgnored?: boolean;
  ops?: SectionOps;
  opsBase: number;
}

export function normaliseOps(ops: RegionOps): SectionOps {
  return {
    read: ops.read,
    write: ops.write,
    validMin: ops.valid?.min ?? 1,
    validMax: ops.valid?.max ?? 0,
    validUnaligned: ops.valid?.unaligned ?? false,
    implMin: ops.impl?.min ?? 1,
    implMax: ops.impl?.max ?? 4,
    implUnaligned: ops.impl?.unaligned ?? false,
  };
}

/** Outcome flag of a byte-path access: some piece was rejected by `valid`. */
export const ACCESS_OK = 0;
export const ACCESS_INVALID = 1;

const MASK32 = [0, 0xff, 0xffff, 0xffffff, 0xffffffff];

function toNumber(v: number | bigint, size: number): number {
  if (typeof v === "bigint") return Number(BigInt.asUintN(size * 8, v));
  return size === 4 ? v >>> 0 : (v >>> 0) & MASK32[size];
}

function toBigint(v: number | bigint, size: number): bigint {
  return BigInt.asUintN(size * 8, typeof v === "bigint" ? v : BigInt(Math.trunc(v)));
}

/** QEMU memory_region_access_valid (without `accepts`). */
export function accessValid(ops: SectionOps, offset: number, size: number): boolean {
  if (!ops.validUnaligned && offset & (size - 1)) return false;
  if (ops.validMax === 0) return true;
  return size <= ops.validMax && size >= ops.validMin;
}

/** QEMU memory_access_size: the largest piece ≤ `len` the ops accept at `offset`. */
export function pieceSize(ops: SectionOps, len: number, offset: number): number {
  let max = ops.validMax === 0 ? 4 : ops.validMax;
  if (!ops.implUnaligned) {
    const align = offset & -offset;
    if (align !== 0 && align < max) max = align;
  }
  let l = len > max ? max : len;
  // pow2floor
  if (l >= 8) return 8;
  if (l >= 4) return 4;
  if (l >= 2) return 2;
  return 1;
}

/** access_with_adjusted_size for reads; the result is truncated to `size` bytes:
 *  a number for sizes ≤ 4, a bigint for 8. */
export function callRead(ops: SectionOps, offset: number, size: number): number | bigint {
  let a = size > ops.implMax ? ops.implMax : size;
  if (a < ops.implMin) a = ops.implMin;
  if (a === size) {
    const v = ops.read(offset, size as AccessSize);
    return size === 8 ? toBigint(v, 8) : toNumber(v, size);
  }
  if (size <= 4 && a <= 4) {
    let r = 0;
    for (let i = 0; i < size; i += a) r |= toNumber(ops.read(offset + i, a as AccessSize), a) << (i * 8);
    return size === 4 ? r >>> 0 : (r >>> 0) & MASK32[size];
  }
  let r = 0n;
  for (let i = 0; i < size; i += a) r |= toBigint(ops.read(offset + i, a as AccessSize), a) << BigInt(i * 8);
  return size === 8 ? BigInt.asUintN(64, r) : Number(BigInt.asUintN(size * 8, r));
}

/** access_with_adjusted_size for writes (a widened write carries zero upper bytes). */
export function callWrite(ops: SectionOps, offset: number, size: number, value: number | bigint): void {
  let a = size > ops.implMax ? ops.implMax : size;
  if (a < ops.implMin) a = ops.implMin;
  if (a === size) {
    ops.write(offset, size as AccessSize, size === 8 ? toBigint(value, 8) : toNumber(value, size));
    return;
  }
  if (size <= 4 && a <= 4) {
    const v = toNumber(value, size);
    for (let i = 0; i < size; i += a) ops.write(offset + i, a as AccessSize, toNumber(v >>> (i * 8), a));
    return;
  }
  const v = toBigint(value, size);
  for (let i = 0; i < size; i += a) {
    const piece = BigInt.asUintN(Math.min(a, size) * 8, v >> BigInt(i * 8));
    ops.write(offset + i, a as AccessSize, a === 8 ? piece : Number(piece));
  }
}

function storeLe(dest: Uint8Array, at: number, size: number, v: number | bigint): void {
  if (typeof v === "bigint") {
    for (let i = 0; i < size; i++) dest[at + i] = Number((v >> BigInt(i * 8)) & 0xffn);
  } else {
    for (let i = 0; i < size; i++) dest[at + i] = (v >>> (i * 8)) & 0xff;
  }
}

function loadLe(src: Uint8Array, at: number, size: number): number | bigint {
  if (size === 8) {
    let v = 0n;
    for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(src[at + i]);
    return v;
  }
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + src[at + i];
  return v;
}

/** The dispatcher of one BAR. `size` ≤ 2^52. */
export class BarRegion {
  readonly size: number;
  /** Sorted, non-overlapping, covering [0, size). */
  private sections: Section[];
  /** The whole BAR is one callback section: the per-access fast path applies. */
  private single: SectionOps | undefined;

  constructor(size: number, sections: Section[]) {
    this.size = size;
    this.sections = sections;
    const s0 = sections[0];
    this.single = sections.length === 1 && s0.ops && !s0.readMemory && !s0.writeMemory && !s0.writeIgnored && s0.opsBase === 0 ? s0.ops : undefined;
  }

  private find(offset: number): Section {
    const secs = this.sections;
    for (let i = 0; i < secs.length; i++) if (offset < secs[i].end) return secs[i];
    return secs[secs.length - 1];
  }

  /** Status of the last read/write call (ACCESS_OK or ACCESS_INVALID). */
  status = ACCESS_OK;

  /** A value access of 1/2/4/8 bytes; caller checked bounds. Sets `status`. */
  read(offset: number, size: number): number | bigint {
    const ops = this.single;
    if (ops !== undefined && pieceSize(ops, size, offset) === size) {
      if (!accessValid(ops, offset, size)) {
        this.status = ACCESS_INVALID;
        return size === 8 ? 0n : 0;
      }
      this.status = ACCESS_OK;
      return callRead(ops, offset, size);
    }
    const buf = new Uint8Array(8); // not shared: device callbacks may re-enter
    this.status = this.readBytes(offset, buf, size);
    return loadLe(buf, 0, size);
  }

  write(offset: number, size: number, value: number | bigint): void {
    const ops = this.single;
    if (ops !== undefined && pieceSize(ops, size, offset) === size) {
      if (!accessValid(ops, offset, size)) {
        this.status = ACCESS_INVALID;
        return;
      }
      this.status = ACCESS_OK;
      callWrite(ops, offset, size, value);
      return;
    }
    const buf = new Uint8Array(8); // not shared: device callbacks may re-enter
    storeLe(buf, 0, size, value);
    this.status = this.writeBytes(offset, buf, size);
  }

  /** QEMU flatview_read_continue over this BAR: `len` bytes at `offset` into dest[0..len). */
  readBytes(offset: number, dest: Uint8Array, len = dest.length): number {
    let status = ACCESS_OK;
    let pos = 0;
    while (pos < len) {
      const at = offset + pos;
      const sec = this.find(at);
      const avail = Math.min(len - pos, sec.end - at);
      if (sec.readMemory) {
        const from = at - sec.memoryBase;
        dest.set(sec.readMemory.subarray(from, from + avail), pos);
        pos += avail;
        continue;
      }
      const ops = sec.ops!;
      const rel = at - sec.opsBase;
      const l = pieceSize(ops, avail, rel);
      if (accessValid(ops, rel, l)) storeLe(dest, pos, l, callRead(ops, rel, l));
      else {
        dest.fill(0, pos, pos + l);
        status = ACCESS_INVALID;
      }
      pos += l;
    }
    return status;
  }

  writeBytes(offset: number, src: Uint8Array, len = src.length): number {
    let status = ACCESS_OK;
    let pos = 0;
    while (pos < len) {
      const at = offset + pos;
      const sec = this.find(at);
      const avail = Math.min(len - pos, sec.end - at);
      if (sec.writeMemory) {
        sec.writeMemory.set(src.subarray(pos, pos + avail), at - sec.memoryBase);
        pos += avail;
        continue;
      }
      if (sec.writeIgnored) {
        pos += avail;
        continue;
      }
      const ops = sec.ops!;
      const rel = at - sec.opsBase;
      const l = pieceSize(ops, avail, rel);
      if (accessValid(ops, rel, l)) callWrite(ops, rel, l, loadLe(src, pos, l));
      else status = ACCESS_INVALID;
      pos += l;
    }
    return status;
  }
}

/**
 * Builds the section list of a BAR: `base` covers [0, size); `overlays` (sorted or not,
 * non-overlapping, inside the BAR) take precedence where they lie.
 */
export function buildSections(size: number, base: Omit<Section, "start" | "end">, overlays: Section[]): Section[] {
  const sorted = [...overlays].sort((a, b) => a.start - b.start);
  const out: Section[] = [];
  let pos = 0;
  for (const o of sorted) {
    if (o.start > pos) out.push({ ...base, start: pos, end: o.start });
    out.push(o);
    pos = o.end;
  }
  if (pos < size) out.push({ ...base, start: pos, end: size });
  return out;
}
