// The package as a user gets it: `npm pack` of the current build, installed offline into a
// scratch project, then used from an ES module, from CommonJS, from TypeScript and as the
// `wasmdev` command; a broken addon is reported at import and rebuilt by `npm rebuild`.
// Packs with --ignore-scripts: the tarball holds the build `npm ci` made (dist/, build/).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { exampleBlocks } from "../support/readme.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version as string;

let dir: string;
let project: string;
let installed: string;
let tarball: string;

// The user's npm, not the one a dev dependency puts in node_modules/.bin (npm 6 via as-pect).
const userPath = (process.env.PATH ?? "").split(":").filter((p) => !p.includes("node_modules")).join(":");

function npm(args: string[], cwd: string): { status: number | null; out: string } {
  const r = spawnSync("npm", args, { cwd, encoding: "utf8", env: { ...process.env, PATH: userPath, npm_config_update_notifier: "false" } });
  return { status: r.status, out: r.stdout + r.stderr };
}

function node(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { cwd: project, encoding: "utf8", timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function walk(d: string): string[] {
  return readdirSync(d).flatMap((f) => {
    const p = join(d, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

// What a consumer does first: serve a one-BAR device, connect, read config and the BAR, close.
const USE = (importLine: string) => `${importLine}
const fn = createPciFunction({
  name: "scratch", vendorId: 0x1af4, deviceId: 0x10f0, classCode: 0xff0000,
  bars: [{ kind: "mem32", size: 4096, ops: { valid: { min: 4, max: 4 }, read: (o) => 0xc0de0000 + o, write() {} } }],
});
const socketPath = process.argv[2];
const server = VfioUserServer.listen({ device: fn, socketPath });
const client = await connectVfioUser(socketPath);
const ids = await client.readValue(7, 0, 4);
const bar = await client.readValue(0, 8, 4);
client.close();
await server.close();
fn.dispose();
console.log(JSON.stringify({ ids: ids.toString(16), bar: bar.toString(16) }));
`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "wasmdev-pack-"));
  const packed = npm(["pack", "--ignore-scripts", "--json", "--pack-destination", dir], root);
  expect(packed.status, packed.out).toBe(0);
  tarball = join(dir, `wasmdev-${version}.tgz`);
  project = join(dir, "project");
  execFileSync("mkdir", [project]);
  // npm 11 runs a dependency's install script only when the project approved it; a local
  // tarball is approved by its file: specifier.
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "scratch", private: true, allowScripts: { [`file:${tarball}`]: true } }));
  const inst = npm(["install", "--offline", "--no-audit", "--no-fund", tarball], project);
  expect(inst.status, inst.out).toBe(0);
  installed = join(project, "node_modules", "wasmdev");
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("npm pack", () => {
  it("ships the bundles, types, wasm, the prebuilt addon and its sources, and nothing else", () => {
    const files = walk(installed).map((f) => relative(installed, f)).sort();
    const allowed = [
      /^(README\.md|LICENSE|CHANGELOG\.md|package\.json)$/,
      /^dist\/(index|cli)\.js(\.map)?$/,
      /^dist\/types\/.*\.d\.ts$/,
      /^build\/core(\.debug)?\.wasm$/,
      /^build\/native\/wasmdev_transport\.node$/,
      /^src\/transport\/native\/(binding\.gyp|transport\.c|install\.mjs)$/,
    ];
    expect(files.filter((f) => !allowed.some((re) => re.test(f)))).toEqual([]);
    for (const must of ["dist/index.js", "dist/cli.js", "dist/types/index.d.ts", "build/core.wasm", "build/native/wasmdev_transport.node", "LICENSE"]) {
      expect(files).toContain(must);
    }
    // No path of the machine that packed it (object files and gyp's config.gypi carried them).
    const leaks = files.filter((f) => readFileSync(join(installed, f)).includes(root));
    expect(leaks).toEqual([]);
    const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
    expect(manifest.repository?.url).toMatch(/^git\+https:/);
    expect(manifest.dependencies ?? {}).toEqual({});
  });
});

describe("the installed package", () => {
  it("works from an ES module", () => {
    writeFileSync(join(project, "use.mjs"), USE(`import { createPciFunction, VfioUserServer, connectVfioUser } from "wasmdev";`));
    const r = node(["use.mjs", join(dir, "esm.sock")]);
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual({ ids: "10f01af4", bar: "c0de0008" });
    expect(r.status).toBe(0);
  });

  it("works from CommonJS through require()", () => {
    // Node ≥ 20.19 loads the ES module for require() (no top-level await in the bundle), so
    // both get the same module instance.
    const body = USE(`const { createPciFunction, VfioUserServer, connectVfioUser } = require("wasmdev");`);
    writeFileSync(join(project, "use.cjs"), `(async () => {\n${body}\n})().catch((e) => { console.error(e); process.exit(1); });\n`);
    const r = node(["use.cjs", join(dir, "cjs.sock")]);
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual({ ids: "10f01af4", bar: "c0de0008" });
  });

  it("type-checks from ESM and CommonJS TypeScript (module nodenext), README examples included", () => {
    const typed = `export async function probe(path: string): Promise<bigint> {
  const client = await connectVfioUser(path);
  // @ts-expect-error: a width of 3 bytes is not an access size (fails if the types were any)
  await client.readValue(7, 0, 3);
  return client.readValue(7, 0, 4);
}
`;
    writeFileSync(join(project, "typed.mts"), `import { connectVfioUser } from "wasmdev";\n${typed}`);
    writeFileSync(join(project, "typed.cts"), `import { connectVfioUser } from "wasmdev";\n${typed}`);
    // The README says its examples are TypeScript as they stand.
    const examples = exampleBlocks(readFileSync(join(root, "README.md"), "utf8")).map((b, i) => {
      writeFileSync(join(project, `readme-${i}.mts`), b.code);
      return `readme-${i}.mts`;
    });
    expect(examples.length).toBeGreaterThan(0);
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
    const r = node([tsc, "--noEmit", "--strict", "--module", "nodenext", "--target", "es2022", "--skipLibCheck", "--typeRoots", join(root, "node_modules", "@types"), "--types", "node", "typed.mts", "typed.cts", ...examples]);
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("installs the wasmdev command", () => {
    const r = node([join(project, "node_modules", ".bin", "wasmdev"), "serve", "--help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--socket/);
    // The version comes from the installed package.json, next to the bundle.
    const version = node([join(project, "node_modules", ".bin", "wasmdev"), "--version"]);
    expect(version.stdout).toBe(`wasmdev ${JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version}\n`);
  });

  it("says at import how to rebuild a broken addon, and `npm rebuild wasmdev` rebuilds it from source", () => {
    const addon = join(installed, "build", "native", "wasmdev_transport.node");
    writeFileSync(addon, "not an ELF file");
    const broken = node(["--input-type=module", "-e", `import "wasmdev";`]);
    expect(broken.status).not.toBe(0);
    expect(broken.stderr).toContain("ERR_NATIVE_UNAVAILABLE");
    expect(broken.stderr).toContain(addon);
    expect(broken.stderr).toContain("npm rebuild wasmdev");

    const rebuilt = npm(["rebuild", "wasmdev", "--foreground-scripts"], project);
    expect(rebuilt.status, rebuilt.out).toBe(0);
    expect(rebuilt.out).toContain("does not load here");
    // The install script leaves only the addon behind, not gyp's object files and Makefiles.
    expect(existsSync(join(installed, "src", "transport", "native", "build"))).toBe(false);
    const r = node(["use.mjs", join(dir, "rebuilt.sock")]);
    expect(JSON.parse(r.stdout)).toEqual({ ids: "10f01af4", bar: "c0de0008" });
  }, 120_000);
});
