// Regression tests from the transport review: each one failed before its fix.
import { describe, test, expect, afterEach } from "vitest";
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  EventFd, listen, connect, socketpair, adoptFd, closeFd, memfdCreate, mmapFd, spawnWithFds,
  TransportError, type CloseReason, type Connection,
} from "../../src/transport/index.js";
import { native } from "../../src/transport/native.js";
import { frame, openFdCount, isOpen, until } from "./helpers.js";

const fixtures = join(__dirname, "fixtures");
const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-transport-"));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as TransportError).code ?? String(e);
  }
  return "no error";
}

/** Runs a fixture process; a fixture that does not finish within 20 s fails the test (and is killed). */
async function runFixture(args: string[], fds: number[] = [], command = process.execPath): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const { child } = spawnWithFds(command, args, fds, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const [code, signal] = await once(child, "exit");
  clearTimeout(guard);
  return { code, signal, stdout, stderr };
}

/** Lets libuv run one poll phase: a ready fd's watcher fires before the second immediate. */
const afterPollPhase = () => new Promise<void>((r) => setImmediate(() => setImmediate(r)));

describe("mmap bounds", () => {
  test("a range past the end of a file larger than 2^53 bytes is refused (no SIGBUS page)", () => {
    // A peer can size its memfd to 2^53; start + length then rounds in doubles:
    // (2^53 - 1) + 2 === 2^53, which looked like it fitted, and the second page (past the end of
    // the file) raised SIGBUS when touched.
    const fd = native().memfdCreate("past-2-53", 2 ** 53);
    expect(fd).toBeGreaterThanOrEqual(0);
    try {
      expect(codeOf(() => mmapFd(fd, 2 ** 53 - 1, 2))).toBe("ERR_MAP_OUT_OF_BOUNDS");
      expect(codeOf(() => mmapFd(fd, 2 ** 53 - 4097, 4098))).toBe("ERR_MAP_OUT_OF_BOUNDS");
      const last = mmapFd(fd, 2 ** 53 - 4096, 4096);
      last.bytes()[4095] = 1;
      last.unmap();
    } finally {
      closeFd(fd);
    }
  });
});

