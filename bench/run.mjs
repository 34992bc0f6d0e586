// Runs the benchmarks: each bench/<name>.bench.ts is bundled with esbuild and run in its own
// Node process (a fresh JIT and heap per benchmark). `npm run bench -- iommu transport` runs
// only the named ones.
import { build } from "esbuild";
import { readdirSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = dirname(benchDir);
const outDir = join(root, "build", "bench");
mkdirSync(outDir, { recursive: true });
mkdirSync(join(benchDir, "results"), { recursive: true });

const wanted = process.argv.slice(2);
const benches = readdirSync(benchDir)
  .filter((f) => f.endsWith(".bench.ts"))
  .map((f) => f.slice(0, -".bench.ts".length))
  .filter((name) => wanted.length === 0 || wanted.includes(name))
  .sort();

if (benches.length === 0) {
  console.error(`no benchmarks matched ${wanted.join(", ") || "(none exist)"}`);
  process.exit(1);
}

/**
 * Why bench/results/<name>.json is not a valid results file written by this run, or null:
 * a JSON array of { name, value, unit, baseline, ratio } with unique names, finite figures, a
 * positive baseline and ratio = value / baseline.
 */
function resultsProblem(name, startedMs) {
  const file = join(benchDir, "results", `${name}.json`);
  let rows;
  try {
    if (statSync(file).mtimeMs < startedMs) return `${file} was not rewritten by this run`;
    rows = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    return `${file}: ${e.message}`;
  }
  if (!Array.isArray(rows)) return `${file} is not a JSON array`;
  const names = new Set();
  for (const row of rows) {
    const keys = Object.keys(row ?? {}).sort().join(",");
    if (keys !== "baseline,name,ratio,unit,value") return `${file}: a row has keys ${keys}`;
    if (typeof row.name !== "string" || !row.name || typeof row.unit !== "string" || !row.unit) return `${file}: a row lacks a name or unit`;
    if (names.has(row.name)) return `${file}: duplicate row ${row.name}`;
    names.add(row.name);
    if (![row.value, row.baseline, row.ratio].every(Number.isFinite) || row.baseline <= 0) return `${file}: ${row.name} has a non-finite figure or a non-positive baseline`;
    if (Math.abs(row.ratio - row.value / row.baseline) > 1e-9 * Math.max(1, Math.abs(row.ratio))) return `${file}: ${row.name}: ratio is not value / baseline`;
  }
  return null;
}

// Every benchmark (and the peer processes it starts) runs on one CPU by default: a wake-up
// across CPUs costs ~30 µs here and the scheduler's choice flips from run to run, which made
// socket round trips bimodal. WASMDEV_BENCH_PIN=0 lets the scheduler decide; benchmarks that
// measure both placements (mpqemu) set their own affinity per row.
const PIN_CPU = "0";
const pin = process.env.WASMDEV_BENCH_PIN !== "0" && spawnSync("taskset", ["-c", PIN_CPU, "true"]).status === 0;
console.log(pin ? `benchmarks pinned to CPU ${PIN_CPU} (WASMDEV_BENCH_PIN=0 to unpin)` : "benchmarks not pinned");

let failed = 0;
for (const name of benches) {
  const outfile = join(outDir, `${name}.mjs`);
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
  console.log(`\n=== ${name} ===`);
  // File times have coarser resolution than Date.now on some filesystems: allow 1 s of slack.
  const started = Date.now() - 1000;
  const argv = [process.execPath, "--expose-gc", outfile];
  const r = spawnSync(pin ? "taskset" : argv[0], pin ? ["-c", PIN_CPU, ...argv] : argv.slice(1), { stdio: "inherit", cwd: root });
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
process.exit(failed ? 1 : 0);
