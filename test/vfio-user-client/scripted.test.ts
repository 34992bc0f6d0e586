// The client against a scripted raw-socket server whose replies are built byte by byte here:
// malformed, split, out-of-order and oversized replies each surface as a typed error, and the
// connection keeps working afterwards (or, where the stream cannot be framed, every pending
// request fails with ERR_CLOSED).
import { afterEach, describe, expect, it } from "vitest";
import { VfioUserClient, type VfioUserClientOptions } from "../../src/vfio-user/client/client.js";
import { VfioUserClientError } from "../../src/vfio-user/client/errors.js";
import { B, ERROR, NO_REPLY, REPLY, ScriptedServer, msg, netChannel, readReply, regionAccess, sleep, versionPayload, type Script } from "./helpers.js";

const READ = 9;
const WRITE = 10;
const DMA_READ = 11;
const DMA_WRITE = 12;

let server: ScriptedServer | undefined;
let client: VfioUserClient | undefined;
function forgetGlobals() {
  server = undefined;
  client = undefined;
}
afterEach(async () => {
  client?.close();
  client = undefined;
  await server?.stop();
  server = undefined;
});

/** Region 0 reads return bytes [offset, offset+count) of a counting pattern. */
const echoReads: Script = (req, reply) => {
  if (req.command === READ) {
    const { offset, region, count } = regionAccess(req);
    const data = Buffer.from(Buffer.alloc(count).map((_, i) => Number((offset + BigInt(i)) & 0xffn)));
    reply(msg(req.msgId, READ, REPLY, readReply(offset, region, data)));
  } else if (req.command === WRITE) {
    const { offset, region, count } = regionAccess(req);
    if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, WRITE, REPLY, new B().u64(offset).u32(region).u32(count)));
  } else reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
};

