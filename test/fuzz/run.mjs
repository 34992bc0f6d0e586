#!/usr/bin/env node
// Coverage-guided fuzzing of the targets in test/fuzz/targets/ with jazzer.js (libFuzzer for
// Node), each for FUZZ_SECONDS (default 180).
//
//   npm run fuzz                               every target, FUZZ_SECONDS each
//   FUZZ_SECONDS=600 npm run fuzz -- nvme      one target for ten minutes
//   node test/fuzz/run.mjs --json              prints the figures as JSON as the last line
//
// Route: jazzer.js 4.0.0's prebuilt engine needs glibc 2.38; Debian 12 has 2.36. So the
// targets run under the Node of the Debian 13 root (test/peers/provision-trixie-root.sh) with
// this tree bind-mounted in it (test/fuzz/in-root.sh). jazzer lives in test/fuzz/node_modules
// (its own package.json and lockfile), not among the package's dependencies. Each target is
// bundled with esbuild to one CommonJS file under build/fuzz/ (jazzer instruments it as it is
// loaded; the wasm core itself is not instrumented, its host side is).
//
// Corpora: the seeds in test/fuzz/corpus/<target>/ (committed, see seeds.ts) are read; what
// the engine finds goes to build/fuzz/corpus/<target>/ (kept between runs). A crash is written
// to build/fuzz/crashes/<target>/ and the run fails; copy it to test/fuzz/regressions/<target>/
// so test/fuzz/regressions.test.ts replays it in every `npm test`.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tree = join(here, "..", "..");
const rel = (p) => relative(tree, p);

/** Targets and whether their fuzz function returns a promise (async targets cannot use --sync). */
export const TARGETS = {
  "vfio-user-parser": { sync: true },
  "mpqemu-parser": { sync: true },
  "vfio-user-session": { sync: false },
  "mpqemu-remote": { sync: false },
  "memory-core": { sync: true },
  nvme: { sync: false },
};

export function ensureEngine() {
  if (existsSync(join(here, "node_modules", "@jazzer.js", "core", "package.json"))) return;
  console.error("fuzz: installing jazzer.js into test/fuzz/node_modules (its own lockfile)");
  execFileSync("npm", ["ci", "--prefix", here, "--no-audit", "--no-fund", "--loglevel=error"], { stdio: "inherit" });
}

/** Bundles every target (and the seed builder) into build/fuzz/*.cjs with the host's esbuild. */
export function bundle(names, { seeds = false } = {}) {
  const out = join(tree, "build", "fuzz");
  mkdirSync(out, { recursive: true });
  const entries = names.map((n) => join(here, "targets", `${n}.ts`));
  if (seeds) entries.push(join(here, "seeds.ts"));
  execFileSync(
    join(tree, "node_modules", ".bin", "esbuild"),
    [
      ...entries.map(rel),
      "--bundle", "--platform=node", "--format=cjs", "--target=node20", "--log-level=warning",
      `--outdir=${rel(out)}`, "--out-extension:.js=.cjs",
      // The wasm core and the addon are found relative to the module's URL.
      "--define:import.meta.url=__wasmdevModuleUrl",
      "--banner:js=const __wasmdevModuleUrl = require('node:url').pathToFileURL(__filename).href;",
    ],
    { cwd: tree, stdio: "inherit" },
  );
}

/** Runs one target in the root for `seconds`; resolves with its figures. */
export function fuzzTarget(name, seconds, { quiet = false } = {}) {
  const work = join(tree, "build", "fuzz", "corpus", name);
  const crashes = join(tree, "build", "fuzz", "crashes", name);
  mkdirSync(work, { recursive: true });
  mkdirSync(crashes, { recursive: true });
  const before = new Set(readdirSync(crashes));
  const args = [
    "node", "test/fuzz/node_modules/@jazzer.js/core/dist/cli.js",
    `build/fuzz/${name}.cjs`, rel(work), rel(join(here, "corpus", name)),
    "--disable_bug_detectors=.*",
    ...(TARGETS[name].sync ? ["--sync"] : []),
    "--timeout=10000",
    "--",
    `-max_total_time=${seconds}`,
    `-artifact_prefix=${rel(crashes)}/`,
    "-print_final_stats=1",
    "-rss_limit_mb=1536",
    "-max_len=4096",
  ];
  return new Promise((resolve) => {
    const child = spawn(join(here, "in-root.sh"), args, { cwd: tree, stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    const take = (d) => {
      const s = d.toString();
      log += s;
      if (!quiet) process.stderr.write(s);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("close", (code) => {
      const num = (re) => {
        const all = [...log.matchAll(re)];
        return all.length ? Number(all.at(-1)[1]) : 0;
      };
      const found = readdirSync(crashes).filter((f) => !before.has(f));
      resolve({
        target: name,
        seconds,
        executions: num(/stat::number_of_executed_units:\s*(\d+)/g) || num(/Done (\d+) runs/g) || num(/^#(\d+)\s/gm),
        coverage: num(/\bcov: (\d+)/g),
        features: num(/\bft: (\d+)/g),
        corpus: num(/\bcorp: (\d+)/g),
        crashes: found.map((f) => rel(join(crashes, f))),
        exitCode: code,
        log,
      });
    });
  });
}

async function main() {
  const argv = process.argv.slice(2);
  const json = argv.includes("--json");
  if (argv.includes("--seeds")) {
    bundle([], { seeds: true });
    execFileSync(process.execPath, [join(tree, "build", "fuzz", "seeds.cjs"), rel(here)], { cwd: tree, stdio: "inherit" });
    return;
  }
  const names = argv.filter((a) => !a.startsWith("--"));
  for (const n of names) if (!(n in TARGETS)) throw new Error(`unknown target ${n} (targets: ${Object.keys(TARGETS).join(", ")})`);
  const run = names.length ? names : Object.keys(TARGETS);
  const seconds = Number(process.env.FUZZ_SECONDS ?? 180);
  ensureEngine();
  bundle(run);
  const results = [];
  for (const name of run) {
    console.error(`\n=== fuzz ${name} for ${seconds} s`);
    results.push(await fuzzTarget(name, seconds, { quiet: true }));
    const r = results.at(-1);
    console.error(`${name}: ${r.executions} executions, coverage ${r.coverage} edges (${r.features} features), corpus ${r.corpus}, ${r.crashes.length} crash(es), exit ${r.exitCode}`);
    if (r.exitCode !== 0) console.error(r.log.split("\n").filter((l) => !l.startsWith("#") && !l.startsWith("Warning: Ignoring extra certs")).slice(-40).join("\n"));
  }
  console.log("\n| target | seconds | executions | coverage (edges) | features | crashes |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of results) console.log(`| ${r.target} | ${r.seconds} | ${r.executions} | ${r.coverage} | ${r.features} | ${r.crashes.length}${r.exitCode !== 0 && r.crashes.length === 0 ? ` (exit ${r.exitCode})` : ""} |`);
  if (json) console.log(JSON.stringify(results.map(({ log, ...r }) => r)));
  const bad = results.filter((r) => r.exitCode !== 0 || r.crashes.length);
  if (bad.length) {
    console.error(`\nfuzz: ${bad.map((r) => r.target).join(", ")} failed; crash inputs: ${bad.flatMap((r) => r.crashes).join(" ") || "(none written)"}`);
    process.exit(1);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
