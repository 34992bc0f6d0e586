// Our remote against our proxy (edu: INTx with resample, DMA into shared RAM, reset), and
// malformed / truncated traffic in both directions from scripted raw peers.
import { afterEach, describe, expect, it, vi } from "vitest";
import { readdirSync } from "node:fs";
import { createEdu, EDU_REG, EDU_DMA_RUN, EDU_DMA_TO_RAM, EDU_ID_VALUE, EDU_STATUS_COMPUTING } from "../../src/devices/edu.js";
import { createPciFunction } from "../../src/core/pci/function.js";
import { MpqemuProxy } from "../../src/mpqemu/proxy.js";
import { MpqemuRemote } from "../../src/mpqemu/remote.js";
import { Cmd, MpqemuEncoder, MpqemuParser, type Encoded, type MpqemuMsg, type RequestMsg } from "../../src/mpqemu/wire.js";
import { RawSocket } from "../../src/transport/raw-socket.js";
import { closeFdQuietly as closeFd, socketpair } from "../../src/transport/fd.js";
import { memfdCreate } from "../../src/transport/shm.js";
import { native } from "../../src/transport/native.js";
import { fstatSync } from "node:fs";

/** A raw eventfd number the test owns (SET_IRQFD hands the peer copies of it). */
function eventfd(): number {
  const fd = native().eventfd(0, false);
  if (fd < 0) throw new Error(`eventfd failed: errno ${-fd}`);
  return fd;
}
const eventfdSignal = (fd: number) => native().eventfdWrite(fd, 1);
function fdIsOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

