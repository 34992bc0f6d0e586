// A Linux guest's fio against the project's NVMe controller, and against QEMU's own in-process
// NVMe device, in the same run.
//
// The guest is the one test/guest/nvme-guest.test.ts boots (QEMU 11.1 under TCG from the
// provisioned Debian 13 root, the trixie 6.12 kernel's in-tree nvme driver, fio from the same
// root; 512 MiB of shared memfd guest RAM, one vCPU). Each boot runs the same four fio jobs on
// /dev/nvme0n1 (libaio, O_DIRECT, time based, no random map):
//
//   randread-4k-qd1    4 KiB random reads, one in flight        IOPS
//   randread-4k-qd32   4 KiB random reads, 32 in flight         IOPS
//   randwrite-4k-qd32  4 KiB random writes, 32 in flight        IOPS
//   seqread-128k       128 KiB sequential reads, 8 in flight    MB/s
//
// against three disks of 1 GiB with 512-byte blocks, each filled by a guest write pass first:
//
//   ours-ram     our controller in its own Node process (bundled from src/, the same code as
//                the test), RAM backing (its default and what `createNvme` gives), served over
//                vfio-user; QEMU's vfio-user-pci maps guest RAM into it (DMA_MAP with fds)
//   ours-tmpfs   the same with a file backing on /dev/shm (pread/pwrite into guest memory)
//   qemu-nvme    the baseline: QEMU's `-device nvme` on a raw file on /dev/shm, cache=writeback
//                and aio=threads. Of QEMU's choices this is the nearest to our backings: the
//                file's page cache is tmpfs memory (cache=none adds O_DIRECT, which tmpfs serves
//                from the same pages), and aio=threads is QEMU's default; the data moves in one
//                copy between guest RAM and memory, as ours does.
//
// Boots alternate between the disks (round r runs them in order, round r+1 reversed) and each
// job keeps its best run, because this shared 2-CPU machine drifts by ±10% between runs. Under
// TCG the guest itself is slow (every guest instruction is translated): absolute figures are a
// fraction of what the same device does for a KVM guest, but both sides share that guest, so the
// ratios compare the devices.
//
// Host CPU: utime + stime from /proc/<pid>/stat of our server process and of QEMU, read when the
// guest prints the job's start and end markers. Rows give our server's CPU per I/O against the
// whole QEMU process's per I/O with its own nvme (which includes the emulated guest), and the
// total of QEMU + our server per I/O against that.
//
// QEMU and the server run on the CPU bench/run.mjs pins the benchmark to, so both devices get
// the same CPU budget (WASMDEV_BENCH_PIN=0 lets them spread over both CPUs).
//
// Settings: WASMDEV_NVME_BENCH_RUNTIME (seconds per job, default 5), WASMDEV_NVME_BENCH_ROUNDS
// (default 3), WASMDEV_NVME_BENCH_DISKS and WASMDEV_NVME_BENCH_JOBS (comma lists of the names
// above, for a partial run; qemu-nvme is always needed), WASMDEV_NVME_BENCH_PROFILE=DIR (a CPU
// profile of our server over each job's window, DIR/<disk>-<job>-<round>.cpuprofile; it costs
// the server CPU, so figures of such a run are not comparable), WASMDEV_BENCH_CHILD_ARGS (node
// flags for the server), WASMDEV_GUEST_CONSOLE=FILE (the last guest's console),
// WASMDEV_NVME_BENCH_COMPARE=FILE (this benchmark bundled from another commit: its server joins
// the rotation as "ours-ram-compare", and as "ours-tmpfs-compare" when ours-tmpfs runs, for a
// before/after in one run). Design variants join when WASMDEV_NVME_BENCH_DISKS names them:
// "ours-ram-nodbbuf" (no Doorbell Buffer Config offered: every doorbell is an MMIO write) and
// "ours-ram-coalesce" (the guest sets Interrupt Coalescing, THR 8 entries / TIME 100 µs).
import { fork, execFileSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, ftruncateSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createNvme, type NvmeController, type NvmeOptions } from "../src/devices/nvme/index.js";
import { VfioUserServer } from "../src/vfio-user/server/index.js";
import { bootGuest } from "../test/support/guest.js";
import { trixie, trixieSkipReason } from "../test/support/trixie.js";
import { report, result, type BenchResult } from "./lib/harness.js";

