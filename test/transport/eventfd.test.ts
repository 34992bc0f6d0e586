import { describe, test, expect } from "vitest";
import { join } from "node:path";
import { once } from "node:events";
import { EventFd, socketpair, adoptFd, spawnWithFds, memfdCreate, mmapFd, closeFd } from "../../src/transport/index.js";
import { openFdCount, until } from "./helpers.js";

const peer = join(__dirname, "fixtures", "peer.cjs");

describe("EventFd", () => {
  test("signal adds to the counter; read returns and resets it; semaphore mode counts down", () => {
    const e = EventFd.create();
    expect(e.read()).toBe(0);
    e.signal();
    e.signal(4);
    expect(e.read()).toBe(5);
    expect(e.read()).toBe(0);
    e.close();
    expect(() => e.signal()).toThrow(expect.objectContaining({ code: "ERR_CLOSED" }));
    const s = EventFd.create({ semaphore: true, initial: 2 });
    expect([s.read(), s.read(), s.read()]).toEqual([1, 1, 0]);
    s.close();
  });

  test("onReadable fires on the event loop with the accumulated count", async () => {
    const e = EventFd.create();
    const counts: number[] = [];
    e.onReadable((n) => counts.push(n));
    e.signal(2);
    e.signal(3);
    await until(() => counts.length > 0);
    expect(counts).toEqual([5]);
    e.signal();
    await until(() => counts.length > 1);
    expect(counts).toEqual([5, 1]);
    e.onReadable(null);
    e.signal();
    // A watcher still armed would fire in the next poll phase, before the second immediate.
    await new Promise<void>((r) => setImmediate(() => setImmediate(r)));
    expect(counts).toEqual([5, 1]);
    expect(e.read()).toBe(1); // the signal is there, only not delivered
    e.close();
  });

  test("wake-ups cross processes in both directions (irqfd style), and nothing leaks", async () => {
    const before = openFdCount();
    const ping = EventFd.create();
    const pong = EventFd.create();
    const rounds = 200;
    const { child } = spawnWithFds(process.execPath, [peer, "eventfd-echo", String(rounds)], [ping.fd, pong.fd]);
    let answered = 0;
    let next: (() => void) | null = null;
    pong.onReadable((n) => {
      answered += n;
      next?.();
    });
    for (let i = 1; i <= rounds; i++) {
      const reply = new Promise<void>((resolve) => (next = resolve));
      ping.signal();
      await reply;
      expect(answered).toBe(i);
    }
    const [code] = await once(child, "exit");
    expect(code).toBe(0);
    ping.close();
    pong.close();
    expect(openFdCount()).toBe(before);
  });
});

describe("socketpair + spawnWithFds", () => {
  test("a child gets one end; memfds passed over it are mapped and changed by the child", async () => {
    const [mine, theirs] = socketpair();
    const { child, childFds } = spawnWithFds(process.execPath, (fds) => [peer, "memfd-echo", String(fds[0])], [theirs]);
    expect(childFds).toEqual([3]);
    closeFd(theirs);
    const conn = adoptFd(mine);
    const memfd = memfdCreate("shared-with-child", 4096);
    const region = mmapFd(memfd, 0, 4096);
    const echoes: number[] = [];
    conn.onData((chunk) => echoes.push(...chunk));
    for (let i = 1; i <= 5; i++) {
      conn.send(new Uint8Array([i]), [memfd]);
      await until(() => echoes.length === i);
      expect(region.bytes()[0]).toBe(i);
    }
    expect(echoes).toEqual([1, 2, 3, 4, 5]);
    conn.end();
    const [code] = await once(child, "exit");
    expect(code).toBe(0);
    region.unmap();
    closeFd(memfd);
  });
});
