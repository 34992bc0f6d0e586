// A vfio-user recording proxy for real-peer tests: listens on its own socket, connects each
// client to the real server, forwards bytes and fds unchanged in both directions, and records
// every message's header and payload (framed with the project's parser, which does not alter
// what is forwarded). Lets a test pin what a peer such as QEMU actually puts on the wire.
import { connect, listen, type Connection, type Server } from "../../src/transport/connection.js";
import { closeFdQuietly } from "../../src/transport/fd.js";
import { Command, HeaderFlag } from "../../src/vfio-user/wire/constants.js";
import { MessageParser } from "../../src/vfio-user/wire/parser.js";

export interface RecordedMessage {
  /** "client" for client → server, "server" for server → client. */
  from: "client" | "server";
  msgId: number;
  command: number;
  flags: number;
  error: number;
  /** Whole message size from the header. */
  size: number;
  body: Uint8Array;
  fds: number;
}

/** One region write as the client put it on the wire, alone or inside a REGION_WRITE_MULTI. */
export interface WireWrite {
  region: number;
  offset: bigint;
  data: Buffer;
  /** Sent with NO_REPLY (a posted write). */
  posted: boolean;
  /** The carrying message's id and whether it was a REGION_WRITE_MULTI. */
  msgId: number;
  multi: boolean;
}

export class RecordingProxy {
  readonly messages: RecordedMessage[] = [];
  private readonly listener: Server;
  private readonly open = new Set<Connection>();
  private readonly clients = new Set<Connection>();
  private holding = false;

  constructor(readonly path: string, private readonly serverPath: string) {
    this.listener = listen(path);
    this.listener.on("connection", (client: Connection) => void this.attach(client));
  }

  private async attach(client: Connection): Promise<void> {
    client.pause();
    let server: Connection;
    try {
      server = await connect(this.serverPath);
    } catch {
      client.destroy();
      return;
    }
    this.open.add(client).add(server);
    this.clients.add(client);
    client.once("close", () => this.clients.delete(client));
    const pipe = (from: Connection, to: Connection, who: "client" | "server") => {
      // Only records: fds are forwarded (and closed) here, the parser sees copies of nothing.
      const parser = new MessageParser({ maxMessageSize: 1 << 30, closeFd: () => {} });
      from.onData((chunk, fds) => {
        parser.parse(chunk, fds, (ev) => {
          if (ev.kind === "frame") {
            this.messages.push({ from: who, msgId: ev.msgId, command: ev.command, flags: ev.flags, error: ev.error, size: ev.size, body: ev.body.slice(), fds: ev.fds.length });
          }
        });
        try {
          if (!to.isClosed) to.send(chunk.slice(), fds);
        } finally {
          for (const fd of fds) closeFdQuietly(fd);
        }
      });
      from.once("close", () => {
        this.open.delete(from);
        if (!to.isClosed) to.end();
      });
    };
    pipe(client, server, "client");
    pipe(server, client, "server");
    if (!this.holding) client.resume();
  }

  /**
   * Stops reading what clients send (new clients too) until release(): the socket fills and
   * the client's own send queue grows, as behind a busy server.
   */
  holdClients(): void {
    this.holding = true;
    for (const c of this.clients) c.pause();
  }

  release(): void {
    this.holding = false;
    for (const c of this.clients) c.resume();
  }

  /**
   * Every region write the client sent, in order, read from the raw payloads: REGION_WRITE is
   * offset u64, region u32, count u32, data; REGION_WRITE_MULTI is wr_cnt u64 then 24-byte
   * entries of offset u64, region u32, count u32, data[8] (docs/interop/vfio-user.rst). A client
   * such as QEMU switches to WRITE_MULTI whenever its send queue runs long, so a test of write
   * order must read both.
   */
  clientWrites(): WireWrite[] {
    const out: WireWrite[] = [];
    for (const m of this.messages) {
      if (m.from !== "client" || (m.flags & HeaderFlag.TYPE_MASK) !== HeaderFlag.TYPE_COMMAND) continue;
      const b = Buffer.from(m.body);
      const posted = (m.flags & HeaderFlag.NO_REPLY) !== 0;
      if (m.command === Command.REGION_WRITE && b.length >= 16) {
        out.push({ region: b.readUInt32LE(8), offset: b.readBigUInt64LE(0), data: b.subarray(16, 16 + b.readUInt32LE(12)), posted, msgId: m.msgId, multi: false });
      } else if (m.command === Command.REGION_WRITE_MULTI && b.length >= 8) {
        const n = Number(b.readBigUInt64LE(0));
        if (b.length !== 8 + 24 * n) throw new Error(`REGION_WRITE_MULTI of ${b.length} bytes for ${n} entries`);
        for (let i = 0; i < n; i++) {
          const e = 8 + 24 * i;
          out.push({ region: b.readUInt32LE(e + 8), offset: b.readBigUInt64LE(e), data: b.subarray(e + 16, e + 16 + b.readUInt32LE(e + 12)), posted, msgId: m.msgId, multi: true });
        }
      }
    }
    return out;
  }

  /** Recorded messages with `command`, optionally only those from one side. */
  of(command: number, from?: "client" | "server"): RecordedMessage[] {
    return this.messages.filter((m) => m.command === command && (from === undefined || m.from === from));
  }

  close(): void {
    this.listener.close();
    for (const c of this.open) c.destroy();
    this.open.clear();
  }
}
