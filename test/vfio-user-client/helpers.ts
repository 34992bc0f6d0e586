// Test helpers built independently of the client's codec: a byte builder for vfio-user
// messages, and a scripted raw-socket server (node:net, no fd passing) whose replies a test
// writes byte by byte — malformed, split, reordered or oversized on purpose.
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClientChannel } from "../../src/vfio-user/client/channel.js";

/** Little-endian byte builder. */
export class B {
  private parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v).u8(v >>> 8);
  }
  u32(v: number): this {
    return this.u16(v & 0xffff).u16(v >>> 16);
  }
  u64(v: bigint | number): this {
    const b = BigInt(v);
    return this.u32(Number(b & 0xffffffffn)).u32(Number(b >> 32n));
  }
  bytes(data: ArrayLike<number>): this {
    for (let i = 0; i < data.length; i++) this.parts.push(data[i] & 0xff);
    return this;
  }
  text(s: string): this {
    return this.bytes(Buffer.from(s, "utf8"));
  }
  get length(): number {
    return this.parts.length;
  }
  build(): Buffer {
    return Buffer.from(this.parts);
  }
}

export const REPLY = 1;
export const NO_REPLY = 0x10;
export const ERROR = 0x20;

/** A whole message: 16-byte header (size computed unless given) + payload. */
export function msg(msgId: number, command: number, flags: number, payload: Buffer | B = Buffer.alloc(0), error = 0, sizeOverride?: number): Buffer {
  const body = payload instanceof B ? payload.build() : payload;
  const head = new B().u16(msgId).u16(command).u32(sizeOverride ?? 16 + body.length).u32(flags).u32(error).build();
  return Buffer.concat([head, body]);
}

export interface Request {
  msgId: number;
  command: number;
  flags: number;
  size: number;
  payload: Buffer;
}

export type Script = (req: Request, reply: (bytes: Buffer) => void, socket: Socket) => void;

/** A VERSION reply payload with the given capabilities JSON. */
export function versionPayload(caps: object | string = { capabilities: { max_msg_fds: 8, max_data_xfer_size: 1 << 20 } }, major = 0, minor = 1): B {
  const json = typeof caps === "string" ? caps : JSON.stringify(caps);
  return new B().u16(major).u16(minor).text(json).u8(0);
}

/**
 * A server on a fresh socket path. Every complete request goes to `script`; VERSION is answered
 * automatically (with `version`) unless `script` handles VERSION itself (set `autoVersion: false`).
 */
export class ScriptedServer {
  readonly dir = mkdtempSync(join(tmpdir(), "vfu-client-"));
  readonly path = join(this.dir, "s.sock");
  readonly requests: Request[] = [];
  readonly sockets: Socket[] = [];
  private server!: Server;

  constructor(private script: Script, private options: { autoVersion?: boolean; version?: B } = {}) {}

  async start(): Promise<this> {
    this.server = createServer((socket) => {
      this.sockets.push(socket);
      let buf = Buffer.alloc(0);
      socket.on("error", () => undefined);
      socket.on("data", (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 16) {
          const size = buf.readUInt32LE(4);
          if (size < 16 || buf.length < size) break;
          const req: Request = { msgId: buf.readUInt16LE(0), command: buf.readUInt16LE(2), size, flags: buf.readUInt32LE(8), payload: Buffer.from(buf.subarray(16, size)) };
          buf = buf.subarray(size);
          this.requests.push(req);
          const reply = (bytes: Buffer) => {
            if (!socket.destroyed) socket.write(bytes);
          };
          if (req.command === 1 && this.options.autoVersion !== false) {
            reply(msg(req.msgId, 1, REPLY, this.options.version ?? versionPayload()));
            continue;
          }
          this.script(req, reply, socket);
        }
      });
    });
    await new Promise<void>((resolve) => this.server.listen(this.path, resolve));
    return this;
  }

  setScript(script: Script): void {
    this.script = script;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A node:net socket as a ClientChannel (no fd passing): lets the client run without the addon. */
export async function netChannel(path: string): Promise<ClientChannel & { socket: Socket }> {
  const socket = netConnect(path);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  let closed = false;
  return {
    socket,
    send(bytes) {
      if (closed || socket.destroyed) throw new Error("socket closed");
      socket.write(Buffer.from(bytes)); // a copy: the client reuses its output buffer
    },
    close() {
      closed = true;
      socket.destroy();
    },
    start(onData, onClose) {
      let errored: Error | undefined;
      socket.on("data", (chunk) => onData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length), []));
      socket.on("error", (e) => (errored = e));
      socket.on("close", () => {
        closed = true;
        onClose(errored);
      });
    },
    closeFd() {
      // node:net never delivers fds
    },
    get writableLength() {
      return socket.writableLength;
    },
    pause() {
      socket.pause();
    },
    resume() {
      socket.resume();
    },
    onDrain(listener) {
      socket.on("drain", listener);
    },
  };
}

