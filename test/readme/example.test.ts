// Every README code block marked as an example (```js example) runs exactly as written: saved
// as a .mjs file in an empty project whose node_modules/wasmdev is this checkout (so the
// import resolves through the package's exports to dist/, as after `npm install wasmdev`), run
// with node in that folder. It must exit 0 by itself, print nothing on stderr, and print what
// its `// prints: …` comments say, in order.
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { exampleBlocks } from "../support/readme.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const readme = readFileSync(join(root, "README.md"), "utf8");

const blocks = exampleBlocks(readme);
const project = mkdtempSync(join(tmpdir(), "wasmdev-readme-"));
mkdirSync(join(project, "node_modules"));
symlinkSync(root, join(project, "node_modules", "wasmdev"), "dir");
afterAll(() => rmSync(project, { recursive: true, force: true }));

describe("README examples", () => {
  it("has examples, the library one among them", () => {
    expect(blocks.length).toBeGreaterThan(0);
    expect(blocks.some((b) => b.code.includes("createPciFunction") && b.code.includes("connectVfioUser"))).toBe(true);
  });

  it.each(blocks.map((b) => [b.line, b.code] as const))("the example at README.md:%i runs and exits", (line, code) => {
    const file = join(project, `readme-${line}.mjs`);
    writeFileSync(file, code);
    const expected = [...code.matchAll(/\/\/ prints: (.*)$/gm)].map((m) => m[1]!.trim());
    const r = spawnSync(process.execPath, [file], { cwd: project, encoding: "utf8", timeout: 20_000 });
    expect(r.signal, "killed: the example did not exit by itself").toBeNull();
    expect(r.stderr).toBe("");
    expect(r.stdout.trimEnd().split("\n")).toEqual(expected);
    expect(r.status).toBe(0);
  });
});