const openFds = () => readdirSync("/proc/self/fd").length;
const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("our proxy driving our remote (edu)", () => {
  async function pair() {
    const [a, b] = socketpair();
    const logs: string[] = [];
    const remote = new MpqemuRemote({ fd: b, fn: createEdu({ dmaDelayMs: 0 }).fn, log: (l) => logs.push(l) }).start();
    const proxy = await MpqemuProxy.start({ fd: a, ramSize: 1 << 20, heartbeatMs: 0 });
    cleanups.push(() => proxy.close(), () => remote.close());
    const info = await proxy.probe();
    await proxy.programBars(info);
    return { proxy, remote, info, logs };
  }

  it("probe, registers, factorial", async () => {
    const { proxy, info } = await pair();
    expect(info).toMatchObject({ vendorId: 0x1234, deviceId: 0x11e8, revision: 0x10, classCode: 0x00ff00, interruptPin: 1 });
    expect(info.bars).toEqual([{ index: 0, kind: "mem32", prefetchable: false, size: 1n << 20n }]);
    expect(await proxy.barRead(0, EDU_REG.ID, 4)).toBe(BigInt(EDU_ID_VALUE));
    await proxy.barWrite(0, EDU_REG.LIVENESS, 4, 0x0f0f0f0f);
    expect(await proxy.barRead(0, EDU_REG.LIVENESS, 4)).toBe(0xf0f0f0f0n);
    await proxy.barWrite(0, EDU_REG.FACTORIAL, 4, 6);
    while ((await proxy.barRead(0, EDU_REG.STATUS, 4)) & BigInt(EDU_STATUS_COMPUTING)) await sleep(1);
    expect(await proxy.barRead(0, EDU_REG.FACTORIAL, 4)).toBe(720n);
  });

  it("INTx: raised through the irqfd, re-raised on resample while asserted, quiet after acknowledge", async () => {
    const { proxy } = await pair();
    await proxy.barWrite(0, EDU_REG.IRQ_RAISE, 4, 0x1);
    await proxy.waitIntx(2000);
    proxy.eoi();
    expect(proxy.intx).toBe(false);
    await proxy.waitIntx(2000); // the device still asserts: raised again after the EOI
    expect(await proxy.barRead(0, EDU_REG.IRQ_STATUS, 4)).toBe(1n);
    await proxy.barWrite(0, EDU_REG.IRQ_ACK, 4, 0x1);
    proxy.eoi();
    await sleep(50);
    expect(proxy.intx).toBe(false);
  });

  it("device DMA reaches the proxy's memfd RAM shared with SYNC_SYSMEM, both directions", async () => {
    const { proxy, remote } = await pair();
    expect(remote.sysmem).toEqual([{ gpa: 0n, size: 1n << 20n }]);
    const pattern = Uint8Array.from({ length: 64 }, (_, i) => (i * 7 + 1) & 0xff);
    proxy.ram!.set(pattern, 0x1000);
    const dma = async (src: number, dst: number, count: number, cmd: number) => {
      await proxy.barWrite(0, EDU_REG.DMA_SRC, 8, src);
      await proxy.barWrite(0, EDU_REG.DMA_DST, 8, dst);
      await proxy.barWrite(0, EDU_REG.DMA_CNT, 8, count);
      await proxy.barWrite(0, EDU_REG.DMA_CMD, 8, cmd);
      while ((await proxy.barRead(0, EDU_REG.DMA_CMD, 8)) & BigInt(EDU_DMA_RUN)) await sleep(1);
    };
    await dma(0x1000, 0x40000, 64, EDU_DMA_RUN); // RAM -> device buffer
    await dma(0x40000, 0x3000, 64, EDU_DMA_RUN | EDU_DMA_TO_RAM); // device buffer -> RAM
    expect([...proxy.ram!.subarray(0x3000, 0x3040)]).toEqual([...pattern]);
  });

  it("DEVICE_RESET resets the function: BARs cleared, registers back to reset values", async () => {
    const { proxy, remote } = await pair();
    await proxy.barWrite(0, EDU_REG.LIVENESS, 4, 1);
    await proxy.reset();
    expect(await proxy.configRead(0x10, 4)).toBe(0);
    expect(remote.fn.barAddress(0)).toBeUndefined();
    await proxy.programBars(await proxy.probe());
    expect(await proxy.barRead(0, EDU_REG.LIVENESS, 4)).toBe(0n);
  });

  it("pipelined requests beyond the socket buffers: queued, written when writable, answered in order", async () => {
    const { proxy } = await pair();
    const n = 20_000; // ~800 KB of requests, far beyond a socketpair's buffer
    const reads = Array.from({ length: n }, (_, i) => proxy.barRead(0, i % 2 ? 0x00 : 0x04, 4));
    const values = await Promise.all(reads);
    expect(values.every((v, i) => v === (i % 2 ? BigInt(EDU_ID_VALUE) : 0n))).toBe(true);
    expect(await proxy.configRead(0, 4)).toBe(0x11e81234);
  });

  it("64-bit BARs: sized across both dwords, placed above 4 GiB, decoded by the remote", async () => {
    const seen: number[] = [];
    const fn = createPciFunction({
      vendorId: 0x1b36,
      deviceId: 0x64b1,
      classCode: 0xff0000,
      bars: [
        { kind: "io", size: 16, ops: { read: () => 0x5a, write: () => {}, valid: { min: 1, max: 4 } } },
        { kind: "mem64", size: 1n << 33n, prefetchable: true, ops: { read: (off) => (seen.push(off), Math.floor(off / 16) >>> 0), write: () => {}, valid: { min: 4, max: 8 } } },
      ],
    });
    const [a, b] = socketpair();
    const remote = new MpqemuRemote({ fd: b, fn, log: () => {} }).start();
    const proxy = await MpqemuProxy.start({ fd: a, ramSize: 0, heartbeatMs: 0 });
    cleanups.push(() => proxy.close(), () => remote.close());
    const info = await proxy.probe();
    expect(info.bars).toEqual([
      { index: 0, kind: "io", prefetchable: false, size: 16n },
      { index: 1, kind: "mem64", prefetchable: true, size: 1n << 33n },
    ]);
    const bars = await proxy.programBars(info);
    expect(bars[1].address).toBe(1n << 33n); // naturally aligned, above 4 GiB
    expect(fn.barAddress(1)).toBe(1n << 33n);
    expect(await proxy.barRead(1, 0x1_2345_6780, 4)).toBe(0x12345678n);
    expect(seen.at(-1)).toBe(0x1_2345_6780);
    expect(await proxy.barRead(0, 3, 1)).toBe(0x5an);
  });

  it("the remote ends cleanly when the proxy hangs up, releasing RAM and irqfds", async () => {
    const before = openFds();
    const [a, b] = socketpair();
    const remote = new MpqemuRemote({ fd: b, fn: createEdu().fn, log: () => {} }).start();
    const proxy = await MpqemuProxy.start({ fd: a, ramSize: 1 << 20, heartbeatMs: 0 });
    expect(await proxy.configRead(0, 4)).toBe(0x11e81234);
    await proxy.close();
    expect(await remote.ended).toEqual({ reason: "hangup" });
    expect(openFds()).toBe(before);
  });
});

