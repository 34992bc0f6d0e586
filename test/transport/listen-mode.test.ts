// listen() creates its socket file with the requested mode from the start (no chmod after bind
// through the path, which follows symlinks and leaves the socket at the umask's default mode in
// between), and never touches a file planted at the path.
import { describe, test, expect, beforeAll, afterAll, afterEach } from "vitest";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listen } from "../../src/transport/index.js";
import { bundleScenario, removeScenario, root } from "./child.js";

const fixtures = join(root, "test", "transport", "fixtures");
const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-listen-mode-"));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("the socket file is never observable with a wider mode", () => {
  let script = "";
  let probe = "";
  let probeDir = "";
  beforeAll(async () => {
    script = await bundleScenario(join(fixtures, "listen-mode-scenario.ts"), "listen-mode");
    probeDir = mkdtempSync(join(tmpdir(), "wasmdev-bind-probe-"));
    probe = join(probeDir, "bind-probe.so");
    const cc = spawnSync("cc", ["-shared", "-fPIC", "-O1", "-o", probe, join(fixtures, "bind-probe.c"), "-ldl"], { encoding: "utf8" });
    // No compiler must fail the test, not skip the check.
    expect(cc.status, cc.stderr).toBe(0);
  }, 60_000);
  afterAll(() => {
    if (script) removeScenario(script);
    rmSync(probeDir, { recursive: true, force: true });
  });

  for (const mode of [0o600, 0o660, 0o700, 0o000]) {
    test(`mode 0${mode.toString(8)} with umask 0: right after bind() and after listen()`, () => {
      const dir = tempDir();
      const path = join(dir, "s.sock");
      const seen = join(dir, "probe.txt");
      const child = spawnSync(process.execPath, [script, path, mode.toString(8)], {
        encoding: "utf8",
        env: { ...process.env, LD_PRELOAD: probe, WASMDEV_BIND_PROBE: seen },
        timeout: 20_000,
      });
      expect(child.status, child.stderr).toBe(0);
      // The probe saw the file the instant bind() created it: already at `mode`.
      expect(readFileSync(seen, "utf8").trim().split("\n")).toEqual([mode.toString(8)]);
      const out = JSON.parse(child.stdout.trim().split("\n").pop()!) as { modeAfterListen: number; umaskAfter: number };
      expect(out.modeAfterListen).toBe(mode);
      // The umask is the process's again (the scenario set 0).
      expect(out.umaskAfter).toBe(0);
      expect(existsSync(path)).toBe(false);
    });
  }
});

describe("a symlink planted at the socket path", () => {
  for (const replaceExisting of [false, true]) {
    test(`is refused (EADDRINUSE) and neither it nor its target changes (replaceExisting: ${replaceExisting})`, () => {
      const dir = tempDir();
      const target = join(dir, "victim");
      writeFileSync(target, "secret");
      chmodSync(target, 0o644);
      const path = join(dir, "s.sock");
      symlinkSync(target, path);
      expect(() => listen(path, { mode: 0o600, replaceExisting })).toThrow(expect.objectContaining({ code: "ERR_SYSCALL", errno: "EADDRINUSE" }));
      expect(lstatSync(path).isSymbolicLink()).toBe(true);
      expect(statSync(target).mode & 0o7777).toBe(0o644);
      expect(readFileSync(target, "utf8")).toBe("secret");
    });
  }

  test("a dangling symlink is refused too and nothing is created at its target", () => {
    const dir = tempDir();
    const target = join(dir, "nowhere.sock");
    const path = join(dir, "s.sock");
    symlinkSync(target, path);
    expect(() => listen(path)).toThrow(expect.objectContaining({ errno: "EADDRINUSE" }));
    expect(existsSync(target)).toBe(false);
    expect(lstatSync(path).isSymbolicLink()).toBe(true);
  });
});
