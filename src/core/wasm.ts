// Locates and instantiates build/core.wasm. One instance per Core: an instance owns its
// linear memory and every table in it. The "host" import module is assembled from the
// subsystems' import factories; each receives a ref that is filled once instantiation
// completes (imports may only be called after that).
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CORE_ABI_VERSION, CORE_FUNCTION_EXPORTS, type CoreExports, type CoreHostImports } from "./abi/exports.js";

export type CoreBuild = "release" | "debug";

/** Filled after instantiation; import functions read it lazily. */
export interface CoreRef {
  exports: CoreExports;
  memory: WebAssembly.Memory;
}

/** Supplies some of the "host" imports (each subsystem its own). */
export type HostImportFactory = (ref: CoreRef) => Partial<CoreHostImports>;

const checkedModules = new WeakSet<WebAssembly.Module>();

/**
 * Refuses a core built from other sources than this host: its CORE_ABI_VERSION, and every
 * export the host calls with the parameter count it passes. A stale build/core.wasm would
 * otherwise run with shifted arguments and answer garbage instead of failing.
 */
export function checkCoreAbi(mod: WebAssembly.Module, exports: WebAssembly.Exports, path: string): void {
  if (checkedModules.has(mod)) return;
  const rebuild = "rebuild it with `npm run build:wasm` (or reinstall the package)";
  const version = exports.CORE_ABI_VERSION;
  const found = version instanceof WebAssembly.Global ? Number(version.value) : undefined;
  if (found !== CORE_ABI_VERSION) {
    throw new Error(`wasmdev: ${path} has core ABI version ${found ?? "(none)"}, this host needs ${CORE_ABI_VERSION}: ${rebuild}`);
  }
  for (const [name, arity] of Object.entries(CORE_FUNCTION_EXPORTS)) {
    const value = (exports as Record<string, unknown>)[name];
    if (value === undefined) throw new Error(`wasmdev: ${path} lacks the export ${name}: ${rebuild}`);
    if (arity >= 0 && (typeof value !== "function" || value.length !== arity)) {
      throw new Error(`wasmdev: ${path} export ${name} does not take ${arity} parameters: ${rebuild}`);
    }
  }
  checkedModules.add(mod);
}

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
  const host: Record<string, (...args: never[]) => unknown> = {};
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
  checkCoreAbi(mod, instance.exports, coreWasmPath(build));
  ref.exports = instance.exports as unknown as CoreExports;
  ref.memory = instance.exports.memory as WebAssembly.Memory;
  return ref;
}
