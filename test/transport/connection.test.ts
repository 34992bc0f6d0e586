import { describe, test, expect, afterEach } from "vitest";
import { mkdtempSync, rmSync, statSync, existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  socketpair, adoptFd, listen, connect, closeFd, memfdCreate, mmapFd, TransportError,
  type Connection, type CloseReason,
} from "../../src/transport/index.js";
import { native } from "../../src/transport/native.js";
import { frame, lengthPrefixedFramer, openFdCount, isOpen, until, type Framed } from "./helpers.js";

const dirs: string[] = [];
function tempSocketPath(): string {
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-transport-"));
  dirs.push(dir);
  return join(dir, "s.sock");
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function closed(c: Connection): Promise<CloseReason> {
  return new Promise((resolve) => c.once("close", resolve));
}

/** Raw sendmsg from a plain fd, so tests control exactly how bytes and fds are split. */
function rawSend(fd: number, bytes: Uint8Array, fds: number[] | null = null): void {
  const sent = native().send(fd, bytes, 0, bytes.length, fds);
  expect(sent).toBe(bytes.length);
}

/** Lets libuv run one poll phase: a ready fd's watcher fires before the second immediate. */
const afterPollPhase = () => new Promise<void>((r) => setImmediate(() => setImmediate(r)));

describe("fd passing", () => {
  test("round trip through a memfd: the receiver reads what the sender wrote", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b);
    const memfd = memfdCreate("guest-ram", 8192);
    const mine = mmapFd(memfd, 0, 8192);
    new TextEncoder().encodeInto("hello through shared memory", mine.bytes().subarray(4096));

    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => got.push(m)));
    sender.send(frame([7]), [memfd]);
    closeFd(memfd); // the peer has its own copy now
    await until(() => got.length === 1);

    const [fd] = got[0].fds;
    expect(got[0].fds.length).toBe(1);
    const theirs = mmapFd(fd, 4096, 4096);
    expect(new TextDecoder().decode(theirs.bytes().subarray(0, 27))).toBe("hello through shared memory");
    theirs.bytes()[100] = 0x5a; // and back the other way
    expect(mine.bytes()[4096 + 100]).toBe(0x5a);
    theirs.unmap();
    mine.unmap();
    closeFd(fd);
    sender.destroy();
    receiver.destroy();
  });

  test("fds that arrive with the first part of a message split across reads stay with it", async () => {
    const [raw, b] = socketpair();
    const receiver = adoptFd(b);
    const got: Framed[] = [];
    let reads = 0;
    const framer = lengthPrefixedFramer((m) => got.push(m));
    receiver.setReceiver((rb) => {
      reads++;
      framer(rb);
    });
    const fd1 = memfdCreate("first", 0);
    const fd2 = memfdCreate("second", 0);
    const message = frame([1, 2, 3, 4, 5, 6, 7, 8]);
    rawSend(raw, message.subarray(0, 3), [fd1, fd2]); // header not even complete
    await until(() => reads === 1);
    expect(got.length).toBe(0);
    rawSend(raw, message.subarray(3, 9));
    await until(() => reads === 2);
    rawSend(raw, message.subarray(9));
    await until(() => got.length === 1);
    expect(reads).toBe(3);
    expect(got[0].fds.length).toBe(2);
    expect(got[0].fds.every(isOpen)).toBe(true);
    got[0].fds.forEach(closeFd);
    closeFd(fd1);
    closeFd(fd2);
    closeFd(raw);
    await closed(receiver);
  });

  test("messages without fds read together with one that has fds do not take its fds", async () => {
    const [raw, b] = socketpair();
    const receiver = adoptFd(b);
    const fdB = memfdCreate("b", 0);
    const fdD = memfdCreate("d", 0);
    // Four sendmsg calls before the receiver reads: A, B+fdB, C, D+fdD.
    rawSend(raw, frame([0xa]));
    rawSend(raw, frame([0xb, 0xb]), [fdB]);
    rawSend(raw, frame([0xc]));
    rawSend(raw, frame([0xd, 0xd, 0xd]), [fdD]);
    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => got.push(m)));
    await until(() => got.length === 4);
    expect(got.map((m) => [m.payload[0], m.fds.length])).toEqual([[0xa, 0], [0xb, 1], [0xc, 0], [0xd, 1]]);
    // Each received fd refers to the file its message was sent with.
    const inode = (fd: number) => statSync(`/proc/self/fd/${fd}`).ino;
    expect(inode(got[1].fds[0])).toBe(inode(fdB));
    expect(inode(got[3].fds[0])).toBe(inode(fdD));
    [fdB, fdD, got[1].fds[0], got[3].fds[0], raw].forEach(closeFd);
    receiver.destroy();
  });
});

