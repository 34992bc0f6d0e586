// The `wasmdev` command as one runnable file, for tests that start it as a separate process.
import { build } from "esbuild";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Bundles src/cli.ts into the ES module `outfile` (esbuild creates its directory). */
export async function bundleCli(outfile: string): Promise<void> {
  await build({
    entryPoints: [join(root, "src", "cli.ts")],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: ["usocket"],
    // Bundled CommonJS dependencies call require(), which an ES module does not have.
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    logLevel: "warning",
  });
}