const SIZE = 1 << 30;
const SERIAL = "WASMDEV-BENCH-1";
const RUNTIME = Number(process.env.WASMDEV_NVME_BENCH_RUNTIME ?? 5);
const ROUNDS = Number(process.env.WASMDEV_NVME_BENCH_ROUNDS ?? 3);

interface Job {
  name: string;
  rw: "randread" | "randwrite" | "read";
  bs: string;
  qd: number;
  /** What the row reports. */
  unit: "IOPS" | "MB/s";
}

const ALL_JOBS: Job[] = [
  { name: "randread-4k-qd1", rw: "randread", bs: "4k", qd: 1, unit: "IOPS" },
  { name: "randread-4k-qd32", rw: "randread", bs: "4k", qd: 32, unit: "IOPS" },
  { name: "randwrite-4k-qd32", rw: "randwrite", bs: "4k", qd: 32, unit: "IOPS" },
  { name: "seqread-128k", rw: "read", bs: "128k", qd: 8, unit: "MB/s" },
];
const JOBS = process.env.WASMDEV_NVME_BENCH_JOBS ? ALL_JOBS.filter((j) => process.env.WASMDEV_NVME_BENCH_JOBS!.split(",").includes(j.name)) : ALL_JOBS;

type DiskName = "ours-ram" | "ours-tmpfs" | "qemu-nvme" | "ours-ram-compare" | "ours-tmpfs-compare" | "ours-ram-nodbbuf" | "ours-ram-coalesce";
const ALL_DISKS: DiskName[] = ["ours-ram", "qemu-nvme", "ours-tmpfs"];
/** Design variants, measured only when WASMDEV_NVME_BENCH_DISKS names them. */
const VARIANT_DISKS: DiskName[] = ["ours-ram-nodbbuf", "ours-ram-coalesce"];
/** createNvme options of a variant's server. */
const SERVER_OPTIONS: Partial<Record<DiskName, NvmeOptions>> = { "ours-ram-nodbbuf": { shadowDoorbells: false } };
/** Interrupt Coalescing the guest sets (Set Features FID 08h) before the jobs: THR 7 (8
 *  entries), TIME 1 (100 µs). */
const GUEST_SETUP: Partial<Record<DiskName, string>> = { "ours-ram-coalesce": "nvme set-feature /dev/nvme0 -f 8 -V 0x0107 >/dev/null" };
/** A build of this benchmark from another commit, whose server is then also measured (A/B). */
const COMPARE = process.env.WASMDEV_NVME_BENCH_COMPARE;

// ---------------------------------------------------------------------------------------------
// child: our controller behind a vfio-user server

interface StatsReply {
  ioCommands: number;
  interrupts: number;
  mmioDoorbells: number;
  enables: number;
}

function runServer(socketPath: string, options: NvmeOptions): void {
  const nvme: NvmeController = createNvme({ ...options, size: SIZE, lbaSize: 512, serial: SERIAL });
  const server = VfioUserServer.listen({ device: nvme.fn, socketPath });
  let profiler: Session | null = null;
  process.on("message", (m: string | { profile: string }) => {
    if (typeof m === "object") {
      // CPU profile of one job's window (WASMDEV_NVME_BENCH_PROFILE): boot and fill left out.
      if (!profiler) {
        profiler = new Session();
        profiler.connect();
        profiler.post("Profiler.enable");
        profiler.post("Profiler.setSamplingInterval", { interval: 100 });
      }
      if (m.profile === "") profiler.post("Profiler.start");
      else {
        const file = m.profile;
        profiler.post("Profiler.stop", (err, r) => {
          if (!err) writeFileSync(file, JSON.stringify(r.profile));
        });
      }
    } else if (m === "stats") {
      const s = nvme.stats;
      process.send!({ ioCommands: s.ioCommands, interrupts: s.interrupts, mmioDoorbells: s.mmioDoorbells, enables: s.enables } satisfies StatsReply);
    } else if (m === "stop") {
      void server.close().then(() => {
        nvme.backing.close();
        process.exit(0);
      });
    }
  });
  process.send!("ready");
}

