// Plain-TypeScript reference of the IOMMU core's MAP_TABLE translation and IOTLB: the same
// data structure (sorted region table, set-associative cache with one size class per log2
// entry size, 4 ways, the same set hash, victim clock and block-mask rule), written for clarity with
// 64-bit values as two u32 halves in typed arrays. It is the differential oracle of the tests
// and the honest baseline of bench/iommu.bench.ts.

const WAYS = 4;
const WORDS = 8; // baseLo baseHi maskLo maskHi trLo trHi perm target
const MAX_OFFSET_BITS = 40;
export const REF_OK = 0;
export const REF_UNMAPPED = 1;
export const REF_PERMISSION = 2;
export const REF_EXISTS = 3;
export const REF_NOT_FOUND = 4;
export const REF_INVALID = 5;
export const REF_OUT_FULL = 10;

const ctz32 = (x: number) => (x === 0 ? 32 : 31 - Math.clz32(x & -x));
/** a > b for 64-bit values given as halves. */
const gt = (aLo: number, aHi: number, bLo: number, bHi: number) => aHi > bHi || (aHi === bHi && aLo > bLo);

export class ReferenceIotlb {
  // Region table, sorted by iova: iovaLo, iovaHi, lastLo, lastHi, slot, perm.
  private regions = new Uint32Array(6 * 16);
  private count = 0;
  private readonly tlb: Uint32Array;
  private readonly setMask: number;
  private clock = 0;
  /** Bit k set when entries of 2^k bytes are cached: k < 32 in classesLo, k >= 32 in classesHi. */
  private classesLo = 0;
  private classesHi = 0;
  hits = 0;
  misses = 0;
  faultsUnmapped = 0;
  faultsPermission = 0;
  /** Results of translate(). */
  outLo = 0;
  outHi = 0;
  outLen = 0;
  /** Failing input index of translateList(). */
  failIndex = 0;

  constructor(sets = 256) {
    this.setMask = sets - 1;
    this.tlb = new Uint32Array(sets * WAYS * WORDS);
    this.invalidateAll();
  }

  invalidateAll(): void {
    for (let e = 0; e < this.tlb.length; e += WORDS) this.empty(e);
    this.classesLo = this.classesHi = 0;
  }

  private empty(e: number): void {
    const t = this.tlb;
    t[e] = 1; t[e + 1] = 0; t[e + 2] = 0xffffffff; t[e + 3] = 0xffffffff;
  }

  private isEmpty(e: number): boolean {
    const t = this.tlb;
    return t[e] === 1 && t[e + 1] === 0 && t[e + 2] === 0xffffffff && t[e + 3] === 0xffffffff;
  }

  /** Drops cached entries meeting [first, last] (halves). */
  invalidate(fLo: number, fHi: number, lLo: number, lHi: number): void {
    const t = this.tlb;
    for (let e = 0; e < t.length; e += WORDS) {
      if (this.isEmpty(e)) continue;
      const endLo = (t[e] | t[e + 2]) >>> 0, endHi = (t[e + 1] | t[e + 3]) >>> 0;
      if (!gt(t[e], t[e + 1], lLo, lHi) && !gt(fLo, fHi, endLo, endHi)) this.empty(e);
    }
  }

  /** Index of the last region with iova <= addr, or -1. */
  private floor(lo: number, hi: number): number {
    const r = this.regions;
    let a = 0, b = this.count - 1, found = -1;
    while (a <= b) {
      const mid = (a + b) >>> 1;
      if (!gt(r[mid * 6], r[mid * 6 + 1], lo, hi)) { found = mid; a = mid + 1; } else b = mid - 1;
    }
    return found;
  }

  addRegion(iova: bigint, last: bigint, slot: number, perm: number): number {
    const [iLo, iHi, lLo, lHi] = [Number(iova & 0xffffffffn), Number(iova >> 32n), Number(last & 0xffffffffn), Number(last >> 32n)];
    const at = this.floor(iLo, iHi);
    const r = this.regions;
    if (at >= 0 && !gt(iLo, iHi, r[at * 6 + 2], r[at * 6 + 3])) return REF_EXISTS;
    const next = at + 1;
    if (next < this.count && !gt(r[next * 6], r[next * 6 + 1], lLo, lHi)) return REF_EXISTS;
    if ((this.count + 1) * 6 > r.length) {
      const bigger = new Uint32Array(r.length * 2);
      bigger.set(r);
      this.regions = bigger;
    }
    const t = this.regions;
    t.copyWithin((next + 1) * 6, next * 6, this.count * 6);
    t.set([iLo, iHi, lLo, lHi, slot, perm], next * 6);
    this.count++;
    this.invalidate(iLo, iHi, lLo, lHi);
    return REF_OK;
  }

