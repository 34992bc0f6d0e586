// File descriptors both ways, through the real transport: the server offers a memfd for a BAR
// (with a sparse mmap capability) that the client maps; the client passes eventfds with
// SET_IRQS and memfd-backed memory with DMA_MAP, which the server uses directly.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listen, memfdCreate, mmapFd, closeFd, EventFd, type Connection, type Server } from "../../src/transport/index.js";
import { connectVfioUser, enableIrqs, createSharedMemory } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient, IrqEvent } from "../../src/vfio-user/client/client.js";
import { B, ERROR, NO_REPLY, REPLY, msg, readReply, versionPayload, type Request } from "./helpers.js";

const BAR2_SIZE = 0x4000;

interface FdServer {
  path: string;
  received: { req: Request; fds: number[] }[];
  bar2: Uint8Array;
  bar2Fd: number;
  conn?: Connection;
  close(): void;
}

/** A scripted server on the transport (fd passing). BAR2 is a memfd offered for mapping. */
function startFdServer(maxMsgFds = 2): FdServer {
  const dir = mkdtempSync(join(tmpdir(), "vfu-fds-"));
  const path = join(dir, "s.sock");
  const bar2Fd = memfdCreate("bar2", BAR2_SIZE);
  const bar2 = mmapFd(bar2Fd, 0, BAR2_SIZE).bytes();
  const state: FdServer = {
    path,
    received: [],
    bar2,
    bar2Fd,
    close: () => undefined,
  };
  const server: Server = listen(path);
  server.on("connection", (conn: Connection) => {
    state.conn = conn;
    let buf = Buffer.alloc(0);
    let pendingFds: number[] = [];
    conn.onData((chunk, fds) => {
      buf = Buffer.concat([buf, Buffer.from(chunk)]);
      pendingFds.push(...fds);
      while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
        const size = buf.readUInt32LE(4);
        const req: Request = { msgId: buf.readUInt16LE(0), command: buf.readUInt16LE(2), size, flags: buf.readUInt32LE(8), payload: Buffer.from(buf.subarray(16, size)) };
        buf = buf.subarray(size);
        // Each test request carrying fds is sent alone, so the fds are this request's.
        const fdsForReq = pendingFds;
        pendingFds = [];
        state.received.push({ req, fds: fdsForReq });
        handle(conn, req, fdsForReq);
      }
    });
  });
  const handle = (conn: Connection, req: Request, fds: number[]) => {
    const p = req.payload;
    const reply = (bytes: Buffer, withFds?: number[]) => conn.send(bytes, withFds);
    switch (req.command) {
      case 1:
        return reply(msg(req.msgId, 1, REPLY, versionPayload({ capabilities: { max_msg_fds: maxMsgFds, max_data_xfer_size: 1 << 20 } })));
      case 4:
        return reply(msg(req.msgId, 4, REPLY, new B().u32(16).u32(3).u32(9).u32(3)));
      case 5: {
        const index = p.readUInt32LE(8);
        if (index === 2) {
          // Region info with a sparse mmap capability: two areas, the middle page trapped.
          const caps = new B().u16(1).u16(1).u32(0).u32(2).u32(0).u64(0).u64(0x1000).u64(0x2000).u64(0x2000);
          const argsz = 32 + caps.length;
          if (p.readUInt32LE(0) < argsz) return reply(msg(req.msgId, 5, REPLY, new B().u32(argsz).u32(0xf).u32(2).u32(0).u64(BAR2_SIZE).u64(0)));
          return reply(msg(req.msgId, 5, REPLY, new B().u32(argsz).u32(0xf).u32(2).u32(32).u64(BAR2_SIZE).u64(0).bytes(caps.build())), [bar2Fd]);
        }
        const size = index === 7 ? 256 : index === 0 ? 0x1000 : 0;
        return reply(msg(req.msgId, 5, REPLY, new B().u32(32).u32(size ? 3 : 0).u32(index).u32(0).u64(size).u64(0)));
      }
      case 8:
        return reply(msg(req.msgId, 8, REPLY));
      case 2:
        return reply(msg(req.msgId, 2, REPLY));
      case 9: {
        const offset = p.readBigUInt64LE(0);
        const region = p.readUInt32LE(8);
        const count = p.readUInt32LE(12);
        if (region === 7) {
          const cfg = Buffer.alloc(count);
          if (offset === 0x10n) cfg.writeUInt32LE(0x0000000c, 8); // BAR2: 64-bit memory
          return reply(msg(req.msgId, 9, REPLY, readReply(offset, region, cfg)));
        }
        if (region === 2) return reply(msg(req.msgId, 9, REPLY, readReply(offset, region, Buffer.from(bar2.subarray(Number(offset), Number(offset) + count)))));
        return reply(msg(req.msgId, 9, REPLY, readReply(offset, region, Buffer.alloc(count))));
      }
      case 10: {
        const offset = p.readBigUInt64LE(0);
        const region = p.readUInt32LE(8);
        const count = p.readUInt32LE(12);
        if (region === 2) bar2.set(p.subarray(16, 16 + count), Number(offset));
        if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, 10, REPLY, new B().u64(offset).u32(region).u32(count)));
        return;
      }
      default:
        if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
    }
    void fds;
  };
  state.close = () => {
    server.close();
    state.conn?.destroy();
    for (const r of state.received) for (const fd of r.fds) closeFd(fd);
    closeFd(bar2Fd);
    rmSync(dir, { recursive: true, force: true });
  };
  return state;
}