// ---------------------------------------------------------------------------------------------
// parent

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** User + system CPU seconds of process `pid` (all its threads). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of proc(5), counted from the state (field 3).
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

class ServerProcess {
  private pendingStats: ((s: StatsReply) => void)[] = [];
  private constructor(readonly child: ChildProcess, readonly socketPath: string) {
    child.on("message", (m) => {
      if (typeof m === "object") this.pendingStats.shift()?.(m as unknown as StatsReply);
    });
  }

  static async start(socketPath: string, options: NvmeOptions, script = process.argv[1]!): Promise<ServerProcess> {
    const execArgv = process.env.WASMDEV_BENCH_CHILD_ARGS?.split(" ").filter(Boolean) ?? [];
    // A bundle from another commit may predate the options argument: it takes a file path or
    // nothing (and so does this one), so compare servers get that form.
    const arg = script === process.argv[1] ? [JSON.stringify(options)] : options.disk ? [options.disk] : [];
    const child = fork(script, ["--server", socketPath, ...arg], { stdio: "inherit", execArgv });
    await new Promise<void>((resolve, reject) => {
      child.once("message", () => resolve());
      child.once("exit", (code) => reject(new Error(`the NVMe server process exited with ${code}`)));
    });
    return new ServerProcess(child, socketPath);
  }

  profile(file: string): void {
    this.child.send({ profile: file });
  }

  stats(): Promise<StatsReply> {
    return new Promise((resolve) => {
      this.pendingStats.push(resolve);
      this.child.send("stats");
    });
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.send("stop");
    await exited;
  }
}

interface Sample {
  /** IOPS or MB/s, per the job's unit. */
  rate: number;
  ios: number;
  /** CPU seconds over the job: QEMU's process, our server's (0 for qemu-nvme). */
  qemuCpu: number;
  serverCpu: number;
  interrupts: number;
  mmioDoorbells: number;
  commands: number;
}

function guestScript(prefill: boolean, setup: string | undefined): string {
  const lines = [
    `i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -le 400 ] || { echo "@@error no /dev/nvme0n1"; exit 1; }; sleep 0.05; done`,
    `echo "@@sectors $(cat /sys/block/nvme0n1/size)"`,
    ...(setup ? [setup] : []),
  ];
  // The fill gives both sides written blocks to read (no holes) and allocated pages to overwrite.
  if (prefill) lines.push(`fio --name=fill --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --rw=write --bs=1M --iodepth=4 --size=100% --output=/dev/null`);
  for (const j of JOBS) {
    lines.push(
      `echo "@@start ${j.name}"`,
      `fio --name=${j.name} --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --rw=${j.rw} --bs=${j.bs} --iodepth=${j.qd} --time_based --runtime=${RUNTIME} --norandommap --randrepeat=0 --output-format=json --output=/tmp/fio.json`,
      `echo "@@end ${j.name}"`,
      `echo "@@fio-${j.name} $(tr -d '\\n' < /tmp/fio.json)"`,
    );
  }
  return lines.join("\n") + "\n";
}

const PROFILE_DIR = process.env.WASMDEV_NVME_BENCH_PROFILE;

