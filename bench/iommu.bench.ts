// IOMMU / DMA benchmarks (issue #5): IOTLB hit cost (batched in wasm — 4096 and 32 lookups per
// call — and one call per lookup from JS) against the plain-TypeScript reference with the same
// data structure, miss+fill cost, and DMA copy bandwidth against a plain TypedArray copy
// between the same buffers. Hit lookups go to random places of random regions (no two
// neighbours share an entry, so nothing is amortised across lookups); every lookup is checked
// to be a hit through the core's counters.
import { report, result, type BenchResult } from "./lib/harness.js";
import { IommuCore, IO_ADDR, IO_LEN } from "../src/core/iommu/iommu.js";
import { ReferenceIotlb } from "../src/core/iommu/reference.js";
import { DmaMapTable } from "../src/core/dma/map-table.js";
import { DmaSpace } from "../src/core/dma/space.js";
import { hostFdMapper } from "../src/host/index.js";
import { memfdCreate } from "../src/transport/shm.js";
import { closeSync } from "node:fs";

const results: BenchResult[] = [];
const LOOKUPS = 4096;

/** Best nanoseconds per iteration of `a` and of `b`, measured in alternation (a, b, a, b, …)
 *  after a warm-up of each, so a burst of load on the shared machine hits both sides alike;
 *  with every round's figure (the rows' spread). */
function paired(a: (iterations: number) => void, b: (iterations: number) => void, iterations: number, rounds = 7): [number, number, { value: number[]; baseline: number[] }] {
  const time = (fn: (iterations: number) => void) => {
    const t0 = process.hrtime.bigint();
    fn(iterations);
    return Number(process.hrtime.bigint() - t0) / iterations;
  };
  a(Math.max(1, iterations >> 2));
  b(Math.max(1, iterations >> 2));
  const samples = { value: [] as number[], baseline: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    samples.value.push(time(a));
    samples.baseline.push(time(b));
  }
  return [Math.min(...samples.value), Math.min(...samples.baseline), samples];
}

/** A table of `regions` regions, each `size` bytes at 16 KiB-aligned IOVAs (so entries are
 *  16 KiB blocks), plus optionally 2 MiB- and 1 GiB-block regions (mixed page sizes). */
function layout(mixed: boolean): { iova: bigint; size: bigint }[] {
  const out = [];
  for (let i = 0; i < 192; i++) out.push({ iova: 0x1000_0000n + BigInt(i) * 0x10000n + 0x4000n, size: 0x4000n });
  if (mixed) {
    for (let i = 0; i < 32; i++) out.push({ iova: 0x4000_0000n + BigInt(i) * 0x40_0000n, size: 0x20_0000n });
    for (let i = 0; i < 4; i++) out.push({ iova: 0x1_0000_0000n + BigInt(i) * 0x8000_0000n, size: 0x4000_0000n });
  }
  return out;
}

/** Input records (iovaLo, iovaHi, len, access) hitting random places of random regions. */
function records(regions: { iova: bigint; size: bigint }[], count: number, seed: number): Uint32Array {
  const rec = new Uint32Array(count * 4);
  let s = seed;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
  for (let i = 0; i < count; i++) {
    const r = regions[Math.floor(rnd() * regions.length)];
    const off = BigInt(Math.floor(rnd() * Number(r.size - 64n))) & ~7n;
    const iova = r.iova + off;
    rec[i * 4] = Number(iova & 0xffffffffn);
    rec[i * 4 + 1] = Number(iova >> 32n);
    rec[i * 4 + 2] = 64;
    rec[i * 4 + 3] = 1;
  }
  return rec;
}

