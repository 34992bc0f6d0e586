// The client against a hostile server that passes fds (the project's transport, scripted
// replies built byte by byte): bogus region info (areas outside the region, offsets that overflow,
// sizes no mapping can hold, looping capability chains), fds attached where none belong, and
// DMA requests with counts or addresses out of range. Each is a typed error or an error reply;
// every fd the client did not keep is closed; the connection keeps working.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listen, memfdCreate, closeFd, type Connection, type Server } from "../../src/transport/index.js";
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient } from "../../src/vfio-user/client/client.js";
import { VfioUserClientError } from "../../src/vfio-user/client/errors.js";
import { B, ERROR, REPLY, msg, versionPayload, type Request } from "./helpers.js";

type Reply = (bytes: Buffer, fds?: number[]) => void;
type Handler = (req: Request, reply: Reply) => void;

interface HostileServer {
  path: string;
  conn?: Connection;
  /** Replies from the client to the server's own requests, with the header's error field. */
  answers: (Request & { error: number })[];
  close(): void;
}

/** Answers VERSION itself; everything else goes to `handler`. Received fds are closed at once. */
function startServer(handler: Handler): HostileServer {
  const dir = mkdtempSync(join(tmpdir(), "vfu-hostile-"));
  const path = join(dir, "s.sock");
  const state: HostileServer = { path, answers: [], close: () => undefined };
  const server: Server = listen(path);
  server.on("connection", (conn: Connection) => {
    state.conn = conn;
    let buf = Buffer.alloc(0);
    conn.onData((chunk, fds) => {
      for (const fd of fds) closeFd(fd);
      buf = Buffer.concat([buf, Buffer.from(chunk)]);
      while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
        const size = buf.readUInt32LE(4);
        const req: Request = { msgId: buf.readUInt16LE(0), command: buf.readUInt16LE(2), size, flags: buf.readUInt32LE(8), payload: Buffer.from(buf.subarray(16, size)) };
        const error = buf.readUInt32LE(12);
        buf = buf.subarray(size);
        const reply: Reply = (bytes, withFds) => conn.send(bytes, withFds);
        if ((req.flags & 0xf) === REPLY) state.answers.push({ ...req, error });
        else if (req.command === 1) reply(msg(req.msgId, 1, REPLY, versionPayload({ capabilities: { max_msg_fds: 4, max_data_xfer_size: 1 << 16 } })));
        else handler(req, reply);
      }
    });
  });
  state.close = () => {
    server.close();
    state.conn?.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  return state;
}

const openFds = () => readdirSync("/proc/self/fd").length;

/** A region-info reply payload: the 32-byte struct, then optional capability bytes. */
function regionInfo(index: number, flags: number, size: bigint, offset: bigint, caps?: B): B {
  const capBytes = caps?.build() ?? Buffer.alloc(0);
  return new B().u32(32 + capBytes.length).u32(flags | (caps ? 8 : 0)).u32(index).u32(caps ? 32 : 0).u64(size).u64(offset).bytes(capBytes);
}
function sparse(areas: [bigint, bigint][], next = 0): B {
  const b = new B().u16(1).u16(1).u32(next).u32(areas.length).u32(0);
  for (const [o, s] of areas) b.u64(o).u64(s);
  return b;
}

async function rejection(p: Promise<unknown>): Promise<VfioUserClientError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(VfioUserClientError);
    return err as VfioUserClientError;
  }
  throw new Error("expected a rejection");
}

let srv: HostileServer | undefined;
let client: VfioUserClient | undefined;
const memfds: number[] = [];
afterEach(() => {
  client?.close();
  client = undefined;
  srv?.close();
  srv = undefined;
  for (const fd of memfds.splice(0)) closeFd(fd);
});

function memfd(size = 0x4000): number {
  const fd = memfdCreate("hostile", size);
  memfds.push(fd);
  return fd;
}

