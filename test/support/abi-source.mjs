// Reads the wasm ABI out of the AssemblyScript sources: the exports of assembly/index.ts with
// their signatures, the "host" imports, and the values of exported constants. The host's typed
// view (src/core/abi/exports.ts) is rendered from it, and test/architecture/abi.test.ts checks
// the checked-in file and the host's constant mirrors against it.
//
//   node test/support/abi-source.mjs --write   regenerates src/core/abi/exports.ts
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const ASSEMBLY = join(ROOT, "assembly");
export const EXPORTS_MODULE = join(ROOT, "src/core/abi/exports.ts");

const TS_TYPE = { u8: "number", u16: "number", u32: "number", i8: "number", i16: "number", i32: "number", usize: "number", isize: "number", bool: "number", f32: "number", f64: "number", u64: "bigint", i64: "bigint", void: "void" };

function tsType(asType, where) {
  const t = TS_TYPE[asType];
  if (!t) throw new Error(`abi-source: ${where}: no host type for AssemblyScript type ${asType}`);
  return t;
}

function parseParams(text, where) {
  return text
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => {
      const m = /^(\w+)\s*:\s*(\w+)$/.exec(p);
      if (!m) throw new Error(`abi-source: ${where}: cannot read parameter "${p}"`);
      return { name: m[1], type: tsType(m[2], where) };
    });
}

/** `export function name(params): ret` declarations of one source file, by name. */
function functionsOf(file) {
  const text = readFileSync(file, "utf8");
  const out = new Map();
  for (const m of text.matchAll(/^export function (\w+)\(([^)]*)\)\s*:\s*(\w+)/gm)) {
    out.set(m[1], { params: parseParams(m[2], `${file}: ${m[1]}`), result: tsType(m[3], `${file}: ${m[1]}`) });
  }
  return out;
}

/**
 * Every export of the module in source order: functions (own or re-exported with `as`) and
 * non-inline constants, which asc exports as globals.
 */
export function readExports() {
  const index = readFileSync(join(ASSEMBLY, "index.ts"), "utf8");
  const files = [join(ASSEMBLY, "index.ts"), ...[...index.matchAll(/^export \* from "\.\/([\w/]+)";/gm)].map((m) => join(ASSEMBLY, `${m[1]}.ts`))];
  const exports = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/^export const (\w+)\s*:\s*(\w+)\s*=/gm)) exports.push({ name: m[1], kind: "global", type: tsType(m[2], `${file}: ${m[1]}`) });
    const own = functionsOf(file);
    for (const [name, sig] of own) exports.push({ name, kind: "function", ...sig });
    for (const block of text.matchAll(/^export \{([^}]*)\} from "\.\/(\w+)";/gm)) {
      const source = functionsOf(join(dirname(file), `${block[2]}.ts`));
      for (const entry of block[1].split(",").map((e) => e.trim()).filter(Boolean)) {
        const m = /^(\w+)(?:\s+as\s+(\w+))?$/.exec(entry);
        const sig = m && source.get(m[1]);
        if (!sig) throw new Error(`abi-source: ${file}: cannot resolve re-export "${entry}"`);
        exports.push({ name: m[2] ?? m[1], kind: "function", ...sig });
      }
    }
  }
  return exports;
}

/** The functions the core imports from the "host" module, with their signatures. */
export function readHostImports() {
  const out = [];
  for (const sub of ["memory/dispatch", "iommu/domain"]) {
    const text = readFileSync(join(ASSEMBLY, `${sub}.ts`), "utf8");
    for (const m of text.matchAll(/@external\("host", "(\w+)"\)\s*declare function \w+\(([^)]*)\)\s*:\s*(\w+)/g)) {
      out.push({ name: m[1], params: parseParams(m[2], m[1]), result: tsType(m[3], m[1]) });
    }
  }
  return out;
}

/** Exported numeric constants of one assembly file (`export const NAME: T = <expr>;`), evaluated. */
export function readConstants(relativeFile) {
  const text = readFileSync(join(ASSEMBLY, relativeFile), "utf8");
  const values = new Map();
  for (const m of text.matchAll(/^(?:@inline\s+)?export const (\w+)\s*:\s*(\w+)\s*=\s*([^;]+);/gm)) {
    // Addresses of static data (memory.data(...)) are not part of the contract.
    if (/\w\s*\(/.test(m[3].replace(/<\w+>/g, ""))) continue;
    const wide = m[2] === "u64" || m[2] === "i64";
    // Casts (<u64>x) drop out; names refer to constants defined above in the same file.
    let expr = m[3].replace(/<\w+>/g, "").replace(/_/g, (c, i, s) => (/[0-9a-fA-Fx]/.test(s[i - 1] ?? "") && /[0-9a-fA-F]/.test(s[i + 1] ?? "") ? "" : c));
    expr = expr.replace(/\b[A-Z][A-Z0-9_]*\b/g, (name) => {
      if (!values.has(name)) throw new Error(`abi-source: ${relativeFile}: ${m[1]} refers to unknown ${name}`);
      const v = values.get(name);
      return wide ? `${BigInt(v)}n` : String(v);
    });
    if (wide) expr = expr.replace(/\b(0x[0-9a-fA-F]+|\d+)\b(?!n)/g, "$1n");
    if (!/^[\s\d a-fA-FxnN()+\-*<>|&~]*$/.test(expr)) throw new Error(`abi-source: ${relativeFile}: cannot evaluate ${m[1]} = ${m[3]}`);
    let value = Function(`"use strict"; return (${expr});`)();
    if (m[2] === "u32") value = value >>> 0;
    if (wide) value = BigInt.asUintN(64, value);
    values.set(m[1], value);
  }
  return values;
}

function signature(params, result) {
  return `(${params.map((p) => `${p.name}: ${p.type}`).join(", ")}) => ${result}`;
}

/** src/core/abi/exports.ts as it must read for the current assembly sources. */
export function renderExportsModule() {
  const exports = readExports();
  const version = readConstants("index.ts").get("CORE_ABI_VERSION");
  const lines = [
    "// GENERATED by `node test/support/abi-source.mjs --write` from assembly/: do not edit.",
    "// test/architecture/abi.test.ts fails when this file and the assembly sources disagree.",
    "",
    "/** The ABI version this host speaks; instantiation refuses a core with another one. */",
    `export const CORE_ABI_VERSION = ${version};`,
    "",
    "/** Every export of build/core.wasm, typed. */",
    "export interface CoreExports {",
    "  readonly memory: WebAssembly.Memory;",
    ...exports.map((e) => (e.kind === "global" ? `  readonly ${e.name}: WebAssembly.Global;` : `  readonly ${e.name}: ${signature(e.params, e.result)};`)),
    "}",
    "",
    "/** Every function the core imports from the \"host\" module, typed. */",
    "export interface CoreHostImports {",
    ...readHostImports().map((i) => `  ${i.name}: ${signature(i.params, i.result)};`),
    "}",
    "",
    "/** Names and parameter counts of the function exports, for the check at instantiation. */",
    "export const CORE_FUNCTION_EXPORTS: Readonly<Record<keyof CoreExports, number>> = {",
    "  memory: -1,",
    ...exports.map((e) => `  ${e.name}: ${e.kind === "global" ? -1 : e.params.length},`),
    "};",
    "",
  ];
  return lines.join("\n");
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes("--write")) {
    writeFileSync(EXPORTS_MODULE, renderExportsModule());
    console.log(`wrote ${EXPORTS_MODULE}`);
  } else {
    process.stdout.write(renderExportsModule());
  }
}
