// DEVICE_GET_REGION_IO_FDS over a real socket, against a raw client: the reply's bytes (built
// here independently of the serializer), the eventfds passed with SCM_RIGHTS reaching the
// device's doorbell, argsz and max_msg_fds rules, bad requests with their errnos, and no fd
// leaking across connect/disconnect cycles.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSync } from "node:fs";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { Command, Errno, decodeRegionReadReply, WireError } from "../../src/vfio-user/wire/index.js";
import { createThroughputDevice, THROUGHPUT_REG, type ThroughputDevice } from "../../src/devices/throughput.js";
import { createPciFunction, type PciFunction, type RegionOps } from "../../src/core/pci/index.js";
import { closeFd } from "../../src/transport/fd.js";
import { Bytes, message, toHex } from "./bytes.js";
import { RawClient, sleep, openFdCount, expectFdCount, waitNoSession, type ReceivedFrame } from "./raw-client.js";

const REQ = 0;
const NO_REPLY = 0x10;
const REPLY = 1;
const ERR = 0x20;
const IO_FDS = Command.DEVICE_GET_REGION_IO_FDS;

let seq = 0;
const socketPath = () => join(tmpdir(), `wasmdev-ioefd-${process.pid}-${++seq}.sock`);

/** DEVICE_GET_REGION_IO_FDS request, byte by byte. */
function ioFdsReq(id: number, index: number, argsz = 1024, flags = 0, count = 0, msgFlags = REQ): Uint8Array {
  return message(id, IO_FDS, msgFlags, new Bytes().u32(argsz).u32(flags).u32(index).u32(count));
}

function expectError(f: ReceivedFrame, errno: number): void {
  expect(f.flags & 0xf).toBe(REPLY);
  expect(f.flags & ERR, `expected an error reply (${errno})`).toBe(ERR);
  expect(f.error).toBe(errno);
  expect(f.fds).toEqual([]);
}

function ring(fd: number, times = 1): void {
  const one = Buffer.alloc(8);
  one.writeBigUInt64LE(1n);
  for (let i = 0; i < times; i++) expect(writeSync(fd, one)).toBe(8);
}

async function readReg(c: RawClient, region: number, offset: number): Promise<number> {
  const r = await c.request(message(c.id(), Command.REGION_READ, REQ, new Bytes().u64(offset).u32(region).u32(4)));
  expect(r.flags & ERR, `read failed with ${r.error}`).toBe(0);
  const d = decodeRegionReadReply(r.body);
  if (d instanceof WireError) throw d;
  return new DataView(d.data.buffer, d.data.byteOffset, 4).getUint32(0, true);
}

/** Polls the doorbell sum over the socket until it reaches `want` (rings are asynchronous). */
async function waitSum(c: RawClient, want: number): Promise<number> {
  const deadline = Date.now() + 2000;
  let sum = await readReg(c, 2, THROUGHPUT_REG.DOORBELL_SUM);
  while (sum < want && Date.now() < deadline) {
    await sleep(1);
    sum = await readReg(c, 2, THROUGHPUT_REG.DOORBELL_SUM);
  }
  return sum;
}

