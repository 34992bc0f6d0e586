// mpqemu end to end, against QEMU 7.2 in the same run:
//  (1) QEMU's proxy -> our remote vs QEMU's proxy -> QEMU's own remote: one VM hosts two
//      x-pci-proxy-dev functions, one per remote, and `xp /Nwx` issues N separate 4-byte MMIO
//      reads (one BAR_READ each). Per-access latency = (t(xp /N) - t(xp /1)) / (N - 1), which
//      cancels the monitor's own overhead. Rounds alternate between the two remotes.
//  (2) Our proxy's BAR read latency (awaited one at a time) against QEMU's remote, with QEMU's
//      proxy -> QEMU's remote as the baseline.
// Measured twice: every process pinned to one CPU (as QEMU-PEER.md's figures were taken; needs
// taskset), and unpinned (the scheduler decides; cross-CPU wake-ups cost ~30 µs here).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { report, result, percentiles, type BenchResult } from "./lib/harness.js";
import { HmpVm, QEMU, killAllQemu, qemuAvailable, qemuRemoteCommand, track } from "../test/mpqemu/harness.js";
import { MpqemuProxy } from "../src/mpqemu/proxy.js";
import { main as cliMain } from "../src/commands/main.js";
import { closeFdQuietly as closeFd, socketpair } from "../src/transport/fd.js";

const N = 1000;
const ROUNDS = Number(process.env.MPQEMU_BENCH_ROUNDS ?? 31);
const PROXY_READS = 4000;
const CPU = process.env.MPQEMU_BENCH_CPU ?? "0";
const canPin = spawnSync("taskset", ["-c", CPU, "true"]).status === 0;
const LEGEND = {
  title: "mpqemu end to end against QEMU 7.2: 4-byte BAR read latency, medians (same CPU and unpinned)",
  baseline: "qemu-proxy rows: QEMU's proxy driving QEMU's own remote; our-proxy rows: QEMU's proxy -> QEMU's remote",
};

// Child mode: this same bundle serves as our remote process.
if (process.argv[2] === "--remote") {
  cliMain(["serve", "--protocol", "mpqemu", ...process.argv.slice(3)]).then((code) => process.exit(code));
} else {
  await main();
}

type Placement = "same-cpu" | "unpinned";

function withPlacement(argv: string[], placement: Placement): string[] {
  return placement === "same-cpu" ? ["taskset", "-c", CPU, ...argv] : argv;
}

function spawnPlaced(argv: string[], fds: number[], placement: Placement, stderr: "inherit" | "ignore" = "inherit"): ChildProcess {
  const full = withPlacement(argv, placement);
  return track(spawn(full[0], full.slice(1), { stdio: ["ignore", "ignore", stderr, ...fds] }));
}

async function timeXp(vm: HmpVm, addr: bigint, n: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  await vm.readWords(addr, n);
  return Number(process.hrtime.bigint() - t0) / 1000; // µs
}

/** QEMU's proxy (one VM, two x-pci-proxy-dev) -> our remote (edu) and QEMU's remote (e1000). */
async function qemuProxyLatency(self: string, placement: Placement): Promise<{ ours: number[]; qemu: number[] }> {
  const [vmOurs, remoteOurs] = socketpair();
  const [vmQemu, remoteQemu] = socketpair();
  spawnPlaced([process.execPath, self, "--remote", "--fd", "3", "--device", "edu"], [remoteOurs], placement);
  spawnPlaced(qemuRemoteCommand("e1000").map((a) => a.replace("{fd}", "3")), [remoteQemu], placement, "ignore");
  [remoteOurs, remoteQemu].forEach(closeFd);
  let vm: HmpVm;
  try {
    vm = await HmpVm.start({
      args: ["-device", "x-pci-proxy-dev,id=ours,fd=3,addr=0x4", "-device", "x-pci-proxy-dev,id=qemu,fd=4,addr=0x5"],
      extraFds: [vmOurs, vmQemu],
      ramMiB: 128,
    });
  } finally {
    [vmOurs, vmQemu].forEach(closeFd);
  }
  try {
    if (placement === "same-cpu") spawnSync("taskset", ["-apc", CPU, String(vm.child.pid)], { stdio: "ignore" });
    const targets = [
      { name: "ours" as const, dev: 4, addr: 0xfe000000n },
      { name: "qemu" as const, dev: 5, addr: 0xfe100000n },
    ];
    for (const t of targets) {
      await vm.cfgWrite(t.dev, 0x10, 4, Number(t.addr));
      await vm.cfgWrite(t.dev, 0x04, 2, 0x2);
    }
    if ((await vm.readWords(targets[0].addr, 1))[0] !== 0x010000ed) throw new Error("our remote's edu is not answering at its BAR");
    const per = { ours: [] as number[], qemu: [] as number[] };
    for (const t of targets) await timeXp(vm, t.addr, N); // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        const one = await timeXp(vm, t.addr, 1);
        const many = await timeXp(vm, t.addr, N);
        per[t.name].push((many - one) / (N - 1));
      }
    }
    return per;
  } finally {
    await vm.quit();
  }
}

