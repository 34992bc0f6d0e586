// The client's fast paths: post() (synchronous posted stores gathered into one socket write
// before the event loop waits), the settled-promise posted path of writeRegion()/writeValue(), and readRegionInto().
// Against the project's server: every post reaches the device, in call order, before any later
// request; a failed post is reported on the next request. Against a scripted server: the bytes
// of each posted store (built here independently), the PCI policy refusing to post, argument
// errors, msg_id allocation and serialized mode.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { createThroughputDevice, THROUGHPUT_REG, type ThroughputOptions } from "../../src/devices/throughput.js";
import { createEdu, EDU_REG } from "../../src/devices/edu.js";
import { connectVfioUser, createSharedMemory, type ConnectClientOptions } from "../../src/vfio-user/client/connect.js";
import { VfioUserClient, type VfioUserClientOptions } from "../../src/vfio-user/client/client.js";
import { VfioUserClientError } from "../../src/vfio-user/client/errors.js";
import { listen, closeFdQuietly, type Connection } from "../../src/transport/index.js";
import { B, ERROR, NO_REPLY, REPLY, ScriptedServer, msg, netChannel, readReply, regionAccess, versionPayload, type Script } from "./helpers.js";

const DMA_MAP = 2;
const READ = 9;
const WRITE = 10;
const EINVAL = 22;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function rejection(p: Promise<unknown>): Promise<VfioUserClientError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(VfioUserClientError);
    return err as VfioUserClientError;
  }
  throw new Error("expected a rejection");
}

function thrown(f: () => unknown): VfioUserClientError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(VfioUserClientError);
    return err as VfioUserClientError;
  }
  throw new Error("expected a throw");
}

// ---------------------------------------------------------------------------------------------
// Against the project's server

