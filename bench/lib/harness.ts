// Shared benchmark helpers: timing loops, percentiles, a printed table, and the results file
// format of bench/results/*.json: [{ name, value, unit, baseline, ratio }], ratio = value / baseline.
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  ratio: number;
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

/**
 * One row: `value` and `baseline` in the same `unit`, both measured in this run; ratio =
 * value / baseline (for a time unit lower is better, for a rate higher is better). Refuses a
 * row that could not mean anything (a NaN or infinite figure, a zero or negative baseline),
 * so a broken measurement fails the benchmark instead of landing in the results file.
 */
export function result(name: string, value: number, unit: string, baseline: number): BenchResult {
  if (!name || !unit) throw new Error(`benchmark row needs a name and a unit (got ${JSON.stringify({ name, unit })})`);
  if (!Number.isFinite(value)) throw new Error(`${name}: value ${value} is not a finite number`);
  if (!Number.isFinite(baseline) || baseline <= 0) throw new Error(`${name}: baseline ${baseline} is not a positive finite number`);
  return { name, value, unit, baseline, ratio: value / baseline };
}

/** Prints a table and writes bench/results/<file>.json. */
export function report(file: string, results: BenchResult[]): void {
  const seen = new Set<string>();
  for (const r of results) {
    if (seen.has(r.name)) throw new Error(`${file}: two rows are named ${r.name}`);
    seen.add(r.name);
  }
  const rows = results.map((r) => [r.name, fmt(r.value), r.unit, fmt(r.baseline), r.ratio.toFixed(3)]);
  const head = ["name", "value", "unit", "baseline", "ratio"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(head));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) console.log(line(row));
  // bench/run.mjs runs every benchmark with the repository root as its working directory.
  const target = join(process.cwd(), "bench", "results");
  mkdirSync(target, { recursive: true });
  writeFileSync(join(target, `${file}.json`), JSON.stringify(results, null, 2) + "\n");
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}