describe("rejection paths close every fd", () => {
  test("a peer that closes mid-message: error close, partial message's fds closed", async () => {
    const before = openFdCount();
    const [raw, b] = socketpair();
    const receiver = adoptFd(b);
    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => got.push(m)));
    const memfd = memfdCreate("orphan", 0);
    rawSend(raw, frame([1]));
    rawSend(raw, frame([1, 2, 3, 4, 5, 6]).subarray(0, 6), [memfd]);
    closeFd(memfd);
    const reason = closed(receiver);
    closeFd(raw);
    const r = await reason;
    expect(got.length).toBe(1);
    expect(r.kind).toBe("error");
    expect(r.error?.code).toBe("ERR_PEER_CLOSED_MID_MESSAGE");
    expect(r.unconsumedBytes).toBe(6);
    expect(receiver.fd).toBe(-1);
    expect(openFdCount()).toBe(before);
  });

  for (const sent of [3, 40]) {
    test(`a peer that attaches ${sent} fds with a limit of 2: all closed, ERR_TOO_MANY_FDS`, async () => {
      const before = openFdCount();
      const [raw, b] = socketpair();
      const receiver = adoptFd(b, { limits: { maxFdsPerMessage: 2 } });
      const fds = Array.from({ length: sent }, (_, i) => memfdCreate(`fd${i}`, 0));
      receiver.setReceiver(lengthPrefixedFramer(() => {
        throw new Error("no message may be delivered");
      }));
      const reason = closed(receiver);
      rawSend(raw, frame([1, 2]), fds);
      fds.forEach(closeFd);
      const r = await reason;
      expect(r.kind).toBe("error");
      expect(r.error).toBeInstanceOf(TransportError);
      expect(r.error?.code).toBe("ERR_TOO_MANY_FDS");
      expect(r.error?.limit).toBe(2);
      closeFd(raw);
      expect(openFdCount()).toBe(before);
    });
  }

  test("a framer rejecting an oversized message closes the connection and its fds", async () => {
    const before = openFdCount();
    const [raw, b] = socketpair();
    const receiver = adoptFd(b, { limits: { maxMessageSize: 1024 } });
    receiver.setReceiver(lengthPrefixedFramer(() => {}));
    const memfd = memfdCreate("big", 0);
    const header = new Uint8Array([0x01, 0x00, 0x10, 0x00]); // declares 1 MiB + 1
    rawSend(raw, header, [memfd]);
    closeFd(memfd);
    const r = await closed(receiver);
    expect(r.error?.code).toBe("ERR_MESSAGE_TOO_LARGE");
    expect(r.error?.actual).toBe(0x100001);
    closeFd(raw);
    expect(openFdCount()).toBe(before);
  });

  test("send() rejects more fds than the limit and fds without bytes", () => {
    const [a, b] = socketpair();
    const c = adoptFd(a, { limits: { maxFdsPerMessage: 1 } });
    expect(() => c.send(frame([1]), [b, b])).toThrow(expect.objectContaining({ code: "ERR_SEND_TOO_MANY_FDS" }));
    expect(() => c.send(new Uint8Array(0), [b])).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    c.destroy();
    expect(() => c.send(frame([1]))).toThrow(expect.objectContaining({ code: "ERR_CLOSED" }));
    closeFd(b);
  });
});

