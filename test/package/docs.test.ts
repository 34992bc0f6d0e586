// `npm run docs`: the API reference from the JSDoc, with docs/device-authors.md as its front
// page. TypeDoc runs with treatWarningsAsErrors (tsconfig.json typedocOptions), so a broken
// {@link} or a public type the entry point does not export fails this test.
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const out = mkdtempSync(join(tmpdir(), "wasmdev-docs-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe("API documentation", () => {
  it("builds without warnings, the device-author guide first, its links resolved", () => {
    const r = spawnSync(process.execPath, [join(root, "node_modules", "typedoc", "bin", "typedoc"), "--out", out], { cwd: root, encoding: "utf8", timeout: 120_000 });
    expect(r.stdout + r.stderr).not.toMatch(/warning|error/i);
    expect(r.status).toBe(0);
    const index = readFileSync(join(out, "index.html"), "utf8");
    expect(index).toContain("Writing a PCI device with wasmdev");
    const guide = readFileSync(join(root, "docs", "device-authors.md"), "utf8");
    const linked = [...new Set([...guide.matchAll(/\{@link (\w+)\}/g)].map((m) => m[1]!))];
    expect(linked.length).toBeGreaterThan(10);
    for (const name of linked) {
      const href = new RegExp(`href="(classes|functions|interfaces|types|variables)/${name}\\.html"`);
      expect(index, name).toMatch(href);
    }
    expect(index).not.toContain("{@link");
    expect(existsSync(join(out, "classes", "VfioUserServer.html"))).toBe(true);
  }, 180_000);
});
