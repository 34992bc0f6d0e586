// The benchmark results format: what bench/lib/harness.ts writes is what bench/run.mjs and the
// report page accept, and the checks refuse rows that could not mean anything.
import { afterEach, describe, expect, it, vi } from "vitest";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { betterFor, outputDir, report, result } from "../../bench/lib/harness.js";
// @ts-expect-error: plain JavaScript module without declarations
import { benchFileProblem, loadResults } from "../../bench/lib/results.mjs";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "results");
const demo = () => JSON.parse(readFileSync(join(fixtures, "demo.json"), "utf8"));

describe("benchmark rows", () => {
  it("know which way is better from the unit, and refuse units they cannot tell", () => {
    expect(["us", "ns/op", "ns/4KiB", "ns/lookup"].map(betterFor)).toEqual(["lower", "lower", "lower", "lower"]);
    expect(["MB/s", "ops/s", "M msg/s", "writes/s"].map(betterFor)).toEqual(["higher", "higher", "higher", "higher"]);
    const quiet = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      expect(() => result("odd", 1, "widgets", 2)).toThrow(/lower or higher/);
      expect(result("odd", 1, "widgets", 2, { better: "higher" }).better).toBe("higher");
      const row = result("lat", 3, "us", 2, { samples: { value: [3, 5, 4], baseline: [2, 2, 9] } });
      expect(row).toEqual({
        name: "lat", value: 3, unit: "us", baseline: 2, ratio: 1.5, better: "lower",
        spread: { value: { samples: 3, min: 3, median: 4, p99: 5 }, baseline: { samples: 3, min: 2, median: 2, p99: 9 } },
      });
      expect(() => result("nan", Number.NaN, "us", 1)).toThrow(/not a finite/);
    } finally {
      quiet.mockRestore();
    }
  });
});

describe("results files", () => {
  const dirs: string[] = [];
  afterEach(() => {
    delete process.env.WASMDEV_BENCH_OUT;
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("go to build/bench-results unless bench/run.mjs says otherwise", () => {
    delete process.env.WASMDEV_BENCH_OUT;
    expect(outputDir()).toBe(join(process.cwd(), "build", "bench-results"));
  });

  it("are written with legend and metadata, and pass the checks run.mjs applies", () => {
    const out = mkdtempSync(join(tmpdir(), "wasmdev-bench-out-"));
    dirs.push(out);
    process.env.WASMDEV_BENCH_OUT = out;
    const print = vi.spyOn(console, "log").mockImplementation(() => {});
    const quiet = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      report("unit", [result("a/vs-b", 2, "us", 4, { samples: { value: [2, 3], baseline: [4, 4] } })], { title: "T", baseline: "B" });
    } finally {
      print.mockRestore();
      quiet.mockRestore();
    }
    expect(readdirSync(out)).toEqual(["unit.json"]);
    const file = JSON.parse(readFileSync(join(out, "unit.json"), "utf8"));
    expect(benchFileProblem(file)).toBeNull();
    expect(file.meta.node).toBe(process.version);
    expect(file.meta.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(Date.parse(file.meta.date)).toBeGreaterThan(Date.parse("2026-01-01"));
    expect(file.legend).toEqual({ title: "T", baseline: "B" });
  });

  it("are refused when a figure, the legend, the metadata or a spread is wrong", () => {
    expect(benchFileProblem(demo())).toBeNull();
    const broken: [string, (f: any) => void, RegExp][] = [
      ["ratio", (f) => (f.rows[0].ratio = 3), /ratio is not value \/ baseline/],
      ["direction", (f) => (f.rows[1].better = "up"), /better is neither/],
      ["legend", (f) => delete f.legend, /no legend/],
      ["meta", (f) => delete f.meta.cpu, /meta.cpu/],
      ["commit", (f) => (f.meta.commit = "abc"), /commit id/],
      ["spread order", (f) => (f.rows[0].spread.value.min = 99), /not ordered/],
      ["duplicate", (f) => f.rows.push({ ...f.rows[1] }), /duplicate row/],
      ["baseline", (f) => ((f.rows[2].baseline = 0), (f.rows[2].ratio = Infinity)), /non-positive baseline/],
    ];
    for (const [what, breakIt, message] of broken) {
      const f = demo();
      breakIt(f);
      expect(benchFileProblem(f), what).toMatch(message);
    }
  });

  it("load with legacy arrays (recorded before legends) marked as such", () => {
    const files = loadResults(fixtures);
    expect(files.map((f: { bench: string }) => f.bench)).toEqual(["demo", "old"]);
    expect(files[1]).toMatchObject({ legend: null, meta: null, rows: [{ name: "copy/recorded-before-legends", better: "higher" }] });
  });
});