describe("backpressure and close", () => {
  test("send() queues what the kernel refuses, keeps fds valid, drains in order", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b); // not reading yet
    const chunk = new Uint8Array(60000).map((_, i) => i & 0xff);
    let sends = 0;
    while (sender.send(frame(chunk))) sends++;
    sends++;
    expect(sender.writableLength).toBeGreaterThan(0);
    // Queued together with an fd that the caller closes right away.
    const memfd = memfdCreate("queued", 4096);
    const map = mmapFd(memfd, 0, 4096);
    map.bytes()[0] = 0x77;
    map.unmap();
    expect(sender.send(frame([0xee]), [memfd])).toBe(false);
    closeFd(memfd);
    let drained = false;
    sender.on("drain", () => (drained = true));

    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => got.push(m)));
    await until(() => got.length === sends + 1);
    expect(drained).toBe(true);
    expect(sender.writableLength).toBe(0);
    for (let i = 0; i < sends; i++) {
      expect(got[i].payload.length).toBe(60000);
      expect(got[i].payload[59999]).toBe(59999 & 0xff);
      expect(got[i].fds).toEqual([]);
    }
    const last = got[sends];
    expect(last.payload[0]).toBe(0xee);
    expect(last.fds.length).toBe(1);
    const theirs = mmapFd(last.fds[0], 0, 4096);
    expect(theirs.bytes()[0]).toBe(0x77);
    theirs.unmap();
    closeFd(last.fds[0]);
    sender.destroy();
    receiver.destroy();
  });

  test("a burst of sends in one tick is coalesced, stays in order, and an fd keeps its message", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b);
    const memfd = memfdCreate("in-burst", 0);
    for (let i = 0; i < 300; i++) {
      expect(sender.send(frame([i & 0xff, i >> 8]), i === 150 ? [memfd] : undefined)).toBe(true);
    }
    expect(sender.writableLength).toBeGreaterThan(0); // held in this tick's batch
    await Promise.resolve();
    expect(sender.writableLength).toBe(0); // written when the tick's microtasks ran
    closeFd(memfd);
    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => got.push(m)));
    await until(() => got.length === 300);
    expect(got.map((m) => m.payload[0] | (m.payload[1] << 8))).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(got.map((m, i) => [i, m.fds.length]).filter(([, n]) => n !== 0)).toEqual([[150, 1]]);
    closeFd(got[150].fds[0]);
    sender.destroy();
    receiver.destroy();
  });

  test("end() flushes queued bytes, then the peer sees end of stream; both close cleanly", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b);
    const payload = new Uint8Array(200000).fill(3);
    sender.send(frame(payload.subarray(0, 100000)));
    const pieces = Array.from(frame(payload.subarray(0, 99)), (byte) => new Uint8Array([byte]));
    sender.send(pieces); // 103 chunks: more than one sendmsg's iovec limit
    sender.send([frame(payload.subarray(0, 50000)), frame([1, 2])]);
    sender.end();
    expect(() => sender.send(frame([1]))).toThrow(expect.objectContaining({ code: "ERR_CLOSED" }));
    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => got.push(m)));
    // The receiver closes when it reads end of stream; that in turn ends the sender's wait.
    const [rr, sr] = await Promise.all([closed(receiver), closed(sender)]);
    expect(got.map((m) => m.payload.length)).toEqual([100000, 99, 50000, 2]);
    expect(rr.kind).toBe("eof");
    expect(sr.kind).toBe("local");
  });

  test("destroy() is abrupt: the peer sees end of stream, queued sends are dropped", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b);
    while (sender.send(new Uint8Array(65536)));
    const memfd = memfdCreate("dropped", 0);
    const before = openFdCount();
    sender.send(frame([1]), [memfd]); // queued with a duplicate of memfd
    expect(openFdCount()).toBe(before + 1);
    sender.destroy();
    expect(openFdCount()).toBe(before - 1); // the duplicate and the socket
    const r = await closed(sender);
    expect(r.kind).toBe("local");
    let bytes = 0;
    let fdsReceived = 0;
    receiver.onData((chunk, fds) => {
      bytes += chunk.length;
      fdsReceived += fds.length;
      fds.forEach(closeFd);
    });
    const rr = await closed(receiver);
    expect(rr.kind).toBe("eof");
    expect(bytes).toBeGreaterThan(0);
    expect(fdsReceived).toBe(0);
    closeFd(memfd);
  });

  test("sending to a peer that is gone closes with EPIPE", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    closeFd(b);
    expect(sender.send(frame([1]))).toBe(false);
    const r = await closed(sender);
    expect(r.kind).toBe("error");
    expect(r.error?.code).toBe("ERR_SYSCALL");
    expect(r.error?.errno).toBe("EPIPE");
  });
});