describe("eventfd never blocks the event loop", () => {
  test("read() and signal() on an eventfd a peer switched to blocking", async () => {
    const e = EventFd.create();
    // Like QEMU with every fd it receives: a process sharing the file clears O_NONBLOCK (libuv
    // does it to a child's stdin).
    spawnSync("/bin/true", [], { stdio: [e.fd, "ignore", "ignore"] });
    const flags = parseInt(/flags:\s*(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${e.fd}`, "utf8"))![1], 8);
    expect(flags & 0o4000).toBe(0); // O_NONBLOCK is gone from the shared file
    // In a child first: a read that waits would hang this test process for good.
    const r = await runFixture([join(fixtures, "peer.cjs"), "eventfd-nowait"], [e.fd]);
    expect(r.signal).toBeNull();
    expect(JSON.parse(r.stdout)).toEqual({ emptyRead: -11, write: 0, read: 5 });
    expect(e.read()).toBe(0);
    e.signal(3);
    expect(e.read()).toBe(3);
    e.close();
  });

  test("a full counter absorbs a signal instead of throwing EAGAIN (event_notifier_set)", () => {
    const e = EventFd.create();
    for (let i = 0; i < 2047; i++) expect(native().eventfdWrite(e.fd, 2 ** 53)).toBe(0); // 2^64 - 2^53
    expect(() => e.signal(2 ** 53 - 1)).not.toThrow(); // no room: the counter is signalled already
    e.signal(1);
    expect(e.read()).toBe(2 ** 64 - 2 ** 53 + 1); // as a double: the counter is not zero
    expect(e.read()).toBe(0);
    e.close();
  });

  test("signal() values that are not integers in [1, 2^53 - 1] are refused, counter untouched", () => {
    const e = EventFd.create();
    for (const bad of [-1, 0.5, 1.5, Number.NaN, Infinity, 2 ** 53]) {
      expect(codeOf(() => e.signal(bad))).toBe("ERR_INVALID_ARGUMENT");
    }
    expect(e.read()).toBe(0);
    e.close();
  });

  test("adopt() refuses an fd that is not an eventfd and leaves it with the caller", () => {
    const [a, b] = socketpair();
    closeFd(b); // a now reads end-of-file forever: watching it as an eventfd would spin
    expect(codeOf(() => EventFd.adopt(a))).toBe("ERR_INVALID_ARGUMENT");
    expect(isOpen(a)).toBe(true);
    closeFd(a);
    const mine = EventFd.create();
    const adopted = EventFd.adopt(native().dup(mine.fd));
    adopted.signal(2);
    expect(mine.read()).toBe(2);
    adopted.close();
    mine.close();
  });
});

describe("poll watcher lifecycle", () => {
  test("a stale handle (closed, memory reused by a new watcher) cannot close that watcher", async () => {
    const n = native();
    const first = n.eventfd(0, false);
    const stale = n.pollStart(first, 1, () => {});
    if (typeof stale === "number") throw new Error(`pollStart: ${stale}`);
    n.pollClose(stale);
    await afterPollPhase(); // libuv finished closing it
    const second = n.eventfd(0, false);
    let fired = 0;
    const live = n.pollStart(second, 1, () => {
      n.eventfdRead(second);
      fired++;
    });
    if (typeof live === "number") throw new Error(`pollStart: ${live}`);
    n.pollClose(stale); // second close: a no-op
    expect(n.pollSet(stale, 1)).toBe(-9); // EBADF, not a use of freed memory
    n.eventfdWrite(second, 1);
    await until(() => fired === 1);
    n.pollClose(live);
    n.pollClose(live);
    n.eventfdWrite(second, 1);
    await afterPollPhase();
    expect(fired).toBe(1); // nothing after close
    closeFd(first);
    closeFd(second);
  });

  test("ending a worker thread with open watchers and mappings does not abort the process", async () => {
    const r = await runFixture([join(fixtures, "worker-teardown.cjs"), "3"]);
    expect(r.stderr).toBe("");
    expect(r.signal).toBeNull();
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ok");
  }, 30_000);

  test("a receiver that destroys its connection stops delivery and closes the fds behind it", async () => {
    const before = openFdCount();
    const [raw, b] = socketpair();
    const receiver = adoptFd(b);
    const fds = [memfdCreate("later-1", 0), memfdCreate("later-2", 0)];
    // One read brings all three messages; the receiver gives up after the first.
    native().send(raw, frame([1]), 0, 5, null);
    native().send(raw, frame([2]), 0, 5, [fds[0]]);
    native().send(raw, frame([3]), 0, 5, [fds[1]]);
    fds.forEach(closeFd);
    const seen: number[] = [];
    receiver.setReceiver((rb, c) => {
      while (rb.available >= 5) {
        seen.push(rb.u8(4));
        c.destroy();
        if (c.isClosed) return;
      }
    });
    const reason: CloseReason = await once(receiver, "close").then(([r]) => r);
    expect(seen).toEqual([1]);
    expect(reason.kind).toBe("local");
    closeFd(raw);
    expect(openFdCount()).toBe(before);
  });
});

describe("partial writes", () => {
  test("a message with an fd that the kernel takes only partly: the fd travels once, with its first byte", async () => {
    const before = openFdCount();
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b, { limits: { maxMessageSize: 8 << 20 } });
    const memfd = memfdCreate("with-first-byte", 0);
    const big = frame(new Uint8Array(4 << 20).map((_, i) => i % 251)); // far above the socket buffer
    expect(sender.send(big, [memfd])).toBe(false); // part written (with the fd), the rest queued
    expect(sender.writableLength).toBeGreaterThan(0);
    expect(sender.writableLength).toBeLessThan(big.length);
    expect(openFdCount()).toBe(before + 3); // no duplicate kept: the fd already went
    expect(sender.send(frame([9]))).toBe(false);
    closeFd(memfd);
    const got: { length: number; fds: number[]; ok: boolean }[] = [];
    receiver.setReceiver((rb) => {
      while (rb.available >= 4 && rb.need(rb.u32(0))) {
        const total = rb.u32(0);
        const payload = rb.subarray(4, total - 4);
        let ok = true;
        for (let i = 0; i < payload.length && ok; i += 4093) ok = payload[i] === (total > 5 ? i % 251 : 9);
        got.push({ length: total, fds: rb.takeFds(total), ok });
        rb.consume(total);
      }
    });
    await until(() => got.length === 2);
    expect(got.map((m) => [m.length, m.fds.length, m.ok])).toEqual([[big.length, 1, true], [5, 0, true]]);
    expect(receiver.receiveBuffer.pendingFdCount).toBe(0);
    closeFd(got[0].fds[0]);
    sender.destroy();
    receiver.destroy();
    await afterPollPhase();
    expect(openFdCount()).toBe(before);
  });
});

describe("recvmsg", () => {
  test("fds the kernel could not install (receiver out of fds) are told apart from too many fds", async () => {
    const [mine, theirs] = socketpair();
    const fds = [memfdCreate("one", 0), memfdCreate("two", 0)];
    expect(native().send(mine, frame([1]), 0, 5, fds)).toBe(5);
    fds.forEach(closeFd);
    // The child has room for 4 fds in its control buffer but only one free fd number.
    const r = await runFixture(["-c", 'ulimit -n 256 && exec "$0" "$@"', process.execPath, join(fixtures, "peer.cjs"), "recv-at-fd-limit"], [theirs], "/bin/sh");
    closeFd(theirs);
    closeFd(mine);
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual({ got: 5, count: 1, truncated: 2 });
  });
});

describe("listen() input checks leave nothing behind", () => {
  test("invalid connection limits: no fd and no socket file left", () => {
    const path = join(tempDir(), "s.sock");
    const before = openFdCount();
    expect(codeOf(() => listen(path, { connection: { limits: { maxFdsPerMessage: 999 } } }))).toBe("ERR_INVALID_ARGUMENT");
    expect(openFdCount()).toBe(before);
    expect(existsSync(path)).toBe(false);
  });

  test("a mode that is not a permission value never reaches the addon's umask", () => {
    const path = join(tempDir(), "s.sock");
    for (const mode of ["600", -1, 0o4777, 1.5] as unknown as number[]) {
      expect(codeOf(() => listen(path, { mode }))).toBe("ERR_INVALID_ARGUMENT");
      expect(existsSync(path)).toBe(false);
    }
    // And the addon itself refuses a mode it cannot have been meant to get.
    expect(native().listen(path, 1, -1)).toBe(-22);
    expect(existsSync(path)).toBe(false);
    const server = listen(path, { mode: 0o660 });
    expect(statSync(path).mode & 0o7777).toBe(0o660);
    server.close();
  });

  test("a path with a NUL byte is refused instead of naming a shorter path", async () => {
    const dir = tempDir();
    expect(() => listen(join(dir, "s\0.sock"))).toThrow(expect.objectContaining({ code: "ERR_SYSCALL", errno: "EINVAL" }));
    expect(existsSync(join(dir, "s"))).toBe(false);
    const server = listen(join(dir, "s"));
    let accepted: Connection | undefined;
    server.on("connection", (c: Connection) => (accepted = c));
    await expect(connect(join(dir, "s\0ignored"))).rejects.toMatchObject({ code: "ERR_SYSCALL", errno: "EINVAL" });
    await afterPollPhase();
    expect(accepted).toBeUndefined();
    server.close();
  });
});

describe("spawnWithFds", () => {
  test("fds land at 3, 4... in the order given; no other fd of ours reaches the child", async () => {
    const [a, b] = socketpair();
    const [c, d] = socketpair();
    const secret = memfdCreate("not-for-the-child", 0);
    const mappedFd = memfdCreate("mapped-not-passed", 4096);
    const region = mmapFd(mappedFd, 0, 4096);
    const name = (fd: number) => readlinkSync(`/proc/self/fd/${fd}`);
    // Passed in descending fd order, so libuv has to move them past each other.
    const r = await runFixture([join(fixtures, "peer.cjs"), "list-fds"], [d, b]);
    expect(r.code).toBe(0);
    const open = JSON.parse(r.stdout) as Record<string, string>;
    expect(open["3"]).toBe(name(d));
    expect(open["4"]).toBe(name(b));
    const ours = new Set([a, c, secret].map(name));
    expect(Object.values(open).filter((target) => ours.has(target) || target.includes("memfd:"))).toEqual([]);
    region.unmap();
    [a, b, c, d, secret, mappedFd].forEach(closeFd);
  });

  test("kill() never signals a child that did not start (Node would signal pid 0: our group)", async () => {
    const spawned = spawnWithFds(join(tempDir(), "no-such-program"), [], []);
    const error = once(spawned.child, "error");
    expect(spawned.child.pid).toBeUndefined();
    expect(spawned.kill(0)).toBe(false); // signal 0: harmless even if this check were broken
    const [err] = await error;
    expect((err as NodeJS.ErrnoException).code).toBe("ENOENT");
    expect(spawned.kill(0)).toBe(false);
  });

  test("kill() signals a running child, and not one that has exited", async () => {
    const spawned = spawnWithFds("/bin/sleep", ["30"], []);
    await once(spawned.child, "spawn");
    expect(spawned.kill("SIGTERM")).toBe(true);
    const [, signal] = await once(spawned.child, "exit");
    expect(signal).toBe("SIGTERM");
    expect(spawned.kill(0)).toBe(false);
  });
});
