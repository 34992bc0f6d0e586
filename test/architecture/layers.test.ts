// The floors of src/ (ARCHITECTURE.md): each part imports only the parts below it, and the
// core, which owns the wasm tables, makes no OS calls, so it imports nothing outside itself.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../src");

/** Which top-level parts of src/ each part may import (besides itself and node: modules). */
const ALLOWED: Record<string, readonly string[]> = {
  transport: [],
  core: [],
  host: ["core", "transport"],
  devices: ["core"],
  "vfio-user": ["core", "host", "transport", "devices"],
  mpqemu: ["core", "host", "transport", "devices"],
  commands: ["core", "host", "transport", "devices", "vfio-user", "mpqemu"],
};

/** Top-level files any part may import because they import nothing themselves (types and
 *  plain helpers shared by every floor). */
const LEAVES = new Set(["log.ts"]);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith(".ts") ? [path] : [];
  });
}

/** Static and dynamic relative import specifiers of a TypeScript file. */
function relativeImports(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["'](\.{1,2}\/[^"']+)["']/g)) found.push(m[1]);
  return found;
}

function partOf(file: string): string {
  const rel = relative(SRC, file).split(sep);
  return rel.length === 1 ? "(entry)" : rel[0];
}

describe("source layering", () => {
  const files = sourceFiles(SRC);

  it("finds the parts it checks (a renamed folder must be added to the rules)", () => {
    const parts = new Set(files.map(partOf));
    parts.delete("(entry)");
    expect([...parts].sort()).toEqual(Object.keys(ALLOWED).sort());
  });

  it("every import stays within its part or goes to a part below it", () => {
    const violations: string[] = [];
    for (const file of files) {
      const from = partOf(file);
      if (from === "(entry)") continue;
      for (const spec of relativeImports(readFileSync(file, "utf8"))) {
        const target = resolve(dirname(file), spec);
        const to = partOf(target);
        if (to === "(entry)" && LEAVES.has(relative(SRC, target).replace(/\.js$/, ".ts"))) continue;
        if (to !== from && !ALLOWED[from].includes(to)) violations.push(`${relative(SRC, file)} imports ${spec} (${from} → ${to})`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("the shared leaves import nothing", () => {
    for (const leaf of LEAVES) expect([leaf, relativeImports(readFileSync(join(SRC, leaf), "utf8"))]).toEqual([leaf, []]);
  });

  it("the import scanner sees the forms the tree uses", () => {
    const text = `import { a } from "../core/x.js";\nimport type { B } from '../host/y.js';\nexport * from "./z.js";\nconst m = await import("../transport/w.js");\nimport "./side.js";`;
    expect(relativeImports(text)).toEqual(["../core/x.js", "../host/y.js", "./z.js", "../transport/w.js", "./side.js"]);
  });
});