  removeRegion(iova: bigint, last: bigint): number {
    const [iLo, iHi, lLo, lHi] = [Number(iova & 0xffffffffn), Number(iova >> 32n), Number(last & 0xffffffffn), Number(last >> 32n)];
    const at = this.floor(iLo, iHi);
    const r = this.regions;
    if (at < 0 || r[at * 6] !== iLo || r[at * 6 + 1] !== iHi || r[at * 6 + 2] !== lLo || r[at * 6 + 3] !== lHi) return REF_NOT_FOUND;
    r.copyWithin(at * 6, (at + 1) * 6, this.count * 6);
    this.count--;
    this.invalidate(iLo, iHi, lLo, lHi);
    return REF_OK;
  }

  protectRegion(iova: bigint, last: bigint, perm: number): number {
    const [iLo, iHi, lLo, lHi] = [Number(iova & 0xffffffffn), Number(iova >> 32n), Number(last & 0xffffffffn), Number(last >> 32n)];
    const at = this.floor(iLo, iHi);
    const r = this.regions;
    if (at < 0 || r[at * 6] !== iLo || r[at * 6 + 1] !== iHi || r[at * 6 + 2] !== lLo || r[at * 6 + 3] !== lHi) return REF_NOT_FOUND;
    if (r[at * 6 + 5] !== perm) {
      r[at * 6 + 5] = perm;
      this.invalidate(iLo, iHi, lLo, lHi);
    }
    return REF_OK;
  }

  /** Same hash as the core: ((u32(iova >> k) + k) * 0x9e3779b1) >>> 16, masked. */
  private setOf(lo: number, hi: number, k: number): number {
    const x = k === 0 ? lo : k < 32 ? (lo >>> k) | (hi << (32 - k)) : hi >>> (k - 32);
    return (Math.imul(x + k, 0x9e3779b1) >>> 16) & this.setMask;
  }

  private probe(lo: number, hi: number, k: number): number {
    const t = this.tlb;
    let e = this.setOf(lo, hi, k) * WAYS * WORDS;
    for (let w = 0; w < WAYS; w++, e += WORDS) {
      if (((lo & ~t[e + 2]) >>> 0) === t[e] && ((hi & ~t[e + 3]) >>> 0) === t[e + 1]) return e;
    }
    return -1;
  }

  /** Probes the classes present, smallest first. */
  private lookup(lo: number, hi: number): number {
    for (let m = this.classesLo; m !== 0; m &= m - 1) {
      const e = this.probe(lo, hi, ctz32(m));
      if (e >= 0) return e;
    }
    for (let m = this.classesHi; m !== 0; m &= m - 1) {
      const e = this.probe(lo, hi, 32 + ctz32(m));
      if (e >= 0) return e;
    }
    return -1;
  }