describe("DEVICE_GET_REGION_IO_FDS with the throughput device", () => {
  let server: VfioUserServer;
  let path: string;
  let tp: ThroughputDevice;
  let logs: string[];
  let client: RawClient;

  beforeEach(async () => {
    path = socketPath();
    logs = [];
    tp = createThroughputDevice({ dataSize: 4096 });
    server = VfioUserServer.listen({ device: tp.fn, socketPath: path, log: (l) => logs.push(l) });
    client = await RawClient.negotiated(path);
  });

  afterEach(async () => {
    client?.close();
    await server.close();
    tp.fn.dispose();
  });

  it("answers BAR2 with its doorbell sub-region and passes one eventfd that rings the device", async () => {
    const r = await client.request(ioFdsReq(0x41, 2));
    expect(r.msgId).toBe(0x41);
    expect(r.flags).toBe(REPLY);
    // argsz 64 = 16 + one 48-byte entry in libvfio-user's layout; offset 4, size 4, fd_index 0,
    // type ioeventfd (0), flags 0 (memory, no datamatch), shadow fd index 0, shadow offset 0,
    // datamatch 0.
    expect(toHex(r.body)).toBe(toHex(new Bytes().u32(64).u32(0).u32(2).u32(1).u64(4).u64(4).u32(0).u32(0).u32(0).u32(0).u64(0).u64(0).build()));
    expect(r.fds.length).toBe(1);
    const fd = r.fds[0];
    try {
      ring(fd, 7);
      expect(await waitSum(client, 7)).toBe(7);
      expect(tp.doorbellSum).toBe(7);
      // Each wake-up is one doorbell write; the count register says how many there were.
      const writes = await readReg(client, 2, THROUGHPUT_REG.DOORBELL_COUNT);
      expect(writes).toBeGreaterThanOrEqual(1);
      expect(writes).toBeLessThanOrEqual(7);
      // The socket path still works next to it and counts in the same register.
      expect(
        (await client.request(message(client.id(), Command.REGION_WRITE, REQ, new Bytes().u64(THROUGHPUT_REG.DOORBELL).u32(2).u32(4).u32(1)))).flags & ERR,
      ).toBe(0);
      expect(await readReg(client, 2, THROUGHPUT_REG.DOORBELL_SUM)).toBe(8);
    } finally {
      closeFd(fd);
    }
  });

  it("asking again returns the same eventfd (fresh copies of it)", async () => {
    const a = await client.request(ioFdsReq(1, 2));
    const b = await client.request(ioFdsReq(2, 2));
    expect(a.fds.length).toBe(1);
    expect(b.fds.length).toBe(1);
    try {
      ring(a.fds[0], 2);
      ring(b.fds[0], 3);
      expect(await waitSum(client, 5)).toBe(5);
    } finally {
      closeFd(a.fds[0]);
      closeFd(b.fds[0]);
    }
  });

  it("regions without ioeventfds answer count 0 and no fds: RAM BAR, config space", async () => {
    for (const index of [0, 7]) {
      const r = await client.request(ioFdsReq(3, index));
      expect(r.flags).toBe(REPLY);
      expect(toHex(r.body)).toBe(toHex(new Bytes().u32(16).u32(0).u32(index).u32(0).build()));
      expect(r.fds).toEqual([]);
    }
  });

  it("an argsz too small for the array gets the head with the argsz needed, and no fds", async () => {
    for (const argsz of [16, 56, 63]) {
      const r = await client.request(ioFdsReq(4, 2, argsz));
      expect(r.flags).toBe(REPLY);
      expect(toHex(r.body)).toBe(toHex(new Bytes().u32(64).u32(0).u32(2).u32(1).build()));
      expect(r.fds).toEqual([]);
    }
    const full = await client.request(ioFdsReq(5, 2, 64));
    expect(full.body.length).toBe(64);
    expect(full.fds.length).toBe(1);
    closeFd(full.fds[0]);
  });

  it("bad requests get EINVAL and the connection keeps serving", async () => {
    const cases: [string, Uint8Array][] = [
      ["region index past the last region", ioFdsReq(10, 9)],
      ["region index 2^32-1", ioFdsReq(11, 0xffffffff)],
      ["absent BAR", ioFdsReq(12, 1)],
      ["absent ROM", ioFdsReq(13, 6)],
      ["argsz below the 16-byte head", ioFdsReq(14, 2, 15)],
      ["non-zero flags", ioFdsReq(15, 2, 1024, 1)],
      ["non-zero count", ioFdsReq(16, 2, 1024, 0, 1)],
      ["payload shorter than 16 bytes", message(17, IO_FDS, REQ, new Bytes().u32(16).u32(0).u32(2))],
      ["payload longer than 16 bytes", message(18, IO_FDS, REQ, new Bytes().u32(16).u32(0).u32(2).u32(0).u32(0))],
    ];
    for (const [name, bytes] of cases) {
      const r = await client.request(bytes);
      expect(r.msgId, name).toBe(u16(bytes));
      expectError(r, Errno.EINVAL);
    }
    expect(await readReg(client, 2, THROUGHPUT_REG.ID)).toBe(0x77647470);
  });

  it("a request carrying an fd is refused with EINVAL and the fd is closed", async () => {
    const before = openFdCount();
    const r = await client.request(ioFdsReq(20, 2), [0]); // the server gets its own copy of stdin
    expectError(r, Errno.EINVAL);
    expect(await expectFdCount(before)).toBe(before);
  });

  it("a NO_REPLY request gets nothing back (and creates nothing)", async () => {
    client.send(ioFdsReq(21, 2, 1024, 0, 0, NO_REPLY));
    expect(await client.quiet(30)).toBe(true);
    expect(await readReg(client, 2, THROUGHPUT_REG.ID)).toBe(0x77647470);
  });

  it("rings still counted when the client leaves are delivered; its copy then reaches nothing", async () => {
    const r = await client.request(ioFdsReq(1, 2));
    const stale = r.fds[0];
    try {
      ring(stale, 2);
      client.close();
      await client.waitClosed();
      await waitNoSession(server); // the session closes on the loop turn after the socket's close
      expect(tp.doorbellSum).toBe(2);
      ring(stale, 5); // the departed client's copy: the server's eventfd is gone
      await sleep(30);
      expect(tp.doorbellSum).toBe(2);

      client = await RawClient.negotiated(path);
      const again = await client.request(ioFdsReq(2, 2));
      expect(again.fds.length).toBe(1);
      ring(again.fds[0], 3);
      expect(await waitSum(client, 5)).toBe(5);
      closeFd(again.fds[0]);
    } finally {
      closeFd(stale);
    }
  });

  it("leaks no fds across 10 connect / IO_FDS / ring / disconnect cycles", async () => {
    client.close();
    await waitNoSession(server);
    const baseline = openFdCount();
    for (let cycle = 0; cycle < 10; cycle++) {
      client = await RawClient.negotiated(path);
      const r = await client.request(ioFdsReq(1, 2));
      expect(r.fds.length).toBe(1);
      ring(r.fds[0]);
      closeFd(r.fds[0]);
      expect(await waitSum(client, cycle + 1)).toBe(cycle + 1);
      client.close();
      await waitNoSession(server);
    }
    expect(await expectFdCount(baseline)).toBe(baseline);
  });
});

