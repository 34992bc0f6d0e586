// Edge cases of the server's DMA map table, SET_IRQS, migration data and REGION_WRITE_MULTI
// validation (beyond the common cases in server-dma-irq.test.ts), each with its errno, the fds of
// every rejected request closed, and the connection still serving; and the server's own DMA
// requests while other traffic flows or the client leaves.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { Command, Errno, IrqSetFlag, PciIrq, DeviceFeature, DeviceFeatureFlag, MigrationState, encodeMigDeviceState, encodeDmaLoggingControl } from "../../src/vfio-user/wire/index.js";
import { createEdu, EDU_REG, EDU_DMA_START, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { memfdCreate } from "../../src/transport/shm.js";
import { closeFd } from "../../src/transport/fd.js";
import { EventFd } from "../../src/transport/eventfd.js";
import { Bytes, message } from "./bytes.js";
import { RawClient, sleep, openFdCount, expectFdCount, waitNoSession, type ReceivedFrame } from "./raw-client.js";

let seq = 0;
const socketPath = () => join(tmpdir(), `wasmdev-vfu-edge-${process.pid}-${++seq}.sock`);
const REQ = 0;
const NO_REPLY = 0x10;

function expectErrno(f: ReceivedFrame, errno: number, what: string): void {
  expect(f.flags & 0x20, `${what}: expected an error reply`).toBe(0x20);
  expect(f.error, what).toBe(errno);
}
function expectOk(f: ReceivedFrame, what = "request"): void {
  expect(f.flags & 0x20, `${what}: unexpected error ${f.error}`).toBe(0);
}

const dmaMap = (id: number, flags: number, offset: bigint, address: bigint, size: bigint, argsz = 32) =>
  message(id, Command.DMA_MAP, REQ, new Bytes().u32(argsz).u32(flags).u64(offset).u64(address).u64(size));
const dmaUnmap = (id: number, flags: number, address: bigint, size: bigint, bitmap?: { pgsize: bigint; size: bigint }, argsz?: number) => {
  const b = new Bytes().u32(argsz ?? 24 + (bitmap ? 16 + Number(bitmap.size) : 0)).u32(flags).u64(address).u64(size);
  if (bitmap) b.u64(bitmap.pgsize).u64(bitmap.size);
  return message(id, Command.DMA_UNMAP, REQ, b);
};
const setIrqs = (id: number, flags: number, index: number, start: number, count: number, data: number[] = [], argsz = 20 + data.length) =>
  message(id, Command.DEVICE_SET_IRQS, REQ, new Bytes().u32(argsz).u32(flags).u32(index).u32(start).u32(count).raw(data));
const readReq = (id: number, region: number, offset: number, count: number) => message(id, Command.REGION_READ, REQ, new Bytes().u64(offset).u32(region).u32(count));
const writeReq = (id: number, region: number, offset: number, value: bigint, width: 4 | 8, flags = REQ) =>
  message(id, Command.REGION_WRITE, flags, new Bytes().u64(offset).u32(region).u32(width).raw(Array.from({ length: width }, (_, i) => Number((value >> BigInt(8 * i)) & 0xffn))));
const feature = (id: number, flags: number, data: Uint8Array = new Uint8Array(0)) =>
  message(id, Command.DEVICE_FEATURE, REQ, new Bytes().u32(8 + data.length).u32(flags).raw(data));

async function readU32(c: RawClient, region: number, offset: number): Promise<number> {
  const r = await c.request(readReq(c.id(), region, offset, 4));
  expectOk(r, "read");
  return new DataView(r.body.buffer, r.body.byteOffset).getUint32(16, true);
}

describe("server edge cases (edu)", () => {
  let server: VfioUserServer;
  let path: string;
  let client: RawClient;

  beforeEach(async () => {
    path = socketPath();
    server = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1 }).fn, socketPath: path, maxDataXferSize: 4096 });
    client = await RawClient.negotiated(path, { maxMsgFds: 8, maxDataXferSize: 4096 });
  });
  afterEach(async () => {
    client.close();
    await server.close();
  });

  async function stillServes(): Promise<void> {
    expect(await readU32(client, 0, EDU_REG.ID)).toBe(EDU_ID_VALUE);
  }

  // (An fd offset need not be page aligned: the transport maps from the page below it.)
  it("DMA_MAP: empty, size unaligned, bad flags or argsz, fd offset past the file: EINVAL; the fd is closed each time", async () => {
    const memfd = memfdCreate("edge-ram", 0x10000);
    try {
      await stillServes();
      const baseline = openFdCount();
      const cases: [string, Uint8Array, number[]][] = [
        ["size 0", dmaMap(1, 3, 0n, 0x10000n, 0n), []],
        ["ends exactly at 2^64 with an fd too small", dmaMap(3, 3, 0n, 0xffff_ffff_ffff_f000n, 0x1000n * 32n), [memfd]],
        ["size not page aligned", dmaMap(5, 3, 0n, 0x10000n, 0x1800n), []],
        ["unknown flag bits", dmaMap(6, 3 | 0x100, 0n, 0x10000n, 0x1000n), []],
        ["argsz below 32", dmaMap(7, 3, 0n, 0x10000n, 0x1000n, 24), []],
        ["fd offset past the end of the file", dmaMap(9, 3, 0x10000n, 0x10000n, 0x1000n), [memfd]],
        ["fd offset + size past the end of the file", dmaMap(10, 3, 0xf000n, 0x10000n, 0x2000n), [memfd]],
        ["fd offset near 2^64", dmaMap(11, 3, 0xffff_ffff_ffff_f000n, 0x10000n, 0x1000n), [memfd]],
      ];
      for (const [what, bytes, fds] of cases) expectErrno(await client.request(bytes, fds), Errno.EINVAL, what);
      expect(server.current!.dmaRegions()).toEqual([]);
      expect(await expectFdCount(baseline)).toBe(baseline);
      // The last page below 2^64 is a valid mapping (no fd: reached with DMA_READ/WRITE).
      expectOk(await client.request(dmaMap(12, 1, 0n, 0xffff_ffff_ffff_f000n, 0x1000n)));
      await stillServes();
    } finally {
      closeFd(memfd);
    }
  });

  it("DMA_UNMAP: size 0, wrapping, unknown flags, ALL with a range or a bitmap: EINVAL; a range larger than the mapping: ENOENT", async () => {
    expectOk(await client.request(dmaMap(1, 3, 0n, 0x10000n, 0x4000n)));
    const cases: [string, Uint8Array, number][] = [
      ["size 0", dmaUnmap(2, 0, 0x10000n, 0n), Errno.EINVAL],
      ["wraps past 2^64", dmaUnmap(3, 0, 0xffff_ffff_ffff_f000n, 0x2000n), Errno.EINVAL],
      ["unknown flag bits", dmaUnmap(4, 0x4, 0x10000n, 0x4000n), Errno.EINVAL],
      ["ALL with a range", dmaUnmap(5, 2, 0x10000n, 0x4000n), Errno.EINVAL],
      ["ALL with a bitmap", dmaUnmap(6, 3, 0n, 0n, { pgsize: 4096n, size: 8n }), Errno.EINVAL],
      ["larger than the mapping", dmaUnmap(9, 0, 0x10000n, 0x8000n), Errno.ENOENT],
    ];
    for (const [what, bytes, errno] of cases) expectErrno(await client.request(bytes), errno, what);
    expect(server.current!.dmaRegions().map((r) => [r.iova, r.size])).toEqual([[0x10000n, 0x4000n]]);
    expectOk(await client.request(dmaUnmap(10, 0, 0x10000n, 0x4000n)));
    expect(server.current!.dmaRegions()).toEqual([]);
  });

  it("DMA_UNMAP dirty bitmaps: not logging, page size not a power of two, bitmap too small, argsz too small: EINVAL; bitmap above the limit: E2BIG; nothing unmapped", async () => {
    expectOk(await client.request(dmaMap(1, 3, 0n, 0x100000n, 0x100000n))); // 256 pages: 32 bitmap bytes
    const unmapWith = (id: number, bitmap: { pgsize: bigint; size: bigint }, argsz?: number) => dmaUnmap(id, 1, 0x100000n, 0x100000n, bitmap, argsz);
    expectErrno(await client.request(unmapWith(2, { pgsize: 4096n, size: 32n })), Errno.EINVAL, "logging not started");
    expectOk(await client.request(feature(3, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_START, encodeDmaLoggingControl(4096n, []))));
    const cases: [string, Uint8Array, number][] = [
      ["page size 3000", unmapWith(4, { pgsize: 3000n, size: 32n }), Errno.EINVAL],
      ["page size 0", unmapWith(5, { pgsize: 0n, size: 32n }), Errno.EINVAL],
      ["bitmap of 16 bytes for 256 pages", unmapWith(6, { pgsize: 4096n, size: 16n }), Errno.EINVAL],
      ["argsz without room for the bitmap", unmapWith(7, { pgsize: 4096n, size: 32n }, 40 + 8), Errno.EINVAL],
      ["bitmap above max_data_xfer_size", unmapWith(8, { pgsize: 4096n, size: 8192n }), Errno.E2BIG],
      ["bitmap size near 2^64", unmapWith(9, { pgsize: 4096n, size: 0xffff_ffff_ffff_fff8n }, 0xffff_ffff), Errno.E2BIG],
    ];
    for (const [what, bytes, errno] of cases) expectErrno(await client.request(bytes), errno, what);
    expect(server.current!.dmaRegions().length).toBe(1);
    expectOk(await client.request(unmapWith(10, { pgsize: 4096n, size: 32n })));
    expect(server.current!.dmaRegions()).toEqual([]);
  });

  it("SET_IRQS: start + count past the vectors (or wrapping), count 0 other than disable-all, bad flag sets, booleans or argsz not matching: EINVAL; fds closed", async () => {
    const e = EventFd.create();
    try {
      await stillServes();
      const baseline = openFdCount();
      const TRIG = IrqSetFlag.ACTION_TRIGGER;
      const cases: [string, Uint8Array, number[]][] = [
        ["start + count wraps 2^32", setIrqs(1, IrqSetFlag.DATA_NONE | TRIG, PciIrq.MSI, 0xffff_ffff, 2), []],
        ["start past the vectors", setIrqs(2, IrqSetFlag.DATA_NONE | TRIG, PciIrq.MSI, 1, 1), []],
        ["eventfd for a vector past the end", setIrqs(3, IrqSetFlag.DATA_EVENTFD | TRIG, PciIrq.INTX, 1, 1), [e.fd]],
        ["count 0 from start 1", setIrqs(4, IrqSetFlag.DATA_NONE | TRIG, PciIrq.MSI, 1, 0), []],
        ["count 0 with DATA_EVENTFD", setIrqs(5, IrqSetFlag.DATA_EVENTFD | TRIG, PciIrq.MSI, 0, 0), [e.fd]],
        ["count 0 with MASK", setIrqs(6, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, PciIrq.INTX, 0, 0), []],
        ["no DATA flag", setIrqs(7, TRIG, PciIrq.INTX, 0, 1), []],
        ["no ACTION flag", setIrqs(8, IrqSetFlag.DATA_NONE, PciIrq.INTX, 0, 1), []],
        ["unknown flag bit", setIrqs(9, IrqSetFlag.DATA_NONE | TRIG | 0x40, PciIrq.INTX, 0, 1), []],
        ["DATA_BOOL with fewer booleans than count", setIrqs(11, IrqSetFlag.DATA_BOOL | TRIG, PciIrq.INTX, 0, 1, [], 21), []],
        ["DATA_NONE with trailing data", setIrqs(12, IrqSetFlag.DATA_NONE | TRIG, PciIrq.INTX, 0, 1, [1]), []],
        ["argsz below the payload", setIrqs(13, IrqSetFlag.DATA_BOOL | TRIG, PciIrq.INTX, 0, 1, [1], 20), []],
        ["DATA_BOOL with an fd", setIrqs(14, IrqSetFlag.DATA_BOOL | TRIG, PciIrq.INTX, 0, 1, [1]), [e.fd]],
      ];
      for (const [what, bytes, fds] of cases) expectErrno(await client.request(bytes, fds), Errno.EINVAL, what);
      expect(server.current!.irqs.hasTrigger(PciIrq.INTX, 0)).toBe(false);
      expect(await expectFdCount(baseline)).toBe(baseline);
      // count 0 + DATA_NONE + TRIGGER from start 0 disables the index.
      expectOk(await client.request(setIrqs(20, IrqSetFlag.DATA_NONE | TRIG, PciIrq.MSI, 0, 0)));
      await stillServes();
    } finally {
      e.close();
    }
  });

  it("migration data in the wrong state (EINVAL), above max_data_xfer_size (E2BIG), with argsz too small (EINVAL)", async () => {
    const migRead = (id: number, size: number, argsz = 8 + size) => message(id, Command.MIG_DATA_READ, REQ, new Bytes().u32(argsz).u32(size));
    const migWrite = (id: number, n: number) => message(id, Command.MIG_DATA_WRITE, REQ, new Bytes().u32(8 + n).u32(n).zeros(n));
    const setState = (id: number, s: number) => feature(id, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(s));
    expectErrno(await client.request(migRead(1, 64)), Errno.EINVAL, "read while RUNNING");
    expectErrno(await client.request(migWrite(2, 64)), Errno.EINVAL, "write while RUNNING");
    expectOk(await client.request(setState(3, MigrationState.STOP_COPY)));
    expectErrno(await client.request(migWrite(4, 64)), Errno.EINVAL, "write while STOP_COPY");
    expectErrno(await client.request(migRead(5, 4097)), Errno.E2BIG, "read above max_data_xfer_size");
    expectErrno(await client.request(migRead(6, 64, 8 + 63)), Errno.EINVAL, "read with argsz too small");
    expectOk(await client.request(setState(7, MigrationState.STOP)));
    expectOk(await client.request(setState(8, MigrationState.RESUMING)));
    expectErrno(await client.request(migRead(9, 64)), Errno.EINVAL, "read while RESUMING");
    expectErrno(await client.request(migWrite(10, 5000)), Errno.E2BIG, "write above max_data_xfer_size");
  });

  it("MIG_DATA_READ replies are as long as asked (libvfio-user's client requires it): the last chunk's real size in `size`, zeros after", async () => {
    const setState = (id: number, s: number) => feature(id, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(s));
    expectOk(await client.request(setState(1, MigrationState.STOP_COPY)));
    const chunks: Uint8Array[] = [];
    for (let id = 2; id < 100; id++) {
      const r = await client.request(message(id, Command.MIG_DATA_READ, REQ, new Bytes().u32(8 + 4096).u32(4096)));
      expectOk(r);
      expect(r.body.length).toBe(8 + 4096);
      const dv = new DataView(r.body.buffer, r.body.byteOffset, r.body.length);
      expect(dv.getUint32(0, true)).toBe(8 + 4096);
      const size = dv.getUint32(4, true);
      expect(r.body.subarray(8 + size).every((b) => b === 0)).toBe(true);
      if (size === 0) break;
      chunks.push(r.body.slice(8, 8 + size));
    }
    // edu's state (its 4 KiB DMA buffer and registers): full chunks, one short one, the empty end.
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks.slice(0, -1)) expect(c.length).toBe(4096);
    expect(chunks.at(-1)!.length).toBeGreaterThan(0);
    expect(chunks.at(-1)!.length).toBeLessThan(4096);
  });

  it("REGION_WRITE_MULTI: entries of 0 or 9 bytes, wr_cnt not matching the payload, read-only or out-of-range targets: EINVAL, nothing written", async () => {
    const entry = (b: Bytes, region: number, offset: number, count: number, value: number) => b.u64(offset).u32(region).u32(count).u32(value).u32(0);
    const multi = (id: number, build: (b: Bytes) => Bytes, count: number) => message(id, Command.REGION_WRITE_MULTI, REQ, build(new Bytes().u64(count)));
    expectOk(await client.request(writeReq(1, 0, EDU_REG.LIVENESS, 0n, 4)));
    const cases: [string, Uint8Array][] = [
      ["9-byte entry", multi(2, (b) => entry(b, 0, EDU_REG.LIVENESS, 9, 1), 1)],
      ["0-byte entry", multi(3, (b) => entry(b, 0, EDU_REG.LIVENESS, 0, 1), 1)],
      ["wr_cnt 2 with one entry", multi(4, (b) => entry(b, 0, EDU_REG.LIVENESS, 4, 1), 2)],
      ["wr_cnt above 2^32", message(5, Command.REGION_WRITE_MULTI, REQ, entry(new Bytes().u64(1n << 32n), 0, EDU_REG.LIVENESS, 4, 1))],
      ["second entry past the region", multi(6, (b) => entry(entry(b, 0, EDU_REG.LIVENESS, 4, 1), 0, 0xffffe, 4, 1), 2)],
      ["second entry to an absent region", multi(7, (b) => entry(entry(b, 0, EDU_REG.LIVENESS, 4, 1), 3, 0, 4, 1), 2)],
    ];
    for (const [what, bytes] of cases) expectErrno(await client.request(bytes), Errno.EINVAL, what);
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(0xffffffff);
  });
});

