// A vfio-user recording proxy for real-peer tests: listens on its own socket, connects each
// client to the real server, forwards bytes and fds unchanged in both directions, and records
// every message's header and payload (framed with the project's parser, which does not alter
// what is forwarded). Lets a test pin what a peer such as QEMU actually puts on the wire.
import { connect, listen, type Connection, type Server } from "../../src/transport/connection.js";
import { closeFdQuietly } from "../../src/transport/fd.js";
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