async function bootOnce(disk: DiskName, round: number, device: string[], qemuArgs: string[], server: ServerProcess | null, prefill: boolean): Promise<Map<string, Sample>> {
  interface Mark {
    qemu: number;
    server: number;
    stats: Promise<StatsReply | null>;
  }
  const marks = new Map<string, { start?: Mark; end?: Mark }>();
  const mark = (qemuPid: number): Mark => ({
    qemu: cpuSeconds(qemuPid),
    server: server ? cpuSeconds(server.child.pid!) : 0,
    stats: server ? server.stats() : Promise.resolve(null),
  });
  const r = await bootGuest({
    devices: device,
    qemuArgs,
    script: guestScript(prefill, GUEST_SETUP[disk]),
    timeoutMs: 120_000 + JOBS.length * RUNTIME * 3000,
    onLine(line, guest) {
      const m = /^@@(start|end) (\S+)/.exec(line);
      if (!m) return;
      const entry = marks.get(m[2]!) ?? marks.set(m[2]!, {}).get(m[2]!)!;
      entry[m[1] as "start" | "end"] = mark(guest.pid);
      if (PROFILE_DIR && server) server.profile(m[1] === "start" ? "" : join(PROFILE_DIR, `${disk}-${m[2]}-${round}.cpuprofile`));
    },
  });
  if (r.status !== 0) throw new Error(`${disk}: the guest script failed (status ${r.status}); console tail:\n${r.console.slice(-3000)}`);
  const sectors = Number(r.results.get("sectors")?.[0]);
  if (sectors * 512 !== SIZE) throw new Error(`${disk}: the guest saw ${sectors} sectors, not ${SIZE / 512}`);
  const out = new Map<string, Sample>();
  for (const j of JOBS) {
    const text = r.results.get(`fio-${j.name}`)?.[0];
    const m = marks.get(j.name);
    if (!text || !m?.start || !m.end) throw new Error(`${disk}: no fio result or markers for ${j.name}; console tail:\n${r.console.slice(-3000)}`);
    const job = JSON.parse(text).jobs[0];
    if (job.error !== 0) throw new Error(`${disk}: fio ${j.name} failed with error ${job.error}`);
    const side = j.rw === "randwrite" ? job.write : job.read;
    const [s0, s1] = [await m.start.stats, await m.end.stats];
    out.set(j.name, {
      rate: j.unit === "IOPS" ? side.iops : side.bw_bytes / 1e6,
      ios: side.total_ios,
      qemuCpu: m.end.qemu - m.start.qemu,
      serverCpu: m.end.server - m.start.server,
      interrupts: s0 && s1 ? s1.interrupts - s0.interrupts : 0,
      mmioDoorbells: s0 && s1 ? s1.mmioDoorbells - s0.mmioDoorbells : 0,
      commands: s0 && s1 ? s1.ioCommands - s0.ioCommands : 0,
    });
  }
  return out;
}

