// QEMU 11.1 end to end: a 4-byte MMIO read (and a posted 4-byte write) issued by QEMU's qtest
// to edu, once through vfio-user-pci to our server (`wasmdev serve`, its own process) and once
// to QEMU's own in-process `-device edu` in the same QEMU, as the reference. Both edus sit on the
// same bus of one QEMU; rounds alternate between them. Measured with every process on one CPU
// and unpinned.
//
// Each round pipelines N qtest commands (QEMU's qtest runs them one after another, each readl
// waiting for its REGION_READ reply) and times the batch from the first send to the last
// answer: per access = batch time / N. Node's round trip over the qtest pipe is thus paid once
// per batch, not per access; QEMU's parsing of each command is in both figures alike.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { report, result, percentiles, type BenchResult } from "./lib/harness.js";
import { run as runCli } from "../src/commands/serve.js";
import { QtestQemu } from "../test/support/qtest.js";
import { startServe } from "../test/support/serve-process.js";
import { trixie, trixieSkipReason } from "../test/support/trixie.js";

const N = 2000;
const ROUNDS = Number(process.env.QEMU11_BENCH_ROUNDS ?? 21);
const CPU = "0";
const canPin = spawnSync("taskset", ["-c", CPU, "true"]).status === 0;
const OURS = 0xfe000000; // vfio-user-pci at slot 1 (QtestQemu's placement)
const QEMUS = 0xfd000000; // QEMU's edu at slot 2
const QEMU_EDU_DEVFN = 0x10; // slot 2
const EDU_LIVENESS = 0x04;

// Child mode: this same bundle is `wasmdev serve`.
if (process.argv[2] === "serve") {
  runCli(process.argv.slice(3)).then((code) => process.exit(code));
} else {
  await main();
}

async function batch(q: QtestQemu, line: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const all: Promise<string>[] = [];
  for (let i = 0; i < N; i++) all.push(q.cmd(line));
  await Promise.all(all);
  return Number(process.hrtime.bigint() - t0) / 1000 / N; // µs per access
}

type Placement = "same-cpu" | "unpinned";
type Samples = { oursRead: number[]; qemuRead: number[]; oursWrite: number[]; qemuWrite: number[] };

/** One serve process and one QEMU (both edus), started under the current CPU affinity. */
async function measure(dir: string): Promise<Samples> {
  const socket = join(dir, "edu.sock");
  const serve = startServe(fileURLToPath(import.meta.url), socket, []);
  let q: QtestQemu | undefined;
  try {
    await serve.listening;
    q = QtestQemu.start(socket, { extraArgs: ["-device", "edu,addr=0x2"] });
    await q.placeBar32(0, OURS);
    await q.placeBar32(0, QEMUS, QEMU_EDU_DEVFN);
    for (const [base, name] of [[OURS, "ours"], [QEMUS, "QEMU's"]] as const) {
      await q.writel(base + EDU_LIVENESS, 0x1234);
      if ((await q.readl(base + EDU_LIVENESS)) !== (~0x1234 >>> 0)) throw new Error(`${name} edu does not answer at 0x${base.toString(16)}`);
    }
    const readOurs = `readl 0x${(OURS + EDU_LIVENESS).toString(16)}`;
    const readQemus = `readl 0x${(QEMUS + EDU_LIVENESS).toString(16)}`;
    const writeOurs = `writel 0x${(OURS + EDU_LIVENESS).toString(16)} 0x5a5a`;
    const writeQemus = `writel 0x${(QEMUS + EDU_LIVENESS).toString(16)} 0x5a5a`;
    const samples: Samples = { oursRead: [], qemuRead: [], oursWrite: [], qemuWrite: [] };
    await batch(q, readOurs); // warm-up
    await batch(q, readQemus);
    for (let r = 0; r < ROUNDS; r++) {
      samples.oursRead.push(await batch(q, readOurs));
      samples.qemuRead.push(await batch(q, readQemus));
      samples.oursWrite.push(await batch(q, writeOurs));
      samples.qemuWrite.push(await batch(q, writeQemus));
      // Posted writes: this read returns once the server has taken them all.
      await q.readl(OURS + EDU_LIVENESS);
    }
    return samples;
  } finally {
    await q?.quit();
    await serve.stop();
  }
}

async function main(): Promise<void> {
  if (!trixie) {
    console.error(`qemu11 benchmark needs the QEMU 11.1 root: ${trixieSkipReason}`);
    process.exit(1);
  }
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-bench-qemu11-"));
  const rows: BenchResult[] = [];
  const m = (s: number[]) => percentiles(s).median;
  try {
    // Every process on one CPU (as the other end-to-end figures are taken), then unpinned (the
    // scheduler spreads QEMU's main thread, its vfio-user iothread and the server over CPUs).
    for (const placement of (canPin ? ["same-cpu", "unpinned"] : ["unpinned"]) as Placement[]) {
      if (canPin) spawnSync("taskset", ["-pc", placement === "same-cpu" ? CPU : "0-63", String(process.pid)], { stdio: "ignore" });
      const s = await measure(dir);
      rows.push(result(`qtest-readl-4B/${placement}/vfio-user-edu-vs-qemu-edu`, m(s.oursRead), "us", m(s.qemuRead), { samples: { value: s.oursRead, baseline: s.qemuRead } }));
      rows.push(result(`qtest-writel-4B-posted/${placement}/vfio-user-edu-vs-qemu-edu`, m(s.oursWrite), "us", m(s.qemuWrite), { samples: { value: s.oursWrite, baseline: s.qemuWrite } }));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  report("qemu11", rows, {
    title: `QEMU 11.1 qtest MMIO to edu through vfio-user-pci and wasmdev serve (per access, median of ${ROUNDS} batches of ${N} pipelined commands)`,
    baseline: "the same access to QEMU's in-process -device edu in the same QEMU, rounds alternating",
  });
}
