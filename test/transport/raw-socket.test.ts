// RawSocket: one recvmsg per call with the fds of that read, one sendmsg per send (the mpqemu
// endpoints' socket), and watchFd readiness on the event loop.
import { describe, expect, it } from "vitest";
import { readdirSync } from "node:fs";
import { RawSocket, watchFd } from "../../src/transport/raw-socket.js";
import { closeFd, socketpair } from "../../src/transport/fd.js";
import { memfdCreate, mmapFd } from "../../src/transport/shm.js";
import { EventFd } from "../../src/transport/eventfd.js";

const openFds = () => readdirSync("/proc/self/fd").length;

describe("RawSocket", () => {
  it("passes bytes and fds over a socketpair; the receiver sees memfd contents the sender wrote", () => {
    const [a, b] = socketpair();
    const sa = new RawSocket(a);
    const sb = new RawSocket(b);
    const mfd = memfdCreate("t", 4096);
    const m = mmapFd(mfd, 0n, 4096);
    m.bytes().set([1, 2, 3], 100);
    expect(sa.send(Uint8Array.of(9, 8, 7), [mfd])).toBe(3);
    const r = sb.recv();
    expect([...r.data]).toEqual([9, 8, 7]);
    expect(r.fds).toHaveLength(1);
    const m2 = mmapFd(r.fds[0], 0n, 4096);
    expect([...m2.bytes().subarray(100, 103)]).toEqual([1, 2, 3]);
    m2.bytes()[200] = 42;
    expect(m.bytes()[200]).toBe(42);
    m.unmap();
    m2.unmap();
    closeFd(r.fds[0]);
    closeFd(mfd);
    expect(sb.recv().n).toBe(-1); // nothing pending
    sa.close();
    expect(sb.recv().n).toBe(0); // orderly hang-up
    sb.close();
  });

  it("a read stops after an fd batch, so each recv's fds belong to the bytes it returned", () => {
    const [a, b] = socketpair();
    const sa = new RawSocket(a);
    const sb = new RawSocket(b);
    const e1 = EventFd.create();
    const e2 = EventFd.create();
    sa.send(Uint8Array.of(1, 1), [e1.fd]);
    sa.send(Uint8Array.of(2, 2), [e2.fd]);
    sa.send(Uint8Array.of(3));
    const reads: [number[], number][] = [];
    for (let r = sb.recv(); r.n > 0; r = sb.recv()) {
      reads.push([[...r.data], r.fds.length]); // data is a view of the reused buffer: copy it
      r.fds.forEach(closeFd);
    }
    expect(reads.slice(0, 2)).toEqual([[[1, 1], 1], [[2, 2], 1]]);
    expect(reads.flatMap(([d]) => d)).toEqual([1, 1, 2, 2, 3]);
    e1.close();
    e2.close();
    sa.close();
    sb.close();
  });

  it("send and recv after close fail with ERR_CLOSED; a send to a departed peer with ERR_SYSCALL", () => {
    const [a, b] = socketpair();
    const sa = new RawSocket(a);
    const sb = new RawSocket(b);
    sb.close();
    expect(() => sb.recv()).toThrow(expect.objectContaining({ code: "ERR_CLOSED" }));
    expect(() => sb.send(Uint8Array.of(1))).toThrow(expect.objectContaining({ code: "ERR_CLOSED" }));
    expect(() => sa.send(Uint8Array.of(1))).toThrow(expect.objectContaining({ code: "ERR_SYSCALL", errno: "EPIPE" }));
    sa.close();
  });

  it("watchFd reports readability on the event loop until stopped", async () => {
    const [a, b] = socketpair();
    const sa = new RawSocket(a);
    const sb = new RawSocket(b);
    const got = new Promise<number[]>((resolve) => {
      const w = watchFd(sb.fd, () => {
        w.stop();
        resolve([...sb.recv().data]);
      });
    });
    sa.send(Uint8Array.of(5, 6));
    expect(await got).toEqual([5, 6]);
    sa.close();
    sb.close();
  });

  it("leaks no fds over many socket cycles", () => {
    const before = openFds();
    for (let i = 0; i < 500; i++) {
      const [a, b] = socketpair();
      const sa = new RawSocket(a);
      const sb = new RawSocket(b);
      const e = EventFd.create();
      sa.send(Uint8Array.of(1), [e.fd]);
      const r = sb.recv();
      r.fds.forEach(closeFd);
      e.close();
      sa.close();
      sb.close();
    }
    expect(openFds()).toBe(before);
  });
});
