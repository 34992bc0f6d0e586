// The connection's stream mode (the watcher reads before calling JS and sends what the receiver
// sent after it returns): order and completeness of what a receiver sends, however the sends
// mix with microtasks, fds, a full socket and a close.
import { describe, test, expect } from "vitest";
import { socketpair, adoptFd, type Connection } from "../../src/transport/index.js";
import { native } from "../../src/transport/native.js";
import { memfdCreate, closeFd } from "../../src/transport/index.js";
import { until } from "./helpers.js";

/** Collects every byte (and fd) a raw-mode connection receives. */
function collector(c: Connection): { bytes: () => Uint8Array; fds: number[] } {
  const parts: Uint8Array[] = [];
  const fds: number[] = [];
  c.onData((chunk, got) => {
    parts.push(chunk.slice());
    fds.push(...got);
  });
  return {
    bytes: () => {
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    },
    fds,
  };
}

const bytesOf = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("connection stream mode", () => {
  test("a receiver's sends, a microtask's send after it and a send with fds leave in call order", async () => {
    const [a, b] = socketpair();
    const server = adoptFd(a);
    const client = adoptFd(b);
    const got = collector(client);
    const memfd = memfdCreate("stream-mode", 4096);
    server.onData((chunk) => {
      const n = chunk[0];
      server.send(bytesOf(`a${n}`));
      server.send(bytesOf(`b${n}`));
      // Runs after the receiver returned, before the watcher sends the receiver's batch.
      queueMicrotask(() => server.send(bytesOf(`c${n}`)));
      if (n === 2) server.send(bytesOf(`F${n}`), [memfd]);
      server.send(bytesOf(`d${n}`));
    });
    for (const n of [1, 2, 3]) {
      client.send(Uint8Array.of(n));
      await until(() => text(got.bytes()).endsWith(`c${n}`));
    }
    expect(text(got.bytes())).toBe("a1b1d1c1a2b2F2d2c2a3b3d3c3");
    expect(got.fds.length).toBe(1);
    for (const fd of got.fds) closeFd(fd);
    closeFd(memfd);
    server.destroy();
    client.destroy();
  });

  test("replies the kernel cannot take at once are queued and all arrive, in order", async () => {
    const [a, b] = socketpair();
    const server = adoptFd(a);
    const client = adoptFd(b);
    const reply = new Uint8Array(60 * 1024);
    let requests = 0;
    server.onData((chunk) => {
      for (let i = 0; i < chunk.length; i++) {
        reply.fill(chunk[i]);
        server.send(reply);
        requests++;
      }
    });
    // Let the socket fill: the client does not read until every request was answered.
    client.pause();
    const total = 40; // 2.4 MB of replies, far above the socket buffers
    for (let i = 0; i < total; i++) client.send(Uint8Array.of(i));
    await until(() => requests === total);
    expect(server.writableLength).toBeGreaterThan(0);
    const got = collector(client);
    client.resume();
    await until(() => got.bytes().length === total * reply.length);
    const all = got.bytes();
    for (let i = 0; i < total; i++) {
      const at = i * reply.length;
      expect(all[at]).toBe(i);
      expect(all[at + reply.length - 1]).toBe(i);
    }
    server.destroy();
    client.destroy();
  });

  test("a reply sent just before the receiver closes its connection still leaves", async () => {
    const [a, b] = socketpair();
    const server = adoptFd(a);
    const peer = b;
    server.onData(() => {
      server.send(bytesOf("goodbye"));
      server.destroy();
    });
    expect(native().send(peer, Uint8Array.of(1), 0, 1, null)).toBe(1);
    const buf = new Uint8Array(64);
    const info = new Int32Array(8);
    let text_ = "";
    await until(() => {
      const n = native().recv(peer, buf, 0, buf.length, info);
      if (n > 0) text_ += text(buf.subarray(0, n));
      return n === 0; // end of stream after the reply
    });
    expect(text_).toBe("goodbye");
    closeFd(peer);
  });
});
