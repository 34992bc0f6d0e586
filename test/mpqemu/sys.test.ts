import { describe, expect, it } from "vitest";
import { readdirSync } from "node:fs";
import {
  RawSocket, socketpair, closeFd, eventfd, eventfdSignal, eventfdDrain, memfdCreate, mapFd, watchReadable, fdIsOpen,
} from "../../src/mpqemu/sys.js";

const openFds = () => readdirSync("/proc/self/fd").length;

describe("mpqemu sys layer", () => {
  it("passes bytes and fds over a socketpair; the receiver sees memfd contents the sender wrote", () => {
    const [a, b] = socketpair();
    const sa = new RawSocket(a);
    const sb = new RawSocket(b);
    const mfd = memfdCreate("t", 4096n);
    const m = mapFd(mfd, 0n, 4096);
    m.bytes.set([1, 2, 3], 100);
    expect(sa.send(Uint8Array.of(9, 8, 7), [mfd])).toBe(3);
    const r = sb.recv();
    expect([...r.data]).toEqual([9, 8, 7]);
    expect(r.fds).toHaveLength(1);
    const m2 = mapFd(r.fds[0], 0n, 4096);
    expect([...m2.bytes.subarray(100, 103)]).toEqual([1, 2, 3]);
    m2.bytes[200] = 42;
    expect(m.bytes[200]).toBe(42);
    m.unmap();
    m2.unmap();
    closeFd(r.fds[0]);
    closeFd(mfd);
    expect(sb.recv().n).toBe(-1); // nothing pending
    sa.close();
    expect(sb.recv().n).toBe(0); // orderly hang-up
    sb.close();
  });

  it("refuses mappings past the end of the file", () => {
    const fd = memfdCreate("small", 8192n);
    expect(() => mapFd(fd, 4096n, 8192)).toThrow(expect.objectContaining({ code: "ERR_MAP_OUT_OF_BOUNDS" }));
    const m = mapFd(fd, 4096n, 4096);
    m.bytes[0] = 7;
    m.unmap();
    m.unmap(); // idempotent
    closeFd(fd);
  });

  it("eventfd readiness reaches the event loop", async () => {
    const efd = eventfd();
    let fired = 0;
    const got = new Promise<bigint>((resolve) => {
      const w = watchReadable(efd, () => {
        fired++;
        w.stop();
        resolve(eventfdDrain(efd));
      });
    });
    setTimeout(() => eventfdSignal(efd), 10);
    expect(await got).toBe(1n);
    expect(fired).toBe(1);
    expect(eventfdDrain(efd)).toBe(0n);
    closeFd(efd);
    expect(fdIsOpen(efd)).toBe(false);
  });

  it("leaks no fds over many socket cycles", () => {
    const before = openFds();
    for (let i = 0; i < 500; i++) {
      const [a, b] = socketpair();
      const sa = new RawSocket(a);
      const sb = new RawSocket(b);
      const e = eventfd();
      sa.send(Uint8Array.of(1), [e]);
      const r = sb.recv();
      r.fds.forEach(closeFd);
      closeFd(e);
      sa.close();
      sb.close();
    }
    expect(openFds()).toBe(before);
  });
});
