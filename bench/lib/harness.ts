// Shared benchmark helpers: timing loops, percentiles, a printed table, and the results file
// (one per benchmark, see BenchFile): rows of { name, value, unit, baseline, ratio, better,
// spread? } with ratio = value / baseline, the table's legend, and the run's metadata.
//
// Where files go: bench/run.mjs sets WASMDEV_BENCH_OUT (build/bench-results by default,
// bench/results with --record); a benchmark run by hand writes to build/bench-results.
import { writeFileSync, mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { cpus, release } from "node:os";
import { join } from "node:path";

/** Which way is good for a row's figures: times are lower-is-better, rates higher-is-better. */
export type Better = "lower" | "higher";

/** The spread of one side's samples (as measured, in the row's unit). */
export interface Spread {
  samples: number;
  min: number;
  median: number;
  p99: number;
}

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  ratio: number;
  better: Better;
  /** Present when the benchmark kept its samples (value and baseline sides). */
  spread?: { value: Spread; baseline: Spread };
}

/** What a table compares: shown above it in the printed output and in the report page. */
export interface Legend {
  /** One line: what the benchmark measures. */
  title: string;
  /** What the baseline of every row is (a row name's "x-vs-y" says it too). */
  baseline: string;
}

export interface BenchMeta {
  date: string;
  node: string;
  v8: string;
  platform: string;
  cpu: string;
  cpus: number;
  /** The CPU the run was pinned to, or null when the scheduler chose. */
  pinnedCpu: string | null;
  commit: string | null;
  /** The work tree had changes not in `commit`. */
  dirty: boolean;
}

/** bench results file: <out>/<bench>.json. */
export interface BenchFile {
  bench: string;
  legend: Legend;
  meta: BenchMeta;
  rows: BenchResult[];
}

/** Nanoseconds per iteration of `fn(iterations)`, best of `rounds` after a warm-up round. */
export function nsPerOp(fn: (iterations: number) => void, iterations: number, rounds = 5): number {
  fn(Math.max(1, iterations >> 2));
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    fn(iterations);
    const t1 = process.hrtime.bigint();
    best = Math.min(best, Number(t1 - t0) / iterations);
  }
  return best;
}

/** Median and p99 of a list of samples (sorted copy). */
export function percentiles(samples: number[]): { median: number; p99: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { median: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

/** Count, min, median and p99 of samples in a row's unit. */
export function spreadOf(samples: readonly number[]): Spread {
  if (samples.length === 0 || !samples.every(Number.isFinite)) throw new Error("a spread needs finite samples");
  const p = percentiles([...samples]);
  return { samples: samples.length, min: Math.min(...samples), median: p.median, p99: p.p99 };
}

const LOWER_UNITS = /^(ns|us|ms|s)(\/.+)?$/;
const HIGHER_UNITS = /\/s$|^IOPS$/;

/** Lower-is-better for times (ns, us, ns/op, …), higher for rates (…/s, IOPS); others must say. */
export function betterFor(unit: string): Better | null {
  if (HIGHER_UNITS.test(unit)) return "higher";
  if (LOWER_UNITS.test(unit)) return "lower";
  return null;
}

export interface ResultOptions {
  /** Needed when the unit is neither a time nor a rate. */
  better?: Better;
  /** The samples behind value and baseline (each in the row's unit), for the spread columns. */
  samples?: { value: readonly number[]; baseline: readonly number[] };
}

/**
 * One row: `value` and `baseline` in the same `unit`, both measured in this run; ratio =
 * value / baseline. Refuses a row that could not mean anything (a NaN or infinite figure, a
 * zero or negative baseline, a unit whose good direction is unknown), so a broken measurement
 * fails the benchmark instead of landing in the results file. Prints the row to stderr as it
 * is made, which is the run's progress.
 */
export function result(name: string, value: number, unit: string, baseline: number, options: ResultOptions = {}): BenchResult {
  if (!name || !unit) throw new Error(`benchmark row needs a name and a unit (got ${JSON.stringify({ name, unit })})`);
  if (!Number.isFinite(value)) throw new Error(`${name}: value ${value} is not a finite number`);
  if (!Number.isFinite(baseline) || baseline <= 0) throw new Error(`${name}: baseline ${baseline} is not a positive finite number`);
  const better = options.better ?? betterFor(unit);
  if (better === null) throw new Error(`${name}: say whether lower or higher is better for unit ${unit}`);
  const row: BenchResult = { name, value, unit, baseline, ratio: value / baseline, better };
  if (options.samples) row.spread = { value: spreadOf(options.samples.value), baseline: spreadOf(options.samples.baseline) };
  process.stderr.write(`  measured ${name}: ${fmt(value)} ${unit} (${row.ratio.toFixed(3)}x the baseline)\n`);
  return row;
}

function git(args: string[]): string | null {
  try {
    return execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

/** Where and on what this run happened. */
export function benchMeta(): BenchMeta {
  const commit = git(["rev-parse", "HEAD"]);
  return {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${process.platform}-${process.arch} ${release()}`,
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    cpus: cpus().length,
    pinnedCpu: process.env.WASMDEV_BENCH_PINNED_CPU || null,
    commit,
    dirty: commit !== null && git(["status", "--porcelain", "--untracked-files=no"]) !== "",
  };
}

/** The folder results go to (see the top of this file). */
export function outputDir(): string {
  return process.env.WASMDEV_BENCH_OUT ?? join(process.cwd(), "build", "bench-results");
}

/** Prints the legend and the table, and writes <out>/<file>.json. */
export function report(file: string, results: BenchResult[], legend: Legend): void {
  // Benchmarks are bundled without type checks: say what is missing instead of a TypeError.
  if (typeof legend?.title !== "string" || typeof legend?.baseline !== "string") {
    throw new Error(`${file}: report() needs a legend { title, baseline } saying what the table compares`);
  }
  const seen = new Set<string>();
  for (const r of results) {
    if (seen.has(r.name)) throw new Error(`${file}: two rows are named ${r.name}`);
    seen.add(r.name);
  }
  const spread = (s: Spread | undefined) => (s ? `${fmt(s.min)}/${fmt(s.median)}/${fmt(s.p99)} (${s.samples})` : "-");
  const rows = results.map((r) => [
    r.name, fmt(r.value), fmt(r.baseline), r.unit, r.ratio.toFixed(3), r.better,
    spread(r.spread?.value), spread(r.spread?.baseline),
  ]);
  const head = ["name", "value", "baseline", "unit", "ratio", "better", "value min/med/p99 (n)", "baseline min/med/p99 (n)"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(legend.title);
  console.log(`baseline: ${legend.baseline}; ratio = value / baseline, "better" says which way is good`);
  console.log(line(head));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) console.log(line(row));
  const out: BenchFile = { bench: file, legend, meta: benchMeta(), rows: results };
  const dir = outputDir();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${file}.json`), JSON.stringify(out, null, 2) + "\n");
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}
