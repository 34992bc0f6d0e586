// The command-line front ends as processes: `wasmdev serve --protocol mpqemu --fd N` behind
// QEMU's proxy, and `wasmdev lspci --mpqemu -- <remote>` against QEMU's remote and ours.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { closeFdQuietly as closeFd, socketpair } from "../../src/transport/fd.js";
import { bundleCli } from "../support/cli-bundle.js";
import { HmpVm, killAllQemu, qemuAvailable, qemuRemoteCommand, track } from "./harness.js";

const haveQemu = qemuAvailable();
// One bundle per test process, so concurrent runs never execute a half-written file.
const cli = join(process.cwd(), "build", "test-mpqemu", `cli-${process.pid}.mjs`);

beforeAll(async () => {
  await bundleCli(cli);
}, 60_000);

afterAll(async () => {
  await killAllQemu();
  rmSync(cli, { force: true });
});

function runCli(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = track(spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] }));
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("wasmdev serve --protocol mpqemu", () => {
  it("usage errors exit 2 with a message", () => {
    const noFd = spawnSync(process.execPath, [cli, "serve", "--protocol", "mpqemu"], { encoding: "utf8" });
    expect(noFd.status).toBe(2);
    expect(noFd.stderr).toMatch(/needs --fd N/);
    const closed = spawnSync(process.execPath, [cli, "serve", "--protocol", "mpqemu", "--fd", "57"], { encoding: "utf8" });
    expect(closed.status).toBe(2);
    expect(closed.stderr).toMatch(/fd 57 is not open/);
    const dev = spawnSync(process.execPath, [cli, "serve", "--protocol=mpqemu", "--fd", "2", "--device", "nope"], { encoding: "utf8" });
    expect(dev.status).toBe(2);
    expect(dev.stderr).toMatch(/unknown device 'nope'/);
  });

  it.skipIf(!haveQemu)("serves edu behind QEMU's x-pci-proxy-dev and exits 0 when QEMU goes away", async () => {
    const [remoteEnd, qemuEnd] = socketpair();
    const serve = track(spawn(process.execPath, [cli, "serve", "--protocol", "mpqemu", "--fd", "3"], { stdio: ["ignore", "ignore", "pipe", remoteEnd] }));
    let stderr = "";
    serve.stderr!.on("data", (d) => (stderr += d));
    let exit = "running";
    const exited = new Promise<number | null>((r) => serve.on("exit", (code, sig) => ((exit = `exited ${sig ?? code}`), r(code))));
    closeFd(remoteEnd);
    let vm: HmpVm;
    try {
      vm = await HmpVm.start({ args: ["-device", "x-pci-proxy-dev,id=d0,fd=3,addr=0x4"], extraFds: [qemuEnd], ramMiB: 64 });
    } finally {
      closeFd(qemuEnd);
    }
    // QEMU's proxy realizes even when its remote is gone (every read then answers all-ones,
    // e.g. a serve process that died at start-up): quote the remote's state with each check.
    const diag = () => `serve ${exit}; serve stderr: ${stderr}; QEMU stderr: ${vm.stderr}`;
    expect(await vm.cfgRead(4, 0), diag()).toBe(0x11e81234);
    expect(await vm.barSize(4, 0), diag()).toBe(1 << 20);
    await vm.cfgWrite(4, 0x10, 4, 0xfe000000);
    await vm.cfgWrite(4, 0x04, 2, 0x2);
    expect(await vm.readWords(0xfe000000n, 1), diag()).toEqual([0x010000ed]);
    await vm.quit();
    expect(await exited, stderr).toBe(0);
  });
});

describe.skipIf(!haveQemu)("wasmdev lspci --mpqemu", () => {
  it("probes QEMU's remote hosting an e1000", async () => {
    const r = await runCli(["lspci", "--mpqemu", "--", ...qemuRemoteCommand("e1000")]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/8086:100e/);
    expect(r.stdout).toMatch(/size=128K/);
    expect(r.stdout).toMatch(/mpqemu: remote pid \d+, 2 BARs proxied/);
  });

  it("probes our own remote started through the CLI", async () => {
    const r = await runCli(["lspci", "--mpqemu", "--", process.execPath, cli, "serve", "--protocol", "mpqemu", "--fd", "{fd}"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1234:11e8/);
    expect(r.stdout).toMatch(/size=1M/);
  });

  it("a remote that fails to start is a clear error, exit 1", async () => {
    const r = await runCli(["lspci", "--mpqemu", "--timeout", "500", "--", "/nonexistent/remote", "{fd}"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/wasmdev lspci: .*(could not start the remote|lost contact)/);
  });

  it("a command without {fd} is a usage error", async () => {
    const r = await runCli(["lspci", "--mpqemu", "--", "true"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/with \{fd\}/);
  });
});
