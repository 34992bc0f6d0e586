// The `wasmdev` binary as a user runs it: serve's socket safety and signals, waiting on a busy
// server, log levels / --trace / JSON logs, the conventions of every command (usage errors,
// --version, --fd checks, access sizes, dumps, pci.ids names), and serve's connect hints.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient } from "../../src/vfio-user/client/client.js";
import { MpqemuProxy } from "../../src/mpqemu/proxy.js";
import { closeFdQuietly as closeFd, socketpair } from "../../src/transport/fd.js";
import { bundleCli } from "../support/cli-bundle.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
// Under build/ so the bundle finds build/core.wasm and package.json; one per test process.
const cli = join(root, "build", "test-commands", `cli-${process.pid}.mjs`);
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "wasmdev-cli-"));
  await bundleCli(cli);
}, 120_000);

const running = new Set<ChildProcess>();
const clients: VfioUserClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(
    [...running].map((c) => {
      if (c.exitCode !== null || c.signalCode !== null) return undefined;
      const gone = new Promise((r) => c.once("exit", r));
      c.kill("SIGKILL");
      return gone;
    }),
  );
  running.clear();
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(cli, { force: true });
});

interface Proc {
  child: ChildProcess;
  readonly out: string;
  readonly err: string;
  exit: Promise<number | null>;
  /** Resolves once stderr matches (rejects if the process exits first). */
  waitErr(pattern: RegExp): Promise<RegExpMatchArray>;
}

function start(args: string[], options: { stdio?: ("ignore" | "pipe" | number)[]; env?: NodeJS.ProcessEnv } = {}): Proc {
  const child = spawn(process.execPath, [cli, ...args], { stdio: options.stdio ?? ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } });
  running.add(child);
  let out = "";
  let err = "";
  child.stdout?.on("data", (d) => (out += d));
  child.stderr?.on("data", (d) => (err += d));
  const exit = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return {
    child,
    get out() {
      return out;
    },
    get err() {
      return err;
    },
    exit,
    waitErr(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = pattern.exec(err);
          if (!m) return false;
          child.stderr?.off("data", check);
          resolve(m);
          return true;
        };
        if (check()) return;
        child.stderr?.on("data", check);
        void exit.then(() => check() || reject(new Error(`exited before printing ${pattern}; stderr: ${err}`)));
      });
    },
  };
}

async function runCli(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; err: string }> {
  const p = start(args, { env });
  const code = await p.exit;
  return { code, out: p.out, err: p.err };
}

/** A vfio-user `serve` of edu on a fresh socket, once it said it listens. */
async function serve(name: string, extra: string[] = []): Promise<Proc & { path: string }> {
  const path = join(dir, name);
  const p = start(["serve", "--socket", path, ...extra]);
  await p.waitErr(/listening on[^\n]*\n/);
  return Object.assign(p, { path });
}

async function connect(path: string): Promise<VfioUserClient> {
  const c = await connectVfioUser(path);
  clients.push(c);
  return c;
}

describe("serve: the socket path", () => {
  it("refuses a path another server is listening on, and that server keeps serving", async () => {
    const first = await serve("live.sock");
    const second = await runCli(["serve", "--socket", first.path]);
    expect(second.code).toBe(1);
    expect(second.err).toContain(`cannot listen on ${first.path}: another server is listening there (EADDRINUSE)`);
    const c = await connect(first.path);
    expect(await c.readValue(0, 0, 4)).toBe(0x010000edn);
  });

  it("replaces a stale socket nobody listens on", async () => {
    const killed = await serve("stale.sock");
    killed.child.kill("SIGKILL");
    await killed.exit;
    expect(statSync(killed.path).isSocket()).toBe(true); // left behind
    const next = await serve("stale.sock");
    expect(next.err).not.toContain("EADDRINUSE");
    const c = await connect(next.path);
    expect(await c.readValue(0, 0, 4)).toBe(0x010000edn);
  });

  it("on exit removes only the socket it created; SIGHUP stops it like SIGTERM", async () => {
    const a = await serve("shared.sock");
    unlinkSync(a.path); // someone removed A's socket...
    const b = await serve("shared.sock"); // ...and B listens on the path now
    a.child.kill("SIGTERM");
    expect(await a.exit).toBe(0);
    expect(a.err).toContain("stopping on SIGTERM");
    expect(statSync(b.path).isSocket()).toBe(true);
    expect(await (await connect(b.path)).readValue(0, 0, 4)).toBe(0x010000edn);
    clients.splice(0).forEach((c) => c.close());
    b.child.kill("SIGHUP");
    expect(await b.exit).toBe(0);
    expect(b.err).toContain("stopping on SIGHUP");
    expect(existsSync(b.path)).toBe(false);
  });
});

