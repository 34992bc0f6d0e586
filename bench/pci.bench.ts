// Device callback dispatch through the PCI function model, without any transport: what a
// server pays per region access between the wire and the device's code.
//   doorbell-write/4B   PciFunction.writeRegionBytes of the throughput device's DOORBELL
//                       (device callback, shadow-window update, no interrupt)
//   scratch-read/4B     PciFunction.readRegionBytes of its SCRATCH register (device callback)
//   edu-read/4B         PciFunction.readRegionBytes of edu's ID register
//   shadow-read/4B      PciFunction.readRegionBytes of DOORBELL_COUNT (served inside wasm)
//   ram-read/4KiB       PciFunction.readRegionBytes of 4 KiB of the throughput device's RAM
//                       BAR; baseline: the same from a bare core RAM region
// value = ns per access through the function, baseline = ns per access of the same size
// through a bare memory-core I/O region whose callbacks do the least possible (same run), so
// ratio = the cost of the PCI layer plus the device's own work, in units of the bare path.
// CPU time of this process (process.cpuUsage), best of 5 rounds after a warm-up.
import { MemoryCore } from "../src/core/memory/index.js";
import { createThroughputDevice, THROUGHPUT_REG } from "../src/devices/throughput.js";
import { createEdu, EDU_REG } from "../src/devices/edu.js";
import type { PciFunction } from "../src/core/pci/api.js";
import { report, result, type BenchResult } from "./lib/harness.js";

const ITERATIONS = 1_000_000;

function nsPerOp(fn: (iterations: number) => void, iterations: number, rounds = 5): number {
  fn(Math.max(1, iterations >> 2));
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.cpuUsage();
    fn(iterations);
    const t = process.cpuUsage(t0);
    best = Math.min(best, ((t.user + t.system) * 1000) / iterations);
  }
  return best;
}

// The bare path: one I/O region in its own memory core, accessed by region offset.
const mem = MemoryCore.create();
let sink = 0;
const region = mem.io("bare", 4096, {
  read: () => 7,
  write: (_o, _s, v) => {
    sink = v as number;
  },
  valid: { min: 4, max: 8 },
  impl: { min: 4, max: 4 },
});
const root = mem.container("root", 8192);
root.addSubregion(0, region);
root.addSubregion(4096, mem.ram("bare-ram", 4096));
const bare = root.view();
const page = new Uint8Array(4096);

const word = new Uint8Array(4);
new DataView(word.buffer).setUint32(0, 1, true);
const out = new Uint8Array(4);

const bareWrite = nsPerOp((n) => {
  for (let i = 0; i < n; i++) bare.writeBytes(4, word);
}, ITERATIONS);
const bareRead = nsPerOp((n) => {
  for (let i = 0; i < n; i++) bare.readBytes(4, out);
}, ITERATIONS);

const bareRam = nsPerOp((n) => {
  for (let i = 0; i < n; i++) bare.readBytes(4096, page);
}, ITERATIONS >> 3);

const writes = (fn: PciFunction, bar: number, offset: number) =>
  nsPerOp((n) => {
    for (let i = 0; i < n; i++) fn.writeRegionBytes(bar, offset, word);
  }, ITERATIONS);
const reads = (fn: PciFunction, bar: number, offset: number) =>
  nsPerOp((n) => {
    for (let i = 0; i < n; i++) fn.readRegionBytes(bar, offset, out);
  }, ITERATIONS);

const tp = createThroughputDevice({ dataSize: 4096 });
const eduFn = createEdu().fn;

const results: BenchResult[] = [
  result("doorbell-write/4B/fn-vs-bare", writes(tp.fn, 2, THROUGHPUT_REG.DOORBELL), "ns/op", bareWrite),
  result("scratch-read/4B/fn-vs-bare", reads(tp.fn, 2, THROUGHPUT_REG.SCRATCH), "ns/op", bareRead),
  result("edu-read/4B/fn-vs-bare", reads(eduFn, 0, EDU_REG.ID), "ns/op", bareRead),
  result("shadow-read/4B/fn-vs-bare", reads(tp.fn, 2, THROUGHPUT_REG.DOORBELL_COUNT), "ns/op", bareRead),
  result(
    "ram-read/4KiB/fn-vs-bare",
    nsPerOp((n) => {
      for (let i = 0; i < n; i++) tp.fn.readRegionBytes(0, 0, page);
    }, ITERATIONS >> 3),
    "ns/op",
    bareRam,
  ),
];
if (tp.doorbells === 0 || sink !== 1) throw new Error("pci bench: the measured accesses did not reach the devices");
report("pci", results, {
  title: "Device callback dispatch through PciFunction region accesses, no transport (CPU time, best of 5 rounds)",
  baseline: "the same access size through a bare memory-core region (I/O with no-op callbacks; RAM for the 4 KiB row)",
});
