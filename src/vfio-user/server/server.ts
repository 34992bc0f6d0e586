// The vfio-user server: serves one PciFunction on a UNIX socket to one client at a time.
//
//   const server = await VfioUserServer.listen({ device, socketPath: "./wasmdev.sock" });
//   ...
//   await server.close();   // disconnects the client, removes the socket path
//
// A second client while one is connected is refused cleanly: its first request gets an error
// reply with EBUSY and the connection is closed (after a short grace period if it sends
// nothing). When the client disconnects, its DMA mappings and irq fds are dropped and the next
// client is accepted; the device keeps its state (spec, "Client Disconnection").
import { listen, type Connection, type Server, type CloseReason } from "../../transport/connection.js";
import { KERNEL_MAX_FDS_PER_MESSAGE } from "../../transport/limits.js";
import { closeFdQuietly } from "../../transport/fd.js";
import type { PciFunction } from "../../core/pci/api.js";
import type { DmaContext } from "../../core/dma/context.js";
import type { DmaMessageHook } from "../../core/dma/api.js";
import { DEFAULT_MAX_DATA_XFER_SIZE, Errno, commandName } from "../wire/constants.js";
import { MessageParser, isCommand } from "../wire/parser.js";
import { MessageWriter } from "../wire/writer.js";
import { writeErrorReply } from "../wire/messages.js";
import { maxMessageSizeFor } from "../wire/index.js";
import { Session, type SessionConfig } from "./session.js";
import { VfioUserServerError } from "./errors.js";
import { asLogger, type Logger, type TraceEvent } from "../../log.js";
import { MessageTracer } from "../wire/trace.js";

export interface VfioUserServerOptions {
  /** The function to serve. */
  device: PciFunction;
  /** UNIX socket path (created with mode 0600). */
  socketPath: string;
  /** Remove a stale socket at the path first (never other file types). Default true. */
  replaceExisting?: boolean;
  /** Advertised and enforced max_data_xfer_size (default 1 MiB). */
  maxDataXferSize?: number;
  /** Advertised and enforced max_msg_fds (default 16). */
  maxMsgFds?: number;
  /** Advertised max_dma_maps (default 65535). */
  maxDmaMaps?: number;
  /** How long a DMA_READ/DMA_WRITE request waits for the client (default 5000 ms). */
  dmaRequestTimeoutMs?: number;
  /**
   * Where the server reports: connections (info), refused clients (debug), failed requests and
   * protocol errors (warn), and — when it has `trace` — every message in both directions.
   */
  logger?: Logger;
  /** Older form of `logger`: one line per connection and per error (ignored if logger is set). */
  log?: (line: string) => void;
  /** @internal DMA context factory (tests). */
  createDma?: (hook: DmaMessageHook) => DmaContext;
}

/** How long a refused second client may take to send its first message. */
const REFUSE_GRACE_MS = 1000;

export class VfioUserServer {
  private session: Session | null = null;
  private readonly config: SessionConfig;
  private readonly logger: Logger;
  private closing = false;
  private readonly refused = new Set<Connection>();
  private sessionWaiters: ((s: Session | null) => void)[] = [];
  /** Number of clients served so far. */
  connections = 0;

  private constructor(private readonly listener: Server, options: VfioUserServerOptions) {
    this.logger = asLogger(options.logger ?? options.log);
    const logger = this.logger;
    this.config = {
      device: options.device,
      maxDataXferSize: options.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE,
      maxMsgFds: options.maxMsgFds ?? 16,
      maxDmaMaps: options.maxDmaMaps ?? 65535,
      dmaRequestTimeoutMs: options.dmaRequestTimeoutMs ?? 5000,
      log: (line) => logger.warn(line),
      createDma: options.createDma,
    };
    listener.on("connection", (c: Connection) => this.onConnection(c));
    listener.on("error", (e: Error) => this.logger.error(`accept failed: ${e.message}`));
  }