async function main(): Promise<void> {
  if (!trixie) throw new Error(`the NVMe guest benchmark needs the QEMU 11.1 root: ${trixieSkipReason}`);
  if (!(Number.isInteger(RUNTIME) && RUNTIME >= 1) || !(Number.isInteger(ROUNDS) && ROUNDS >= 1)) {
    throw new Error(`WASMDEV_NVME_BENCH_RUNTIME and WASMDEV_NVME_BENCH_ROUNDS must be positive integers (got ${RUNTIME}, ${ROUNDS})`);
  }
  if (JOBS.length === 0) throw new Error(`WASMDEV_NVME_BENCH_JOBS matched none of ${ALL_JOBS.map((j) => j.name).join(", ")}`);
  const wanted = (process.env.WASMDEV_NVME_BENCH_DISKS?.split(",") ?? ALL_DISKS) as DiskName[];
  const known = [...ALL_DISKS, ...VARIANT_DISKS];
  for (const d of wanted) if (!known.includes(d)) throw new Error(`unknown disk ${d} (have ${known.join(", ")})`);
  if (COMPARE) {
    wanted.splice(1, 0, "ours-ram-compare");
    if (wanted.includes("ours-tmpfs")) wanted.push("ours-tmpfs-compare");
  }
  if (!wanted.includes("qemu-nvme")) throw new Error("the qemu-nvme baseline is required");
  if (PROFILE_DIR) mkdirSync(PROFILE_DIR, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-nvme-bench-"));
  const shm = mkdtempSync("/dev/shm/wasmdev-nvme-bench-");
  const servers: ServerProcess[] = [];
  try {
    const file = (name: string) => {
      const path = join(shm, name);
      const fd = openSync(path, "w");
      ftruncateSync(fd, SIZE);
      closeSync(fd);
      return path;
    };
    const setups = new Map<DiskName, { device: string[]; qemuArgs: string[]; server: ServerProcess | null }>();
    for (const disk of wanted) {
      if (disk === "qemu-nvme") {
        const img = file("qemu.img");
        setups.set(disk, {
          device: [`nvme,serial=${SERIAL},drive=d0`],
          qemuArgs: ["-drive", `file=${img},if=none,id=d0,format=raw,cache=writeback,aio=threads`],
          server: null,
        });
      } else {
        const tmpfs = disk === "ours-tmpfs" || disk === "ours-tmpfs-compare";
        const options: NvmeOptions = { ...SERVER_OPTIONS[disk], ...(tmpfs ? { disk: file(`${disk}.img`) } : {}) };
        const server = await ServerProcess.start(join(dir, `${disk}.sock`), options, disk.endsWith("-compare") ? COMPARE : undefined);
        servers.push(server);
        setups.set(disk, { device: [JSON.stringify({ driver: "vfio-user-pci", socket: { path: server.socketPath, type: "unix" } })], qemuArgs: [], server });
      }
    }

    const samples = new Map<DiskName, Map<string, Sample[]>>(wanted.map((d) => [d, new Map(JOBS.map((j) => [j.name, []]))]));
    const filled = new Set<DiskName>();
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? wanted : [...wanted].reverse();
      for (const disk of order) {
        const s = setups.get(disk)!;
        const got = await bootOnce(disk, round, s.device, s.qemuArgs, s.server, !filled.has(disk));
        filled.add(disk);
        const line = JOBS.map((j) => `${j.name} ${got.get(j.name)!.rate.toFixed(0)}`).join("  ");
        console.log(`round ${round} ${disk.padEnd(10)} ${line}`);
        for (const j of JOBS) samples.get(disk)!.get(j.name)!.push(got.get(j.name)!);
      }
    }

    const best = (disk: DiskName, job: string) => samples.get(disk)!.get(job)!.reduce((a, b) => (b.rate > a.rate ? b : a));
    const results: BenchResult[] = [];
    const us = (cpu: number, ios: number) => (cpu / ios) * 1e6;
    for (const j of JOBS) {
      const q = best("qemu-nvme", j.name);
      const qemuPerIo = us(q.qemuCpu, q.ios);
      for (const disk of wanted) {
        if (disk === "qemu-nvme") continue;
        const o = best(disk, j.name);
        const rates = (d: DiskName) => samples.get(d)!.get(j.name)!.map((run) => run.rate);
        results.push(result(`${j.name}/${disk}-vs-qemu-nvme`, o.rate, j.unit, q.rate, { samples: { value: rates(disk), baseline: rates("qemu-nvme") } }));
        results.push(result(`${j.name}/${disk}/server-cpu-per-io-vs-qemu-nvme-process`, us(o.serverCpu, o.ios), "us", qemuPerIo));
        results.push(result(`${j.name}/${disk}/qemu-plus-server-cpu-per-io-vs-qemu-nvme-process`, us(o.serverCpu + o.qemuCpu, o.ios), "us", qemuPerIo));
        console.log(
          `${j.name} ${disk}: ${(o.interrupts / o.commands).toFixed(3)} interrupts and ${(o.mmioDoorbells / o.commands).toFixed(3)} MMIO doorbells per command; ` +
            `server CPU ${(o.serverCpu * 100 / RUNTIME).toFixed(0)}% of the job's time`,
        );
      }
    }
    report("nvme-guest", results, {
      title: "A Linux guest's fio (TCG) on our NVMe controller over vfio-user: IOPS or MB/s (best run), host CPU per I/O",
      baseline: "QEMU's own in-process NVMe device on a tmpfs file, same guest and jobs, boots alternating",
    });
  } finally {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--server") {
  const arg = process.argv[4];
  runServer(process.argv[3]!, arg === undefined ? {} : arg.startsWith("{") ? (JSON.parse(arg) as NvmeOptions) : { disk: arg });
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
