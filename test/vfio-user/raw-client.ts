// A raw-socket vfio-user test client: sends exact bytes (and fds) and collects whatever comes
// back, framed by the wire parser. Requests are built by the tests (byte builder or the wire
// serializers); nothing here interprets replies.
import { readdirSync } from "node:fs";
import { connect, type Connection } from "../../src/transport/connection.js";
import { MessageParser, type Frame } from "../../src/vfio-user/wire/parser.js";
import { MessageWriter } from "../../src/vfio-user/wire/writer.js";
import { writeVersionRequest } from "../../src/vfio-user/wire/messages.js";
import type { Capabilities } from "../../src/vfio-user/wire/version.js";

export interface ReceivedFrame extends Omit<Frame, "body"> {
  body: Uint8Array;
}

export class RawClient {
  readonly frames: ReceivedFrame[] = [];
  private waiters: (() => void)[] = [];
  closed = false;
  readonly w = new MessageWriter();
  private nextId = 1;
  /** Called for every server request (DMA_READ/DMA_WRITE) instead of queueing it. */
  onServerRequest: ((f: ReceivedFrame) => void) | null = null;

  private constructor(readonly conn: Connection) {
    const parser = new MessageParser({ maxMessageSize: 64 << 20 });
    conn.onData((chunk, fds) =>
      parser.parse(chunk, fds, (ev) => {
        if (ev.kind === "error") throw ev.error;
        const f = { ...ev, body: ev.body.slice() };
        if ((f.flags & 0xf) === 0 && this.onServerRequest) this.onServerRequest(f);
        else this.frames.push(f);
        this.wake();
      }),
    );
    conn.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  static async connect(path: string): Promise<RawClient> {
    return new RawClient(await connect(path, { limits: { maxFdsPerMessage: 253, maxMessageSize: 64 << 20 } }));
  }

  /** Connects and negotiates VERSION. */
  static async negotiated(path: string, caps: Capabilities = { maxMsgFds: 8, maxDataXferSize: 1 << 20 }): Promise<RawClient> {
    const c = await RawClient.connect(path);
    const id = c.id();
    writeVersionRequest(c.w, id, { capabilities: caps });
    const reply = await c.request(c.w.take());
    if (reply.flags & 0x20) throw new Error(`VERSION failed with errno ${reply.error}`);
    return c;
  }

  id(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) & 0xffff;
    return id;
  }

  send(bytes: Uint8Array, fds?: number[]): void {
    this.conn.send(bytes.slice(), fds);
  }

  /** Next received frame (waits up to `ms`). */
  async next(ms = 2000): Promise<ReceivedFrame> {
    const deadline = Date.now() + ms;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error("connection closed while waiting for a frame");
      if (Date.now() > deadline) throw new Error("timed out waiting for a frame");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.frames.shift()!;
  }

  async request(bytes: Uint8Array, fds?: number[]): Promise<ReceivedFrame> {
    this.send(bytes, fds);
    return this.next();
  }

  /** Waits until the server closes the connection. */
  async waitClosed(ms = 2000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error("the server did not close the connection");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 20);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolves true if nothing arrives within `ms`. */
  async quiet(ms = 50): Promise<boolean> {
    await sleep(ms);
    return this.frames.length === 0;
  }

  close(): void {
    if (!this.conn.isClosed) this.conn.destroy();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Waits until `server` has dropped its client session (the previous client's disconnect was
 * processed), so that the next connection is not refused as a second client. Polls; no fixed
 * sleep that a loaded machine could outlast.
 */
export async function waitNoSession(server: { readonly current: unknown }, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (server.current !== null) {
    if (Date.now() > deadline) throw new Error("the server still holds the previous client's session");
    await sleep(2);
  }
}

export function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

/** Waits (briefly) for the process's fd count to come back to `n`. */
export async function expectFdCount(n: number, ms = 1000): Promise<number> {
  const deadline = Date.now() + ms;
  let now = openFdCount();
  while (now !== n && Date.now() < deadline) {
    await sleep(10);
    now = openFdCount();
  }
  return now;
}
