// QEMU 11.1 end to end: a 4-byte MMIO read (and a posted 4-byte write) issued by QEMU's qtest
// to edu, once through vfio-user-pci to our server (`wasmdev serve`, its own process) and once
// to QEMU's own in-process `-device edu` in the same QEMU, as the reference. Both edus sit on the
// same bus of one QEMU; rounds alternate between them.
//
// Each round pipelines N qtest commands (QEMU's qtest runs them one after another, each readl
// waiting for its REGION_READ reply) and times the batch from the first send to the last
// answer: per access = batch time / N, which leaves out the qtest pipe's round trip per command.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { report, result, percentiles } from "./lib/harness.js";
import { run as runCli } from "../src/commands/serve.js";
import { QtestQemu } from "../test/support/qtest.js";
import { startServe } from "../test/support/serve-process.js";
import { trixie, trixieSkipReason } from "../test/support/trixie.js";

const N = 2000;
const ROUNDS = Number(process.env.QEMU11_BENCH_ROUNDS ?? 21);
const OURS = 0xfe000000; // vfio-user-pci at slot 1 (QtestQemu's placement)
const QEMUS = 0xfd000000; // QEMU's edu at slot 2
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

async function main(): Promise<void> {
  if (!trixie) {
    console.error(`qemu11 benchmark needs the QEMU 11.1 root: ${trixieSkipReason}`);
    process.exit(1);
  }
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-bench-qemu11-"));
  const socket = join(dir, "edu.sock");
  const serve = startServe(fileURLToPath(import.meta.url), ["--socket", socket, "--quiet"]);
  let q: QtestQemu | undefined;
  try {
    await serve.listening;
    q = QtestQemu.start(socket, { extraArgs: ["-device", "edu,addr=0x2"] });
    await q.placeBar32(0, OURS);
    // QEMU's edu at devfn 0x10: BAR0, then memory space on.
    await q.cmd(`outl 0xcf8 0x${(0x80000000 | (0x10 << 8) | 0x10).toString(16)}`);
    await q.cmd(`outl 0xcfc 0x${QEMUS.toString(16)}`);
    await q.cmd(`outl 0xcf8 0x${(0x80000000 | (0x10 << 8) | 0x04).toString(16)}`);
    await q.cmd("outl 0xcfc 0x6");
    for (const [base, name] of [[OURS, "ours"], [QEMUS, "QEMU's"]] as const) {
      await q.writel(base + EDU_LIVENESS, 0x1234);
      if ((await q.readl(base + EDU_LIVENESS)) !== (~0x1234 >>> 0)) throw new Error(`${name} edu does not answer at 0x${base.toString(16)}`);
    }
    const samples = { oursRead: [] as number[], qemuRead: [] as number[], oursWrite: [] as number[], qemuWrite: [] as number[] };
    await batch(q, `readl 0x${(OURS + EDU_LIVENESS).toString(16)}`); // warm-up
    await batch(q, `readl 0x${(QEMUS + EDU_LIVENESS).toString(16)}`);
    for (let r = 0; r < ROUNDS; r++) {
      samples.oursRead.push(await batch(q, `readl 0x${(OURS + EDU_LIVENESS).toString(16)}`));
      samples.qemuRead.push(await batch(q, `readl 0x${(QEMUS + EDU_LIVENESS).toString(16)}`));
      samples.oursWrite.push(await batch(q, `writel 0x${(OURS + EDU_LIVENESS).toString(16)} 0x5a5a`));
      samples.qemuWrite.push(await batch(q, `writel 0x${(QEMUS + EDU_LIVENESS).toString(16)} 0x5a5a`));
      // Posted writes: the read after the batch waits until the server has taken them all.
      await q.readl(OURS + EDU_LIVENESS);
    }
    const m = (s: number[]) => percentiles(s).median;
    report("qemu11", [
      result("qtest-readl-4B/vfio-user-edu-vs-qemu-edu", m(samples.oursRead), "us", m(samples.qemuRead)),
      result("qtest-writel-4B-posted/vfio-user-edu-vs-qemu-edu", m(samples.oursWrite), "us", m(samples.qemuWrite)),
    ]);
    console.log(`(QEMU 11.1 -accel qtest; ${N} pipelined commands x ${ROUNDS} rounds per device, alternating; medians)`);
  } finally {
    await q?.quit();
    await serve.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
