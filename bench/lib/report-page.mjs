// The benchmark report page: one self-contained HTML file (no scripts, no external assets)
// with, per benchmark, its legend, the run's metadata, the ratios charted as hand-written SVG
// bars on a log scale around 1x, and the full figures with their spread.
//
//   node bench/lib/report-page.mjs [RESULTS_DIR] [OUT_HTML]
//       defaults: build/bench-results and RESULTS_DIR/report.html
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadResults } from "./results.mjs";

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

/** "better", "worse" or "same" than the baseline, by the row's direction. */
export function verdict(row) {
  if (row.ratio === 1) return "same";
  return (row.ratio < 1) === (row.better === "lower") ? "better" : "worse";
}

const LABEL_W = 380;
const PLOT_W = 440;
const RATIO_W = 70;
const ROW_H = 22;
const BAR_H = 14;
const AXIS_H = 24;

/** The chart of one benchmark's ratios: log2 scale, 1x in the middle, symmetric domain. */
function chart(bench, rows) {
  const span = Math.max(1, Math.ceil(Math.max(...rows.map((r) => Math.abs(Math.log2(r.ratio))))));
  const x = (ratio) => LABEL_W + PLOT_W / 2 + (Math.log2(ratio) / span) * (PLOT_W / 2);
  const height = AXIS_H + rows.length * ROW_H + 4;
  const width = LABEL_W + PLOT_W + RATIO_W;
  const ticks = [];
  for (let e = -span; e <= span; e++) {
    const tx = x(2 ** e);
    const label = e >= 0 ? `${2 ** e}×` : `1/${2 ** -e}×`;
    ticks.push(`<line class="tick" x1="${tx}" x2="${tx}" y1="${AXIS_H - 4}" y2="${height}"/><text class="tick-label" x="${tx}" y="${AXIS_H - 8}" text-anchor="middle">${label}</text>`);
  }
  const bars = rows.map((r, i) => {
    const y = AXIS_H + i * ROW_H;
    const x0 = Math.min(x(1), x(r.ratio));
    const w = Math.max(1, Math.abs(x(r.ratio) - x(1)));
    const v = verdict(r);
    return `<g class="row ${v}" data-name="${esc(r.name)}" data-ratio="${r.ratio}" data-verdict="${v}">` +
      `<title>${esc(r.name)}: ${fmt(r.value)} ${esc(r.unit)} vs ${fmt(r.baseline)} ${esc(r.unit)} (${r.better} is better)</title>` +
      `<text class="label" x="${LABEL_W - 8}" y="${y + BAR_H - 2}" text-anchor="end">${esc(r.name)}</text>` +
      `<rect class="bar" x="${x0}" y="${y}" width="${w}" height="${BAR_H}"/>` +
      `<text class="ratio" x="${LABEL_W + PLOT_W + 6}" y="${y + BAR_H - 2}">${r.ratio.toFixed(2)}×</text></g>`;
  });
  return `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(bench)}: ratio of each row to its baseline">` +
    ticks.join("") + `<line class="axis" x1="${x(1)}" x2="${x(1)}" y1="${AXIS_H - 4}" y2="${height}"/>` + bars.join("") + "</svg>";
}

function spreadCell(s) {
  return s ? `${fmt(s.min)} / ${fmt(s.median)} / ${fmt(s.p99)} <span class="n">(${s.samples})</span>` : "—";
}

function metaLine(meta) {
  if (!meta) return `<p class="meta">Recorded before runs kept their metadata.</p>`;
  const pin = meta.pinnedCpu === null ? "not pinned" : `pinned to CPU ${esc(meta.pinnedCpu)}`;
  const commit = meta.commit === null ? "no commit" : `commit <code>${esc(meta.commit.slice(0, 12))}</code>${meta.dirty ? " with local changes" : ""}`;
  return `<p class="meta">Node ${esc(meta.node)} · ${esc(meta.cpu)} (${meta.cpus} CPUs, ${pin}) · ${esc(meta.platform)} · ${commit} · ${esc(meta.date)}</p>`;
}

function section(file) {
  const legend = file.legend
    ? `<p class="title">${esc(file.legend.title)}</p><p class="legend"><strong>Baseline:</strong> ${esc(file.legend.baseline)}</p>`
    : `<p class="legend">No legend was recorded with these results.</p>`;
  const rows = file.rows.map((r) => `<tr data-name="${esc(r.name)}"><td>${esc(r.name)}</td><td class="num">${fmt(r.value)}</td><td class="num">${fmt(r.baseline)}</td><td>${esc(r.unit)}</td>` +
    `<td class="num ${verdict(r)}">${r.ratio.toFixed(3)}</td><td>${r.better}</td><td class="num">${spreadCell(r.spread?.value)}</td><td class="num">${spreadCell(r.spread?.baseline)}</td></tr>`);
  const body = file.rows.length === 0
    ? `<p class="empty">No rows: the benchmark had nothing to measure on that machine.</p>`
    : chart(file.bench, file.rows) +
      `<table><thead><tr><th>row</th><th>value</th><th>baseline</th><th>unit</th><th>ratio</th><th>better</th><th>value min / median / p99 (samples)</th><th>baseline min / median / p99 (samples)</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  return `<section class="bench" id="bench-${esc(file.bench)}" data-bench="${esc(file.bench)}"><h2>${esc(file.bench)}</h2>${legend}${metaLine(file.meta)}${body}</section>`;
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #1b1b1b; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.title { font-weight: 600; margin: .3em 0; } .legend, .meta { margin: .2em 0; } .meta { color: #555; font-size: .9em; }
.howto { background: #f6f6f6; padding: .6em 1em; border-radius: 4px; }
svg.chart { display: block; margin: 1em 0; font-size: 12px; }
.tick { stroke: #e4e4e4; } .axis { stroke: #333; stroke-width: 1.5; } .tick-label { fill: #666; }
.row.better .bar { fill: #2e7d32; } .row.worse .bar { fill: #e65100; } .row.same .bar { fill: #777; }
.label { fill: #1b1b1b; } .ratio { fill: #333; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; font-size: .85em; } th, td { padding: .2em .6em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td.better { color: #2e7d32; } td.worse { color: #e65100; } .n { color: #777; }
nav a { margin-right: 1em; }`;

/** The whole page for the given results files (as loadResults returns them). */
export function renderReport(files) {
  const nav = files.map((f) => `<a href="#bench-${esc(f.bench)}">${esc(f.bench)}</a>`).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wasmdev benchmarks</title><style>${STYLE}</style></head>
<body><h1>wasmdev benchmarks</h1>
<p class="howto">Every row compares a measurement with a <strong>baseline measured in the same run</strong>
(each table says what its baseline is). The bar is the ratio value / baseline on a logarithmic scale
centred on 1×: a bar to the right means the value is larger than the baseline. Green means better
than the baseline and orange worse, by the row's direction (lower is better for times, higher for
rates). Figures from different runs or machines are not comparable; ratios from one run are.</p>
<nav>${nav}</nav>
${files.map(section).join("\n")}
</body></html>
`;
}

/** Writes the report for the results in `dir` to `out`; returns the number of tables. */
export function writeReport(dir, out = join(dir, "report.html")) {
  const files = loadResults(dir);
  writeFileSync(out, renderReport(files));
  return files.length;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = resolve(process.argv[2] ?? "build/bench-results");
  const out = resolve(process.argv[3] ?? join(dir, "report.html"));
  const n = writeReport(dir, out);
  console.log(`wrote ${out} (${n} benchmark${n === 1 ? "" : "s"})`);
}
