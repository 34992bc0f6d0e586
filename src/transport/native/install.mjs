// The package's "install" script: keeps the shipped addon (build/native/wasmdev_transport.node,
// an N-API 8 binary, so one build serves every Node version) when this machine can load it, and
// otherwise builds it from transport.c with node-gyp (npm puts its own node-gyp on PATH for
// lifecycle scripts). Loading happens in a child process: a broken binary must not take this
// script down with it. In a wasmdev checkout "prepare" builds everything, so this does nothing.
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const nativeDir = dirname(fileURLToPath(import.meta.url));
const root = join(nativeDir, "..", "..", "..");
const addon = join(root, "build", "native", "wasmdev_transport.node");

if (existsSync(join(root, "src", "index.ts"))) process.exit(0);

/** Why the addon cannot be loaded here, or null when it loads. */
function loadProblem() {
  if (!existsSync(addon)) return `${addon} is missing`;
  const r = spawnSync(process.execPath, ["-e", "require(process.argv[1])", addon], { encoding: "utf8" });
  if (r.status === 0) return null;
  return (r.stderr.split("\n").find((l) => /Error/.test(l)) ?? `exit ${r.status}`).trim();
}

const problem = loadProblem();
if (problem === null) process.exit(0);
console.error(`wasmdev: the prebuilt transport addon does not load here (${problem}); building it from source`);

const built = spawnSync("node-gyp", ["rebuild", "--directory", nativeDir], { stdio: "inherit" });
// The object files and Makefiles are of no use once the addon is copied to build/native.
rmSync(join(nativeDir, "build"), { recursive: true, force: true });
const after = built.status === 0 ? loadProblem() : `node-gyp exited with ${built.error?.message ?? built.status}`;
if (after !== null) {
  console.error(
    `wasmdev: could not build the transport addon (${after}).\n` +
      "It needs make, a C compiler, python3 and Node's headers (node-gyp fetches them, or set npm's nodedir).\n" +
      "After installing them, run `npm rebuild wasmdev` in your project.",
  );
  process.exit(1);
}
