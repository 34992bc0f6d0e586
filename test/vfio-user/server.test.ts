// The vfio-user server against a raw-socket client: negotiation, device/region/IRQ info, the
// edu device through REGION_READ/WRITE, and one test per bad-input case of issue #6.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { existsSync, statSync } from "node:fs";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import {
  Command,
  Errno,
  RegionInfoFlag,
  IrqInfoFlag,
  MessageWriter,
  WireError,
  decodeVersion,
  decodeDeviceInfo,
  decodeRegionInfoReply,
  decodeIrqInfo,
  decodeRegionReadReply,
  decodeRegionIoFdsReply,
  writeRegionReadRequest,
  writeRegionWriteRequest,
  writeRegionInfoRequest,
  writeDeviceInfoRequest,
  writeIrqInfoRequest,
  writeVersionRequest,
  writeRegionIoFdsRequest,
  writeRegionWriteMultiRequest,
  decodeRegionWriteMultiReply,
} from "../../src/vfio-user/wire/index.js";
import { createEdu, EDU_ID_VALUE, EDU_REG, EDU_BAR_SIZE } from "../../src/devices/edu.js";
import { createThroughputDevice, THROUGHPUT_REG } from "../../src/devices/throughput.js";
import { memfdCreate, mmapFd } from "../../src/transport/shm.js";
import { closeFd } from "../../src/transport/fd.js";
import { EventFd } from "../../src/transport/eventfd.js";
import type { PciFunction } from "../../src/core/pci/api.js";
import { Bytes, message } from "./bytes.js";
import type { Capabilities } from "../../src/vfio-user/wire/version.js";
import { RawClient, sleep, openFdCount, expectFdCount, waitNoSession } from "./raw-client.js";

const REQ = 0;
const NO_REPLY = 0x10;
const REPLY = 1;
const ERR = 0x20;

let seq = 0;
function socketPath(): string {
  return join(tmpdir(), `wasmdev-vfu-${process.pid}-${++seq}.sock`);
}

function u32le(b: Uint8Array, at = 0): number {
  return new DataView(b.buffer, b.byteOffset, b.length).getUint32(at, true);
}

function expectError(f: { flags: number; error: number; body: Uint8Array }, errno: number): void {
  expect(f.flags & 0xf).toBe(REPLY);
  expect(f.flags & ERR, `expected an error reply (${errno})`).toBe(ERR);
  expect(f.error).toBe(errno);
  expect(f.body.length).toBe(0);
}

function expectOk(f: { flags: number; error: number }): void {
  expect(f.flags & 0xf).toBe(REPLY);
  expect(f.flags & ERR, `unexpected error reply ${f.error}`).toBe(0);
}

/** A REGION_READ request built byte by byte (independent of the serializer). */
function readReq(id: number, region: number, offset: bigint | number, count: number, flags = REQ): Uint8Array {
  return message(id, Command.REGION_READ, flags, new Bytes().u64(offset).u32(region).u32(count));
}
function writeReq(id: number, region: number, offset: bigint | number, data: number[], flags = REQ, count = data.length): Uint8Array {
  return message(id, Command.REGION_WRITE, flags, new Bytes().u64(offset).u32(region).u32(count).raw(data));
}
function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

async function readU32(c: RawClient, region: number, offset: number): Promise<number> {
  const r = await c.request(readReq(c.id(), region, offset, 4));
  expectOk(r);
  const d = decodeRegionReadReply(r.body);
  if (d instanceof WireError) throw d;
  return u32le(d.data);
}

async function writeU32(c: RawClient, region: number, offset: number, value: number): Promise<void> {
  expectOk(await c.request(writeReq(c.id(), region, offset, le32(value))));
}