async function serve(device: { fn: Parameters<typeof VfioUserServer.listen>[0]["device"] }, options: ConnectClientOptions = {}): Promise<VfioUserClient> {
  const dir = mkdtempSync(join(tmpdir(), "vfu-fast-"));
  const path = join(dir, "s.sock");
  const server = VfioUserServer.listen({ device: device.fn, socketPath: path, log: () => undefined });
  cleanups.push(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const client = await connectVfioUser(path, { timeoutMs: 5000, ...options });
  cleanups.push(() => client.close());
  return client;
}

async function throughput(options: ThroughputOptions = {}, clientOptions: ConnectClientOptions = {}) {
  const tp = createThroughputDevice({ dataSize: 0x10000, ...options });
  cleanups.push(() => tp.fn.dispose());
  const client = await serve(tp, clientOptions);
  return { tp, client };
}

describe("post() and the posted paths against the project's server", () => {
  it("every post reaches the device in call order, before a later read (several 64 KiB socket writes)", async () => {
    const seen: number[] = [];
    const { client } = await throughput({ onDoorbell: (v) => seen.push(v) });
    const N = 5000; // 5000 x 36 bytes: three full batches and a partial one
    let refused = 0;
    for (let i = 1; i <= N; i++) if (!client.post(2, THROUGHPUT_REG.DOORBELL, 4, i)) refused++;
    expect(refused).toBe(0);
    expect(await client.readValue(2, THROUGHPUT_REG.DOORBELL_COUNT, 4)).toBe(BigInt(N));
    expect(seen).toEqual(Array.from({ length: N }, (_, i) => i + 1));
  });

  it("stores of every width land where they were aimed; later stores to the same bytes win", async () => {
    const { client } = await throughput();
    const expected = new Uint8Array(0x8000);
    const ev = new DataView(expected.buffer);
    const widths = [1, 2, 4, 8] as const;
    for (let i = 0; i < 0x1000; i++) {
      const width = widths[i % 4];
      const offset = i * 8;
      if (width === 8) {
        const value = (BigInt(i) << 40n) | 0xfedc_ba98n | (1n << 63n);
        expect(client.post(0, offset, 8, value)).toBe(true);
        ev.setBigUint64(offset, value, true);
      } else {
        const value = (i * 0x9e3779b1) % 2 ** (8 * width);
        expect(client.post(0, offset, width, value)).toBe(true);
        if (width === 1) ev.setUint8(offset, value);
        else if (width === 2) ev.setUint16(offset, value, true);
        else ev.setUint32(offset, value, true);
      }
    }
    // Overwrite some of them: the last store in call order must win.
    for (let i = 0; i < 0x100; i++) {
      client.post(0, i * 16, 4, 0x5a5a0000 + i);
      ev.setUint32(i * 16, 0x5a5a0000 + i, true);
    }
    expect(await client.readRegion(0, 0, 0x8000)).toEqual(expected);
  });

  it("issued together, each read sees exactly the posts issued before it (post, writeValue and writeRegion alike)", async () => {
    const { client } = await throughput();
    const S = THROUGHPUT_REG.SCRATCH;
    client.post(2, S, 4, 1);
    const r1 = client.readValue(2, S, 4);
    client.post(2, S, 4, 2);
    const r2 = client.readValue(2, S, 4);
    const w3 = client.writeValue(2, S, 4, 3);
    const r3 = client.readRegion(2, S, 4);
    const w4 = client.writeRegion(2, S, Uint8Array.of(4, 0, 0, 0));
    const r4 = client.readValue(2, S, 4);
    client.post(2, S, 4, 5);
    expect(await r1).toBe(1n);
    expect(await r2).toBe(2n);
    expect(await w3).toEqual({ posted: true, viaMapping: false });
    expect([...(await r3)]).toEqual([3, 0, 0, 0]);
    expect(await w4).toEqual({ posted: true, viaMapping: false });
    expect(await r4).toBe(4n);
    await client.flush();
    expect(await client.readValue(2, S, 4)).toBe(5n);
  });

  it("a post the server fails is reported on the next request wanting a reply (ERR_REMOTE, errno), which is not performed; the session goes on", async () => {
    for (const how of ["post", "writeValue"] as const) {
      const { client } = await throughput();
      const S = THROUGHPUT_REG.SCRATCH;
      await client.writeValue(2, S, 4, 1, { posted: false });
      client.regions.delete(0); // lift the client's own bounds check so the write reaches the server
      if (how === "post") expect(client.post(0, 0x20000, 4, 1)).toBe(true);
      else expect(await client.writeValue(0, 0x20000, 4, 1)).toEqual({ posted: true, viaMapping: false });
      expect(client.post(2, S, 4, 5)).toBe(true); // posts after the failed one are still performed
      const err = await rejection(client.writeValue(2, S, 4, 7, { posted: false }));
      expect(err).toMatchObject({ code: "ERR_REMOTE", errno: EINVAL, command: WRITE });
      expect(await client.readValue(2, S, 4)).toBe(5n); // 7 was never written
      expect(client.closed).toBe(false);
      for (const c of cleanups.splice(0).reverse()) await c();
    }
  });

  it("a message with fds right after posts: the posts go first and the fd still reaches the server", async () => {
    const edu = createEdu({ dmaDelayMs: 0 }).fn;
    cleanups.push(() => edu.dispose());
    const client = await serve({ fn: edu });
    const shm = createSharedMemory(0x10000);
    cleanups.push(() => shm.close());
    for (let i = 0; i < 100; i++) client.post(0, EDU_REG.LIVENESS, 4, i);
    const mapped = client.dmaMap({ iova: 0x100000, size: 0x10000, memory: shm.memory, fd: shm.fd });
    client.post(0, EDU_REG.LIVENESS, 4, 1000);
    await mapped;
    expect(await client.readValue(0, EDU_REG.LIVENESS, 4)).toBe(BigInt(~1000 >>> 0));
    // The mapping works: the device copies RAM -> its buffer -> RAM.
    shm.memory.set([1, 2, 3, 4, 5, 6, 7, 8], 0x100);
    const dma = async (src: bigint, dst: bigint, cmd: bigint) => {
      await client.writeValue(0, EDU_REG.DMA_SRC, 8, src, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_DST, 8, dst, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_CNT, 8, 8n, { posted: false });
      await client.writeValue(0, EDU_REG.DMA_CMD, 8, cmd, { posted: false });
      const deadline = Date.now() + 10_000;
      while ((await client.readValue(0, EDU_REG.DMA_CMD, 8)) & 1n) {
        if (Date.now() > deadline) throw new Error("DMA did not finish");
        await new Promise((r) => setTimeout(r, 1));
      }
    };
    await dma(0x100100n, 0x40000n, 1n);
    await dma(0x40000n, 0x100800n, 3n);
    expect([...shm.memory.subarray(0x800, 0x808)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    await client.dmaUnmap(0x100000, 0x10000);
  });

  it("readRegionInto fills the caller's buffer, split above max_data_xfer_size, and returns it", async () => {
    const { client } = await throughput({}, { maxDataXferSize: 1024 });
    const pattern = new Uint8Array(0x1800).map((_, i) => (i * 7 + 3) & 0xff);
    expect(await client.writeRegion(0, 0x400, pattern, { posted: false })).toEqual({ posted: false, viaMapping: false });
    const into = new Uint8Array(0x1800);
    expect(await client.readRegionInto(0, 0x400, into)).toBe(into);
    expect(into).toEqual(pattern);
    const small = new Uint8Array(4);
    client.post(0, 0x10, 4, 0x0a0b0c0d);
    expect(await client.readRegionInto(0, 0x10, small)).toBe(small);
    expect([...small]).toEqual([0x0d, 0x0c, 0x0b, 0x0a]);
    expect((await rejection(client.readRegionInto(0, 0xffff, new Uint8Array(2)))).code).toBe("ERR_ARGUMENT");
  });
});

// ---------------------------------------------------------------------------------------------
// Against a scripted server

/** Region 0 reads return a counting pattern; writes get a reply unless posted. */
const echo: Script = (req, reply) => {
  if (req.command === READ) {
    const { offset, region, count } = regionAccess(req);
    reply(msg(req.msgId, READ, REPLY, readReply(offset, region, Buffer.from(Buffer.alloc(count).map((_, i) => i)))));
  } else if (req.command === WRITE) {
    const { offset, region, count } = regionAccess(req);
    if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, WRITE, REPLY, new B().u64(offset).u32(region).u32(count)));
  } else if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
};

async function scripted(script: Script = echo, options: VfioUserClientOptions = {}) {
  const server = await new ScriptedServer(script).start();
  cleanups.push(() => server.stop());
  const channel = await netChannel(server.path);
  const sends = { count: 0 };
  const send = channel.send.bind(channel);
  channel.send = (bytes, fds) => {
    sends.count++;
    send(bytes, fds);
  };
  const client = new VfioUserClient(channel, { timeoutMs: 2000, ...options });
  cleanups.push(() => client.close());
  await client.negotiate();
  client.postedWrites.setRegionSpace(0, "memory");
  client.postedWrites.setRegionSpace(1, "io");
  client.postedWrites.setRegionSpace(6, "other");
  client.postedWrites.setRegionSpace(7, "config");
  return { server, client, sends };
}

const writes = (s: ScriptedServer) => s.requests.filter((r) => r.command === WRITE);

describe("post() on the wire (scripted server)", () => {
  it("each store is a REGION_WRITE with NO_REPLY, byte for byte, for every width, offsets past 2^32 and values past 2^53", async () => {
    const { server, client } = await scripted();
    const cases: [number | bigint, 1 | 2 | 4 | 8, number | bigint, number[]][] = [
      [0x10, 1, 0xab, [0xab]],
      [0x1_0000_0002, 2, 0xbeef, [0xef, 0xbe]],
      [(1n << 40n) + 4n, 4, 0xdeadbeef, [0xef, 0xbe, 0xad, 0xde]],
      [8, 8, 0x0102030405060708n, [8, 7, 6, 5, 4, 3, 2, 1]],
      [16, 8, 2 ** 53 + 2, [2, 0, 0, 0, 0, 0, 0x20, 0]],
      [24, 8, 0xffff_ffff_ffff_ffffn, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
      [32, 4, 0x8000_0000, [0, 0, 0, 0x80]],
    ];
    for (const [offset, width, value] of cases) expect(client.post(0, offset, width, value)).toBe(true);
    expect(writes(server)).toHaveLength(0); // gathered: nothing written yet
    await client.readValue(0, 0, 1);
    const got = writes(server);
    expect(got).toHaveLength(cases.length);
    got.forEach((req, i) => {
      const [offset, width, , bytes] = cases[i];
      const wire = msg(req.msgId, req.command, req.flags, req.payload);
      expect(wire.toString("hex"), `case ${i}`).toBe(msg(req.msgId, WRITE, NO_REPLY, new B().u64(offset).u32(0).u32(width).bytes(bytes)).toString("hex"));
      expect(req.size).toBe(32 + width);
    });
    // The read went out after them, and every posted id differs from its neighbours'.
    expect(server.requests.at(-1)!.command).toBe(READ);
    expect(new Set(got.map((r) => r.msgId)).size).toBe(got.length);
  });

  it("posts awaited one by one still leave in one socket write, with the read that follows them", async () => {
    const { server, client, sends } = await scripted();
    const before = sends.count;
    for (let i = 0; i < 200; i++) expect(await client.writeValue(0, i * 4, 4, i)).toEqual({ posted: true, viaMapping: false });
    for (let i = 200; i < 400; i++) await client.writeRegion(0, i * 4, Uint8Array.of(i & 0xff, i >> 8, 0, 0));
    await client.readValue(0, 0, 1);
    expect(sends.count - before).toBe(1);
    expect(writes(server).map((w) => regionAccess(w).offset)).toEqual(Array.from({ length: 400 }, (_, i) => BigInt(i * 4)));
    // Left alone, posts go out before the event loop waits: no request needed to push them.
    client.post(0, 0, 4, 7);
    await new Promise((r) => setTimeout(r, 20));
    expect(writes(server)).toHaveLength(401);
  });

  it("refuses (false, nothing sent) what the PCI policy does not post: I/O BAR, config, ROM, unknown regions, posting disabled", async () => {
    const { server, client } = await scripted();
    expect(client.post(1, 0, 1, 1)).toBe(false);
    expect(client.post(7, 4, 2, 6)).toBe(false);
    expect(client.post(6, 0, 4, 1)).toBe(false);
    expect(client.post(3, 0, 4, 1)).toBe(false);
    await client.readValue(0, 0, 1);
    expect(writes(server)).toHaveLength(0);
    const off = await scripted(echo, { postedWrites: { postMemoryWrites: false } });
    expect(off.client.post(0, 0, 4, 1)).toBe(false);
    await off.client.readValue(0, 0, 1);
    expect(writes(off.server)).toHaveLength(0);
  });

  it("once a region is mapped: stores into it go to the mapping; others are refused (strict) or posted (postRegardlessOfMappings)", async () => {
    for (const regardless of [false, true]) {
      const { server, client } = await scripted(echo, { postedWrites: { postRegardlessOfMappings: regardless } });
      const backing = new Uint8Array(0x1000);
      client.regions.set(2, { index: 2, flags: 7, size: 0x1000n, offset: 0n, readable: true, writable: true, mmappable: true, argsz: 32, capabilities: [], fd: 1000 });
      client.postedWrites.setRegionSpace(2, "memory");
      client.regionMapper = { map: () => ({ view: backing, unmap: () => undefined }) };
      await client.mapRegion(2);
      expect(client.post(2, 8, 4, 0x01020304)).toBe(true);
      expect([...backing.subarray(8, 12)]).toEqual([4, 3, 2, 1]);
      expect(client.post(0, 0, 4, 1)).toBe(regardless);
      expect(client.post(1, 0, 1, 1)).toBe(false); // I/O stays non-posted whatever the option
      await client.readValue(0, 0, 1);
      expect(writes(server).map((w) => w.flags)).toEqual(regardless ? [NO_REPLY] : []);
      client.regions.delete(2); // fake fd: keep close() from closing it
      client.unmapRegion(2);
      expect(client.post(0, 0, 4, 1)).toBe(true);
      for (const c of cleanups.splice(0).reverse()) await c();
    }
  });

  it("bad arguments throw ERR_ARGUMENT at once (writeValue rejects instead); nothing is sent; ERR_CLOSED after close", async () => {
    const { server, client } = await scripted();
    client.regions.set(0, { index: 0, flags: 3, size: 0x100n, offset: 0n, readable: true, writable: true, mmappable: false, argsz: 32, capabilities: [], fd: undefined });
    client.regions.set(5, { index: 5, flags: 1, size: 0x100n, offset: 0n, readable: true, writable: false, mmappable: false, argsz: 32, capabilities: [], fd: undefined });
    client.postedWrites.setRegionSpace(5, "memory");
    const bad: [string, () => unknown][] = [
      ["width 3", () => client.post(0, 0, 3 as 4, 1)],
      ["value above the width", () => client.post(0, 0, 1, 256)],
      ["negative value", () => client.post(0, 0, 4, -1)],
      ["fractional value", () => client.post(0, 0, 4, 1.5)],
      ["bigint above 2^64", () => client.post(0, 0, 8, 1n << 64n)],
      ["fractional offset", () => client.post(0, 1.5, 4, 1)],
      ["past the region end", () => client.post(0, 0xfe, 4, 1)],
      ["read-only region", () => client.post(5, 0, 4, 1)],
      ["region index", () => client.post(-1, 0, 4, 1)],
    ];
    for (const [what, call] of bad) expect(thrown(call).code, what).toBe("ERR_ARGUMENT");
    const pending = client.writeValue(0, 0, 1, 256);
    expect((await rejection(pending)).code).toBe("ERR_ARGUMENT");
    expect((await rejection(client.writeRegion(0, 0xff, Uint8Array.of(1, 2)))).code).toBe("ERR_ARGUMENT");
    await client.readValue(0, 0, 1);
    expect(writes(server)).toHaveLength(0);
    client.close();
    expect(thrown(() => client.post(0, 0, 4, 1)).code).toBe("ERR_CLOSED");
    expect((await rejection(client.writeValue(0, 0, 4, 1))).code).toBe("ERR_CLOSED");
  });

  it("posted ids skip the id of a request still awaiting its reply, even after wrapping 2^16", async () => {
    let release: (() => void) | undefined;
    const { server, client } = await scripted((req, reply, socket) => {
      if (req.command === READ && regionAccess(req).offset === 0x66n) release = () => echo(req, reply, socket);
      else echo(req, reply, socket);
    });
    const held = client.readRegion(0, 0x66, 1);
    const heldId = await new Promise<number>((resolve) => {
      const poll = () => (release ? resolve(server.requests.find((r) => r.command === READ)!.msgId) : setTimeout(poll, 1));
      poll();
    });
    const N = 0x10000 + 16;
    for (let i = 0; i < N; i++) client.post(0, 4, 4, i);
    await client.readValue(0, 0, 1);
    const posted = writes(server);
    expect(posted).toHaveLength(N);
    expect(posted.some((w) => w.msgId === heldId)).toBe(false);
    release!();
    expect([...(await held)]).toEqual([0]);
  });

  it("serializeRequests: posts queue behind the awaited reply, in call order", async () => {
    const order: string[] = [];
    const { client } = await scripted(
      (req, reply, socket) => {
        if (req.command !== READ && req.command !== WRITE) return echo(req, reply, socket);
        const { offset } = regionAccess(req);
        order.push(`${req.command === READ ? "R" : (req.flags & NO_REPLY) !== 0 ? "P" : "W"}${offset}`);
        if ((req.flags & NO_REPLY) === 0) setTimeout(() => echo(req, reply, socket), 5);
      },
      { serializeRequests: true },
    );
    const r1 = client.readRegion(0, 1, 1);
    expect(client.post(0, 2, 4, 2)).toBe(true);
    const w3 = client.writeValue(0, 3, 1, 3);
    const r4 = client.readRegion(0, 4, 1);
    client.post(0, 5, 2, 5);
    const r6 = client.readRegion(0, 6, 1);
    await Promise.all([r1, w3, r4, r6]);
    expect(order).toEqual(["R1", "P2", "P3", "R4", "P5", "R6"]);
  });
});

describe("posts next to a request carrying fds (scripted transport server)", () => {
  it("the wire order is the call order, and the fd arrives with the DMA_MAP, not with the posts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vfu-fast-fd-"));
    const path = join(dir, "s.sock");
    const order: string[] = [];
    /** For each chunk that came with fds: how many, and the last message that chunk completed. */
    const fdChunks: { fds: number; lastCommand: number }[] = [];
    const server = listen(path);
    let conn: Connection | undefined;
    server.on("connection", (c: Connection) => {
      conn = c;
      let buf = Buffer.alloc(0);
      c.onData((chunk, fds) => {
        for (const fd of fds) closeFdQuietly(fd);
        buf = Buffer.concat([buf, Buffer.from(chunk)]);
        let last = -1;
        while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
          const size = buf.readUInt32LE(4);
          const msgId = buf.readUInt16LE(0);
          const command = buf.readUInt16LE(2);
          const flags = buf.readUInt32LE(8);
          const payload = Buffer.from(buf.subarray(16, size));
          buf = buf.subarray(size);
          last = command;
          if (command === WRITE) order.push(`P${payload.readUInt32LE(16)}`);
          else order.push(String(command));
          if (command === 1) c.send(msg(msgId, 1, REPLY, versionPayload({ capabilities: { max_msg_fds: 8 } })));
          else if (command === DMA_MAP) c.send(msg(msgId, DMA_MAP, REPLY));
          else if (command === READ) c.send(msg(msgId, READ, REPLY, readReply(payload.readBigUInt64LE(0), payload.readUInt32LE(8), [9, 9, 9, 9])));
          else if ((flags & NO_REPLY) === 0) c.send(msg(msgId, command, REPLY | ERROR, Buffer.alloc(0), 38));
        }
        if (fds.length > 0) fdChunks.push({ fds: fds.length, lastCommand: last });
      });
    });
    cleanups.push(() => {
      server.close();
      conn?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });
    const client = await connectVfioUser(path, { probe: false });
    cleanups.push(() => client.close());
    client.postedWrites.setRegionSpace(0, "memory");
    const shm = createSharedMemory(0x1000);
    cleanups.push(() => shm.close());
    client.post(0, 0, 4, 1);
    client.post(0, 4, 4, 2);
    const mapped = client.dmaMap({ iova: 0x10000, size: 0x1000, memory: shm.memory, fd: shm.fd });
    client.post(0, 8, 4, 3);
    await mapped;
    expect(await client.readValue(0, 0, 4)).toBe(0x09090909n);
    expect(order).toEqual(["1", "P1", "P2", String(DMA_MAP), "P3", String(READ)]);
    expect(fdChunks).toEqual([{ fds: 1, lastCommand: DMA_MAP }]);
  });
});