function iotlbHits(mixed: boolean): void {
  const label = mixed ? "mixed-4k-2m-1g" : "16k-pages";
  const regions = layout(mixed);
  const core = new IommuCore();
  const dom = core.createDomain("map-table");
  const ref = new ReferenceIotlb(256);
  regions.forEach((r, slot) => {
    const last = r.iova + r.size - 1n;
    core.x.iommu_region_add(dom.id, Number(r.iova & 0xffffffffn), Number(r.iova >> 32n), Number(last & 0xffffffffn), Number(last >> 32n), slot, 3);
    ref.addRegion(r.iova, last, slot, 3);
  });
  const input = records(regions, LOOKUPS, 7);
  const inPtr = core.x.iommu_alloc(input.byteLength);
  const outPtr = core.x.iommu_alloc(LOOKUPS * 16);
  new Uint32Array(core.ref.memory.buffer).set(input, inPtr >>> 2);
  const refOut = new Uint32Array(LOOKUPS * 4);
  const translateList = core.x.iommu_translate_list as (d: number, i: number, c: number, o: number, cap: number) => number;
  // Warm both caches; every lookup below is a hit (192 + 32 + 4 pages fit 1024 entries).
  translateList(dom.id, inPtr, LOOKUPS, outPtr, LOOKUPS);
  ref.translateList(input, LOOKUPS, refOut, LOOKUPS);
  dom.resetCounters();
  const [wasmBatched, refBatched, batchedSamples] = paired((it) => {
    for (let i = 0; i < it; i += LOOKUPS) translateList(dom.id, inPtr, LOOKUPS, outPtr, LOOKUPS);
  }, (it) => {
    for (let i = 0; i < it; i += LOOKUPS) ref.translateList(input, LOOKUPS, refOut, LOOKUPS);
  }, LOOKUPS * 500);
  let c = dom.counters();
  if (c.misses !== 0 || c.hits === 0) throw new Error(`expected only IOTLB hits, got ${JSON.stringify(c)}`);
  results.push(result(`iotlb-hit/batched-wasm-vs-ref/${label}`, wasmBatched, "ns/lookup", refBatched, { samples: batchedSamples }));

  // The same lookups in short lists (32 records per call, as a descriptor chain would give):
  // the per-call cost is shared by 32 lookups only. Views are cut outside the timed loops.
  const SHORT = 32;
  const calls = LOOKUPS / SHORT;
  const refIn = Array.from({ length: calls }, (_, k) => input.subarray(k * SHORT * 4));
  const refOuts = Array.from({ length: calls }, (_, k) => refOut.subarray(k * SHORT * 4));
  dom.resetCounters();
  const [wasmShort, refShort, shortSamples] = paired((it) => {
    for (let i = 0; i < it; i += LOOKUPS) {
      for (let k = 0; k < calls; k++) translateList(dom.id, inPtr + k * SHORT * 16, SHORT, outPtr + k * SHORT * 16, SHORT);
    }
  }, (it) => {
    for (let i = 0; i < it; i += LOOKUPS) {
      for (let k = 0; k < calls; k++) ref.translateList(refIn[k], SHORT, refOuts[k], SHORT);
    }
  }, LOOKUPS * 500);
  c = dom.counters();
  if (c.misses !== 0 || c.hits === 0) throw new Error(`expected only IOTLB hits, got ${JSON.stringify(c)}`);
  results.push(result(`iotlb-hit/batched-32-wasm-vs-ref/${label}`, wasmShort, "ns/lookup", refShort, { samples: shortSamples }));

  const translate = core.x.iommu_translate as (d: number, lo: number, hi: number, len: number, acc: number) => number;
  const ioAddr = (core.ioPtr + IO_ADDR) >>> 2, ioLen = (core.ioPtr + IO_LEN) >>> 2;
  let sink = 0;
  const [wasmPerCall, refPerCall, perCallSamples] = paired((it) => {
    const m = core.mem32();
    for (let i = 0; i < it; i++) {
      const j = (i & (LOOKUPS - 1)) << 2;
      if (translate(dom.id, input[j], input[j + 1], input[j + 2], 1) === 0) sink += m[ioAddr] + m[ioLen];
    }
  }, (it) => {
    for (let i = 0; i < it; i++) {
      const j = (i & (LOOKUPS - 1)) << 2;
      if (ref.translate(input[j], input[j + 1], input[j + 2], 1) === 0) sink += ref.outLo + ref.outLen;
    }
  }, 2_000_000);
  if (sink === 0.5) console.log(sink);
  results.push(result(`iotlb-hit/per-call-from-js-vs-ref/${label}`, wasmPerCall, "ns/lookup", refPerCall, { samples: perCallSamples }));
}