describe("the server's DMA requests and the rest of the traffic", () => {
  it("requests keep being answered while a DMA_READ to the client is outstanding; its late answer completes the device's DMA", async () => {
    const path = socketPath();
    const server = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1 }).fn, socketPath: path });
    const c = await RawClient.negotiated(path);
    const held: ReceivedFrame[] = [];
    c.onServerRequest = (f) => held.push(f);
    try {
      expectOk(await c.request(dmaMap(1, 3, 0n, 0x200000n, 0x10000n)));
      expectOk(await c.request(writeReq(2, 0, EDU_REG.DMA_SRC, 0x200000n, 8)));
      expectOk(await c.request(writeReq(3, 0, EDU_REG.DMA_DST, BigInt(EDU_DMA_START), 8)));
      expectOk(await c.request(writeReq(4, 0, EDU_REG.DMA_CNT, 4n, 8)));
      expectOk(await c.request(writeReq(5, 0, EDU_REG.DMA_CMD, 1n, 8)));
      for (let i = 0; i < 200 && held.length === 0; i++) await sleep(2);
      expect(held.map((f) => f.command)).toEqual([Command.DMA_READ]);
      // Meanwhile: reads, writes, a posted write, all answered in order.
      c.send(writeReq(6, 0, EDU_REG.LIVENESS, 7n, 4, NO_REPLY));
      expect(await readU32(c, 0, EDU_REG.LIVENESS)).toBe(~7 >>> 0);
      expect(await readU32(c, 0, EDU_REG.DMA_CMD)).toBe(1); // still running
      const f = held[0];
      c.send(message(f.msgId, Command.DMA_READ, 1, new Bytes().u64(0x200000n).u64(4).raw([0xde, 0xc0, 0xad, 0x0b])));
      for (let i = 0; i < 200 && (await readU32(c, 0, EDU_REG.DMA_CMD)) & 1; i++) await sleep(2);
      expect((await readU32(c, 0, EDU_REG.DMA_CMD)) & 1).toBe(0);
      // The late answer reached the device: copying its buffer back out carries those bytes.
      expectOk(await c.request(writeReq(7, 0, EDU_REG.DMA_SRC, BigInt(EDU_DMA_START), 8)));
      expectOk(await c.request(writeReq(8, 0, EDU_REG.DMA_DST, 0x200100n, 8)));
      expectOk(await c.request(writeReq(9, 0, EDU_REG.DMA_CMD, 1n | 2n, 8)));
      for (let i = 0; i < 200 && held.length === 1; i++) await sleep(2);
      expect(held[1].command).toBe(Command.DMA_WRITE);
      expect(Array.from(held[1].body.subarray(16))).toEqual([0xde, 0xc0, 0xad, 0x0b]);
    } finally {
      c.close();
      await server.close();
    }
  });

  it("a client that leaves with DMA requests unanswered: they fail at once (no timers left), its fds are released, the next client is served", async () => {
    const path = socketPath();
    const guestErrors: string[] = [];
    const server = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1, onGuestError: (m) => guestErrors.push(m) }).fn, socketPath: path, dmaRequestTimeoutMs: 60_000 });
    const baseline = openFdCount();
    let c = await RawClient.negotiated(path);
    const held: ReceivedFrame[] = [];
    c.onServerRequest = (f) => held.push(f);
    const memfd = memfdCreate("edge-leave", 0x10000);
    const e = EventFd.create();
    try {
      expectOk(await c.request(dmaMap(1, 3, 0n, 0x200000n, 0x10000n)));
      expectOk(await c.request(dmaMap(2, 3, 0n, 0x400000n, 0x10000n), [memfd]));
      expectOk(await c.request(setIrqs(3, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, PciIrq.INTX, 0, 1), [e.fd]));
      expectOk(await c.request(writeReq(4, 0, EDU_REG.DMA_SRC, 0x200000n, 8)));
      expectOk(await c.request(writeReq(5, 0, EDU_REG.DMA_DST, BigInt(EDU_DMA_START), 8)));
      expectOk(await c.request(writeReq(6, 0, EDU_REG.DMA_CNT, 4n, 8)));
      expectOk(await c.request(writeReq(7, 0, EDU_REG.DMA_CMD, 1n, 8)));
      for (let i = 0; i < 200 && held.length === 0; i++) await sleep(2);
      expect(held.length).toBe(1);
      c.close();
      // The device's DMA fails now, not after the 60 s request timeout.
      for (let i = 0; i < 200 && guestErrors.length === 0; i++) await sleep(2);
      expect(guestErrors.join("\n")).toMatch(/DMA failed.*disconnected/);
      closeFd(memfd);
      e.close();
      expect(await expectFdCount(baseline)).toBe(baseline);
      await waitNoSession(server);
      c = await RawClient.negotiated(path);
      expect(server.current!.dmaRegions()).toEqual([]);
      expect(await readU32(c, 0, EDU_REG.DMA_CMD)).toBe(0);
      expect(await readU32(c, 0, EDU_REG.ID)).toBe(EDU_ID_VALUE);
    } finally {
      c.close();
      await server.close();
    }
  });
});

describe("VfioUserServer.listen's device option", () => {
  it("refuses a device factory's whole result at once, naming `fn`, and creates no socket", () => {
    const path = join(tmpdir(), `wasmdev-listen-${process.pid}-${Date.now()}.sock`);
    const edu = createEdu();
    try {
      expect(() => VfioUserServer.listen({ device: edu as never, socketPath: path })).toThrow(/device must be a PciFunction: pass the factory's `fn`/);
      expect(() => VfioUserServer.listen({ device: undefined as never, socketPath: path })).toThrow(/device must be a PciFunction$/);
      expect(existsSync(path)).toBe(false);
    } finally {
      edu.fn.dispose();
    }
  });
});