let srv: FdServer | undefined;
let client: VfioUserClient | undefined;
afterEach(() => {
  client?.close();
  client = undefined;
  srv?.close();
  srv = undefined;
});

const openFds = () => readdirSync("/proc/self/fd").length;

describe("fd passing through the transport", () => {
  it("maps the sparse areas of a server-offered region fd and accesses them directly", async () => {
    srv = startFdServer();
    client = await connectVfioUser(srv.path);
    const info = client.regions.get(2)!;
    expect(info.mmappable).toBe(true);
    expect(info.fd).toBeTypeOf("number");
    expect(info.sparseAreas).toEqual([{ offset: 0n, size: 0x1000n }, { offset: 0x2000n, size: 0x2000n }]);
    expect(client.postedWrites.regionSpace(2)).toBe("memory");
    const areas = await client.mapRegion(2);
    expect(areas.map((a) => [a.offset, a.size, a.view.length])).toEqual([[0n, 0x1000n, 0x1000], [0x2000n, 0x2000n, 0x2000]]);
    // Inside a mapped area: straight into the server's memory, no message.
    const before = srv.received.length;
    expect(await client.writeValue(2, 0x2010, 4, 0xcafef00d)).toEqual({ posted: false, viaMapping: true });
    expect(Buffer.from(srv.bar2).readUInt32LE(0x2010)).toBe(0xcafef00d);
    srv.bar2[0x10] = 0x99;
    expect(await client.readValue(2, 0x10, 1)).toBe(0x99n);
    expect(srv.received.length).toBe(before);
    // In the trapped page: over the socket, and not posted because a region is now mapped.
    expect(await client.writeValue(2, 0x1008, 2, 0x1234)).toEqual({ posted: false, viaMapping: false });
    expect(srv.received.at(-1)!.req.flags & NO_REPLY).toBe(0);
    client.unmapRegion(2);
    expect((await client.writeValue(2, 0x1008, 2, 0x4321)).posted).toBe(true);
  });

  it("re-asks region info with the argsz the server needs for its capabilities", async () => {
    srv = startFdServer();
    client = await connectVfioUser(srv.path, { probe: false });
    const info = await client.getRegionInfo(2);
    expect(info.sparseAreas?.length).toBe(2);
    const asks = srv.received.filter((r) => r.req.command === 5).map((r) => r.req.payload.readUInt32LE(0));
    expect(asks[0]).toBeGreaterThanOrEqual(72); // the default ask is large enough: one round trip
  });

  it("passes eventfds with SET_IRQS and emits an irq event when the server signals one", async () => {
    srv = startFdServer();
    client = await connectVfioUser(srv.path);
    const disable = await enableIrqs(client, 1, 3);
    const sets = srv.received.filter((r) => r.req.command === 8);
    // max_msg_fds is 2: vectors 0-1 in one message, vector 2 in another.
    expect(sets.map((s) => [s.req.payload.readUInt32LE(12), s.req.payload.readUInt32LE(16), s.fds.length])).toEqual([[0, 2, 2], [2, 1, 1]]);
    expect(sets[0].req.payload.readUInt32LE(4)).toBe(0x4 | 0x20); // DATA_EVENTFD | ACTION_TRIGGER
    const events: IrqEvent[] = [];
    const got = new Promise<void>((resolve) => client!.on("irq", (e) => (events.push(e), resolve())));
    const vector2 = EventFd.adopt(sets[1].fds[0]);
    sets[1].fds.length = 0; // now owned by vector2
    vector2.signal();
    await got;
    expect(events).toEqual([{ index: 1, vector: 2, count: 1 }]);
    vector2.close();
    await disable();
    expect(srv.received.at(-1)!.req.payload.readUInt32LE(4)).toBe(0x1 | 0x20); // DATA_NONE | TRIGGER, count 0
  });

  it("eventfds go in groups no larger than the client's own max_msg_fds when the server accepts more", async () => {
    srv = startFdServer(64);
    client = await connectVfioUser(srv.path, { maxMsgFds: 4 });
    const disable = await enableIrqs(client, 1, 6);
    const sets = srv.received.filter((r) => r.req.command === 8);
    expect(sets.map((s) => [s.req.payload.readUInt32LE(12), s.req.payload.readUInt32LE(16), s.fds.length])).toEqual([[0, 4, 4], [4, 2, 2]]);
    await expect(client.setIrqEventfds(1, 0, [0, 1, 2, 3, 4])).rejects.toMatchObject({ code: "ERR_ARGUMENT" });
    await disable();
  });

  it("DMA_MAP passes a memfd the server can map and write into the client's memory", async () => {
    srv = startFdServer();
    client = await connectVfioUser(srv.path);
    const shm = createSharedMemory(0x2000);
    try {
      await client.dmaMap({ iova: 0x40000, size: 0x2000, memory: shm.memory, fd: shm.fd });
      const map = srv.received.find((r) => r.req.command === 2)!;
      expect(map.fds.length).toBe(1);
      const serverView = mmapFd(map.fds[0], 0, 0x2000).bytes();
      serverView[0x123] = 0x5a;
      expect(shm.memory[0x123]).toBe(0x5a);
    } finally {
      shm.close();
    }
  });

  it("asking again for the info of a mapped region keeps one region fd, not two", async () => {
    srv = startFdServer();
    client = await connectVfioUser(srv.path);
    await client.mapRegion(2);
    const baseline = openFds();
    for (let i = 0; i < 3; i++) await client.getRegionInfo(2);
    expect(client.regions.get(2)!.fd).toBeTypeOf("number");
    expect(openFds()).toBe(baseline);
    // The mapping still works and is released with the client.
    expect(await client.writeValue(2, 0x10, 1, 0x42)).toEqual({ posted: false, viaMapping: true });
    expect(srv.bar2[0x10]).toBe(0x42);
  });

  it("leaks no fds over repeated connect / map / close cycles", async () => {
    srv = startFdServer();
    const cycle = async () => {
      const c = await connectVfioUser(srv!.path);
      await c.mapRegion(2);
      c.close();
      await new Promise((r) => setTimeout(r, 5));
    };
    await cycle();
    for (const r of srv.received) for (const fd of r.fds) closeFd(fd);
    srv.received.length = 0;
    const before = openFds();
    for (let i = 0; i < 20; i++) await cycle();
    // The server side closes its end when it reads each end of stream: poll, do not guess a delay.
    for (let i = 0; i < 500 && openFds() !== before; i++) await new Promise((r) => setTimeout(r, 2));
    expect(openFds()).toBe(before);
  });
});
