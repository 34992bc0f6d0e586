// getRegionIoFds(): against the project's server (the throughput device's doorbell rung through
// the received eventfd) and against a scripted transport server whose IO_FDS replies are built
// byte by byte — malformed, cut, or carrying fds nobody uses — which must surface as typed
// errors with every received fd closed.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listen, EventFd, type Connection, type Server } from "../../src/transport/index.js";
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient } from "../../src/vfio-user/client/client.js";
import { VfioUserClientError } from "../../src/vfio-user/client/errors.js";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { createThroughputDevice, THROUGHPUT_REG, type ThroughputDevice } from "../../src/devices/throughput.js";
import { vfioUserSnapshot } from "../../src/commands/lspci.js";
import { formatLspci } from "../../src/commands/lspci-format.js";
import { B, ERROR, REPLY, msg, versionPayload, type Request } from "./helpers.js";

const openFds = () => readdirSync("/proc/self/fd").length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejection(p: Promise<unknown>): Promise<VfioUserClientError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(VfioUserClientError);
    return e as VfioUserClientError;
  }
  throw new Error("the call succeeded");
}

let client: VfioUserClient | undefined;
let cleanup: (() => Promise<void> | void) | undefined;
afterEach(async () => {
  client?.close();
  client = undefined;
  await cleanup?.();
  cleanup = undefined;
});

describe("getRegionIoFds against the project's server", () => {
  async function start(): Promise<{ tp: ThroughputDevice; server: VfioUserServer }> {
    const dir = mkdtempSync(join(tmpdir(), "vfu-ioefd-"));
    const tp = createThroughputDevice({ dataSize: 4096 });
    const server = VfioUserServer.listen({ device: tp.fn, socketPath: join(dir, "s.sock") });
    cleanup = async () => {
      await server.close();
      tp.fn.dispose();
      rmSync(dir, { recursive: true, force: true });
    };
    return { tp, server };
  }

  async function sumReaches(c: VfioUserClient, want: bigint): Promise<bigint> {
    const deadline = Date.now() + 2000;
    let sum = await c.readValue(2, THROUGHPUT_REG.DOORBELL_SUM, 4);
    while (sum < want && Date.now() < deadline) {
      await sleep(1);
      sum = await c.readValue(2, THROUGHPUT_REG.DOORBELL_SUM, 4);
    }
    return sum;
  }

  it("returns the doorbell sub-region; ring() reaches the device's doorbell", async () => {
    const { server } = await start();
    client = await connectVfioUser(server.socketPath);
    const io = await client.getRegionIoFds(2);
    expect(io.index).toBe(2);
    expect(io.fds.length).toBe(1);
    expect(io.subRegions).toEqual([{ region: 2, offset: 4n, size: 4, datamatch: undefined, pio: false, fdIndex: 0, fd: io.fds[0] }]);
    for (let i = 0; i < 9; i++) io.ring(0);
    io.ring(io.subRegions[0], 0x1234); // no datamatch: any value signals (the value itself is lost)
    expect(await sumReaches(client, 10n)).toBe(10n);
  });

  it("regions without ioeventfds give an empty list; a bad index is a remote EINVAL", async () => {
    const { server } = await start();
    client = await connectVfioUser(server.socketPath);
    expect((await client.getRegionIoFds(0)).subRegions).toEqual([]);
    expect((await client.getRegionIoFds(7)).fds).toEqual([]);
    const err = await rejection(client.getRegionIoFds(9));
    expect(err).toMatchObject({ code: "ERR_REMOTE", errno: 22 });
    expect((await client.getRegionIoFds(2)).subRegions.length).toBe(1); // the connection goes on
  });

  it("ring() checks width and state; release() and close() close the fds", async () => {
    const { server } = await start();
    client = await connectVfioUser(server.socketPath);
    (await client.getRegionIoFds(2)).release(); // the server's own eventfd now exists
    const before = openFds();
    const io = await client.getRegionIoFds(2);
    expect(openFds()).toBe(before + 1);
    expect(() => io.ring(0, 2 ** 32)).toThrow(expect.objectContaining({ code: "ERR_ARGUMENT" }));
    expect(() => io.ring(3)).toThrow(expect.objectContaining({ code: "ERR_ARGUMENT" }));
    io.release();
    io.release();
    expect(io.released).toBe(true);
    expect(openFds()).toBe(before);
    expect(() => io.ring(0)).toThrow(expect.objectContaining({ code: "ERR_CLOSED" }));
    const kept = [(await client.getRegionIoFds(2)).fds[0], (await client.getRegionIoFds(2)).fds[0]];
    expect(openFds()).toBe(before + 2);
    client.close();
    for (const fd of kept) expect(existsSync(`/proc/self/fd/${fd}`), `fd ${fd} still open`).toBe(false);
  });
});

