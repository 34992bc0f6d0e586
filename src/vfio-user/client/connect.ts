// Wiring of the client to the project's transport: a socket connection as the ClientChannel,
// region mappings through mmapFd(), eventfds for interrupts, memfd-backed DMA memory.
import {
  connect as connectSocket,
  closeFdQuietly,
  memfdCreate,
  mmapFd,
  EventFd,
  TransportError,
  type Connection,
  type MappedRegion,
} from "../../transport/index.js";
import { native } from "../../transport/native.js";
import type { ClientChannel } from "./channel.js";
import { VfioUserClient, type VfioUserClientOptions } from "./client.js";
import { VfioUserClientError, describeErrno } from "./errors.js";
import { Errno } from "../wire/constants.js";

/** A transport Connection seen as a ClientChannel (raw chunks + fds in, whole messages out). */
export function connectionChannel(connection: Connection): ClientChannel {
  return {
    send(bytes, fds) {
      connection.send(bytes, fds);
    },
    close() {
      connection.destroy();
    },
    start(onData, onClose) {
      connection.once("close", (reason: { kind: string; error?: Error }) => onClose(reason.kind === "error" ? reason.error : undefined));
      connection.onData(onData);
    },
    closeFd(fd) {
      closeFdQuietly(fd);
    },
    get writableLength() {
      return connection.writableLength;
    },
    pause() {
      connection.pause();
    },
    resume() {
      connection.resume();
    },
    onDrain(listener) {
      connection.on("drain", listener);
    },
  };
}

export interface ConnectClientOptions extends VfioUserClientOptions {
  /** Probe the device after VERSION (device, region infos, BAR spaces). Default true. */
  probe?: boolean;
  /**
   * How long to keep trying while the listener is not accepting or the server serves another
   * client (it answers VERSION with EBUSY): ms, default 5000. Then ERR_BUSY / ERR_CONNECT.
   */
  connectTimeoutMs?: number;
  /** Called once when the server first answers that another client is connected. */
  onBusy?: () => void;
}

/** First wait between attempts on a busy server; doubled up to MAX_BUSY_RETRY_MS. */
const FIRST_BUSY_RETRY_MS = 5;
const MAX_BUSY_RETRY_MS = 100;

/**
 * Connects to a vfio-user server at `path`, negotiates the version and (by default) probes the
 * device. A server busy with another client is retried until connectTimeoutMs. Errors:
 * ERR_CONNECT (nothing listening, refused), ERR_BUSY, ERR_VERSION, and request errors.
 */
export async function connectVfioUser(path: string, options: ConnectClientOptions = {}): Promise<VfioUserClient> {
  const timeoutMs = options.connectTimeoutMs ?? 5000;
  const deadline = Date.now() + timeoutMs;
  for (let wait = FIRST_BUSY_RETRY_MS, attempt = 1; ; wait = Math.min(wait * 2, MAX_BUSY_RETRY_MS), attempt++) {
    const client = await connectOnce(path, options, Math.max(1, deadline - Date.now()));
    try {
      const caps = await client.negotiate();
      options.logger?.debug(`${path}: vfio-user ${caps.major}.${caps.minor}, max_data_xfer_size=${caps.maxDataXferSize}, max_msg_fds=${caps.maxMsgFds}`);
      if (options.probe !== false) await client.probe();
      return client;
    } catch (err) {
      client.close();
      if (!(err instanceof VfioUserClientError) || err.errno !== Errno.EBUSY || client.capabilities !== undefined) throw err;
      if (attempt === 1) options.onBusy?.();
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VfioUserClientError("ERR_BUSY", `the vfio-user server at ${path} serves another client (it answered VERSION with EBUSY) and was still busy after ${timeoutMs} ms`, { errno: Errno.EBUSY, cause: err });
      }
      options.logger?.debug(`${path}: another client is connected; trying again in ${Math.min(wait, left)} ms (attempt ${attempt})`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, left)));
    }
  }
}

async function connectOnce(path: string, options: ConnectClientOptions, timeoutMs: number): Promise<VfioUserClient> {
  let connection: Connection;
  const maxDataXferSize = options.maxDataXferSize ?? 1 << 20;
  try {
    connection = await connectSocket(path, {
      timeoutMs,
      limits: {
        maxMessageSize: options.maxMessageSize ?? maxDataXferSize + 64 * 1024,
        maxFdsPerMessage: options.maxMsgFds ?? 16,
      },
    });
  } catch (err) {
    const why = err instanceof TransportError && err.errno ? err.errno : (err as Error).message;
    throw new VfioUserClientError("ERR_CONNECT", `cannot connect to vfio-user server at ${path}: ${why}`, { cause: err });
  }
  const client = new VfioUserClient(connectionChannel(connection), options);
  client.regionMapper = {
    map(fd, fileOffset, size, writable) {
      const region: MappedRegion = mmapFd(fd, fileOffset, Number(size), { writable });
      return {
        view: region.bytes(),
        unmap: () => region.isMapped && region.unmap(),
        get truncated() {
          return region.truncated;
        },
      };
    },
  };
  client.eventFdWriter = writeEventFd;
  return client;
}

/** Adds `value` to a borrowed eventfd's counter (the fd stays open, its flags untouched). */
export function writeEventFd(fd: number, value: number): void {
  const r = native().eventfdWrite(fd, value);
  if (r < 0) {
    const errno = -r;
    throw new VfioUserClientError(errno === 9 ? "ERR_CLOSED" : "ERR_ARGUMENT", `cannot signal eventfd ${fd}: ${describeErrno(errno)}`, { errno });
  }
}

/**
 * Creates `count` eventfds, attaches them to vectors [0, count) of IRQ `index` (in groups that
 * respect the server's max_msg_fds), and emits client 'irq' events when the server signals one.
 * The eventfds are closed when the client closes or the returned function is called.
 */
export async function enableIrqs(client: VfioUserClient, index: number, count: number): Promise<() => Promise<void>> {
  const fds: EventFd[] = [];
  const release = () => {
    for (const e of fds) e.close();
    fds.length = 0;
  };
  try {
    for (let vector = 0; vector < count; vector++) {
      const e = EventFd.create();
      fds.push(e);
      e.onReadable((n) => client.notifyIrq({ index, vector, count: n }));
    }
    const group = Math.max(1, client.maxSendFds);
    for (let start = 0; start < count; start += group) {
      const slice = fds.slice(start, start + group).map((e) => e.fd);
      await client.setIrqEventfds(index, start, slice);
    }
  } catch (err) {
    release();
    throw err;
  }
  client.onClose(release);
  return async () => {
    if (!client.closed) await client.disableIrqs(index);
    release();
  };
}

/** memfd-backed memory for dmaMap(): `fd` to pass to the server, `memory` to use locally. */
export interface SharedMemory {
  fd: number;
  memory: Uint8Array;
  close(): void;
}

export function createSharedMemory(size: number, name = "wasmdev-dma"): SharedMemory {
  const fd = memfdCreate(name, size);
  let region: MappedRegion;
  try {
    region = mmapFd(fd, 0, size);
  } catch (err) {
    closeFdQuietly(fd);
    throw err;
  }
  return {
    fd,
    memory: region.bytes(),
    close() {
      if (region.isMapped) region.unmap();
      closeFdQuietly(fd);
    },
  };
}
