// Bundles the library entry and the CLI with esbuild. Native packages stay external.
import { build } from "esbuild";

const common = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  external: ["usocket"],
  logLevel: "warning",
};

await build({ ...common, entryPoints: ["src/index.ts"], outfile: "dist/index.js" });
await build({
  ...common,
  entryPoints: ["src/cli.ts"],
  outfile: "dist/cli.js",
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __wasmdevCreateRequire } from 'node:module'; const require = __wasmdevCreateRequire(import.meta.url);" },
});