describe("vfio-user server with the edu device", () => {
  let server: VfioUserServer;
  let path: string;
  let device: PciFunction;
  let logs: string[];
  let client: RawClient;

  beforeEach(async () => {
    path = socketPath();
    logs = [];
    device = createEdu({ dmaDelayMs: 1 }).fn;
    server = VfioUserServer.listen({ device, socketPath: path, log: (l) => logs.push(l), maxDataXferSize: 4096 });
    client = await RawClient.negotiated(path);
  });

  afterEach(async () => {
    client?.close();
    await server.close();
  });

  it("creates the socket with mode 0600 and removes it on close", async () => {
    expect(statSync(path).mode & 0o777).toBe(0o600);
    client.close();
    await server.close();
    expect(existsSync(path)).toBe(false);
  });

  it("negotiates VERSION: its own limits, migration only when proposed, minor <= proposed", async () => {
    const c = await RawClient.connect(path).catch(() => null);
    // A second client is refused while one is connected; test negotiation on a fresh server.
    c?.close();
    client.close();
    await server.close();
    server = VfioUserServer.listen({ device, socketPath: path, maxDataXferSize: 8192, maxMsgFds: 4 });
    client = await RawClient.connect(path);
    const w = new MessageWriter();
    writeVersionRequest(w, 7, { major: 0, minor: 9, capabilities: { maxMsgFds: 2, maxDataXferSize: 1 << 16, migration: { pgsize: 65536 }, writeMultiple: true } });
    const r = await client.request(w.take());
    expectOk(r);
    expect(r.msgId).toBe(7);
    const v = decodeVersion(r.body);
    if (v instanceof WireError) throw v;
    expect(v.major).toBe(0);
    expect(v.minor).toBe(1);
    expect(v.capabilities).toMatchObject({ maxMsgFds: 4, maxDataXferSize: 8192, pgsizes: 4096n, writeMultiple: true, migration: { pgsize: 4096 } });

    client.close();
    await server.close();
    server = VfioUserServer.listen({ device, socketPath: path });
    client = await RawClient.connect(path);
    writeVersionRequest(w, 8, { major: 0, minor: 0, capabilities: {} });
    const r2 = await client.request(w.take());
    const v2 = decodeVersion(r2.body);
    if (v2 instanceof WireError) throw v2;
    expect(v2.minor).toBe(0);
    expect(v2.capabilities?.migration).toBeUndefined();
    expect(v2.capabilities?.maxDataXferSize).toBe(1 << 20);
  });

  it("answers DEVICE_GET_INFO, region info for BAR0 / config / absent regions, IRQ info", async () => {
    const w = new MessageWriter();
    writeDeviceInfoRequest(w, 3);
    const info = decodeDeviceInfo((await client.request(w.take())).body);
    expect(info).toEqual({ argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });

    writeRegionInfoRequest(w, 4, 0);
    const bar0 = decodeRegionInfoReply((await client.request(w.take())).body);
    expect(bar0).toMatchObject({ index: 0, size: BigInt(EDU_BAR_SIZE), flags: RegionInfoFlag.READ | RegionInfoFlag.WRITE, caps: [] });

    writeRegionInfoRequest(w, 5, 7);
    const cfg = decodeRegionInfoReply((await client.request(w.take())).body);
    expect(cfg).toMatchObject({ index: 7, size: 256n, flags: RegionInfoFlag.READ | RegionInfoFlag.WRITE });

    for (const absent of [1, 5, 6, 8]) {
      writeRegionInfoRequest(w, 6, absent);
      const r = decodeRegionInfoReply((await client.request(w.take())).body);
      expect(r).toMatchObject({ index: absent, size: 0n, flags: 0 });
    }

    writeIrqInfoRequest(w, 9, 0);
    expect(decodeIrqInfo((await client.request(w.take())).body)).toEqual({
      argsz: 16,
      flags: IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED,
      index: 0,
      count: 1,
    });
    writeIrqInfoRequest(w, 10, 1);
    expect(decodeIrqInfo((await client.request(w.take())).body)).toMatchObject({ index: 1, count: 1 });
    writeIrqInfoRequest(w, 11, 2);
    expect(decodeIrqInfo((await client.request(w.take())).body)).toMatchObject({ index: 2, count: 0 });

    writeRegionIoFdsRequest(w, 12, 0, 1024);
    const io = await client.request(w.take());
    expectOk(io);
    expect(decodeRegionIoFdsReply(io.body)).toMatchObject({ index: 0, count: 0, subRegions: [] });
  });

  it("drives edu registers through REGION_READ/WRITE and config space through region 7", async () => {
    expect(await readU32(client, 0, EDU_REG.ID)).toBe(EDU_ID_VALUE);
    await writeU32(client, 0, EDU_REG.LIVENESS, 0x12345678);
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(~0x12345678 >>> 0);
    await writeU32(client, 0, EDU_REG.FACTORIAL, 10);
    let status = 1;
    for (let i = 0; i < 100 && status & 1; i++) {
      status = await readU32(client, 0, EDU_REG.STATUS);
      if (status & 1) await sleep(1);
    }
    expect(await readU32(client, 0, EDU_REG.FACTORIAL)).toBe(3628800);
    expect(await readU32(client, 7, 0)).toBe(0x11e81234);
    // 8-byte access to a DMA register
    const r = await client.request(writeReq(client.id(), 0, EDU_REG.DMA_SRC, [1, 2, 3, 4, 5, 6, 7, 8]));
    expectOk(r);
    const rd = decodeRegionReadReply((await client.request(readReq(client.id(), 0, EDU_REG.DMA_SRC, 8))).body);
    if (rd instanceof WireError) throw rd;
    expect(Array.from(rd.data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("handles pipelined requests in order, replies carrying each request's msg_id", async () => {
    const ids = [100, 101, 102, 103, 104];
    const stream = [
      writeReq(100, 0, EDU_REG.LIVENESS, le32(1)),
      readReq(101, 0, EDU_REG.LIVENESS, 4),
      writeReq(102, 0, EDU_REG.LIVENESS, le32(2)),
      readReq(103, 0, EDU_REG.LIVENESS, 4),
      readReq(104, 0, EDU_REG.ID, 4),
    ];
    const all = new Uint8Array(stream.reduce((n, s) => n + s.length, 0));
    let at = 0;
    for (const s of stream) {
      all.set(s, at);
      at += s.length;
    }
    client.send(all);
    const replies = [];
    for (let i = 0; i < ids.length; i++) replies.push(await client.next());
    expect(replies.map((r) => r.msgId)).toEqual(ids);
    expect(u32le((decodeRegionReadReply(replies[1].body) as { data: Uint8Array }).data)).toBe(~1 >>> 0);
    expect(u32le((decodeRegionReadReply(replies[3].body) as { data: Uint8Array }).data)).toBe(~2 >>> 0);
  });

  it("reassembles a request split at every byte across separate reads", async () => {
    const req = readReq(0x55, 0, EDU_REG.ID, 4);
    for (let cut = 1; cut < req.length; cut++) {
      client.send(req.subarray(0, cut));
      await sleep(2); // let the server read the first part on its own
      client.send(req.subarray(cut));
      const r = await client.next();
      expect(r.msgId).toBe(0x55);
      expect(u32le((decodeRegionReadReply(r.body) as { data: Uint8Array }).data)).toBe(EDU_ID_VALUE);
    }
  });

  it("posted writes get no reply; a later read sees them all", async () => {
    for (let i = 1; i <= 50; i++) client.send(writeReq(client.id(), 0, EDU_REG.LIVENESS, le32(i), NO_REPLY));
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(~50 >>> 0);
    expect(client.frames.length).toBe(0);
  });

  it("REGION_WRITE_MULTI applies every write in order and replies with the count", async () => {
    const w = new MessageWriter();
    writeRegionWriteMultiRequest(w, 77, [
      { offsetLo: EDU_REG.LIVENESS, offsetHi: 0, region: 0, data: Uint8Array.from(le32(5)) },
      { offsetLo: EDU_REG.STATUS, offsetHi: 0, region: 0, data: Uint8Array.from(le32(0x80)) },
      { offsetLo: EDU_REG.LIVENESS, offsetHi: 0, region: 0, data: Uint8Array.from(le32(6)) },
    ]);
    const r = await client.request(w.take());
    expectOk(r);
    expect(decodeRegionWriteMultiReply(r.body)).toEqual({ completed: 3 });
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(~6 >>> 0);
    expect(await readU32(client, 0, EDU_REG.STATUS)).toBe(0x80);
    // One bad entry: nothing is written.
    writeRegionWriteMultiRequest(w, 78, [
      { offsetLo: EDU_REG.LIVENESS, offsetHi: 0, region: 0, data: Uint8Array.from(le32(9)) },
      { offsetLo: 0, offsetHi: 0, region: 12, data: Uint8Array.from(le32(9)) },
    ]);
    expectError(await client.request(w.take()), Errno.EINVAL);
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(~6 >>> 0);
  });

  it("DEVICE_RESET resets the device", async () => {
    await writeU32(client, 0, EDU_REG.LIVENESS, 0);
    expectOk(await client.request(message(client.id(), Command.DEVICE_RESET, REQ)));
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(0);
  });

  describe("bad input: each case gets its errno and the connection keeps working", () => {
    async function stillWorks(): Promise<void> {
      expect(await readU32(client, 0, EDU_REG.ID)).toBe(EDU_ID_VALUE);
    }

    it("requests before VERSION: EINVAL", async () => {
      client.close();
      await waitNoSession(server);
      client = await RawClient.connect(path);
      expectError(await client.request(readReq(1, 0, 0, 4)), Errno.EINVAL);
      expectError(await client.request(message(2, Command.DEVICE_GET_INFO, REQ, new Bytes().u32(16).zeros(12))), Errno.EINVAL);
      const w = new MessageWriter();
      writeVersionRequest(w, 3, {});
      expectOk(await client.request(w.take()));
      await stillWorks();
    });

    it("a second VERSION: EINVAL", async () => {
      const w = new MessageWriter();
      writeVersionRequest(w, 3, {});
      expectError(await client.request(w.take()), Errno.EINVAL);
      await stillWorks();
    });

    it("malformed VERSION JSON: EINVAL, and a correct retry succeeds", async () => {
      client.close();
      await waitNoSession(server);
      client = await RawClient.connect(path);
      const bad = message(1, Command.VERSION, REQ, new Bytes().u16(0).u16(1).ascii('{"capabilities":{"max_msg_fds":').u8(0));
      expectError(await client.request(bad), Errno.EINVAL);
      const wrongType = message(2, Command.VERSION, REQ, new Bytes().u16(0).u16(1).ascii('{"capabilities":{"max_data_xfer_size":"big"}}').u8(0));
      expectError(await client.request(wrongType), Errno.EINVAL);
      // Valid JSON without the NUL terminator the spec requires.
      const unterminated = message(3, Command.VERSION, REQ, new Bytes().u16(0).u16(1).ascii('{"capabilities":{"max_msg_fds":4}}'));
      expectError(await client.request(unterminated), Errno.EINVAL);
      const unknownCaps = message(3, Command.VERSION, REQ, new Bytes().u16(0).u16(1).ascii('{"capabilities":{"frobnicate":true}}').u8(0));
      expectOk(await client.request(unknownCaps));
      await stillWorks();
    });

    it("an unsupported major version: error reply, then the connection is closed", async () => {
      client.close();
      await waitNoSession(server);
      client = await RawClient.connect(path);
      const r = await client.request(message(1, Command.VERSION, REQ, new Bytes().u16(1).u16(0)));
      expectError(r, Errno.EINVAL);
      await client.waitClosed();
    });

    it("unknown command: ENOSYS", async () => {
      expectError(await client.request(message(9, 99, REQ)), Errno.ENOSYS);
      expectError(await client.request(message(10, 14, REQ, new Bytes().u32(8).u32(1))), Errno.ENOSYS);
      await stillWorks();
    });

    it("unsolicited replies (no DMA request of the server pending): dropped unanswered with their fds, logged, no posted failure, stream in sync", async () => {
      // A reply to a reply would carry the client's own id: QEMU would take it as the answer to
      // its pending request of that id, or fail on an unexpected reply. So nothing comes back.
      const fdsBefore = openFdCount();
      const memfd = memfdCreate("wasmdev-stray-reply", 4096);
      const strays = [
        // A REGION_READ reply with data, an error reply (EIO) to a DMA_READ, and a DMA_WRITE
        // reply flagged NO_REPLY carrying an fd.
        message(11, Command.REGION_READ, REPLY, new Bytes().u64(0).u32(0).u32(4).raw([1, 2, 3, 4])),
        message(12, Command.DMA_READ, REPLY | ERR, new Uint8Array(0), Errno.EIO),
        message(13, Command.DMA_WRITE, REPLY | NO_REPLY, new Bytes().u64(0x1000).u64(4)),
      ];
      client.send(strays[0]);
      client.send(strays[1]);
      client.send(strays[2], [memfd]);
      closeFd(memfd);
      // In the same stream: the first frame back must be this request's own reply, performed.
      const r = await client.request(readReq(14, 0, EDU_REG.ID, 4));
      expect(r.msgId).toBe(14);
      expectOk(r);
      const d = decodeRegionReadReply(r.body);
      if (d instanceof WireError) throw d;
      expect(u32le(d.data)).toBe(EDU_ID_VALUE);
      for (const [id, what] of [[11, "REGION_READ"], [12, "DMA_READ"], [13, "DMA_WRITE"]] as const) {
        expect(logs.some((l) => l.includes("unsolicited reply") && l.includes(what) && l.includes(`id ${id}`)), `log for ${what} id ${id}`).toBe(true);
      }
      expect(logs.some((l) => l.includes("id 12, error EIO"))).toBe(true);
      await expectFdCount(fdsBefore);
      await stillWorks();
    });

    it("a size field above the message limit: EMSGSIZE at once (no body awaited), then the connection closes and the next client is served", async () => {
      // Limit for max_data_xfer_size 4096: the 64 KiB floor of maxMessageSizeFor().
      for (const size of [64 * 1024 + 1, 0xfffffff0]) {
        const fdsBefore = openFdCount();
        const head = new Bytes().u16(12).u16(Command.REGION_WRITE).u32(size).u32(0).u32(0).build();
        const r = await client.request(head);
        expect(r.msgId).toBe(12);
        expect(r.command).toBe(Command.REGION_WRITE);
        expectError(r, Errno.EMSGSIZE);
        await client.waitClosed();
        client.close();
        await waitNoSession(server);
        expect(logs.some((l) => l.includes(`message size ${size} exceeds the limit`))).toBe(true);
        client = await RawClient.negotiated(path);
        await stillWorks();
        expect(openFdCount()).toBe(fdsBefore);
      }
    });

    it("a size field below the 16-byte header: the connection is closed, the server keeps serving", async () => {
      client.send(new Bytes().u16(1).u16(Command.REGION_READ).u32(8).u32(0).u32(0).build());
      await client.waitClosed();
      await waitNoSession(server);
      client = await RawClient.negotiated(path);
      await stillWorks();
    });

    it("a header shorter than 16 bytes, then the client goes away: the server keeps serving", async () => {
      client.send(new Uint8Array([1, 0, 9, 0, 32, 0]));
      await sleep(10); // lets the server read the partial header before the end of stream
      client.close();
      await waitNoSession(server);
      expect(logs.some((l) => l.includes("mid-message") || l.includes("stream ended"))).toBe(true);
      client = await RawClient.negotiated(path);
      await stillWorks();
    });

    it("region index out of range: EINVAL", async () => {
      expectError(await client.request(readReq(client.id(), 9, 0, 4)), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 0xffffffff, 0, 4)), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 3, 0, 4)), Errno.EINVAL); // absent BAR
      await stillWorks();
    });

    it("offset + count past the region end, or wrapping past 2^64: EINVAL", async () => {
      expectError(await client.request(readReq(client.id(), 0, EDU_BAR_SIZE - 2, 4)), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 0, EDU_BAR_SIZE, 4)), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 7, 254, 4)), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 0, 0xffff_ffff_ffff_fffcn, 8)), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 0, 1n << 53n, 4)), Errno.EINVAL);
      expectError(await client.request(writeReq(client.id(), 0, 0xffff_ffff_ffff_fffen, [1, 2, 3, 4])), Errno.EINVAL);
      expectError(await client.request(readReq(client.id(), 0, 0, 0)), Errno.EINVAL);
      await stillWorks();
    });

    it("count above max_data_xfer_size: E2BIG", async () => {
      expectError(await client.request(readReq(client.id(), 0, 0, 4097)), Errno.E2BIG);
      const data = new Array(4100).fill(0);
      expectError(await client.request(writeReq(client.id(), 0, 0, data)), Errno.E2BIG);
      await stillWorks();
    });

    it("write payload not equal to count: EINVAL, nothing written", async () => {
      await writeU32(client, 0, EDU_REG.LIVENESS, 0);
      expectError(await client.request(writeReq(client.id(), 0, EDU_REG.LIVENESS, [1, 2], REQ, 4)), Errno.EINVAL);
      expectError(await client.request(writeReq(client.id(), 0, EDU_REG.LIVENESS, [1, 2, 3, 4, 5, 6], REQ, 4)), Errno.EINVAL);
      expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(0xffffffff);
    });

    it("unexpected or surplus fds: EINVAL and every received fd is closed", async () => {
      await stillWorks();
      const before = openFdCount();
      const e1 = EventFd.create();
      const e2 = EventFd.create();
      const baseline = before + 2;
      expectError(await client.request(readReq(client.id(), 0, 0, 4), [e1.fd]), Errno.EINVAL);
      // DMA_MAP takes at most one fd
      const map = message(client.id(), Command.DMA_MAP, REQ, new Bytes().u32(32).u32(3).u64(0).u64(0x10000).u64(0x1000));
      expectError(await client.request(map, [e1.fd, e2.fd]), Errno.EINVAL);
      // SET_IRQS with DATA_NONE takes none
      const irq = message(client.id(), Command.DEVICE_SET_IRQS, REQ, new Bytes().u32(20).u32(0x1 | 0x8).u32(0).u32(0).u32(1));
      expectError(await client.request(irq, [e1.fd]), Errno.EINVAL);
      // more fds than max_msg_fds (16)
      const many = Array.from({ length: 17 }, () => e1.fd);
      const irq17 = message(client.id(), Command.DEVICE_SET_IRQS, REQ, new Bytes().u32(20).u32(0x4 | 0x20).u32(0).u32(0).u32(1));
      expectError(await client.request(irq17, many), Errno.EINVAL);
      expect(await expectFdCount(baseline)).toBe(baseline);
      e1.close();
      e2.close();
      await stillWorks();
    });

    it("a failed posted write is reported on the next request that wants a reply", async () => {
      client.send(writeReq(client.id(), 0, EDU_BAR_SIZE, le32(1), NO_REPLY)); // past the end
      client.send(writeReq(client.id(), 0, EDU_REG.LIVENESS, le32(3), NO_REPLY)); // fine, performed
      expect(await client.quiet(30)).toBe(true);
      const id = client.id();
      const r = await client.request(readReq(id, 0, EDU_REG.LIVENESS, 4));
      expect(r.msgId).toBe(id);
      expectError(r, Errno.EINVAL);
      expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(~3 >>> 0);
    });

    it("truncated fixed-size payloads: EINVAL", async () => {
      expectError(await client.request(message(client.id(), Command.REGION_READ, REQ, new Bytes().u64(0).u32(0))), Errno.EINVAL);
      expectError(await client.request(message(client.id(), Command.DEVICE_GET_INFO, REQ, new Bytes().u32(16))), Errno.EINVAL);
      expectError(await client.request(message(client.id(), Command.DEVICE_GET_REGION_INFO, REQ, new Bytes().u32(16).u32(0).u32(0).u32(0))), Errno.EINVAL);
      expectError(await client.request(message(client.id(), Command.DEVICE_GET_REGION_INFO, REQ, new Bytes().u32(8).u32(0).u32(0).u32(0).u64(0).u64(0))), Errno.EINVAL);
      expectError(await client.request(message(client.id(), Command.DEVICE_GET_IRQ_INFO, REQ, new Bytes().u32(16).u32(0).u32(5).u32(0))), Errno.EINVAL);
      expectError(await client.request(message(client.id(), Command.DEVICE_RESET, REQ, new Bytes().u32(0))), Errno.EINVAL);
      await stillWorks();
    });
  });

  it("refuses a second client with EBUSY and keeps serving the first", async () => {
    const second = await RawClient.connect(path);
    const w = new MessageWriter();
    writeVersionRequest(w, 1, {});
    expectError(await second.request(w.take()), Errno.EBUSY);
    await second.waitClosed();
    expect(logs.some((l) => l.includes("refused"))).toBe(true);
    await stillWorksOn(client);
  });

  it("after a disconnect it accepts the next client; device state is kept", async () => {
    await writeU32(client, 0, EDU_REG.LIVENESS, 0x0f0f0f0f);
    client.close();
    await waitNoSession(server);
    client = await RawClient.negotiated(path);
    expect(await readU32(client, 0, EDU_REG.LIVENESS)).toBe(0xf0f0f0f0);
    expect(server.connections).toBe(2);
    expect(logs.filter((l) => l.includes("connected")).length).toBeGreaterThanOrEqual(2);
  });
});