async function setup(script: Script, options: VfioUserClientOptions = {}, serverOptions: ConstructorParameters<typeof ScriptedServer>[1] = {}) {
  server = await new ScriptedServer(script, serverOptions).start();
  client = new VfioUserClient(await netChannel(server.path), { timeoutMs: 2000, ...options });
  await client.negotiate();
  return { server, client };
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

describe("VERSION negotiation", () => {
  it("honours the server's max_data_xfer_size, max_msg_fds and pgsizes and ignores unknown capabilities", async () => {
    const { client } = await setup(echoReads, {}, { version: versionPayload({ capabilities: { max_msg_fds: 3, max_data_xfer_size: 4096, pgsizes: 4096 | 2097152, shiny_new: { x: 1 } } }) });
    expect(client.capabilities).toMatchObject({ major: 0, minor: 1, maxMsgFds: 3, maxDataXferSize: 4096, pgsizes: 4096n | 2097152n });
    expect(client.maxTransfer).toBe(4096);
  });

  it("sends a VERSION request the spec describes (0.1 + JSON capabilities, NUL-terminated)", async () => {
    const { server } = await setup(echoReads, { maxDataXferSize: 65536, maxMsgFds: 4 });
    const v = server.requests[0];
    expect(v.command).toBe(1);
    expect(v.flags).toBe(0);
    expect(v.payload.readUInt16LE(0)).toBe(0);
    expect(v.payload.readUInt16LE(2)).toBe(1);
    expect(v.payload[v.payload.length - 1]).toBe(0);
    expect(JSON.parse(v.payload.subarray(4, v.payload.length - 1).toString())).toEqual({ capabilities: { max_msg_fds: 4, max_data_xfer_size: 65536 } });
  });

  it("uses the spec's defaults when the server sends no capabilities", async () => {
    const { client } = await setup(echoReads, {}, { version: new B().u16(0).u16(1) });
    expect(client.capabilities).toMatchObject({ maxMsgFds: 1, maxDataXferSize: 1 << 20, pgsizes: 4096n });
  });

  it("fails with ERR_VERSION and closes on an incompatible major version", async () => {
    server = await new ScriptedServer(echoReads, { version: versionPayload(undefined, 1, 0) }).start();
    client = new VfioUserClient(await netChannel(server.path));
    const err = await rejection(client.negotiate());
    expect(err.code).toBe("ERR_VERSION");
    expect(err.message).toMatch(/incompatible major version/);
    expect(client.closed).toBe(true);
  });

  it("fails with ERR_VERSION on malformed capability JSON or bad capability values", async () => {
    for (const bad of ['{"capabilities": {', '{"capabilities": {"max_data_xfer_size": -4}}', '{"capabilities": [1]}', '{"capabilities": {"max_msg_fds": "many"}}']) {
      const s = await new ScriptedServer(echoReads, { version: versionPayload(bad) }).start();
      const c = new VfioUserClient(await netChannel(s.path));
      const err = await rejection(c.negotiate());
      expect(err.code, bad).toBe("ERR_VERSION");
      c.close();
      await s.stop();
    }
  });
});

describe("region info", () => {
  it("re-asks with the argsz the server says it needs, whether or not the cut reply keeps the CAPS flag", async () => {
    // 70 sparse areas: 32 + 8 + 8 + 70 * 16 = 1168 bytes, more than the client's first ask.
    const areas = Array.from({ length: 70 }, (_, i) => [BigInt(i) * 0x2000n, 0x1000n] as const);
    const caps = new B().u16(1).u16(1).u32(0).u32(areas.length).u32(0);
    for (const [offset, size] of areas) caps.u64(offset).u64(size);
    const needed = 32 + caps.length;
    for (const capsFlagWhenCut of [0, 8]) {
      const asks: number[] = [];
      const { client } = await setup((req, reply) => {
        if (req.command !== 5) return reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
        const argsz = req.payload.readUInt32LE(0);
        asks.push(argsz);
        // libvfio-user leaves CAPS out of a reply cut to a small argsz; the kernel keeps it.
        if (argsz < needed) return reply(msg(req.msgId, 5, REPLY, new B().u32(needed).u32(3 | capsFlagWhenCut).u32(1).u32(0).u64(0x100000).u64(0)));
        reply(msg(req.msgId, 5, REPLY, new B().u32(needed).u32(3 | 8).u32(1).u32(32).u64(0x100000).u64(0).bytes(caps.build())));
      });
      const info = await client.getRegionInfo(1);
      expect(info.sparseAreas?.length, `CAPS flag ${capsFlagWhenCut}`).toBe(70);
      expect(asks.length).toBe(2);
      expect(asks[1]).toBe(needed);
      client.close();
      await server!.stop();
      forgetGlobals();
    }
  });
});

describe("region reads and writes", () => {
  it("reads of 1..8 bytes and larger ones", async () => {
    const { client } = await setup(echoReads);
    expect(await client.readValue(0, 0x10, 4)).toBe(0x13121110n);
    expect(await client.readValue(0, 0x20, 8)).toBe(0x2726252423222120n);
    expect([...(await client.readRegion(0, 0xfe, 3))]).toEqual([0xfe, 0xff, 0x00]);
  });

  it("splits requests above the server's max_data_xfer_size and pipelines the pieces", async () => {
    const { client, server } = await setup(echoReads, {}, { version: versionPayload({ capabilities: { max_data_xfer_size: 1000 } }) });
    const data = await client.readRegion(0, 5, 2500);
    expect(data.length).toBe(2500);
    for (let i = 0; i < 2500; i++) if (data[i] !== ((5 + i) & 0xff)) throw new Error(`byte ${i} is ${data[i]}`);
    const reads = server.requests.filter((r) => r.command === READ).map(regionAccess);
    expect(reads.map((r) => [Number(r.offset), r.count])).toEqual([[5, 1000], [1005, 1000], [2005, 500]]);
    await client.writeRegion(7, 0, new Uint8Array(2100), { posted: false });
    const writes = server.requests.filter((r) => r.command === WRITE).map(regionAccess);
    expect(writes.map((w) => [Number(w.offset), w.count, w.data.length])).toEqual([[0, 1000, 1000], [1000, 1000, 1000], [2000, 100, 100]]);
  });

  it("reads are split at the client's own receive limit when the server allows larger transfers", async () => {
    const { client, server } = await setup(echoReads, { maxDataXferSize: 1 << 16 }, { version: versionPayload({ capabilities: { max_data_xfer_size: 1 << 22 } }) });
    const data = await client.readRegion(0, 0, 3 << 16);
    expect(data.length).toBe(3 << 16);
    for (let i = 0; i < data.length; i += 4093) expect(data[i]).toBe(i & 0xff);
    expect(server.requests.filter((r) => r.command === READ).map((r) => regionAccess(r).count)).toEqual([1 << 16, 1 << 16, 1 << 16]);
  });

  it("offsets given as numbers must be exact integers (a fraction or a value above 2^53 is ERR_ARGUMENT, nothing sent)", async () => {
    const { client, server } = await setup(echoReads);
    for (const offset of [1.5, -4, 2 ** 53, Number.NaN]) {
      expect((await rejection(client.readRegion(0, offset, 4))).code, String(offset)).toBe("ERR_ARGUMENT");
      expect((await rejection(client.writeRegion(0, offset, Uint8Array.of(1), { posted: false }))).code, String(offset)).toBe("ERR_ARGUMENT");
    }
    expect(server.requests.filter((r) => r.command === READ || r.command === WRITE)).toEqual([]);
    expect(await client.readValue(0, 2 ** 53 - 1, 1)).toBe(BigInt((2 ** 53 - 1) & 0xff));
  });

  it("an error reply becomes ERR_REMOTE carrying the errno, and the connection keeps working", async () => {
    const { client } = await setup((req, reply) => {
      const { offset } = regionAccess(req);
      if (offset === 0x40n) reply(msg(req.msgId, READ, REPLY | ERROR, Buffer.alloc(0), 22));
      else echoReads(req, reply, undefined as never);
    });
    const err = await rejection(client.readRegion(0, 0x40, 4));
    expect(err).toMatchObject({ code: "ERR_REMOTE", errno: 22, command: READ, commandName: "REGION_READ" });
    expect(err.message).toMatch(/EINVAL \(22\)/);
    expect(await client.readValue(0, 0, 1)).toBe(0n);
  });

  it("a reply count above the request is ERR_REPLY_TOO_BIG (E2BIG)", async () => {
    const { client } = await setup((req, reply) => {
      const { offset, region } = regionAccess(req);
      reply(msg(req.msgId, READ, REPLY, readReply(offset, region, [1, 2, 3, 4, 5, 6, 7, 8])));
    });
    const err = await rejection(client.readRegion(0, 0, 4));
    expect(err).toMatchObject({ code: "ERR_REPLY_TOO_BIG", errno: 7 });
  });

  it("a short read is ERR_SHORT_TRANSFER with the bytes that did arrive", async () => {
    const { client } = await setup((req, reply) => {
      const { offset, region } = regionAccess(req);
      reply(msg(req.msgId, READ, REPLY, readReply(offset, region, [0xa, 0xb])));
    });
    const err = await rejection(client.readRegion(0, 0, 4));
    expect(err).toMatchObject({ code: "ERR_SHORT_TRANSFER", transferred: 2 });
    expect([...err.data!]).toEqual([0xa, 0xb]);
  });

  it("a short write is ERR_SHORT_TRANSFER; a write reply claiming more is ERR_REPLY_TOO_BIG", async () => {
    let claim = 2;
    const { client } = await setup((req, reply) => {
      const { offset, region } = regionAccess(req);
      reply(msg(req.msgId, WRITE, REPLY, new B().u64(offset).u32(region).u32(claim)));
    });
    expect(await rejection(client.writeRegion(7, 0, new Uint8Array(4)))).toMatchObject({ code: "ERR_SHORT_TRANSFER", transferred: 2 });
    claim = 9;
    expect(await rejection(client.writeRegion(7, 0, new Uint8Array(4)))).toMatchObject({ code: "ERR_REPLY_TOO_BIG", errno: 7 });
  });

  it("malformed replies (count disagreeing with data, truncated payload, wrong region, wrong command) are ERR_PROTOCOL without desync", async () => {
    let mode = 0;
    const { client } = await setup((req, reply) => {
      const { offset, region } = regionAccess(req);
      if (offset !== 0n) return echoReads(req, reply, undefined as never);
      if (mode === 0) reply(msg(req.msgId, READ, REPLY, readReply(offset, region, [1, 2, 3, 4], 6)));
      if (mode === 1) reply(msg(req.msgId, READ, REPLY, new B().u64(0).u32(0)));
      if (mode === 2) reply(msg(req.msgId, READ, REPLY, readReply(offset, region + 1, [1, 2, 3, 4])));
      if (mode === 3) reply(msg(req.msgId, WRITE, REPLY, readReply(offset, region, [1, 2, 3, 4])));
    });
    for (mode = 0; mode < 4; mode++) {
      const err = await rejection(client.readRegion(0, 0, 4));
      expect(err.code, `mode ${mode}`).toBe("ERR_PROTOCOL");
      expect(err.msgId).toBeTypeOf("number");
      expect(await client.readValue(0, 0x30, 2)).toBe(0x3130n);
    }
  });

  it("replies split into single bytes across many writes are reassembled", async () => {
    const { client } = await setup((req, reply, socket) => {
      const { offset, region, count } = regionAccess(req);
      const bytes = msg(req.msgId, READ, REPLY, readReply(offset, region, Buffer.alloc(count, 0x5a)));
      let i = 0;
      const drip = () => {
        if (i < bytes.length) {
          socket.write(bytes.subarray(i, i + 1));
          i++;
          setImmediate(drip);
        }
      };
      drip();
    });
    expect([...(await client.readRegion(0, 0, 6))]).toEqual([0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]);
  });

  it("out-of-order replies are matched by msg_id", async () => {
    const held: (() => void)[] = [];
    const { client } = await setup((req, reply) => {
      held.push(() => echoReads(req, reply, undefined as never));
      if (held.length === 3) for (const send of held.splice(0).reverse()) send();
    });
    const [a, b, c] = await Promise.all([client.readValue(0, 0x10, 1), client.readValue(0, 0x20, 1), client.readValue(0, 0x30, 1)]);
    expect([a, b, c]).toEqual([0x10n, 0x20n, 0x30n]);
  });

  it("an oversized reply is ERR_REPLY_TOO_BIG without being buffered; framing is lost, so the connection closes", async () => {
    const { client } = await setup((req, reply) => {
      const { offset, region } = regionAccess(req);
      if (offset === 0n) reply(msg(req.msgId, READ, REPLY, readReply(offset, region, Buffer.alloc(200_000, 1))));
      else echoReads(req, reply, undefined as never);
    }, { maxMessageSize: 4096 });
    const err = await rejection(client.readRegion(0, 0, 4));
    expect(err).toMatchObject({ code: "ERR_REPLY_TOO_BIG", errno: 7 });
    expect(await rejection(client.readValue(0, 0x44, 1))).toMatchObject({ code: "ERR_CLOSED" });
  });

  it("a reply nobody asked for is reported as a protocolError event and dropped", async () => {
    const { client } = await setup((req, reply) => {
      reply(msg(0x7777, READ, REPLY, readReply(0, 0, [1])));
      echoReads(req, reply, undefined as never);
    });
    const events: VfioUserClientError[] = [];
    client.on("protocolError", (e) => events.push(e));
    expect(await client.readValue(0, 3, 1)).toBe(3n);
    expect(events.map((e) => e.code)).toEqual(["ERR_PROTOCOL"]);
    expect(events[0].message).toMatch(/msg_id 30583/);
  });

  it("a size field below the header fails every pending request with ERR_CLOSED", async () => {
    let n = 0;
    const { client } = await setup((req, reply) => {
      if (++n === 3) reply(msg(req.msgId, READ, REPLY, Buffer.alloc(0), 0, 4));
    });
    const all = [client.readRegion(0, 0, 4), client.readRegion(0, 4, 4), client.readRegion(0, 8, 4)].map(rejection);
    const errors = await Promise.all(all);
    expect(errors.map((e) => e.code)).toEqual(["ERR_CLOSED", "ERR_CLOSED", "ERR_CLOSED"]);
    expect(errors[0].message).toMatch(/framing error/);
    expect(client.closed).toBe(true);
    expect((await rejection(client.readRegion(0, 0, 1))).code).toBe("ERR_CLOSED");
  });
});

describe("timeouts and server loss", () => {
  it("a hung server fails the request with ERR_TIMEOUT; a late reply is dropped, not mistaken for a newer request", async () => {
    let hold: (() => void) | null = null;
    const { client } = await setup((req, reply) => {
      const { offset } = regionAccess(req);
      if (offset === 0x66n) hold = () => reply(msg(req.msgId, READ, REPLY, readReply(0x66, 0, [0xee])));
      else echoReads(req, reply, undefined as never);
    });
    const events: unknown[] = [];
    client.on("protocolError", (e) => events.push(e));
    const t0 = performance.now();
    const err = await rejection(client.readRegion(0, 0x66, 1, { timeoutMs: 100 }));
    expect(err.code).toBe("ERR_TIMEOUT");
    expect(err.message).toMatch(/REGION_READ region 0 offset 0x66/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    hold!();
    expect(await client.readValue(0, 0x12, 1)).toBe(0x12n);
    expect(events).toEqual([]);
  });

  it("a server that closes fails every pending request with ERR_CLOSED", async () => {
    const { client } = await setup((req, _reply, socket) => {
      if (regionAccess(req).offset === 8n) socket.destroy();
    });
    const closeEvents: unknown[] = [];
    client.on("close", (e) => closeEvents.push(e));
    const errors = await Promise.all([client.readRegion(0, 0, 4), client.readRegion(0, 4, 4), client.readRegion(0, 8, 4)].map(rejection));
    expect(errors.map((e) => e.code)).toEqual(["ERR_CLOSED", "ERR_CLOSED", "ERR_CLOSED"]);
    expect(errors[0].message).toMatch(/server closed the connection/);
    expect(closeEvents.length).toBe(1);
  });

  it("serializeRequests keeps one request on the wire at a time (posted writes included, in order)", async () => {
    let outstanding = 0;
    let maxOutstanding = 0;
    const order: string[] = [];
    const { client } = await setup((req, reply) => {
      const { offset } = regionAccess(req);
      order.push(`${req.command === READ ? "R" : (req.flags & NO_REPLY) !== 0 ? "P" : "W"}${offset}`);
      if ((req.flags & NO_REPLY) !== 0) return;
      outstanding++;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      setTimeout(() => {
        outstanding--;
        echoReads(req, reply, undefined as never);
      }, 5);
    }, { serializeRequests: true });
    client.postedWrites.setRegionSpace(0, "memory");
    const work = [client.readRegion(0, 1, 1), client.writeRegion(0, 2, Uint8Array.of(1)), client.readRegion(0, 3, 1), client.readRegion(0, 4, 1)];
    await Promise.all(work);
    expect(maxOutstanding).toBe(1);
    expect(order).toEqual(["R1", "P2", "R3", "R4"]);
  });

  it("without serializeRequests, requests are pipelined", async () => {
    let seen = 0;
    const held: (() => void)[] = [];
    const { client } = await setup((req, reply) => {
      seen++;
      held.push(() => echoReads(req, reply, undefined as never));
      if (held.length === 4) for (const f of held.splice(0)) f();
    });
    await Promise.all([1, 2, 3, 4].map((o) => client.readRegion(0, o, 1)));
    expect(seen).toBe(4);
  });
});

describe("posted writes on the wire", () => {
  async function policySetup(options: VfioUserClientOptions = {}) {
    const s = await setup(echoReads, options);
    s.client.postedWrites.setRegionSpace(0, "memory");
    s.client.postedWrites.setRegionSpace(1, "io");
    s.client.postedWrites.setRegionSpace(7, "config");
    return s;
  }
  const lastWrite = (s: ScriptedServer) => s.requests.filter((r) => r.command === WRITE).at(-1);

  it("memory-BAR writes go out with NO_REPLY while nothing is mapped, and a later read flushes them in order", async () => {
    const { client, server } = await policySetup();
    expect(await client.writeValue(0, 0, 4, 0xdeadbeef)).toEqual({ posted: true, viaMapping: false });
    await client.readValue(0, 0, 4);
    const w = server.requests.find((r) => r.command === WRITE)!;
    expect(w.flags).toBe(NO_REPLY);
    expect(server.requests.findIndex((r) => r.command === WRITE)).toBeLessThan(server.requests.findIndex((r) => r.command === READ));
  });

  it("I/O BAR and config writes wait for their reply", async () => {
    const { client, server } = await policySetup();
    expect(await client.writeValue(1, 0, 1, 1)).toEqual({ posted: false, viaMapping: false });
    expect(lastWrite(server)!.flags).toBe(0);
    expect(await client.writeValue(7, 4, 2, 6)).toEqual({ posted: false, viaMapping: false });
    expect(lastWrite(server)!.flags).toBe(0);
  });

  it("once a region is mapped, memory-BAR writes are no longer posted; postRegardlessOfMappings restores posting", async () => {
    for (const regardless of [false, true]) {
      const { client, server } = await policySetup({ postedWrites: { postRegardlessOfMappings: regardless } });
      const backing = new Uint8Array(0x1000);
      client.regions.set(2, { index: 2, flags: 7, size: 0x1000n, offset: 0n, readable: true, writable: true, mmappable: true, argsz: 32, capabilities: [], fd: 1000 });
      client.regionMapper = { map: () => ({ view: backing, unmap: () => undefined }) };
      await client.mapRegion(2);
      const r = await client.writeValue(0, 0, 4, 1);
      expect(r.posted).toBe(regardless);
      await client.readValue(0, 0, 1); // ordered after the write: it has reached the server
      expect(lastWrite(server)!.flags).toBe(regardless ? NO_REPLY : 0);
      // The mapped region itself is accessed directly, not over the socket.
      const before = server.requests.length;
      expect(await client.writeValue(2, 8, 4, 0x01020304)).toEqual({ posted: false, viaMapping: true });
      expect([...backing.subarray(8, 12)]).toEqual([4, 3, 2, 1]);
      expect(await client.readValue(2, 8, 2)).toBe(0x0304n);
      expect(server.requests.length).toBe(before);
      client.regions.delete(2); // fake fd: keep close() from closing it
      client.unmapRegion(2);
      expect((await client.writeValue(0, 0, 4, 1)).posted).toBe(true);
      client.close();
      await server.stop();
      forgetGlobals();
    }
  });

  it("the per-call posted: false forces a reply", async () => {
    const { client, server } = await policySetup();
    expect(await client.writeValue(0, 0, 4, 1, { posted: false })).toEqual({ posted: false, viaMapping: false });
    expect(lastWrite(server)!.flags).toBe(0);
  });
});

describe("serving the server's DMA_READ / DMA_WRITE", () => {
  it("answers from dmaMap()'d memory with bounds and permission checks", async () => {
    const replies: Buffer[] = [];
    const { client, server } = await setup((req, reply) => {
      if (req.command === 2) reply(msg(req.msgId, 2, REPLY));
    });
    const memory = new Uint8Array(0x2000).map((_, i) => i & 0xff);
    await client.dmaMap({ iova: 0x100000, size: 0x1000, memory, writable: true });
    await client.dmaMap({ iova: 0x101000, size: 0x1000, memory: memory.subarray(0x1000), writable: false });
    const map = server.requests.find((r) => r.command === 2)!;
    expect(map.payload).toEqual(new B().u32(32).u32(3).u64(0).u64(0x100000).u64(0x1000).build());
    const socket = server.sockets[0];
    const got = new Promise<void>((resolve) => {
      let buf = Buffer.alloc(0);
      socket.on("data", (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
          const size = buf.readUInt32LE(4);
          replies.push(buf.subarray(0, size));
          buf = buf.subarray(size);
        }
        if (replies.length === 5) resolve();
      });
    });
    socket.write(msg(0x100, DMA_READ, 0, new B().u64(0x100ffe).u64(4))); // spans both mappings
    socket.write(msg(0x101, DMA_WRITE, 0, new B().u64(0x100010).u64(2).bytes([0xaa, 0xbb])));
    socket.write(msg(0x102, DMA_WRITE, 0, new B().u64(0x101010).u64(2).bytes([1, 2]))); // read-only
    socket.write(msg(0x103, DMA_READ, 0, new B().u64(0x200000).u64(4))); // unmapped
    socket.write(msg(0x104, DMA_WRITE, 0, new B().u64(0x100000).u64(5).bytes([1, 2]))); // count != data
    await got;
    expect(replies[0]).toEqual(msg(0x100, DMA_READ, REPLY, new B().u64(0x100ffe).u64(4).bytes([0xfe, 0xff, 0x00, 0x01])));
    expect(replies[1]).toEqual(msg(0x101, DMA_WRITE, REPLY, new B().u64(0x100010).u64(2)));
    expect([...memory.subarray(0x10, 0x12)]).toEqual([0xaa, 0xbb]);
    expect(replies[2]).toEqual(msg(0x102, DMA_WRITE, REPLY | ERROR, Buffer.alloc(0), 1));
    expect([...memory.subarray(0x1010, 0x1012)]).toEqual([0x10, 0x11]);
    expect(replies[3]).toEqual(msg(0x103, DMA_READ, REPLY | ERROR, Buffer.alloc(0), 14));
    expect(replies[4]).toEqual(msg(0x104, DMA_WRITE, REPLY | ERROR, Buffer.alloc(0), 22));
  });

  it("stops taking the server's requests while its replies pile up unread, then answers every one in order", async () => {
    server = await new ScriptedServer((req, reply) => reply(msg(req.msgId, req.command, REPLY))).start();
    const channel = await netChannel(server.path);
    client = new VfioUserClient(channel, { timeoutMs: 5000 });
    await client.negotiate();
    const memory = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
    await client.dmaMap({ iova: 0, size: 1 << 20, memory });
    const socket = server.sockets[0];
    socket.pause(); // the server stops reading: each DMA_READ asks for 1 MiB back
    const n = 64;
    for (let i = 0; i < n; i++) socket.write(msg(0x200 + i, DMA_READ, 0, new B().u64(0).u64(1 << 20)));
    await sleep(300);
    expect(channel.socket.writableLength).toBeLessThan(24 << 20);
    const ids: number[] = [];
    let buf = Buffer.alloc(0);
    const all = new Promise<void>((resolve) => {
      socket.on("data", (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
          const size = buf.readUInt32LE(4);
          expect(size).toBe(16 + 16 + (1 << 20));
          ids.push(buf.readUInt16LE(0));
          buf = buf.subarray(size);
        }
        if (ids.length === n) resolve();
      });
    });
    socket.resume();
    await all;
    expect(ids).toEqual(Array.from({ length: n }, (_, i) => 0x200 + i));
  });

  it("refuses DMA ranges not built of the server's smallest page size (pgsizes), sending nothing", async () => {
    const { client, server } = await setup((req, reply) => reply(msg(req.msgId, req.command, REPLY)), {}, { version: versionPayload({ capabilities: { pgsizes: 0x10000 | 0x200000 } }) });
    const memory = new Uint8Array(0x20000);
    for (const [iova, size] of [[0x1000, 0x10000], [0x10000, 0x1000], [0x10800, 0x10000]]) {
      const e = await rejection(client.dmaMap({ iova, size, memory }));
      expect(e.code).toBe("ERR_ARGUMENT");
      expect(e.message).toMatch(/65536-byte page/);
    }
    await client.dmaMap({ iova: 0x10000, size: 0x20000, memory });
    expect(server.requests.filter((r) => r.command === 2).length).toBe(1);
  });

  it("does not pass an fd to a server that receives none (max_msg_fds 0)", async () => {
    const { client, server } = await setup((req, reply) => reply(msg(req.msgId, req.command, REPLY)), {}, { version: versionPayload({ capabilities: { max_msg_fds: 0 } }) });
    const memory = new Uint8Array(0x1000);
    expect((await rejection(client.dmaMap({ iova: 0x1000, size: 0x1000, memory, fd: 1000 }))).message).toMatch(/max_msg_fds 0/);
    expect((await rejection(client.setIrqEventfds(0, 0, [1000]))).code).toBe("ERR_ARGUMENT");
    await client.dmaMap({ iova: 0x1000, size: 0x1000, memory });
    expect(server.requests.filter((r) => r.command === 2 || r.command === 8).length).toBe(1);
  });

  it("rejects overlapping maps locally and unmaps only exact ranges", async () => {
    const { client, server } = await setup((req, reply) => reply(msg(req.msgId, req.command, REPLY)));
    const memory = new Uint8Array(0x2000);
    await client.dmaMap({ iova: 0x1000, size: 0x1000, memory });
    const overlap = await rejection(client.dmaMap({ iova: 0, size: 0x2000, memory }));
    expect(overlap.code).toBe("ERR_ARGUMENT");
    expect(overlap.message).toMatch(/overlaps/);
    expect((await rejection(client.dmaUnmap(0x1000, 0x800))).code).toBe("ERR_ARGUMENT");
    await client.dmaUnmap(0x1000, 0x1000);
    expect(server.requests.filter((r) => r.command === 3).map((r) => r.payload)).toEqual([new B().u32(24).u32(0).u64(0x1000).u64(0x1000).build()]);
    expect(client.dma.mappings.length).toBe(0);
  });
});