/** A scripted peer on the other end of a socketpair. */
class RawPeer {
  readonly sock: RawSocket;
  private parser: MpqemuParser<MpqemuMsg>;
  constructor(fd: number, role: "remote" | "proxy") {
    this.sock = new RawSocket(fd);
    this.parser = new MpqemuParser(role, closeFd);
  }
  send(e: Encoded | Uint8Array, fds: number[] = []) {
    const bytes = e instanceof Uint8Array ? e : e.bytes;
    const n = this.sock.send(bytes, e instanceof Uint8Array ? fds : e.fds);
    expect(n).toBe(bytes.length);
  }
  /** Next parsed messages (waits up to timeoutMs for at least one). */
  async next(timeoutMs = 2000): Promise<MpqemuMsg[]> {
    const out: MpqemuMsg[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length === 0 && Date.now() < deadline) {
      const r = this.sock.recv();
      if (r.n > 0) this.parser.push(r.data, r.fds, (ev) => ev.ok && out.push(ev.message));
      else if (r.n === 0) break;
      else await sleep(2);
    }
    return out;
  }
  async expectNothing(ms = 50) {
    await sleep(ms);
    expect(this.sock.recv().n).toBe(-1);
  }
}

describe("malformed and truncated requests to our remote", () => {
  const enc = new MpqemuEncoder();

  function start() {
    const [a, b] = socketpair();
    const logs: string[] = [];
    const remote = new MpqemuRemote({ fd: b, fn: createEdu().fn, log: (l) => logs.push(l) }).start();
    const peer = new RawPeer(a, "proxy");
    cleanups.push(() => remote.close(), () => peer.sock.close());
    return { remote, peer, logs };
  }

  async function expectServing(peer: RawPeer) {
    peer.send(enc.configRead(0, 4));
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0x11e81234n }]);
  }

  it("answers the all-ones RET to requests with a bad size, bad fds or bad fields, closes the fds, keeps serving", async () => {
    const { peer, logs } = start();
    const before = openFds();
    const stray = eventfd();
    peer.send(enc.raw(Cmd.PCI_CFGREAD, new Uint8Array(8))); // 8-byte config payload
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0xffffffffffffffffn }]);
    peer.send(enc.barRead(0xe0000000n, 4, true).bytes, [stray]); // BAR read carrying an fd
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0xffffffffffffffffn }]);
    closeFd(stray);
    peer.send(enc.barRead(0xe0000000n, 3, true)); // size 3
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0xffffffffffffffffn }]);
    peer.send(enc.configRead(0xfe, 4)); // crosses the end of the 256-byte space
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0xffffffffffffffffn }]);
    peer.send(enc.configRead(0x1000, 1)); // far outside
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0xffffffffffffffffn }]);
    peer.send(enc.raw(Cmd.BAR_WRITE, new Uint8Array(300))); // oversized, skipped
    expect(await peer.next()).toEqual([{ cmd: Cmd.RET, value: 0xffffffffffffffffn }]);
    await expectServing(peer);
    expect(logs.filter((l) => l.startsWith("rejected:")).length).toBe(3);
    expect(logs.join("\n")).toMatch(/PCI_CFGREAD needs a 12-byte payload, got 8/);
    expect(openFds()).toBe(before);
  });

  it("unknown commands and a misdirected RET get no reply; their fds are closed", async () => {
    const { peer, logs } = start();
    const before = openFds();
    const e1 = eventfd();
    peer.send(enc.raw(42, new Uint8Array(8)).bytes, [e1]);
    closeFd(e1);
    peer.send(enc.ret(5n));
    await peer.expectNothing();
    await expectServing(peer);
    expect(logs.join("\n")).toMatch(/unknown command 42/);
    expect(logs.join("\n")).toMatch(/RET is not valid in this direction/);
    expect(openFds()).toBe(before);
  });

  it("SET_IRQFD whose fds are not eventfds is ignored with a log line, both fds closed, and serving goes on", async () => {
    const { peer, logs } = start();
    const before = openFds();
    const [x, y] = socketpair(); // sockets, not eventfds: signalling would write into them
    peer.send(enc.setIrqfd(x, y));
    closeFd(x);
    closeFd(y);
    await expectServing(peer);
    expect(logs.join("\n")).toMatch(/SET_IRQFD ignored: .*not an eventfd/);
    expect(openFds()).toBe(before);
  });

  it("SET_IRQFD with one fd is rejected and its fd closed", async () => {
    const { peer, logs } = start();
    const before = openFds();
    const e1 = eventfd();
    peer.send(enc.raw(Cmd.SET_IRQFD, new Uint8Array(0)).bytes, [e1]);
    closeFd(e1);
    await expectServing(peer);
    expect(logs.join("\n")).toMatch(/SET_IRQFD needs 2/);
    expect(openFds()).toBe(before);
  });

  it("SYNC_SYSMEM replaces the RAM set atomically; a set that cannot be mapped keeps the old one", async () => {
    const { peer, remote, logs } = start();
    const before = openFds();
    const ram1 = memfdCreate("ram1", 1 << 20);
    peer.send(enc.syncSysmem([{ gpa: 0n, size: 1n << 20n, offset: 0n, fd: ram1 }]));
    await expectServing(peer);
    expect(remote.sysmem).toEqual([{ gpa: 0n, size: 1n << 20n }]);
    expect(remote.stats.sysmemSwaps).toBe(1);
    // The same layout again (QEMU resends it after every topology change): kept, no remap,
    // and a device mapping of guest RAM stays live.
    let invalidated = 0;
    const live = remote.fn.dma!.map(0x1000n, 16, "bidirectional", () => invalidated++);
    peer.send(enc.syncSysmem([{ gpa: 0n, size: 1n << 20n, offset: 0n, fd: ram1 }]));
    await expectServing(peer);
    expect(remote.stats.sysmemSwaps).toBe(1);
    expect(invalidated).toBe(0);
    live.release();
    // Second set: two regions, the second past the end of its memfd -> whole set refused.
    const small = memfdCreate("small", 4096);
    peer.send(enc.syncSysmem([
      { gpa: 0n, size: 1n << 20n, offset: 0n, fd: ram1 },
      { gpa: 1n << 30n, size: 1n << 20n, offset: 0n, fd: small },
    ]));
    await expectServing(peer);
    expect(logs.join("\n")).toMatch(/SYNC_SYSMEM rejected, keeping the previous guest RAM/);
    expect(remote.sysmem).toEqual([{ gpa: 0n, size: 1n << 20n }]);
    // A valid replacement takes effect; the old mapping's fds are released.
    const ram2 = memfdCreate("ram2", 2 << 20);
    peer.send(enc.syncSysmem([
      { gpa: 0n, size: 1n << 20n, offset: 0n, fd: ram2 },
      { gpa: 1n << 32n, size: 1n << 20n, offset: 1n << 20n, fd: ram2 },
    ]));
    await expectServing(peer);
    expect(remote.sysmem).toEqual([{ gpa: 0n, size: 1n << 20n }, { gpa: 1n << 32n, size: 1n << 20n }]);
    expect(remote.stats.sysmemSwaps).toBe(2);
    remote.fn.dma!.writeU32((1n << 32n) + 8n, 0xabcdef01);
    closeFd(ram1);
    closeFd(small);
    // ram2 stays open in the remote (2 received fds); ours can go.
    closeFd(ram2);
    expect(openFds()).toBeLessThanOrEqual(before + 2); // at most the two received ram2 fds
    remote.close();
    expect(openFds()).toBe(before - 1); // everything received is gone, and the remote's socket
  });

  it("a message cut short by a hang-up ends serving with a truncation error and closes its fds", async () => {
    const { peer, remote, logs } = start();
    const ram = memfdCreate("ram", 1 << 20);
    const full = enc.syncSysmem([{ gpa: 0n, size: 1n << 20n, offset: 0n, fd: ram }]);
    peer.send(full.bytes.subarray(0, 100), [ram]);
    closeFd(ram);
    await sleep(20);
    const before = openFds();
    peer.sock.close();
    const end = await remote.ended;
    expect(end).toMatchObject({ reason: "error", error: { code: "MPQEMU_TRUNCATED" } });
    // Gone: our end, the remote's socket, and the memfd the remote had received.
    expect(openFds()).toBe(before - 3);
    expect(logs.join("\n")).toMatch(/connection closed inside a message/);
  });

  it("an absurd payload size is a framing error: the remote stops instead of guessing", async () => {
    const { peer, remote } = start();
    peer.send(hex("05000000 00000000 0000000001000000"));
    const end = await remote.ended;
    expect(end).toMatchObject({ reason: "error", error: { code: "MPQEMU_FRAMING" } });
  });
});