/** A device with three ioeventfds on BAR0 — two datamatch values on one register, one plain —
 *  and a register whose write fails. */
function threeBells(): { fn: PciFunction; writes: string[] } {
  const writes: string[] = [];
  const ops: RegionOps = {
    read: () => 0,
    write(offset, size, value) {
      if (offset === 0x40) throw new Error("broken register");
      writes.push(`${offset.toString(16)}=${value.toString(16)}`);
    },
    valid: { min: 1, max: 8 },
    impl: { min: 1, max: 8 },
  };
  const fn = createPciFunction({
    vendorId: 0x1234,
    deviceId: 0x0001,
    classCode: 0xff0000,
    bars: [
      {
        kind: "mem64",
        size: 0x1000,
        ops,
        ioeventfds: [
          { offset: 0x10, size: 2, datamatch: 1 },
          { offset: 0x10, size: 2, datamatch: 2 },
          { offset: 0x40, size: 4 },
        ],
      },
      undefined,
      { kind: "io", size: 16, ops, ioeventfds: [{ offset: 8, size: 1, datamatch: 0x5a }] },
    ],
  });
  return { fn, writes };
}

describe("DEVICE_GET_REGION_IO_FDS: datamatch, port I/O, max_msg_fds, delivery failures", () => {
  let server: VfioUserServer;
  let path: string;
  let dev: ReturnType<typeof threeBells>;
  let client: RawClient | undefined;
  let logs: string[];

  beforeEach(() => {
    path = socketPath();
    logs = [];
    dev = threeBells();
    server = VfioUserServer.listen({ device: dev.fn, socketPath: path, log: (l) => logs.push(l) });
  });

  afterEach(async () => {
    client?.close();
    await server.close();
    dev.fn.dispose();
  });

  it("several sub-regions: one fd each, DATAMATCH and PIO flags, datamatch values", async () => {
    client = await RawClient.negotiated(path, { maxMsgFds: 8 });
    const r = await client.request(ioFdsReq(1, 0));
    const entry = (offset: number, size: number, fdIndex: number, flags: number, datamatch: number) =>
      new Bytes().u64(offset).u64(size).u32(fdIndex).u32(0).u32(flags).u32(0).u64(0).u64(datamatch).build();
    expect(toHex(r.body)).toBe(
      toHex(new Bytes().u32(16 + 3 * 48).u32(0).u32(0).u32(3).raw(entry(0x10, 2, 0, 1, 1)).raw(entry(0x10, 2, 1, 1, 2)).raw(entry(0x40, 4, 2, 0, 0)).build()),
    );
    expect(r.fds.length).toBe(3);
    const io = await client.request(ioFdsReq(2, 2));
    expect(toHex(io.body)).toBe(toHex(new Bytes().u32(64).u32(0).u32(2).u32(1).raw(entry(8, 1, 0, 3, 0x5a)).build()));
    expect(io.fds.length).toBe(1);
    try {
      ring(r.fds[1]);
      ring(io.fds[0]);
      const deadline = Date.now() + 2000;
      while (dev.writes.length < 2 && Date.now() < deadline) await sleep(1);
      expect(dev.writes.sort()).toEqual(["10=2", "8=5a"]);
    } finally {
      for (const fd of [...r.fds, ...io.fds]) closeFd(fd);
    }
  });

  it("more sub-regions than the client's max_msg_fds: E2BIG, no fds sent", async () => {
    client = await RawClient.negotiated(path, { maxMsgFds: 2 });
    expectError(await client.request(ioFdsReq(1, 0)), Errno.E2BIG);
    // Fewer fds than the limit still go through on the same connection.
    const io = await client.request(ioFdsReq(2, 2));
    expect(io.fds.length).toBe(1);
    closeFd(io.fds[0]);
  });

  it("a client that states no max_msg_fds gets the spec's default of 1", async () => {
    client = await RawClient.negotiated(path, {});
    expectError(await client.request(ioFdsReq(1, 0)), Errno.E2BIG);
    const io = await client.request(ioFdsReq(2, 2));
    expect(io.fds.length).toBe(1);
    closeFd(io.fds[0]);
  });

  it("a doorbell whose write fails is reported like a failed posted write: by the next request", async () => {
    client = await RawClient.negotiated(path, { maxMsgFds: 8 });
    const r = await client.request(ioFdsReq(1, 0));
    try {
      ring(r.fds[2]);
      const deadline = Date.now() + 2000;
      while (!logs.some((l) => l.includes("ioeventfd write failed")) && Date.now() < deadline) await sleep(1);
      expect(logs.find((l) => l.includes("ioeventfd write failed"))).toMatch(/EIO/);
      const next = await client.request(ioFdsReq(2, 2));
      expectError(next, Errno.EIO);
      // Reported once; the connection goes on.
      const after = await client.request(ioFdsReq(3, 2));
      expect(after.flags).toBe(REPLY);
      for (const fd of after.fds) closeFd(fd);
    } finally {
      for (const fd of r.fds) closeFd(fd);
    }
  });
});

function u16(bytes: Uint8Array): number {
  return bytes[0] | (bytes[1] << 8);
}