async function stillWorksOn(c: RawClient): Promise<void> {
  expect(await readU32(c, 0, EDU_REG.ID)).toBe(EDU_ID_VALUE);
}

describe("vfio-user server with a RAM-backed BAR (throughput device)", () => {
  const size = 64 * 1024;

  /** Serves a throughput device whose BAR0 is a `size`-byte memfd to a raw client. */
  async function serveMemfdBar(clientCaps?: Capabilities) {
    const fd = memfdCreate("tp-data", size);
    const mapping = mmapFd(fd, 0, size, { writable: true });
    const tp = createThroughputDevice({ data: { bytes: mapping.bytes(), fd, fdOffset: 0n } });
    const path = socketPath();
    const server = VfioUserServer.listen({ device: tp.fn, socketPath: path });
    const client = await RawClient.negotiated(path, clientCaps);
    const close = async () => {
      client.close();
      await server.close();
      mapping.unmap();
      closeFd(fd);
    };
    return { tp, client, close };
  }

  it("offers the region fd with a sparse-mmap capability that excludes the MSI-X pages, and the client sees writes through the mapping", async () => {
    const { tp, client, close } = await serveMemfdBar();
    try {
      const w = new MessageWriter();
      // Small argsz first: the struct only, argsz says how much to ask for, no fd, and no CAPS
      // flag since no capability is in it (QEMU 11.1 refuses CAPS with cap_offset 0).
      writeRegionInfoRequest(w, 1, 0, 32);
      const small = await client.request(w.take());
      expect(small.fds).toEqual([]);
      const head = decodeRegionInfoReply(small.body);
      if (head instanceof WireError) throw head;
      expect(head.flags & RegionInfoFlag.CAPS).toBe(0);
      expect(head.capOffset).toBe(0);
      expect(head.flags & RegionInfoFlag.MMAP).toBe(RegionInfoFlag.MMAP);
      expect(head.argsz).toBeGreaterThan(32);

      writeRegionInfoRequest(w, 2, 0, head.argsz);
      const full = await client.request(w.take());
      expect(full.fds.length).toBe(1);
      const info = decodeRegionInfoReply(full.body);
      if (info instanceof WireError) throw info;
      expect(info.flags).toBe(RegionInfoFlag.READ | RegionInfoFlag.WRITE | RegionInfoFlag.MMAP | RegionInfoFlag.CAPS);
      expect(info.caps).toEqual([{ id: 1, version: 1, areas: [{ offset: 0n, size: BigInt(size) }] }]);
      const clientView = mmapFd(full.fds[0], info.offset, size, { writable: true });
      closeFd(full.fds[0]);
      // A REGION_WRITE shows up in the client's mapping, and the other way round.
      expectOk(await client.request(writeReq(client.id(), 0, 0x100, [0xde, 0xad, 0xbe, 0xef])));
      expect(Array.from(clientView.bytes().subarray(0x100, 0x104))).toEqual([0xde, 0xad, 0xbe, 0xef]);
      clientView.bytes()[0x200] = 0x5a;
      const rd = decodeRegionReadReply((await client.request(readReq(client.id(), 0, 0x200, 1))).body);
      expect((rd as { data: Uint8Array }).data[0]).toBe(0x5a);
      clientView.unmap();

      // BAR 2 holds the MSI-X table at 0x800 and PBA at 0xc00: not mappable (callback region).
      writeRegionInfoRequest(w, 3, 2, 1024);
      const regs = decodeRegionInfoReply((await client.request(w.take())).body);
      expect(regs).toMatchObject({ size: 4096n, flags: RegionInfoFlag.READ | RegionInfoFlag.WRITE, caps: [] });
      writeIrqInfoRequest(w, 4, 2);
      expect(decodeIrqInfo((await client.request(w.take())).body)).toMatchObject({ index: 2, count: 2 });

      // Posted doorbells, then a flushing read of the shadowed count.
      for (let i = 0; i < 1000; i++) writeRegionWriteRequest(w, i & 0xffff, THROUGHPUT_REG.DOORBELL, 0, 2, Uint8Array.of(i & 0xff, 0, 0, 0), true);
      client.send(w.take());
      expect(await readU32(client, 2, THROUGHPUT_REG.DOORBELL_COUNT)).toBe(1000);
      expect(tp.doorbells).toBe(1000);
      expect(await readU32(client, 2, THROUGHPUT_REG.LAST_DOORBELL)).toBe(999 & 0xff);
    } finally {
      await close();
    }
  });

  it("a client announcing max_msg_fds 0 gets the RAM BAR's info without the fd, so not as mappable", async () => {
    const { client, close } = await serveMemfdBar({ maxMsgFds: 0 });
    try {
      const w = new MessageWriter();
      writeRegionInfoRequest(w, 1, 0, 1024);
      const r = await client.request(w.take());
      expectOk(r);
      expect(r.fds).toEqual([]);
      const info = decodeRegionInfoReply(r.body);
      if (info instanceof WireError) throw info;
      expect(info).toMatchObject({ size: BigInt(size), flags: RegionInfoFlag.READ | RegionInfoFlag.WRITE, caps: [] });
      expect(await readU32(client, 0, 0)).toBe(0); // still served over the socket
    } finally {
      await close();
    }
  });

  it("stops reading while replies pile up for a client that does not read them, then catches up", async () => {
    const tp = createThroughputDevice({ dataSize: 1 << 20 });
    const path = socketPath();
    const server = VfioUserServer.listen({ device: tp.fn, socketPath: path });
    const client = await RawClient.negotiated(path);
    try {
      client.conn.pause(); // the client stops reading
      const n = 800; // 800 x 64 KiB = 50 MiB of replies
      const w = new MessageWriter();
      for (let i = 0; i < n; i++) writeRegionReadRequest(w, i, 0, 0, 0, 64 * 1024);
      client.send(w.take());
      await sleep(300);
      const queued = server.current!.connection.writableLength;
      expect(queued).toBeLessThan(24 * 1024 * 1024);
      client.conn.resume();
      for (let i = 0; i < n; i++) expect((await client.next(5000)).msgId).toBe(i);
    } finally {
      client.close();
      await server.close();
    }
  });
});
