// Runs the benchmarks: each bench/<name>.bench.ts is bundled with esbuild and run in its own
// Node process (a fresh JIT and heap per benchmark), then the report page is written.
//
//   npm run bench [-- NAME...]           results in build/bench-results/ (not tracked)
//   npm run bench -- --record [NAME...]  results in bench/results/ (the recorded figures)
//   npm run bench -- --out DIR           results in DIR
//
// Progress (each benchmark as it starts and ends, each row as it is measured) goes to stderr;
// the tables go to stdout.
import { build } from "esbuild";
import { readdirSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { benchFileProblem } from "./lib/results.mjs";
import { writeReport } from "./lib/report-page.mjs";

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = dirname(benchDir);
const bundleDir = join(root, "build", "bench");
const scratchResults = join(root, "build", "bench-results");

const wanted = [];
let outDir = scratchResults;
let recording = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--record") {
    recording = true;
    outDir = join(benchDir, "results");
  } else if (argv[i] === "--out") {
    if (!argv[i + 1]) {
      console.error("--out needs a folder");
      process.exit(2);
    }
    outDir = resolve(argv[++i]);
  } else if (argv[i].startsWith("-")) {
    console.error(`unknown option ${argv[i]} (options: --record, --out DIR)`);
    process.exit(2);
  } else {
    wanted.push(argv[i]);
  }
}
mkdirSync(bundleDir, { recursive: true });
mkdirSync(outDir, { recursive: true });

const benches = readdirSync(benchDir)
  .filter((f) => f.endsWith(".bench.ts"))
  .map((f) => f.slice(0, -".bench.ts".length))
  .filter((name) => wanted.length === 0 || wanted.includes(name))
  .sort();

const unknown = wanted.filter((w) => !benches.includes(w));
if (benches.length === 0 || unknown.length) {
  console.error(`no benchmark named ${unknown.join(", ") || "(none exist)"}`);
  process.exit(1);
}

/** Why <out>/<name>.json is not a valid results file written by this run, or null. */
function resultsProblem(name, startedMs) {
  const file = join(outDir, `${name}.json`);
  try {
    if (statSync(file).mtimeMs < startedMs) return `${file} was not rewritten by this run`;
    const problem = benchFileProblem(JSON.parse(readFileSync(file, "utf8")));
    return problem && `${file}: ${problem}`;
  } catch (e) {
    return `${file}: ${e.message}`;
  }
}

// Every benchmark (and the peer processes it starts) runs on one CPU by default: a wake-up
// across CPUs costs ~30 µs here and the scheduler's choice flips from run to run, which made
// socket round trips bimodal. WASMDEV_BENCH_PIN=0 lets the scheduler decide; benchmarks that
// measure both placements (mpqemu) set their own affinity per row.
const PIN_CPU = "0";
const pin = process.env.WASMDEV_BENCH_PIN !== "0" && spawnSync("taskset", ["-c", PIN_CPU, "true"]).status === 0;
console.error(pin ? `benchmarks pinned to CPU ${PIN_CPU} (WASMDEV_BENCH_PIN=0 to unpin)` : "benchmarks not pinned");
console.error(`results go to ${outDir}${recording ? " (recording)" : ""}`);
const env = { ...process.env, WASMDEV_BENCH_OUT: outDir, WASMDEV_BENCH_PINNED_CPU: pin ? PIN_CPU : "" };

let failed = 0;
for (const [i, name] of benches.entries()) {
  const outfile = join(bundleDir, `${name}.mjs`);
  await build({
    entryPoints: [join(benchDir, `${name}.bench.ts`)],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: ["usocket"],
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    logLevel: "warning",
  });
  console.error(`[${i + 1}/${benches.length}] ${name}: running`);
  console.log(`\n=== ${name} ===`);
  const t0 = Date.now();
  // File times have coarser resolution than Date.now on some filesystems: allow 1 s of slack.
  const started = t0 - 1000;
  const command = [process.execPath, "--expose-gc", outfile];
  const r = spawnSync(pin ? "taskset" : command[0], pin ? ["-c", PIN_CPU, ...command] : command.slice(1), { stdio: "inherit", cwd: root, env });
  console.error(`[${i + 1}/${benches.length}] ${name}: ${r.status === 0 ? "done" : "failed"} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (r.status !== 0) {
    console.error(`benchmark ${name} failed (exit ${r.status})`);
    failed++;
    continue;
  }
  const problem = resultsProblem(name, started);
  if (problem) {
    console.error(`benchmark ${name}: ${problem}`);
    failed++;
  }
}

// The report page charts what the results folder holds (earlier runs' files included: each
// table shows its own date and commit). Recorded results get their page in the scratch folder.
const page = join(recording ? scratchResults : outDir, "report.html");
mkdirSync(dirname(page), { recursive: true });
try {
  writeReport(outDir, page);
  console.error(`report: ${page}`);
} catch (e) {
  console.error(`report not written: ${e.message}`);
  failed++;
}
process.exit(failed ? 1 : 0);