describe("listen / connect / adopt", () => {
  test("a listener with mode 0600 serves connections and removes its path on close", async () => {
    const path = tempSocketPath();
    const server = listen(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const accepted: Connection[] = [];
    server.on("connection", (c: Connection) => {
      accepted.push(c);
      c.setReceiver(lengthPrefixedFramer((m) => c.send(frame([...m.payload].reverse()))));
    });
    const client = await connect(path);
    const replies: Framed[] = [];
    client.setReceiver(lengthPrefixedFramer((m) => replies.push(m)));
    client.send(frame([1, 2, 3]));
    await until(() => replies.length === 1);
    expect([...replies[0].payload]).toEqual([3, 2, 1]);
    server.close();
    expect(existsSync(path)).toBe(false);
    client.destroy();
    const r = await closed(accepted[0]);
    expect(r.kind).toBe("eof");
  });

  test("errors: nothing there, nobody listening, path taken, not a socket, path too long", async () => {
    const path = tempSocketPath();
    await expect(connect(path)).rejects.toMatchObject({ code: "ERR_SYSCALL", errno: "ENOENT", path });
    const server = listen(path);
    expect(() => listen(path)).toThrow(expect.objectContaining({ errno: "EADDRINUSE" }));
    server.close();
    writeFileSync(path, "not a socket");
    expect(() => listen(path, { replaceExisting: true })).toThrow(expect.objectContaining({ errno: "EADDRINUSE" }));
    rmSync(path);
    // A socket file whose listener is gone (a crashed server): refused, and replaceable.
    const staleFd = native().listen(path, 1, 0o600);
    expect(staleFd).toBeGreaterThanOrEqual(0);
    native().close(staleFd);
    await expect(connect(path)).rejects.toMatchObject({ errno: "ECONNREFUSED" });
    const fresh = listen(path, { replaceExisting: true });
    const c = await connect(path);
    c.destroy();
    fresh.close();
    expect(() => listen("/tmp/" + "x".repeat(200))).toThrow(expect.objectContaining({ errno: "ENAMETOOLONG" }));
    const memfd = memfdCreate("not-a-socket", 0);
    expect(() => adoptFd(memfd)).toThrow(expect.objectContaining({ code: "ERR_NOT_A_STREAM_SOCKET" }));
    expect(isOpen(memfd)).toBe(true); // still the caller's
    closeFd(memfd);
  });

  test("replaceExisting replaces only a stale socket; close() removes only the socket it created", () => {
    const path = tempSocketPath();
    const live = listen(path);
    expect(() => listen(path, { replaceExisting: true })).toThrow(expect.objectContaining({ errno: "EADDRINUSE", message: expect.stringContaining("a listener is accepting") }));
    // Its path taken over (unlinked, a new socket bound there): closing it leaves the new one.
    rmSync(path);
    const next = listen(path);
    const inode = statSync(path).ino;
    live.close();
    expect(statSync(path).ino).toBe(inode);
    next.close();
    expect(existsSync(path)).toBe(false);
  });

  test("connect() gives up with ERR_CONNECT_TIMEOUT while the backlog stays full", async () => {
    const path = tempSocketPath();
    const fd = native().listen(path, 0, 0o600); // listening, never accepting
    const waiting: Connection[] = [];
    let error: TransportError | undefined;
    for (let i = 0; i < 8 && error === undefined; i++) {
      try {
        waiting.push(await connect(path, { timeoutMs: 30 }));
      } catch (e) {
        error = e as TransportError;
      }
    }
    expect(error?.code).toBe("ERR_CONNECT_TIMEOUT");
    expect(error?.path).toBe(path);
    waiting.forEach((c) => c.destroy());
    native().close(fd);
  });

  test("a server without a 'connection' listener closes accepted connections", async () => {
    const path = tempSocketPath();
    const server = listen(path);
    const client = await connect(path);
    client.onData(() => {});
    const r = await closed(client);
    expect(r.kind).toBe("eof");
    server.close();
  });

  test("pause() stops delivery until resume(); a receiver that throws closes the connection", async () => {
    const [a, b] = socketpair();
    const sender = adoptFd(a);
    const receiver = adoptFd(b);
    const got: Framed[] = [];
    receiver.setReceiver(lengthPrefixedFramer((m) => {
      got.push(m);
      if (m.payload[0] === 3) throw new Error("device model bug");
    }));
    receiver.pause();
    sender.send(frame([1])); // in the receiver's socket buffer when send() returns
    await afterPollPhase(); // a watcher still armed would have delivered it by now
    expect(got.length).toBe(0);
    receiver.resume();
    await until(() => got.length === 1);
    sender.send(frame([3]));
    const r = await closed(receiver);
    expect(r.error?.code).toBe("ERR_RECEIVER_THREW");
    expect((r.error?.cause as Error).message).toBe("device model bug");
    sender.destroy();
  });

  test("thousands of open/close cycles leave no fd behind", async () => {
    const path = tempSocketPath();
    const server = listen(path, { backlog: 64 });
    let served = 0;
    let clientsClosed = 0;
    server.on("connection", (c: Connection) => {
      c.setReceiver(lengthPrefixedFramer((m) => {
        c.send(frame(m.payload), m.fds);
        m.fds.forEach(closeFd);
      }));
      c.on("close", () => served++);
    });
    const before = openFdCount();
    const memfd = memfdCreate("cycled", 0);
    for (let i = 0; i < 1500; i++) {
      const client = await connect(path);
      client.once("close", () => clientsClosed++);
      const replies: Framed[] = [];
      client.setReceiver(lengthPrefixedFramer((m) => replies.push(m)));
      client.send(frame([i & 0xff]), i % 3 === 0 ? [memfd] : undefined);
      await until(() => replies.length === 1);
      replies[0].fds.forEach(closeFd);
      if (i % 2 === 0) client.destroy();
      else client.end();
      const [x, y] = socketpair();
      adoptFd(x).destroy();
      adoptFd(y).destroy();
    }
    // An ended client closes only once it reads the server's end of stream: wait for both sides.
    await until(() => served === 1500 && clientsClosed === 1500);
    closeFd(memfd);
    expect(openFdCount()).toBe(before);
    server.close();
  }, 60_000);
});