describe("lspci text", () => {
  it("lists a region's ioeventfds under it when the snapshot carries them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vfu-ioefd-l-"));
    const tp = createThroughputDevice({ dataSize: 4096 });
    const server = VfioUserServer.listen({ device: tp.fn, socketPath: join(dir, "s.sock") });
    cleanup = async () => {
      await server.close();
      tp.fn.dispose();
      rmSync(dir, { recursive: true, force: true });
    };
    client = await connectVfioUser(server.socketPath);
    const snapshot = await vfioUserSnapshot(client, server.socketPath);
    for (const r of snapshot.regions) {
      if (r.index > 5 || r.size === 0n) continue;
      const io = await client.getRegionIoFds(r.index);
      r.ioEventFds = [...io.subRegions];
      io.release();
    }
    const lines = formatLspci(snapshot).split("\n");
    const bar2 = lines.findIndex((l) => l.startsWith("\tvfio-user region 2 (BAR2)"));
    expect(bar2).toBeGreaterThan(0);
    expect(lines[bar2 + 1]).toBe("\t\tioeventfd at 0x4 (4 bytes)");
    expect(lines.filter((l) => l.includes("ioeventfd"))).toHaveLength(1);
    // Datamatch and port I/O spelled out (the formatter alone).
    const text = formatLspci({ location: "x", config: snapshot.config, regions: [{ index: 1, size: 32n, ioEventFds: [{ offset: 8n, size: 0, datamatch: 0x5an, pio: true }] }] });
    expect(text).toContain("\t\tioeventfd at 0x8 (any width, datamatch=0x5a, port I/O)");
  });
});

/** A transport server that answers VERSION, region info (BAR0: 0x1000 bytes) and IO_FDS with
 *  whatever `ioFds(req)` scripts, sending the eventfds it lists with the reply. */
function scripted(ioFds: (req: Request, send: (payload: B, fds?: number[], flags?: number, errno?: number) => void) => void) {
  const dir = mkdtempSync(join(tmpdir(), "vfu-ioefd-s-"));
  const path = join(dir, "s.sock");
  const asked: Request[] = [];
  const server: Server = listen(path);
  let conn: Connection | undefined;
  server.on("connection", (c: Connection) => {
    conn = c;
    let buf = Buffer.alloc(0);
    c.onData((chunk) => {
      buf = Buffer.concat([buf, Buffer.from(chunk)]);
      while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
        const size = buf.readUInt32LE(4);
        const req: Request = { msgId: buf.readUInt16LE(0), command: buf.readUInt16LE(2), size, flags: buf.readUInt32LE(8), payload: Buffer.from(buf.subarray(16, size)) };
        buf = buf.subarray(size);
        const send = (payload: B, fds?: number[], flags = REPLY, errno = 0) => c.send(msg(req.msgId, req.command, flags, payload, errno), fds);
        if (req.command === 1) send(versionPayload({ capabilities: { max_msg_fds: 8 } }));
        else if (req.command === 5) {
          const index = req.payload.readUInt32LE(8);
          send(new B().u32(32).u32(index === 0 ? 3 : 0).u32(index).u32(0).u64(index === 0 ? 0x1000 : 0).u64(0));
        } else if (req.command === 6) {
          asked.push(req);
          ioFds(req, send);
        } else send(new B(), undefined, REPLY | ERROR, 38);
      }
    });
  });
  const eventfds: EventFd[] = [];
  const eventfd = () => {
    const e = EventFd.create();
    eventfds.push(e);
    return e;
  };
  cleanup = () => {
    server.close();
    conn?.destroy();
    for (const e of eventfds) e.close();
    rmSync(dir, { recursive: true, force: true });
  };
  /** Open fds of this process minus the server's own eventfds (the client's share). */
  const clientFds = () => openFds() - eventfds.filter((e) => !e.isClosed).length;
  return { path, asked, eventfd, clientFds };
}

/** Connects without probing, then learns BAR0's size (sub-regions are checked against it). */
async function connectScripted(path: string): Promise<VfioUserClient> {
  const c = await connectVfioUser(path, { probe: false });
  await c.getRegionInfo(0);
  return c;
}

/** One 40-byte sub-region entry as the spec lays it out. */
function entry(offset: number | bigint, size: number, fdIndex: number, flags: number, datamatch: number | bigint = 0, type = 0): number[] {
  return [...new B().u64(offset).u64(size).u32(fdIndex).u32(type).u32(flags).u32(0).u64(datamatch).build()];
}

function reply(index: number, entries: number[][], count = entries.length): B {
  const b = new B().u32(16 + 40 * count).u32(0).u32(index).u32(count);
  for (const e of entries) b.bytes(e);
  return b;
}