function missFill(): void {
  // One 1 GiB region at a 4 KiB-aligned IOVA: every entry is a 4 KiB block; streaming over
  // 262144 pages through 1024 cache entries misses on every lookup.
  const core = new IommuCore();
  const dom = core.createDomain("map-table");
  const ref = new ReferenceIotlb(256);
  const base = 0x7000_1000n, last = base + 0x4000_0000n - 1n;
  core.x.iommu_region_add(dom.id, Number(base & 0xffffffffn), Number(base >> 32n), Number(last & 0xffffffffn), Number(last >> 32n), 0, 3);
  ref.addRegion(base, last, 0, 3);
  const PAGES = 262144;
  const input = new Uint32Array(LOOKUPS * 4);
  const inPtr = core.x.iommu_alloc(input.byteLength);
  const outPtr = core.x.iommu_alloc(LOOKUPS * 16);
  const refOut = new Uint32Array(LOOKUPS * 4);
  const translateList = core.x.iommu_translate_list as (d: number, i: number, c: number, o: number, cap: number) => number;
  const batches: Uint32Array[] = [];
  for (let b = 0; b < PAGES / LOOKUPS; b++) {
    const rec = new Uint32Array(LOOKUPS * 4);
    for (let i = 0; i < LOOKUPS; i++) {
      const iova = base + BigInt(b * LOOKUPS + i) * 0x1000n + 8n;
      rec[i * 4] = Number(iova & 0xffffffffn); rec[i * 4 + 1] = Number(iova >> 32n); rec[i * 4 + 2] = 8; rec[i * 4 + 3] = 1;
    }
    batches.push(rec);
  }
  let k = 0;
  dom.resetCounters();
  let kRef = 0;
  const [wasm, refNs, missSamples] = paired((it) => {
    for (let i = 0; i < it; i += LOOKUPS) {
      new Uint32Array(core.ref.memory.buffer).set(batches[k++ & 63], inPtr >>> 2);
      translateList(dom.id, inPtr, LOOKUPS, outPtr, LOOKUPS);
    }
  }, (it) => {
    for (let i = 0; i < it; i += LOOKUPS) ref.translateList(batches[kRef++ & 63], LOOKUPS, refOut, LOOKUPS);
  }, LOOKUPS * 128);
  const c = dom.counters();
  if (c.hits > c.misses / 100) throw new Error(`expected misses, got ${JSON.stringify(c)}`);
  if (ref.hits > ref.misses / 100) throw new Error(`expected reference misses, got ${ref.hits} hits`);
  results.push(result("iotlb-miss-fill/batched-wasm-vs-ref/4k-pages", wasm, "ns/lookup", refNs, { samples: missSamples }));
}

function dmaCopy(): void {
  const SIZE = 8 * 1024 * 1024;
  const fd = memfdCreate("wasmdev-bench-dma", SIZE);
  const core = new IommuCore();
  const table = new DmaMapTable(core, hostFdMapper);
  const dma = new DmaSpace({ table });
  const iova = 0x8000_0000n;
  table.add({ iova, size: BigInt(SIZE), perm: 3, backing: { kind: "fd", fd, offset: 0n } });
  const guest = table.slots[0]!.bytes!; // the same shared mapping the DMA path copies from
  guest.fill(0x5a);
  for (const size of [4096, 65536, 1 << 20]) {
    const dev = new Uint8Array(size);
    const iters = Math.max(64, (256 * 1024 * 1024) / size);
    const span = SIZE / size;
    const mbps = (ns: number) => (size / ns) * 1e3; // bytes/ns → MB/s
    const inMBps = (r: { value: number[]; baseline: number[] }) => ({ value: r.value.map(mbps), baseline: r.baseline.map(mbps) });
    // Addresses are bigints in the API; build them outside the timed loop (as a device would
    // already hold its descriptor's address).
    const addrs = Array.from({ length: span }, (_, i) => iova + BigInt(i * size));
    const [dmaRead, plainRead, readSamples] = paired((it) => {
      for (let i = 0; i < it; i++) dma.readSync(addrs[i % span], dev);
    }, (it) => {
      for (let i = 0; i < it; i++) {
        const off = (i % span) * size;
        dev.set(guest.subarray(off, off + size));
      }
    }, iters);
    const label = size >= 1 << 20 ? `${size >> 20}MiB` : `${size >> 10}KiB`;
    results.push(result(`dma-copy/read/${label}`, mbps(dmaRead), "MB/s", mbps(plainRead), { samples: inMBps(readSamples) }));
    const [dmaWrite, plainWrite, writeSamples] = paired((it) => {
      for (let i = 0; i < it; i++) dma.writeSync(addrs[i % span], dev);
    }, (it) => {
      for (let i = 0; i < it; i++) guest.set(dev, (i % span) * size);
    }, iters);
    results.push(result(`dma-copy/write/${label}`, mbps(dmaWrite), "MB/s", mbps(plainWrite), { samples: inMBps(writeSamples) }));
  }
  dma.close();
  table.clear();
  closeSync(fd);
}

iotlbHits(false);
iotlbHits(true);
missFill();
dmaCopy();
report("iommu", results, {
  title: "IOMMU and DMA: IOTLB lookups in the wasm core, miss+fill, and DMA copies (best of 7 alternating rounds)",
  baseline: "iotlb rows: the plain-TypeScript reference IOTLB with the same data structure; dma-copy: a plain TypedArray copy between the same buffers",
});