describe("lspci and region on a busy server", () => {
  it("say another client is connected, wait for it to leave, then succeed", async () => {
    const s = await serve("busy.sock");
    const holder = await connect(s.path);
    const lspci = start(["lspci", "-n", "--socket", s.path, "--timeout", "20000"]);
    await lspci.waitErr(/another client is connected to .*busy\.sock; waiting up to 20000 ms/);
    holder.close();
    expect(await lspci.exit, lspci.err).toBe(0);
    expect(lspci.out).toContain("Device 1234:11e8");
  });

  it("give up after --timeout with the reason, exit 1", async () => {
    const s = await serve("busy2.sock");
    await connect(s.path);
    const r = await runCli(["region", "read", "--socket", s.path, "--timeout", "300", "bar0", "0", "4"]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/another client is connected to .*busy2\.sock and still was after 300 ms/);
    expect(r.err).not.toMatch(/server failed VERSION/);
  });
});

describe("logging", () => {
  it("--trace prints every vfio-user message both ways, one line each, in serve and in the client", async () => {
    const s = await serve("trace.sock", ["--trace"]);
    const r = await runCli(["region", "--trace", "read", "--socket", s.path, "bar0", "0x4", "4"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe("0x00000000\n");
    // The client's side: VERSION out and in, then the access.
    expect(r.err).toMatch(/^wasmdev region: trace: vfio-user -> VERSION command id=0 size=\d+$/m);
    expect(r.err).toMatch(/^wasmdev region: trace: vfio-user <- VERSION reply id=0 size=\d+$/m);
    const id = /-> REGION_READ command id=(\d+) size=32 region=0 offset=0x4 count=4$/m.exec(r.err)?.[1];
    expect(id, r.err).toBeDefined();
    expect(r.err).toMatch(new RegExp(`<- REGION_READ reply id=${id} size=36 region=0 offset=0x4 count=4$`, "m"));
    // The server's side of the same access, the other way round.
    await s.waitErr(new RegExp(`wasmdev serve: trace: vfio-user -> REGION_READ reply id=${id} size=36 region=0 offset=0x4 count=4\\n`));
    expect(s.err).toMatch(new RegExp(`trace: vfio-user <- REGION_READ command id=${id} size=32 region=0 offset=0x4 count=4\\n`));
    // An error reply names its errno.
    const bad = await runCli(["region", "--trace", "read", "--socket", s.path, "bar0", "0", "1"]);
    expect(bad.err).toMatch(/<- REGION_READ reply id=\d+ size=16 flags=error errno=EIO$/m);
  });

  it("--log-format json writes one object per line, trace events included", async () => {
    const s = await serve("json.sock", ["--log-format", "json"]);
    const first = JSON.parse(s.err.split("\n")[0]);
    expect(first).toMatchObject({ level: "info", source: "wasmdev serve", msg: `listening on ${s.path} (vfio-user, device edu, pid ${s.child.pid})` });
    const r = await runCli(["region", "--trace", "--log-format", "json", "read", "--socket", s.path, "bar0", "0", "4"]);
    const events = r.err.trim().split("\n").map((l) => JSON.parse(l));
    expect(events).toContainEqual(expect.objectContaining({ level: "trace", protocol: "vfio-user", direction: "out", command: "REGION_READ", type: "command", size: 32, fields: { region: 0, offset: "0x0", count: 4 } }));
    expect(events).toContainEqual(expect.objectContaining({ level: "trace", direction: "in", command: "REGION_READ", type: "reply", size: 36 }));
    expect((await runCli(["serve", "--log-format", "yaml"])).code).toBe(2);
  });

  it("-q leaves out connection lines but keeps warnings; -v adds debug lines", async () => {
    // -q keeps the one line launchers wait for.
    const quiet = await serve("quiet.sock", ["-q"]);
    await runCli(["region", "read", "--socket", quiet.path, "bar0", "0", "1"]);
    await quiet.waitErr(/warning: REGION_READ \(id \d+\) failed with EIO/);
    expect(quiet.err.match(/listening on/g)).toHaveLength(1);
    expect(quiet.err).not.toMatch(/connected|inspect it|QEMU >=/);

    const verbose = await serve("verbose.sock", ["-v"]);
    await connect(verbose.path);
    const refused = await runCli(["region", "read", "--socket", verbose.path, "--timeout", "50", "bar0", "0", "4"]);
    expect(refused.code).toBe(1);
    await verbose.waitErr(/debug: answered VERSION of the refused client with EBUSY/);
    const plain = await serve("plain.sock");
    await connect(plain.path);
    await runCli(["region", "read", "--socket", plain.path, "--timeout", "50", "bar0", "0", "4"]);
    await plain.waitErr(/refused a second client/);
    expect(plain.err).not.toContain("debug:");
  });

  it("serve --protocol mpqemu --trace prints every mpqemu message", async () => {
    const [remoteEnd, proxyEnd] = socketpair();
    const p = start(["serve", "--protocol", "mpqemu", "--fd", "3", "--trace"], { stdio: ["ignore", "pipe", "pipe", remoteEnd] });
    closeFd(remoteEnd);
    const proxy = await MpqemuProxy.start({ fd: proxyEnd, ramSize: 0, heartbeatMs: 0 });
    try {
      expect(await proxy.configRead(0, 4)).toBe(0x11e81234);
      await p.waitErr(/trace: mpqemu <- PCI_CFGREAD command size=28 addr=0x0 len=4\n/);
      await p.waitErr(/trace: mpqemu -> RET reply size=24 value=0x11e81234\n/);
    } finally {
      await proxy.close();
    }
    expect(await p.exit).toBe(0);
  });
});

describe("lspci --mpqemu --trace", () => {
  it("prints the proxy's side of every mpqemu message", async () => {
    const r = await runCli(["lspci", "-n", "--mpqemu", "--trace", "--", process.execPath, cli, "serve", "--protocol", "mpqemu", "--fd", "{fd}"]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/^wasmdev lspci: trace: mpqemu -> PCI_CFGREAD command size=28 addr=0x0 len=4$/m);
    expect(r.err).toMatch(/^wasmdev lspci: trace: mpqemu <- RET reply size=24 value=0x11e81234$/m);
    // The same formatter as vfio-user's: header, BARs with sizes, the -x dump.
    const x = await runCli(["lspci", "-n", "-x", "--mpqemu", "--", process.execPath, cli, "serve", "--protocol", "mpqemu", "--fd", "{fd}"]);
    expect(x.out).toMatch(/^00:00\.0 Unclassified device \[00ff\]: Device 1234:11e8 \(rev 10\)$/m);
    expect(x.out).toMatch(/Region 0: Memory at <unassigned> .*\[size=1M\]/);
    expect(x.out).toMatch(/^00: 34 12 e8 11 /m);
  });
});

describe("command-line conventions", () => {
  it("--version prints the package version", async () => {
    const r = await runCli(["--version"]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`wasmdev ${JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version}\n`);
  });

  it("a usage error is one line, the short usage and where help is; unknown options read the same everywhere", async () => {
    for (const [command, option] of [["serve", "--sockt"], ["lspci", "--sockt"], ["region", "--bogus"]]) {
      const r = await runCli([command, option, "x"]);
      expect(r.code).toBe(2);
      const lines = r.err.trimEnd().split("\n");
      expect(lines[0]).toBe(`wasmdev ${command}: unknown option '${option}'`);
      expect(lines[1]).toMatch(new RegExp(`^usage: wasmdev ${command} `));
      expect(lines[lines.length - 1]).toBe(`Try 'wasmdev ${command} --help' for more information.`);
      expect(r.err).not.toContain("options:");
    }
    const top = await runCli(["frobnicate"]);
    expect(top.err).toBe("wasmdev: unknown command 'frobnicate'\nusage: wasmdev <command> [options]\nTry 'wasmdev --help' for more information.\n");
  });

  it("serve --help lists both protocols", async () => {
    const r = await runCli(["serve", "--help"]);
    expect(r.out).toMatch(/--protocol NAME\s+wire protocol: vfio-user or mpqemu/);
  });

  it("--fd must be a number and a socket", async () => {
    const abc = await runCli(["serve", "--protocol", "mpqemu", "--fd", "abc"]);
    expect(abc.code).toBe(2);
    expect(abc.err).toContain("--fd must be a number; 'abc' is not a number");
    const stdin = await runCli(["serve", "--protocol", "mpqemu", "--fd", "0"]); // stdin is /dev/null
    expect(stdin.code).toBe(2);
    expect(stdin.err).toContain("fd 0 is not a socket (it is a character device)");
    expect(stdin.err).not.toContain("uv_poll_init");
  });

  it("region names the access sizes a register accepts", async () => {
    const s = await serve("sizes.sock");
    const r = await runCli(["region", "read", "--socket", s.path, "bar0", "0", "1"]);
    expect(r.code).toBe(1);
    expect(r.err).toBe("wasmdev region: read of 1 byte at BAR0 offset 0x0 failed with EIO: BAR0 accepts accesses of 4 or 8 bytes there, not 1 byte (found by reading with each width)\n");
    const w = await runCli(["region", "write", "--socket", s.path, "bar0", "4", "2", "0x1234"]);
    expect(w.err).toContain("BAR0 accepts accesses of 4 or 8 bytes there, not 2 bytes");
  });

  it("region read collapses repeated dump lines, --raw and --output give the bytes", async () => {
    const s = await serve("dump.sock");
    // edu's BAR0 from 0x100: unimplemented registers read as all-ones.
    const r = await runCli(["region", "read", "--socket", s.path, "bar0", "0x100", "64"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe("00000100  ff ff ff ff ff ff ff ff  ff ff ff ff ff ff ff ff  |................|\n*\n00000140\n");
    const raw = start(["region", "read", "--socket", s.path, "--raw", "bar0", "0", "4"]);
    const chunks: Buffer[] = [];
    raw.child.stdout!.on("data", (d: Buffer) => chunks.push(d));
    expect(await raw.exit).toBe(0);
    expect([...Buffer.concat(chunks)]).toEqual([0xed, 0, 0, 0x01]);
    const file = join(dir, "bar0.bin");
    const o = await runCli(["region", "read", "--socket", s.path, "--output", file, "bar0", "0x100", "32"]);
    expect(o).toMatchObject({ code: 0, out: "" });
    expect([...readFileSync(file)]).toEqual(new Array(32).fill(0xff));
  });

  it("lspci names vendor and device from pci.ids, -n keeps ids, -x/-xxx dump config space", async () => {
    const ids = join(dir, "pci.ids");
    writeFileSync(ids, "# fixture\n1234  Test Vendor Co.\n\t11e8  Educational Device\n\t\t1af4 1100  Edu Subsystem\n1af4  Virtio Vendor\nC 00  Unclassified device\n");
    const s = await serve("names.sock");
    const named = await runCli(["lspci", "--socket", s.path], { WASMDEV_PCI_IDS: ids });
    expect(named.code, named.err).toBe(0);
    const lines = named.out.split("\n");
    expect(lines[0]).toBe(`${s.path} Unclassified device [00ff]: Test Vendor Co. Educational Device [1234:11e8] (rev 10)`);
    expect(lines[1]).toBe("\tSubsystem: Virtio Vendor Edu Subsystem [1af4:1100]");
    const viaOption = await runCli(["lspci", "-i", ids, "--socket", s.path], { WASMDEV_PCI_IDS: "" });
    expect(viaOption.out.split("\n")[0]).toContain("Test Vendor Co. Educational Device [1234:11e8]");
    const numeric = await runCli(["lspci", "-n", "--socket", s.path], { WASMDEV_PCI_IDS: ids });
    expect(numeric.out.split("\n")[0]).toBe(`${s.path} Unclassified device [00ff]: Device 1234:11e8 (rev 10)`);
    const x = await runCli(["lspci", "-n", "-x", "--socket", s.path]);
    const dump = x.out.split("\n").filter((l) => /^[0-9a-f]{2}: /.test(l));
    expect(dump).toHaveLength(4);
    expect(dump[0]).toBe("00: 34 12 e8 11 00 00 10 00 10 00 ff 00 00 00 00 00");
    const xxx = await runCli(["lspci", "-n", "-xxx", "--socket", s.path]);
    expect(xxx.out.split("\n").filter((l) => /^[0-9a-f]{2}: /.test(l))).toHaveLength(16);
    const missing = await runCli(["lspci", "-i", join(dir, "absent.ids"), "--socket", s.path]);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("cannot read the pci.ids file");
  });
});

describe("serve tells how to connect", () => {
  it("prints a working lspci command, QEMU's vfio-user-pci line and how to stop", async () => {
    const s = await serve("hints.sock");
    await s.waitErr(/stop:.*\n/);
    const lspciLine = /inspect it:\s+wasmdev (lspci --socket \S+)\n/.exec(s.err);
    expect(lspciLine, s.err).not.toBeNull();
    const r = await runCli(lspciLine![1].split(" "));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("1234:11e8");
    const device = /QEMU >= 10\.1: qemu-system-x86_64 .* -device '([^']+)'/.exec(s.err)?.[1];
    expect(JSON.parse(device!)).toEqual({ driver: "vfio-user-pci", socket: { path: s.path, type: "unix" } });
    expect(s.err).toMatch(/memory-backend-memfd,id=ram,size=1G,share=on -machine memory-backend=ram/);
    expect(s.err).toContain(`kill -TERM ${s.child.pid}`);
  });

  it("under mpqemu points at QEMU's x-pci-proxy-dev", async () => {
    const [remoteEnd, proxyEnd] = socketpair();
    const p = start(["serve", "--protocol", "mpqemu", "--fd", "3"], { stdio: ["ignore", "pipe", "pipe", remoteEnd] });
    closeFd(remoteEnd);
    await p.waitErr(/-device x-pci-proxy-dev,id=d0,fd=M where M is its end of the same socketpair/);
    closeFd(proxyEnd);
    expect(await p.exit).toBe(0);
  });
});