describe("malformed and truncated replies to our proxy", () => {
  const enc = new MpqemuEncoder();

  /**
   * Starts a proxy on a socketpair whose other end answers the start-up batch: RAM, irqfds,
   * cache line size mark, DEVICE_RESET, mark read back (as `markAfterReset`: 0 = the reset
   * cleared config space, 0x10 = kept, as QEMU's DEVICE_RESET does).
   */
  async function startBatch(opts: { timeoutMs?: number; log?: (l: string) => void; markAfterReset?: number } = {}) {
    const [a, b] = socketpair();
    const peer = new RawPeer(b, "remote");
    const started = MpqemuProxy.start({ fd: a, ramSize: 1 << 16, heartbeatMs: 0, timeoutMs: opts.timeoutMs ?? 1000, log: opts.log });
    cleanups.push(() => started.then((p) => p.close(), () => {}), () => peer.sock.isClosed || peer.sock.close());
    const seen: RequestMsg[] = [];
    while (!seen.some((m) => m.cmd === Cmd.PCI_CFGREAD)) seen.push(...((await peer.next()) as RequestMsg[]));
    expect(seen).toMatchObject([
      { cmd: Cmd.SYNC_SYSMEM },
      { cmd: Cmd.SET_IRQFD },
      { cmd: Cmd.PCI_CFGWRITE, addr: 0x0c, len: 1, value: 0x10 },
      { cmd: Cmd.DEVICE_RESET },
      { cmd: Cmd.PCI_CFGREAD, addr: 0x0c, len: 1 },
    ]);
    for (const m of seen) if (m.cmd === Cmd.SYNC_SYSMEM) m.regions.forEach((r) => closeFd(r.fd));
    const irqfds = seen.flatMap((m) => (m.cmd === Cmd.SET_IRQFD ? [m.irqfd, m.resamplefd] : []));
    cleanups.push(() => irqfds.forEach(closeFd));
    peer.send(enc.ret(0n));
    peer.send(enc.ret(null));
    peer.send(enc.ret(BigInt(opts.markAfterReset ?? 0)));
    return { started, peer, irqfd: irqfds[0] };
  }

  async function start(opts: { timeoutMs?: number } = {}) {
    const { started, peer, irqfd } = await startBatch(opts);
    return { proxy: await started, peer, irqfd };
  }

  /** Answers the next cache-line-size read with `value`; returns when it was asked. */
  async function answerMarkRead(peer: RawPeer, value: number) {
    expect(await peer.next()).toMatchObject([{ cmd: Cmd.PCI_CFGREAD, addr: 0x0c, len: 1 }]);
    peer.send(enc.ret(BigInt(value)));
  }

  it("start-up: waits until a remote that kept the mark resets itself (QEMU's late start-up machine reset)", async () => {
    // QEMU's remote runs its machine reset when its message loop first finds the socket
    // empty; a remote preempted between a reply and its next read keeps serving pre-reset.
    // This peer stays pre-reset for three polls, however long that takes.
    const { started, peer } = await startBatch({ markAfterReset: 0x10 });
    let resolved = false;
    void started.then(() => (resolved = true));
    for (let i = 0; i < 3; i++) {
      await answerMarkRead(peer, 0x10);
      await sleep(20);
      expect(resolved).toBe(false);
    }
    await answerMarkRead(peer, 0); // the start-up reset happened
    const proxy = await started;
    expect(resolved).toBe(true);
    // Nothing else was sent: device state is untouched until the caller programs it.
    const p = proxy.configRead(0x04, 2);
    expect(await peer.next()).toMatchObject([{ cmd: Cmd.PCI_CFGREAD, addr: 0x04, len: 2 }]);
    peer.send(enc.ret(0n));
    expect(await p).toBe(0);
  });

  it("start-up: a remote that never clears the mark (adopted after its start-up) is used after the timeout, mark cleared", async () => {
    const logs: string[] = [];
    const { started, peer } = await startBatch({ timeoutMs: 150, markAfterReset: 0x10, log: (l) => logs.push(l) });
    const t0 = Date.now();
    let clearedWith: RequestMsg | undefined;
    while (!clearedWith) {
      for (const m of (await peer.next()) as RequestMsg[]) {
        if (m.cmd === Cmd.PCI_CFGREAD) peer.send(enc.ret(0x10n));
        else if (m.cmd === Cmd.PCI_CFGWRITE) {
          clearedWith = m;
          peer.send(enc.ret(0n));
        } else throw new Error(`unexpected ${m.cmd}`);
      }
    }
    expect(clearedWith).toMatchObject({ addr: 0x0c, len: 1, value: 0 });
    await started;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(logs.join("\n")).toMatch(/kept its start-up mark for 150 ms/);
  });

  it("the first answer may take the start-up allowance (the remote process is starting), later ones only timeoutMs", async () => {
    const [a, b] = socketpair();
    const peer = new RawPeer(b, "remote");
    const started = MpqemuProxy.start({ fd: a, ramSize: 0, heartbeatMs: 0, timeoutMs: 100 });
    cleanups.push(() => started.then((p) => p.close(), () => {}), () => peer.sock.isClosed || peer.sock.close());
    const batch = (await peer.next()) as RequestMsg[];
    for (const m of batch) if (m.cmd === Cmd.SET_IRQFD) [m.irqfd, m.resamplefd].forEach(closeFd);
    await sleep(300); // a slow start: three times timeoutMs before the first answer
    peer.send(enc.ret(0n));
    peer.send(enc.ret(null));
    peer.send(enc.ret(0n));
    const proxy = await started;
    await expect(proxy.configRead(0, 4)).rejects.toMatchObject({ message: expect.stringMatching(/no reply to PCI_CFGREAD within 100 ms/) });
  });

  it("the liveness clock of a pipelined request starts at the previous reply, not at its issue time", async () => {
    const { proxy, peer } = await start({ timeoutMs: 1000 });
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    try {
      const reads = [proxy.configRead(0, 4), proxy.configRead(4, 4), proxy.configRead(8, 4)];
      expect(peer.sock.recv().n).toBe(3 * 28); // all three are on the wire
      // Each reply comes 900 ms after the previous one: 2.7 s in all, never 1 s without progress.
      for (let i = 0; i < 3; i++) {
        vi.advanceTimersByTime(900);
        peer.send(enc.ret(BigInt(i)));
        expect(await reads[i]).toBe(i);
      }
      expect(proxy.error).toBeNull();
      // A reply that is already in the socket when the timer fires counts (the event loop
      // runs due timers before polling, e.g. after this process was starved of CPU).
      const late = proxy.configRead(0, 4);
      peer.sock.recv();
      peer.send(enc.ret(7n));
      vi.advanceTimersByTime(1000); // fires the timer before the event loop saw the reply
      expect(await late).toBe(7);
      expect(proxy.error).toBeNull();
      // No progress for the whole timeout: lost.
      const unanswered = proxy.configRead(0, 4);
      vi.advanceTimersByTime(1000);
      await expect(unanswered).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT", message: expect.stringMatching(/no reply to PCI_CFGREAD within 1000 ms/) });
    } finally {
      vi.useRealTimers();
    }
  });

  it("waitIntx: an irqfd signalled before the deadline counts even if the timer runs first", async () => {
    const { proxy, irqfd } = await start();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    try {
      const wait = proxy.waitIntx(500);
      eventfdSignal(irqfd);
      vi.advanceTimersByTime(500); // the deadline passes before the event loop polled the irqfd
      await wait;
      expect(proxy.intx).toBe(true);
      proxy.eoi();
      const silent = proxy.waitIntx(500);
      vi.advanceTimersByTime(500);
      await expect(silent).rejects.toMatchObject({ message: "mpqemu: no INTx within 500 ms" });
    } finally {
      vi.useRealTimers();
    }
  });

  it("waitIntx fails with the lost-contact error as soon as the remote hangs up", async () => {
    const { proxy, peer } = await start({ timeoutMs: 60_000 });
    const t0 = Date.now();
    const wait = proxy.waitIntx(60_000);
    peer.sock.close();
    await expect(wait).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT", message: expect.stringMatching(/hung up/) });
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it("a reply with an unknown command fails the pending request with a clear error", async () => {
    const { proxy, peer } = await start();
    const p = proxy.configRead(0, 4);
    await peer.next();
    peer.send(enc.raw(9, new Uint8Array(8)));
    await expect(p).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT", message: expect.stringMatching(/invalid reply .*unknown command 9/) });
    await expect(proxy.configRead(0, 4)).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT" });
  });

  it("a RET carrying fds is rejected and the fds closed", async () => {
    const { proxy, peer } = await start();
    const before = openFds();
    const p = proxy.busRead("mem", 0x1000n, 4);
    await peer.next();
    const e1 = eventfd();
    peer.send(enc.ret(1n).bytes, [e1]);
    closeFd(e1);
    await expect(p).rejects.toMatchObject({ message: expect.stringMatching(/RET needs 0 fds, got 1/) });
    // proxy socket + its eventfds/RAM are released by fail(); the stray fd never leaks.
    expect(openFds()).toBeLessThan(before);
  });

  it("a reply cut short by a hang-up fails with a truncation error", async () => {
    const { proxy, peer } = await start();
    const p = proxy.configRead(0, 4);
    await peer.next();
    peer.send(enc.ret(7n).bytes.subarray(0, 20));
    peer.sock.close();
    await expect(p).rejects.toMatchObject({ code: "MPQEMU_TRUNCATED" });
  });

  it("an unsolicited RET breaks the pairing and is reported", async () => {
    const { proxy, peer } = await start();
    const lost = new Promise<Error>((r) => proxy.once("lost", r));
    peer.send(enc.ret(1n));
    expect((await lost).message).toMatch(/unsolicited RET/);
  });

  it("a remote that stops answering mid-session: lost contact within the timeout", async () => {
    const { proxy, peer } = await start({ timeoutMs: 200 });
    const t0 = Date.now();
    await expect(proxy.barRead(0, 0, 4).catch((e) => e)).resolves.toMatchObject({ code: "MPQEMU_BAD_ARGUMENT" });
    await expect(proxy.busRead("io", 0xc000n, 2)).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT", message: expect.stringMatching(/no reply to BAR_READ within 200 ms/) });
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(fdIsOpen(peer.sock.fd)).toBe(true);
  });
});
