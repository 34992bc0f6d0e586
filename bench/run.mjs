// Runs the benchmarks: each bench/<name>.bench.ts is bundled with esbuild and run in its own
// Node process (a fresh JIT and heap per benchmark). `npm run bench -- iommu transport` runs
// only the named ones.
import { build } from "esbuild";
import { readdirSync, mkdirSync } from "node:fs";
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
  const r = spawnSync(process.execPath, ["--expose-gc", outfile], { stdio: "inherit", cwd: root });
  if (r.status !== 0) {
    console.error(`benchmark ${name} failed (exit ${r.status})`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