describe("getRegionIoFds against a scripted server", () => {
  it("datamatch and PIO are typed; unused fds are closed; ring() refuses a value that would not match", async () => {
    let bells: EventFd[] = [];
    const s = scripted((req, send) => {
      bells = [s.eventfd(), s.eventfd(), s.eventfd()];
      // Three fds, the middle one unused; two sub-regions share fd 0.
      send(reply(0, [entry(0x10, 2, 0, 1, 0x7), entry(0x10, 2, 0, 1, 0x9), entry(0x20, 0, 2, 2)]), bells.map((e) => e.fd));
    });
    client = await connectScripted(s.path);
    const before = s.clientFds();
    const io = await client.getRegionIoFds(0);
    expect(io.subRegions.map(({ fd: _fd, ...r }) => r)).toEqual([
      { region: 0, offset: 0x10n, size: 2, datamatch: 7n, pio: false, fdIndex: 0 },
      { region: 0, offset: 0x10n, size: 2, datamatch: 9n, pio: false, fdIndex: 0 },
      { region: 0, offset: 0x20n, size: 0, datamatch: undefined, pio: true, fdIndex: 2 },
    ]);
    expect(io.subRegions[0].fd).toBe(io.subRegions[1].fd);
    expect(io.fds.length).toBe(2);
    expect(s.clientFds()).toBe(before + 2); // the unused third fd was closed on arrival
    expect(() => io.ring(0, 9)).toThrow(expect.objectContaining({ code: "ERR_ARGUMENT" }));
    io.ring(1, 9);
    io.ring(2, 0xdeadbeefn); // size 0: any width
    expect(bells[0].read()).toBe(1);
    expect(bells[1].read()).toBe(0);
    expect(bells[2].read()).toBe(1);
  });

  it("a cut reply makes the client ask again with the argsz the server needs", async () => {
    const s = scripted((req, send) => {
      const needed = 16 + 40 * 20;
      if (req.payload.readUInt32LE(0) < needed) return send(new B().u32(needed).u32(0).u32(0).u32(20));
      const e = s.eventfd();
      send(reply(0, Array.from({ length: 20 }, (_, i) => entry(i * 8, 8, 0, 0))), [e.fd]);
    });
    client = await connectScripted(s.path);
    const io = await client.getRegionIoFds(0);
    expect(io.subRegions.length).toBe(20);
    expect(s.asked.map((r) => r.payload.readUInt32LE(0))).toEqual([16 + 16 * 40, 16 + 40 * 20]);
  });

  const malformed: [string, (s: ReturnType<typeof scripted>) => [B, number]][] = [
    ["a reply for another region", () => [reply(1, [entry(0, 4, 0, 0)]), 1]],
    ["non-zero reply flags", () => [new B().u32(56).u32(1).u32(0).u32(1).bytes(entry(0, 4, 0, 0)), 1]],
    ["an fd index past the fds sent", () => [reply(0, [entry(0, 4, 1, 0)]), 1]],
    ["an ioregionfd entry", () => [reply(0, [entry(0, 4, 0, 0, 0, 1)]), 1]],
    ["a width KVM has no ioeventfd for", () => [reply(0, [entry(0, 3, 0, 0)]), 1]],
    ["unknown flags", () => [reply(0, [entry(0, 4, 0, 8)]), 1]],
    ["a sub-region past the region end", () => [reply(0, [entry(0xffc, 8, 0, 0)]), 1]],
    ["a datamatch wider than the register", () => [reply(0, [entry(0, 2, 0, 1, 0x10000)]), 1]],
    ["entry bytes that do not match count", () => [reply(0, [entry(0, 4, 0, 0)], 2), 1]],
    ["a cut reply whose argsz asks for no more", () => [new B().u32(16).u32(0).u32(0).u32(3), 0]],
  ];
  for (const [name, build] of malformed) {
    it(`rejects ${name} as ERR_PROTOCOL and closes the fds`, async () => {
      const s = scripted((req, send) => {
        const [payload, nfds] = build(s);
        send(payload, Array.from({ length: nfds }, () => s.eventfd().fd));
      });
      client = await connectScripted(s.path);
      const before = s.clientFds();
      const err = await rejection(client.getRegionIoFds(0));
      expect(err.code).toBe("ERR_PROTOCOL");
      expect(err.command).toBe(6);
      expect(s.clientFds()).toBe(before);
      expect(client.closed).toBe(false);
    });
  }

  it("an error reply carries the server's errno, and fds sent with it are closed", async () => {
    const s = scripted((req, send) => send(new B(), [s.eventfd().fd], REPLY | ERROR, 7));
    client = await connectScripted(s.path);
    const before = s.clientFds();
    expect(await rejection(client.getRegionIoFds(0))).toMatchObject({ code: "ERR_REMOTE", errno: 7 });
    expect(s.clientFds()).toBe(before);
  });
});
