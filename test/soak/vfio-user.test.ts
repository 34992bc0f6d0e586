// Soak: one vfio-user server (edu) through thousands of client lifetimes. After a warm-up
// (JIT, buffers, lazily built tables), the process must hold exactly the fds and shared-memory
// mappings it held before, and its heap after a full GC may grow by at most a small bound
// (a leaked session, mapping record or parser per cycle would exceed it many times over).
// Each figure printed here is what the README's reliability table quotes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { createEdu, EDU_ID_VALUE, EDU_REG } from "../../src/devices/edu.js";
import { memfdCreate } from "../../src/transport/shm.js";
import { closeFd } from "../../src/transport/fd.js";
import { connect } from "../../src/transport/connection.js";
import * as wire from "../../src/vfio-user/wire/index.js";
import { RawClient } from "../vfio-user/raw-client.js";
import { holdings, describeHoldings } from "./holdings.js";

const CYCLES = Number(process.env.SOAK_CYCLES ?? 10_000);
const KILLS = Number(process.env.SOAK_KILLS ?? 1_000);
const WARMUP = 200;
/** Heap growth allowed over a whole soak, after GC. One leaked session is several KiB. */
const HEAP_SLACK = 4 * 1024 * 1024;
/** RSS growth allowed (allocator and V8 page caches come and go; a leak per cycle would not). */
const RSS_SLACK = 64 * 1024 * 1024;

const path = join(tmpdir(), `wasmdev-soak-${process.pid}.sock`);
let server: VfioUserServer;
beforeAll(() => {
  server = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 0 }).fn, socketPath: path, maxDataXferSize: 1 << 20, dmaRequestTimeoutMs: 2000 });
});
afterAll(async () => {
  await server?.close();
});

/** Resolves on the connection's 'close' (after the session's own handler, registered first). */
const closed = (c: { once(event: "close", listener: () => void): unknown }) => new Promise<void>((resolve) => c.once("close", () => resolve()));

/** Closes `c` and resolves once the server has dropped its session (its 'close' ran first). */
async function hangUp(close: () => void): Promise<void> {
  const s = server.current;
  const gone = s && !s.isClosed ? closed(s.connection) : Promise.resolve();
  close();
  await gone;
  expect(server.current).toBe(null);
}

async function readId(c: RawClient): Promise<number> {
  const w = c.w;
  wire.writeRegionReadRequest(w, c.id(), EDU_REG.ID, 0, 0, 4);
  const r = await c.request(w.take());
  expect(r.flags & 0x20, `REGION_READ failed with errno ${r.error}`).toBe(0);
  return new DataView(r.body.buffer, r.body.byteOffset, r.body.length).getUint32(16, true);
}