  /** Fills the cache for iova; returns the entry or -1 (not mapped). */
  private fill(lo: number, hi: number): number {
    const at = this.floor(lo, hi);
    if (at < 0) return -1;
    const r = this.regions, p = at * 6;
    const rLo = r[p], rHi = r[p + 1], lastLo = r[p + 2], lastHi = r[p + 3];
    if (gt(lo, hi, lastLo, lastHi) || r[p + 5] === 0) return -1;
    // Largest 2^k block around iova inside the region, with the region start 2^k-aligned.
    let k = rLo !== 0 ? ctz32(rLo) : rHi !== 0 ? 32 + ctz32(rHi) : 64;
    if (k > MAX_OFFSET_BITS) k = MAX_OFFSET_BITS;
    let mLo = k >= 32 ? 0xffffffff : (2 ** k - 1) >>> 0;
    let mHi = k >= 32 ? (2 ** (k - 32) - 1) >>> 0 : 0;
    while (gt((lo | mLo) >>> 0, (hi | mHi) >>> 0, lastLo, lastHi)) {
      mLo = ((mLo >>> 1) | (mHi << 31)) >>> 0;
      mHi = mHi >>> 1;
    }
    const bLo = (lo & ~mLo) >>> 0, bHi = (hi & ~mHi) >>> 0;
    // offset = base - region iova (< 2^40), then translated = slot << 40 | offset.
    let oLo = bLo - rLo, oHi = bHi - rHi;
    if (oLo < 0) { oLo += 4294967296; oHi -= 1; }
    const bits = mHi !== 0 ? 64 - Math.clz32(mHi) : 32 - Math.clz32(mLo); // popcount of 2^k - 1
    const cls = bits > 63 ? 63 : bits;
    const t = this.tlb;
    const set = this.setOf(lo, hi, cls) * WAYS * WORDS;
    let e = -1;
    for (let w = 0; w < WAYS; w++) if (this.isEmpty(set + w * WORDS)) { e = set + w * WORDS; break; }
    if (e < 0) e = set + (this.clock & (WAYS - 1)) * WORDS;
    this.clock = (this.clock + 1) >>> 0;
    t[e] = bLo; t[e + 1] = bHi; t[e + 2] = mLo; t[e + 3] = mHi;
    t[e + 4] = oLo; t[e + 5] = ((r[p + 4] << 8) + oHi) >>> 0; t[e + 6] = r[p + 5]; t[e + 7] = 0xffffffff;
    if (cls < 32) this.classesLo = (this.classesLo | (1 << cls)) >>> 0;
    else this.classesHi = (this.classesHi | (1 << (cls - 32))) >>> 0;
    return e;
  }

  /** Translates [iova, iova + len) (halves); results in outLo/outHi/outLen. */
  translate(lo: number, hi: number, len: number, access: number): number {
    let e = this.lookup(lo, hi);
    if (e >= 0) this.hits++;
    else {
      this.misses++;
      e = this.fill(lo, hi);
      if (e < 0) { this.faultsUnmapped++; return REF_UNMAPPED; }
    }
    const t = this.tlb;
    if ((t[e + 6] & access) !== access) { this.faultsPermission++; return REF_PERMISSION; }
    const mLo = t[e + 2], mHi = t[e + 3];
    const offLo = (lo & mLo) >>> 0, offHi = (hi & mHi) >>> 0;
    if (mHi === offHi) {
      const rest = mLo - offLo; // bytes to the entry end, minus one (< 2^32 here)
      if (len - 1 > rest) len = rest + 1;
    }
    this.outLo = (t[e + 4] | offLo) >>> 0;
    this.outHi = (t[e + 5] | offHi) >>> 0;
    this.outLen = len;
    return REF_OK;
  }

  /** Same records as the core's iommu_translate_list: in (iova u64, length, access), out
   *  (segment address u64, length, 0). */
  translateList(input: Uint32Array, count: number, output: Uint32Array, outCap: number): number {
    let n = 0, prevSlot = -1, prevEnd = -1;
    for (let i = 0; i < count; i++) {
      let lo = input[i * 4], hi = input[i * 4 + 1], len = input[i * 4 + 2];
      const access = input[i * 4 + 3];
      if (len === 0 || access === 0 || access > 3 || (hi === 0xffffffff && len - 1 > 0xffffffff - lo)) {
        this.failIndex = i;
        return -REF_INVALID;
      }
      while (len > 0) {
        const st = this.translate(lo, hi, len, access);
        if (st !== REF_OK) { this.failIndex = i; return -st; }
        const slot = this.outHi >>> 8;
        const offset = (this.outHi & 0xff) * 4294967296 + this.outLo;
        const piece = this.outLen;
        if (slot === prevSlot && offset === prevEnd && output[(n - 1) * 4 + 2] + piece <= 0xffffffff) {
          output[(n - 1) * 4 + 2] += piece;
        } else {
          if (n === outCap) { this.failIndex = i; return -REF_OUT_FULL; }
          const o = n * 4;
          output[o] = this.outLo; output[o + 1] = this.outHi; output[o + 2] = piece; output[o + 3] = 0;
          n++;
        }
        prevSlot = slot;
        prevEnd = offset + piece;
        len -= piece;
        const sum = lo + piece;
        lo = sum >>> 0;
        if (sum > 0xffffffff) hi = (hi + 1) >>> 0;
      }
    }
    return n;
  }
}
