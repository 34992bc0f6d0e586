// Reading and checking benchmark results files (the format bench/lib/harness.ts writes), for
// bench/run.mjs and the report page. Plain JavaScript: both run without a bundling step.
import { readFileSync, readdirSync } from "node:fs";
import { basename, join } from "node:path";

const ROW_KEYS = ["baseline", "better", "name", "ratio", "unit", "value"];
const LEGACY_ROW_KEYS = ["baseline", "name", "ratio", "unit", "value"];

function spreadProblem(s) {
  if (typeof s !== "object" || s === null) return "is not an object";
  if (!Number.isInteger(s.samples) || s.samples < 1) return "has no sample count";
  if (![s.min, s.median, s.p99].every(Number.isFinite)) return "has a non-finite figure";
  if (!(s.min <= s.median && s.median <= s.p99)) return "is not ordered min <= median <= p99";
  return null;
}

/**
 * Why `rows` are not valid result rows, or null: unique names, finite figures, a positive
 * baseline, ratio = value / baseline, a direction, a consistent spread when there is one.
 * `legacy` rows (files written before legends and spreads) have no `better` field.
 */
export function rowsProblem(rows, legacy = false) {
  if (!Array.isArray(rows)) return "rows are not an array";
  const names = new Set();
  for (const row of rows) {
    const keys = Object.keys(row ?? {}).filter((k) => k !== "spread").sort().join(",");
    if (keys !== (legacy ? LEGACY_ROW_KEYS : ROW_KEYS).join(",")) return `a row has keys ${keys}`;
    if (typeof row.name !== "string" || !row.name || typeof row.unit !== "string" || !row.unit) return "a row lacks a name or unit";
    if (names.has(row.name)) return `duplicate row ${row.name}`;
    names.add(row.name);
    if (![row.value, row.baseline, row.ratio].every(Number.isFinite) || row.baseline <= 0) return `${row.name} has a non-finite figure or a non-positive baseline`;
    if (Math.abs(row.ratio - row.value / row.baseline) > 1e-9 * Math.max(1, Math.abs(row.ratio))) return `${row.name}: ratio is not value / baseline`;
    if (!legacy && row.better !== "lower" && row.better !== "higher") return `${row.name}: better is neither "lower" nor "higher"`;
    if (row.spread !== undefined) {
      for (const side of ["value", "baseline"]) {
        const p = spreadProblem(row.spread?.[side]);
        if (p) return `${row.name}: the ${side} spread ${p}`;
      }
    }
  }
  return null;
}

/** Why `file` (parsed JSON) is not a results file, or null. */
export function benchFileProblem(file) {
  if (typeof file !== "object" || file === null || Array.isArray(file)) return "not a results object";
  if (typeof file.bench !== "string" || !file.bench) return "no bench name";
  if (typeof file.legend?.title !== "string" || typeof file.legend?.baseline !== "string") return "no legend (title, baseline)";
  const m = file.meta;
  if (typeof m !== "object" || m === null) return "no meta";
  for (const k of ["date", "node", "cpu", "platform"]) if (typeof m[k] !== "string" || !m[k]) return `meta.${k} is missing`;
  if (!Number.isInteger(m.cpus)) return "meta.cpus is missing";
  if (!(m.commit === null || /^[0-9a-f]{40}$/.test(m.commit))) return "meta.commit is not a commit id";
  return rowsProblem(file.rows);
}

/** Lower-is-better for times, higher for rates: the direction a legacy row did not record. */
function legacyBetter(unit) {
  return /\/s$|^IOPS$/.test(unit) ? "higher" : "lower";
}

/**
 * Every <name>.json in `dir`, checked, sorted by name. A legacy file (a bare array of rows, as
 * written before legends and metadata existed) is read with legend and meta set to null.
 * Throws with the file's name on anything else.
 */
export function loadResults(dir) {
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  return files.map((f) => {
    const path = join(dir, f);
    let parsed;
    try {
      parsed = JSON.parse(readFileSync(path, "utf8"));
    } catch (e) {
      throw new Error(`${path}: ${e.message}`);
    }
    if (Array.isArray(parsed)) {
      const problem = rowsProblem(parsed, true);
      if (problem) throw new Error(`${path}: ${problem}`);
      return { bench: basename(f, ".json"), legend: null, meta: null, rows: parsed.map((r) => ({ ...r, better: legacyBetter(r.unit) })) };
    }
    const problem = benchFileProblem(parsed);
    if (problem) throw new Error(`${path}: ${problem}`);
    return parsed;
  });
}