  /** Starts listening. Throws VfioUserServerError (VFIO_USER_SERVER_SETUP) if the path is unusable. */
  static listen(options: VfioUserServerOptions): VfioUserServer {
    const device = options.device as unknown as { fn?: unknown; regionInfo?: unknown } | undefined;
    if (!device || typeof device.regionInfo !== "function") {
      // A device factory's result ({ fn, ... }) passed whole would otherwise fail only when a
      // client arrives, as a hung session.
      const hint = device && typeof device.fn === "object" ? ": pass the factory's `fn` (e.g. createEdu().fn)" : "";
      throw new VfioUserServerError("VFIO_USER_SERVER_SETUP", `device must be a PciFunction${hint}`);
    }
    const xfer = options.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE;
    if (!Number.isSafeInteger(xfer) || xfer < 8 || xfer > 64 * 1024 * 1024) {
      throw new VfioUserServerError("VFIO_USER_SERVER_SETUP", `maxDataXferSize must be an integer in 8..64 MiB, got ${xfer}`);
    }
    let listener: Server;
    try {
      listener = listen(options.socketPath, {
        mode: 0o600,
        replaceExisting: options.replaceExisting ?? true,
        connection: {
          // Receive up to the kernel's limit so that a message with more fds than negotiated is
          // answered (EINVAL, fds closed) instead of killing the connection.
          limits: { maxMessageSize: maxMessageSizeFor(xfer), maxFdsPerMessage: KERNEL_MAX_FDS_PER_MESSAGE },
        },
      });
    } catch (cause) {
      throw new VfioUserServerError("VFIO_USER_SERVER_SETUP", `cannot listen on ${options.socketPath}: ${(cause as Error).message}`, { cause });
    }
    return new VfioUserServer(listener, options);
  }

  get socketPath(): string {
    return this.listener.path;
  }

  /** The connected client's session, if any. */
  get current(): Session | null {
    return this.session;
  }

  /** Resolves with the next session to start (or the current one). */
  waitForClient(): Promise<Session> {
    if (this.session) return Promise.resolve(this.session);
    return new Promise((resolve, reject) =>
      this.sessionWaiters.push((s) => (s ? resolve(s) : reject(new VfioUserServerError("VFIO_USER_DISCONNECTED", "server closed")))),
    );
  }

  /** Stops accepting, disconnects the client, removes the socket path. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.listener.close();
    for (const c of this.refused) c.destroy();
    const s = this.session;
    if (s) {
      const done = new Promise<void>((resolve) => s.connection.once("close", () => resolve()));
      s.disconnect();
      await done;
    }
    for (const w of this.sessionWaiters.splice(0)) w(null);
  }

  private onConnection(c: Connection): void {
    if (this.closing) {
      c.destroy();
      return;
    }
    if (this.logger.trace) traceConnection(c, this.logger.trace);
    if (this.session) {
      this.refuse(c);
      return;
    }
    this.connections++;
    this.logger.info(`client ${this.connections} connected`);
    const session = new Session(this.config, c, (s, reason) => this.onSessionClosed(s, reason));
    this.session = session;
    for (const w of this.sessionWaiters.splice(0)) w(session);
  }

  private onSessionClosed(s: Session, reason: CloseReason): void {
    if (this.session !== s) return;
    this.session = null;
    const why = reason.kind === "error" ? `: ${reason.error?.message}` : ` (${reason.kind})`;
    this.logger.info(`client ${this.connections} disconnected${why}; DMA mappings and irq fds released`);
  }

  /** Busy: answer the newcomer's first request with EBUSY, then close. */
  private refuse(c: Connection): void {
    this.refused.add(c);
    this.logger.info("refused a second client: a client is already connected");
    const parser = new MessageParser({ maxMessageSize: 64 * 1024 });
    const w = new MessageWriter(64);
    let answered = false;
    const timer = setTimeout(() => c.destroy(), REFUSE_GRACE_MS);
    timer.unref?.();
    c.on("close", () => {
      clearTimeout(timer);
      parser.dispose();
      this.refused.delete(c);
    });
    c.onData((chunk, fds) => {
      parser.parse(chunk, fds, (ev) => {
        if (ev.kind === "frame") for (const fd of ev.fds) closeFdQuietly(fd);
        if (answered) return;
        const msgId = ev.msgId;
        const command = ev.command;
        const flags = ev.flags;
        if (msgId !== undefined && command !== undefined && flags !== undefined && isCommand(flags)) {
          writeErrorReply(w, msgId, command, Errno.EBUSY);
          answered = true;
          this.logger.debug(`answered ${commandName(command)} of the refused client with EBUSY`);
        }
      });
      if (w.length) c.send(w.take());
      if (answered) c.end();
    });
  }
}

/**
 * Reports every message `c` carries, both ways: wraps this connection's send() and data
 * listener (installed only when tracing, so the untraced path is untouched).
 */
function traceConnection(c: Connection, trace: (event: TraceEvent) => void): void {
  const out = new MessageTracer("out", trace);
  const incoming = new MessageTracer("in", trace);
  const send = c.send.bind(c);
  const onData = c.onData.bind(c);
  c.send = (data, fds) => {
    const parts = data instanceof Uint8Array ? [data] : data;
    parts.forEach((part, i) => out.feed(part, i === parts.length - 1 ? (fds?.length ?? 0) : 0));
    return send(data, fds);
  };
  c.onData = (listener) =>
    onData((chunk, fds) => {
      incoming.feed(chunk, fds.length);
      listener(chunk, fds);
    });
}
