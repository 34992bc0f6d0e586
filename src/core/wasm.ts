// Locates and instantiates build/core.wasm. One instance per Core: an instance owns its
// linear memory and every table in it. The "host" import module is assembled from the
// subsystems' import factories; each receives a ref that is filled once instantiation
// completes (imports may only be called after that).
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type CoreBuild = "release" | "debug";

/** Filled after instantiation; import functions read it lazily. */
export interface CoreRef {
  exports: Record<string, any>;
  memory: WebAssembly.Memory;
}

export type HostImportFactory = (ref: CoreRef) => Record<string, (...args: any[]) => any>;

const moduleCache = new Map<CoreBuild, WebAssembly.Module>();

/** Walks up from this module to the package root (works from src/ and from the dist bundle). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "build"))) return dir;
    dir = dirname(dir);
  }
  throw new Error("wasmdev: build/core.wasm not found; run `npm install` (or `npm run build:wasm`) in the package root");
}

export function coreWasmPath(build: CoreBuild = defaultBuild()): string {
  return join(packageRoot(), "build", build === "debug" ? "core.debug.wasm" : "core.wasm");
}

function defaultBuild(): CoreBuild {
  return process.env.WASMDEV_CORE_BUILD === "debug" ? "debug" : "release";
}

export function coreModule(build: CoreBuild = defaultBuild()): WebAssembly.Module {
  let mod = moduleCache.get(build);
  if (!mod) {
    mod = new WebAssembly.Module(readFileSync(coreWasmPath(build)));
    moduleCache.set(build, mod);
  }
  return mod;
}

function abortImport(ref: CoreRef) {
  return (msgPtr: number, filePtr: number, line: number, col: number) => {
    const msg = readAsString(ref.memory, msgPtr);
    const file = readAsString(ref.memory, filePtr);
    throw new WebAssembly.RuntimeError(`wasmdev core abort: ${msg} (${file}:${line}:${col})`);
  };
}

/** Reads an AssemblyScript string (UTF-16, byte length stored at ptr-4). */
function readAsString(memory: WebAssembly.Memory, ptr: number): string {
  if (!ptr) return "";
  const bytes = new Uint32Array(memory.buffer, ptr - 4, 1)[0];
  return String.fromCharCode(...new Uint16Array(memory.buffer, ptr, bytes >>> 1));
}

/**
 * Instantiates the core synchronously. `factories` supply the "host" module; a function
 * the core imports but no factory provides throws when called (never silently returns 0).
 */
export function instantiateCore(factories: HostImportFactory[] = [], build?: CoreBuild): CoreRef {
  const ref = { exports: {}, memory: undefined as unknown as WebAssembly.Memory } as CoreRef;
  const mod = coreModule(build);
  const host: Record<string, (...args: any[]) => any> = {};
  for (const f of factories) Object.assign(host, f(ref));
  for (const imp of WebAssembly.Module.imports(mod)) {
    if (imp.module === "host" && !(imp.name in host)) {
      host[imp.name] = () => {
        throw new Error(`wasmdev core: host import ${imp.name} is not provided by this Core`);
      };
    }
  }
  const instance = new WebAssembly.Instance(mod, {
    env: { abort: abortImport(ref), seed: () => Date.now() },
    host,
  });
  ref.exports = instance.exports as Record<string, any>;
  ref.memory = instance.exports.memory as WebAssembly.Memory;
  return ref;
}