describe("soak", () => {
  it(`${CYCLES} connect / VERSION / disconnect cycles leave fds, mappings and heap as they were`, async () => {
    const cycle = async () => {
      const c = await RawClient.negotiated(path);
      await hangUp(() => c.close());
    };
    const served = server.connections;
    for (let i = 0; i < WARMUP; i++) await cycle();
    const before = holdings();
    const t0 = performance.now();
    for (let i = 0; i < CYCLES; i++) await cycle();
    const after = holdings();
    console.log(describeHoldings("connect/disconnect", CYCLES, performance.now() - t0, before, after));
    expect(server.connections - served).toBe(WARMUP + CYCLES); // every client got a session, none was refused
    expect(after.fds).toBe(before.fds);
    expect(after.mappings).toBe(before.mappings);
    expect(after.memfdMaps).toBe(before.memfdMaps);
    expect(after.heapUsed - before.heapUsed).toBeLessThan(HEAP_SLACK);
    expect(after.rss - before.rss).toBeLessThan(RSS_SLACK);
  }, 300_000);

  it(`${CYCLES} DMA_MAP / DMA_UNMAP cycles of a memfd in one session leave fds, mappings and heap as they were`, async () => {
    const memfd = memfdCreate("wasmdev-soak", 64 * 1024);
    const c = await RawClient.negotiated(path);
    try {
      const w = c.w;
      const cycle = async (i: number) => {
        const iova = BigInt(0x100000 + (i % 16) * 0x10000);
        wire.writeDmaMapRequest(w, c.id(), { flags: 3, offset: 0n, address: iova, size: 0x10000n });
        const m = await c.request(w.take(), [memfd]);
        expect(m.flags & 0x20, `DMA_MAP failed with errno ${m.error}`).toBe(0);
        wire.writeDmaUnmapRequest(w, c.id(), { flags: 0, address: iova, size: 0x10000n });
        const u = await c.request(w.take());
        expect(u.flags & 0x20, `DMA_UNMAP failed with errno ${u.error}`).toBe(0);
      };
      for (let i = 0; i < WARMUP; i++) await cycle(i);
      const before = holdings();
      const t0 = performance.now();
      for (let i = 0; i < CYCLES; i++) await cycle(i);
      const after = holdings();
      console.log(describeHoldings("DMA_MAP/UNMAP", CYCLES, performance.now() - t0, before, after));
      expect(server.current!.dmaRegions()).toEqual([]);
      expect(after.fds).toBe(before.fds);
      expect(after.mappings).toBe(before.mappings);
      expect(after.memfdMaps).toBe(before.memfdMaps);
      expect(after.heapUsed - before.heapUsed).toBeLessThan(HEAP_SLACK);
    expect(after.rss - before.rss).toBeLessThan(RSS_SLACK);
      expect(after.rss - before.rss).toBeLessThan(RSS_SLACK);
      expect(await readId(c)).toBe(EDU_ID_VALUE);
    } finally {
      await hangUp(() => c.close());
      closeFd(memfd);
    }
  }, 300_000);

  it(`a client killed at a random byte of a session (mid-message, mid-DMA, mid-migration) ${KILLS} times: the next client is served correctly each time`, async () => {
    const memfd = memfdCreate("wasmdev-soak-kill", 64 * 1024);
    // The recorded session. Message 2 carries the memfd, so it goes out alone with it.
    const w = new wire.MessageWriter(4096);
    const msg = (f: () => void) => {
      f();
      return w.take().slice();
    };
    const regWrite = (id: number, offset: number, value: bigint) => {
      const data = new Uint8Array(8);
      new DataView(data.buffer).setBigUint64(0, value, true);
      return msg(() => wire.writeRegionWriteRequest(w, id, offset, 0, 0, data));
    };
    const setState = (id: number, state: number) =>
      msg(() => wire.writeDeviceFeatureRequest(w, id, wire.DeviceFeatureFlag.SET | wire.DeviceFeature.MIG_DEVICE_STATE, wire.encodeMigDeviceState(state)));
    const session: { bytes: Uint8Array; fds: number[] }[] = [
      { bytes: msg(() => wire.writeVersionRequest(w, 1, { capabilities: { maxMsgFds: 8, maxDataXferSize: 1 << 20 } })), fds: [] },
      { bytes: msg(() => wire.writeDmaMapRequest(w, 2, { flags: 3, offset: 0n, address: 0n, size: 0x10000n })), fds: [memfd] },
      { bytes: msg(() => wire.writeDmaMapRequest(w, 3, { flags: 3, offset: 0n, address: 0x100000n, size: 0x1000n })), fds: [] },
      // edu DMA from client memory that is not shared: the server asks with DMA_READ.
      { bytes: regWrite(4, EDU_REG.DMA_SRC, 0x100000n), fds: [] },
      { bytes: regWrite(5, EDU_REG.DMA_DST, 0x40000n), fds: [] },
      { bytes: regWrite(6, EDU_REG.DMA_CNT, 0x100n), fds: [] },
      { bytes: regWrite(7, 0x98, 1n), fds: [] },
      { bytes: setState(8, wire.MigrationState.STOP_COPY), fds: [] },
      { bytes: msg(() => wire.writeMigDataReadRequest(w, 9, 4096)), fds: [] },
      { bytes: setState(10, wire.MigrationState.STOP), fds: [] },
      { bytes: setState(11, wire.MigrationState.RUNNING), fds: [] },
      { bytes: msg(() => wire.writeRegionReadRequest(w, 12, EDU_REG.ID, 0, 0, 4)), fds: [] },
    ];
    const total = session.reduce((n, m) => n + m.bytes.length, 0);
    const startOf = (index: number) => session.slice(0, index).reduce((n, m) => n + m.bytes.length, 0);
    // Where the kills landed, to show the soak covers what it claims.
    const landed = { midMessage: 0, midDma: 0, midMigration: 0, complete: 0 };
    // A fixed-seed generator: the same kill points every run.
    let seed = 0x2545f491;
    const random = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const kill = async () => {
      // A message, then a byte of it (its end included): every message gets its share of kills.
      const victim = random(session.length);
      const cut = startOf(victim) + 1 + random(session[victim].bytes.length);
      const answerDma = random(2) === 0;
      const conn = await connect(path, { limits: { maxMessageSize: 2 << 20 } });
      const s = await server.waitForClient();
      const gone = closed(s.connection);
      // Answer the server's DMA_READ now and then (else the kill lands while it waits).
      const fromServer = new wire.MessageParser({ maxMessageSize: 2 << 20 });
      let dmaPending = false;
      let dmaAsked: () => void = () => {};
      const dmaRequest = new Promise<void>((resolve) => (dmaAsked = resolve));
      conn.onData((chunk, fds) =>
        fromServer.parse(chunk, fds, (ev) => {
          if (ev.kind !== "frame" || ev.command !== wire.Command.DMA_READ || wire.isReply(ev.flags) || conn.isClosed) return;
          dmaPending = !answerDma;
          dmaAsked();
          if (!answerDma) return;
          const v = new DataView(ev.body.buffer, ev.body.byteOffset, ev.body.length);
          wire.writeDmaReadReply(w, ev.msgId, v.getBigUint64(0, true), new Uint8Array(Number(v.getBigUint64(8, true))));
          conn.send(w.take());
        }),
      );
      let at = 0;
      for (const m of session) {
        if (at >= cut) break;
        const part = m.bytes.subarray(0, Math.min(m.bytes.length, cut - at));
        conn.send(part, m.fds);
        at += part.length;
        // The DMA start (message 7) is complete: the server's DMA_READ follows.
        if (m === session[6] && part.length === m.bytes.length) await dmaRequest;
        // Let the server work between messages: the kill then lands mid-DMA or mid-migration.
        await new Promise((r) => setImmediate(r));
      }
      if (cut === total) landed.complete++;
      else if (cut < startOf(victim + 1)) landed.midMessage++;
      if (dmaPending) landed.midDma++;
      if (cut > startOf(7) && cut < startOf(11)) landed.midMigration++;
      conn.destroy();
      await gone;
      fromServer.dispose();
    };
    const verify = async () => {
      const c = await RawClient.negotiated(path);
      expect(server.current!.dmaRegions()).toEqual([]);
      expect(await readId(c)).toBe(EDU_ID_VALUE);
      // The device runs (not left stopped by a killed migration): liveness reads back inverted.
      wire.writeRegionWriteRequest(c.w, c.id(), EDU_REG.LIVENESS, 0, 0, Uint8Array.of(0x78, 0x56, 0x34, 0x12));
      const wr = await c.request(c.w.take());
      expect(wr.flags & 0x20, `REGION_WRITE failed with errno ${wr.error}`).toBe(0);
      wire.writeRegionReadRequest(c.w, c.id(), EDU_REG.LIVENESS, 0, 0, 4);
      const rd = await c.request(c.w.take());
      expect(new DataView(rd.body.buffer, rd.body.byteOffset, rd.body.length).getUint32(16, true)).toBe(0xedcba987);
      await hangUp(() => c.close());
    };
    try {
      for (let i = 0; i < 20; i++) {
        await kill();
        await verify();
      }
      for (const k of Object.keys(landed)) landed[k as keyof typeof landed] = 0;
      const before = holdings();
      const t0 = performance.now();
      for (let i = 0; i < KILLS; i++) {
        await kill();
        await verify();
      }
      const after = holdings();
      console.log(`${describeHoldings("killed clients", KILLS, performance.now() - t0, before, after)}; kills ${JSON.stringify(landed)}`);
      for (const [where, n] of Object.entries(landed)) if (where !== "complete") expect(n, `kills ${where}`).toBeGreaterThan(KILLS / 20);
      expect(after.fds).toBe(before.fds);
      expect(after.mappings).toBe(before.mappings);
      expect(after.memfdMaps).toBe(before.memfdMaps);
      expect(after.heapUsed - before.heapUsed).toBeLessThan(HEAP_SLACK);
    expect(after.rss - before.rss).toBeLessThan(RSS_SLACK);
      expect(after.rss - before.rss).toBeLessThan(RSS_SLACK);
    } finally {
      closeFd(memfd);
    }
  }, 300_000);
});