/** Our proxy, one awaited 4-byte BAR read at a time: us per read, one sample per round. */
async function ourProxyLatency(command: string[], placement: Placement): Promise<number[]> {
  const proxy = await MpqemuProxy.start({ command: withPlacement(command, placement), stderr: "ignore", heartbeatMs: 0, ramSize: 1 << 20 });
  try {
    await proxy.programBars(await proxy.probe());
    const samples: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < PROXY_READS; i++) await proxy.barRead(0, (i * 4) & 0xfff, 4);
      samples.push(Number(process.hrtime.bigint() - t0) / 1000 / PROXY_READS);
    }
    return samples;
  } finally {
    await proxy.close();
  }
}

async function main() {
  if (!qemuAvailable()) {
    console.error("mpqemu bench: qemu-system-x86_64 with x-pci-proxy-dev not found; skipping");
    report("mpqemu", [], LEGEND);
    return;
  }
  const self = fileURLToPath(import.meta.url);
  const results: BenchResult[] = [];
  const notes: string[] = [];
  try {
    // Same CPU for every process is how QEMU-PEER.md's figures were taken; unpinned shows what
    // the scheduler does on this (shared, 2-core) machine.
    for (const placement of (canPin ? ["same-cpu", "unpinned"] : ["unpinned"]) as Placement[]) {
      if (placement === "same-cpu") spawnSync("taskset", ["-pc", CPU, String(process.pid)], { stdio: "ignore" });
      else if (canPin) spawnSync("taskset", ["-pc", "0-63", String(process.pid)], { stdio: "ignore" });
      const per = await qemuProxyLatency(self, placement);
      const ours = percentiles(per.ours);
      const qemu = percentiles(per.qemu);
      results.push(result(`qemu-proxy/bar-read-4B/${placement}/our-remote-vs-qemu-remote`, ours.median, "us", qemu.median, { samples: { value: per.ours, baseline: per.qemu } }));
      const ourProxyQemu = await ourProxyLatency(qemuRemoteCommand("e1000"), placement);
      const ourProxyOurs = await ourProxyLatency([process.execPath, self, "--remote", "--fd", "{fd}", "--device", "edu"], placement);
      results.push(result(`our-proxy/bar-read-4B/${placement}/qemu-remote-vs-qemu-proxy`, percentiles(ourProxyQemu).median, "us", qemu.median, { samples: { value: ourProxyQemu, baseline: per.qemu } }));
      results.push(result(`our-proxy/bar-read-4B/${placement}/our-remote-vs-qemu-proxy`, percentiles(ourProxyOurs).median, "us", qemu.median, { samples: { value: ourProxyOurs, baseline: per.qemu } }));
      notes.push(`${placement}: QEMU proxy p99 per access: ours ${ours.p99.toFixed(1)} us, QEMU's ${qemu.p99.toFixed(1)} us`);
    }
  } finally {
    await killAllQemu();
  }
  console.log(`(${QEMU}; xp /${N} x ${ROUNDS} rounds per remote, alternating; ${notes.join("; ")})`);
  report("mpqemu", results, LEGEND);
}