/** Payload of a REGION_READ reply. */
export function readReply(offset: bigint | number, region: number, data: Buffer | number[], countOverride?: number): B {
  const d = Buffer.from(data as ArrayLike<number>);
  return new B().u64(offset).u32(region).u32(countOverride ?? d.length).bytes(d);
}

/** Parsed REGION_READ/WRITE request fields. */
export function regionAccess(req: Request): { offset: bigint; region: number; count: number; data: Buffer } {
  return { offset: req.payload.readBigUInt64LE(0), region: req.payload.readUInt32LE(8), count: req.payload.readUInt32LE(12), data: req.payload.subarray(16) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A small fake PCI function served by the scripted server: 9 regions (BAR0 1 MiB memory, BAR1
 * 256-byte I/O, config 256 bytes), 5 IRQ types, and memory behind each region so reads return
 * what writes stored. Config bytes are laid out here by hand.
 */
export function fakeDevice() {
  const config = Buffer.alloc(256);
  config.writeUInt16LE(0x1234, 0x00);
  config.writeUInt16LE(0x11e8, 0x02);
  config.writeUInt16LE(0x0002, 0x04); // Mem+
  config.writeUInt16LE(0x0010, 0x06); // capability list
  config[0x08] = 0x10; // revision
  config[0x0a] = 0xff; // subclass
  config[0x0b] = 0x00; // class: unclassified
  config.writeUInt32LE(0xfea00000, 0x10); // BAR0: 32-bit memory
  config.writeUInt32LE(0x0000c001, 0x14); // BAR1: I/O
  config.writeUInt16LE(0x1af4, 0x2c);
  config.writeUInt16LE(0x1100, 0x2e);
  config[0x34] = 0x40;
  config[0x3c] = 11;
  config[0x3d] = 1;
  config[0x40] = 0x05; // MSI
  config[0x41] = 0x00;
  config.writeUInt16LE(0x0080, 0x42); // 64-bit capable, 1 vector
  const sizes = [1 << 20, 0x100, 0, 0, 0, 0, 0, 256, 0];
  const memory = sizes.map((size, i) => (i === 7 ? config : Buffer.alloc(size)));
  memory[0].forEach((_, i) => (memory[0][i] = i & 0xff));
  const irqCounts = [1, 1, 0, 1, 1];
  const script: Script = (req, reply) => {
    const p = req.payload;
    switch (req.command) {
      case 4:
        return reply(msg(req.msgId, 4, REPLY, new B().u32(16).u32(3).u32(sizes.length).u32(irqCounts.length)));
      case 5: {
        const index = p.readUInt32LE(8);
        if (index >= sizes.length) return reply(msg(req.msgId, 5, REPLY | ERROR, Buffer.alloc(0), 22));
        return reply(msg(req.msgId, 5, REPLY, new B().u32(32).u32(sizes[index] ? 3 : 0).u32(index).u32(0).u64(sizes[index]).u64(0)));
      }
      case 7: {
        const index = p.readUInt32LE(8);
        return reply(msg(req.msgId, 7, REPLY, new B().u32(16).u32(index === 0 ? 3 : 1).u32(index).u32(irqCounts[index] ?? 0)));
      }
      case 9:
      case 10: {
        const { offset, region, count, data } = regionAccess(req);
        const mem = memory[region];
        if (!mem || offset + BigInt(count) > BigInt(mem.length)) {
          if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 22));
          return;
        }
        const at = Number(offset);
        if (req.command === 9) return reply(msg(req.msgId, 9, REPLY, readReply(offset, region, mem.subarray(at, at + count))));
        data.copy(mem, at);
        if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, 10, REPLY, new B().u64(offset).u32(region).u32(count)));
        return;
      }
      default:
        if ((req.flags & NO_REPLY) === 0) reply(msg(req.msgId, req.command, REPLY | ERROR, Buffer.alloc(0), 38));
    }
  };
  return { config, memory, script };
}