describe("a hostile server's region info", () => {
  it("sparse areas outside the region, or whose file offset overflows 2^64, are ERR_PROTOCOL; the fd sent along is closed", async () => {
    const fd = memfd();
    const bad: Record<number, B> = {
      // an area running past the 0x4000-byte region
      0: regionInfo(0, 7, 0x4000n, 0n, sparse([[0x3000n, 0x2000n]])),
      // offset + area size past 2^64 (would wrap the file offset)
      1: regionInfo(1, 7, 0x4000n, 0xffff_ffff_ffff_f000n, sparse([[0n, 0x2000n]])),
      // an area whose own offset + size wraps
      2: regionInfo(2, 7, 0xffff_ffff_ffff_ffffn, 0n, sparse([[0xffff_ffff_ffff_f000n, 0x2000n]])),
      // a capability pointing back at itself
      3: regionInfo(3, 7, 0x4000n, 0n, sparse([[0n, 0x1000n]], 32)),
      // an area count larger than the capability holds
      4: regionInfo(4, 7, 0x4000n, 0n, new B().u16(1).u16(1).u32(0).u32(0x1000_0000).u32(0).u64(0).u64(0x1000)),
    };
    srv = startServer((req, reply) => {
      const index = req.payload.readUInt32LE(8);
      reply(msg(req.msgId, 5, REPLY, bad[index] ?? regionInfo(index, 3, 0x100n, 0n)), [fd]);
    });
    client = await connectVfioUser(srv.path, { probe: false });
    const before = openFds();
    for (const index of [0, 1, 2, 3, 4]) {
      const e = await rejection(client.getRegionInfo(index));
      expect(e.code, `region ${index}: ${e.message}`).toBe("ERR_PROTOCOL");
    }
    // Not mappable (no MMAP flag): the fd is not kept either.
    expect((await client.getRegionInfo(5)).fd).toBeUndefined();
    expect(openFds()).toBe(before);
  });

  it("a mappable region of 2^64-1 bytes: mapRegion fails with ERR_MAPPING, nothing mapped or leaked", async () => {
    const fd = memfd();
    srv = startServer((req, reply) => {
      if (req.command === 5) return reply(msg(req.msgId, 5, REPLY, regionInfo(0, 7, 0xffff_ffff_ffff_ffffn, 0n)), [fd]);
      reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
    });
    client = await connectVfioUser(srv.path, { probe: false });
    const info = await client.getRegionInfo(0);
    expect(info.fd).toBeTypeOf("number");
    expect((await rejection(client.mapRegion(0))).code).toBe("ERR_MAPPING");
    expect(client.mappedAreas(0)).toEqual([]);
    // Accesses past 2^64 are refused locally.
    expect((await rejection(client.readRegion(0, 0xffff_ffff_ffff_fffen, 4))).code).toBe("ERR_ARGUMENT");
    const before = openFds();
    client.close();
    expect(openFds()).toBe(before - 2); // the region fd and the socket
    client = undefined;
  });

  it("a device claiming 2^32-1 regions is probed for at most 64", async () => {
    let asked = 0;
    srv = startServer((req, reply) => {
      if (req.command === 4) return reply(msg(req.msgId, 4, REPLY, new B().u32(16).u32(1).u32(0xffff_ffff).u32(0xffff_ffff)));
      if (req.command === 5) {
        asked++;
        return reply(msg(req.msgId, 5, REPLY, regionInfo(req.payload.readUInt32LE(8), 0, 0n, 0n)));
      }
      reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
    });
    client = await connectVfioUser(srv.path);
    expect(asked).toBe(64);
    expect(client.regions.size).toBe(64);
  });
});

describe("fds where none belong, and DMA requests out of range", () => {
  it("fds attached to a reply that takes none, or to the server's own request, are closed; both are still handled", async () => {
    const fd = memfd();
    srv = startServer((req, reply) => {
      if (req.command === 4) return reply(msg(req.msgId, 4, REPLY, new B().u32(16).u32(3).u32(9).u32(5)), [fd, fd, fd]);
      if (req.command === 2) return reply(msg(req.msgId, 2, REPLY));
      reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
    });
    client = await connectVfioUser(srv.path, { probe: false });
    await client.dmaMap({ iova: 0x10000, size: 0x1000, memory: new Uint8Array(0x1000).fill(0x5a) });
    const before = openFds();
    expect((await client.getDeviceInfo()).numRegions).toBe(9);
    srv.conn!.send(msg(0x300, 11, 0, new B().u64(0x10000).u64(4)), [fd, fd]);
    for (let i = 0; i < 200 && srv.answers.length === 0; i++) await new Promise((r) => setTimeout(r, 2));
    expect(srv.answers[0]).toMatchObject({ msgId: 0x300, command: 11, flags: REPLY });
    expect([...srv.answers[0].payload.subarray(16)]).toEqual([0x5a, 0x5a, 0x5a, 0x5a]);
    expect(openFds()).toBe(before);
  });

  it("DMA_READ above the client's max_data_xfer_size or above 2^32 is E2BIG; one wrapping past 2^64 or outside the mappings is EFAULT", async () => {
    srv = startServer((req, reply) => reply(msg(req.msgId, req.command, REPLY)));
    client = await connectVfioUser(srv.path, { probe: false, maxDataXferSize: 1 << 16 });
    await client.dmaMap({ iova: 0xffff_ffff_ffff_f000n, size: 0x1000, memory: new Uint8Array(0x1000) });
    const requests: [number, B][] = [
      [0x400, new B().u64(0xffff_ffff_ffff_f000n).u64((1 << 16) + 1)],
      [0x401, new B().u64(0xffff_ffff_ffff_f000n).u64(0x1_0000_0000n)],
      [0x402, new B().u64(0xffff_ffff_ffff_fff0n).u64(0x20)],
      [0x403, new B().u64(0x1000).u64(4)],
    ];
    for (const [id, body] of requests) srv.conn!.send(msg(id, 11, 0, body));
    for (let i = 0; i < 200 && srv.answers.length < 4; i++) await new Promise((r) => setTimeout(r, 2));
    const E2BIG = 7;
    const EFAULT = 14;
    expect(srv.answers.map((a) => [a.msgId, a.flags, a.size, a.error])).toEqual([
      [0x400, REPLY | ERROR, 16, E2BIG],
      [0x401, REPLY | ERROR, 16, E2BIG],
      [0x402, REPLY | ERROR, 16, EFAULT],
      [0x403, REPLY | ERROR, 16, EFAULT],
    ]);
    await client.dmaUnmap(0xffff_ffff_ffff_f000n, 0x1000); // the connection still works
  });
});
