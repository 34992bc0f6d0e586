// The VMM side of vfio-user: drive a remote PCI function over a ClientChannel.
//
// Requests are pipelined (many in flight, matched to replies by msg_id) unless
// `serializeRequests` queues every send behind the previous reply. Each request has a deadline; a
// timer sweep fails overdue ones with ERR_TIMEOUT and remembers their ids so a late reply is
// dropped instead of being mistaken for a newer request. A closed connection, or a stream that can
// no longer be framed, fails every pending request with ERR_CLOSED.
//
// Replies are untrusted: every decoder checks sizes and fields, and a bad reply fails only the
// request it answers (the stream stays in sync because framing uses the header's size).
import { EventEmitter } from "node:events";
import type { ClientChannel } from "./channel.js";
import { DmaMemoryTable, type DmaMapping } from "./dma.js";
import { VfioUserClientError, describeErrno, type VfioUserClientErrorCode } from "./errors.js";
import { Errno } from "../wire/constants.js";
import { PostedWritePolicy, type PostedWritePolicyOptions, type RegionSpace } from "./posted-writes.js";
import { SendBatch, REGION_ACCESS_HEAD } from "./send-batch.js";
import { traceChannel } from "./channel.js";
import type { Logger } from "../../log.js";
import {
  Command,
  HeaderFlag,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_PGSIZES,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  PciRegion,
  IrqSetFlag,
  DmaMapFlag,
  DeviceFeatureFlag,
  DeviceFeature,
  MigrationState,
  commandName,
  decodeDeviceInfoReply,
  decodeDmaAccessRequest,
  decodeFeatureReply,
  decodeIrqInfoReply,
  decodeMigDataReadReply,
  decodeRegionAccessReply,
  decodeRegionInfoReply,
  decodeRegionIoFdsReply,
  decodeVersionReply,
  hex,
  type IoEventFdSubRegion,
  type Decoded,
  type DeviceInfo,
  type IrqInfo,
  type MigrationStateValue,
  type RegionInfo,
  type ServerCapabilities,
} from "./protocol.js";
import {
  MessageParser,
  MessageWriter,
  concatBytes,
  WireError,
  type Frame,
  type ParseEvent,
  decodeRegionReadReply,
  joinU64,
  readU32,
  REGION_ACCESS_SIZE,
  encodeMigDeviceState,
  writeDeviceFeatureRequest,
  writeDeviceInfoRequest,
  writeDeviceResetRequest,
  writeDmaMapRequest,
  writeDmaReadReply,
  writeDmaUnmapRequest,
  writeDmaWriteReply,
  writeErrorReply,
  writeIrqInfoRequest,
  writeIrqSetRequest,
  writeMigDataReadRequest,
  writeMigDataWriteRequest,
  writeRegionInfoRequest,
  writeRegionIoFdsRequest,
  writeRegionReadRequest,
  writeRegionWriteRequest,
  writeVersionRequest,
} from "../wire/index.js";

export interface VfioUserClientOptions {
  /** Default per-request timeout in ms (default 10 000). 0 disables timeouts. */
  timeoutMs?: number;
  /** Queue every send until the previous request's reply arrived (default false: pipeline). */
  serializeRequests?: boolean;
  /** Posted-write policy (see posted-writes.ts). */
  postedWrites?: PostedWritePolicyOptions;
  /** max_data_xfer_size the client accepts in the server's DMA_READ/WRITE (default 1 MiB). */
  maxDataXferSize?: number;
  /** max_msg_fds the client can receive in one message (default 16). */
  maxMsgFds?: number;
  /** Largest reply the client buffers, header included (default max data + 64 KiB). */
  maxMessageSize?: number;
  /** With `trace`, every message in both directions is reported (the client logs nothing else). */
  logger?: Logger;
}

export interface RequestOptions {
  /** Overrides the client's default timeout for this request (ms; 0 = none). */
  timeoutMs?: number;
}

export interface WriteOptions extends RequestOptions {
  /**
   * false forces a non-posted write; true or undefined lets the policy decide (I/O, config and
   * mapped-device writes are never posted whatever this says).
   */
  posted?: boolean;
}

export interface WriteResult {
  /** The write was sent with NO_REPLY and not waited for. */
  posted: boolean;
  /** The write went straight into a region mapped into the client. */
  viaMapping: boolean;
}

/** The server's interrupt event; see enableIrqs() in the connect layer. */
export interface IrqEvent {
  index: number;
  vector: number;
  /** Number of signals folded into this event (eventfd counter value). */
  count: number;
}

/** Region info plus the fd the server offered for mapping it (owned by the client). */
export interface ClientRegionInfo extends RegionInfo {
  fd?: number;
}

/** A region (or its sparse areas) mapped into the client. */
export interface MappedArea {
  /** Offset within the region. */
  offset: bigint;
  size: bigint;
  view: Uint8Array;
  /**
   * True once the server shrank the file behind this area under the mapping: pages past the new
   * end read as zeros and writes to them go nowhere (the transport's SIGBUS guard keeps the
   * process alive). readRegion/writeRegion check it after each access through the mapping;
   * code that uses `view` directly should check it too.
   */
  readonly truncated: boolean;
}

/** An ioeventfd sub-region with the eventfd to signal. */
export interface ClientIoEventFd extends IoEventFdSubRegion {
  region: number;
  /** The eventfd; it belongs to the RegionIoFds that returned it (do not close it yourself). */
  fd: number;
}

/**
 * What getRegionIoFds() returns. The fds belong to the client: they stay open until release()
 * or until the client closes, whichever comes first; copy one with dup() to keep it longer.
 * A VMM hands them to its accelerator (KVM_IOEVENTFD); without one, ring() signals them.
 */
export interface RegionIoFds {
  readonly index: number;
  readonly subRegions: readonly ClientIoEventFd[];
  /** Every fd kept from the reply (those the sub-regions use), in fd_index order. */
  readonly fds: readonly number[];
  readonly released: boolean;
  /**
   * Rings sub-region `sub` (or its position) as KVM does for a guest write of `value` that
   * matches it: adds 1 to the eventfd. `value` defaults to the datamatch value (or "any").
   * Throws ERR_ARGUMENT when `value` does not fit the width or differs from the datamatch value
   * (that write would go over the socket instead), ERR_CLOSED after release().
   */
  ring(sub: ClientIoEventFd | number, value?: bigint | number): void;
  /** Closes the fds now. Idempotent. */
  release(): void;
}

/** Signals an eventfd (borrowed); supplied by the connect layer (transport eventfd write). */
export type EventFdWriter = (fd: number, value: number) => void;

/** Maps a server-offered region fd; supplied by the connect layer (transport mmap). */
export interface RegionMapper {
  /** `truncated` (optional): true once the file shrank under the mapping (MappedRegion.truncated). */
  map(fd: number, fileOffset: bigint, size: bigint, writable: boolean): { view: Uint8Array; unmap(): void; readonly truncated?: boolean };
}

/** "1 byte", "4 bytes". */
function byteCount(n: number): string {
  return n === 1 ? "1 byte" : `${n} bytes`;
}

interface Pending {
  msgId: number;
  command: number;
  /** Human description for errors: "REGION_READ region 0 offset 0x10 (4 bytes)" (built lazily). */
  readonly what: string;
  deadline: number;
  onReply(payload: Uint8Array, fds: number[]): void;
  fail(error: VfioUserClientError): void;
}

interface QueuedSend {
  bytes: Uint8Array;
  fds?: readonly number[];
  pending?: Pending;
}

const MSG_ID_SPACE = 0x10000;
const POSTED: WriteResult = Object.freeze({ posted: true, viaMapping: false });
/** What writeRegion()/writeValue() return for a posted write: one shared settled promise. */
const POSTED_DONE: Promise<WriteResult> = Promise.resolve(POSTED);
const TWO_32 = 0x1_0000_0000;
/** 2^(8 * width) for the access widths (NaN elsewhere, so any comparison with it is false). */
const VALUE_LIMIT = [NaN, 2 ** 8, 2 ** 16, NaN, 2 ** 32, NaN, NaN, NaN, 2 ** 64];
const BIGINT_VALUE_LIMIT = [0n, 1n << 8n, 1n << 16n, 0n, 1n << 32n, 0n, 0n, 0n, 1n << 64n];
const REGION_INFO_ARGSZ = 1024;
const REGION_INFO_ARGSZ_LIMIT = 64 * 1024;
/** Room for 16 sub-regions at first; a cut reply says how much more to ask for. */
const IO_FDS_ARGSZ = 16 + 16 * 40;
const IO_FDS_ARGSZ_LIMIT = 64 * 1024;
const MIG_CHUNK = 64 * 1024;
/**
 * Backpressure: while more than this many bytes of our replies to the server's DMA_READ /
 * DMA_WRITE wait for a server that does not read them, received messages are set aside (copied,
 * in order) and reading stops until the socket drains. A server asking for 1 MiB per 32-byte
 * request cannot grow the client's memory beyond this plus one receive buffer of requests.
 */
const MAX_QUEUED_REPLY_BYTES = 16 * 1024 * 1024;

export declare interface VfioUserClient {
  on(event: "irq", listener: (event: IrqEvent) => void): this;
  on(event: "protocolError", listener: (error: VfioUserClientError) => void): this;
  on(event: "close", listener: (error?: VfioUserClientError) => void): this;
}

export class VfioUserClient extends EventEmitter {
  readonly options: Required<Omit<VfioUserClientOptions, "postedWrites" | "logger">>;
  readonly postedWrites: PostedWritePolicy;
  readonly dma = new DmaMemoryTable();
  /** Server capabilities from VERSION (set by negotiate()). */
  capabilities?: ServerCapabilities;
  deviceInfo?: DeviceInfo;
  readonly regions = new Map<number, ClientRegionInfo>();
  /** Region mapper (set by the connect layer). Without one, mapRegion() fails. */
  regionMapper?: RegionMapper;
  /** Eventfd writer (set by the connect layer). Without one, RegionIoFds.ring() fails. */
  eventFdWriter?: EventFdWriter;

  private readonly channel: ClientChannel;
  /** Framing of the server's byte stream (the wire module's parser, as the server uses). */
  private readonly parser: MessageParser;
  private readonly pending = new PendingTable();
  /** Ids of timed-out requests whose late replies must be dropped. */
  private readonly zombies = new Set<number>();
  private readonly sendQueue: QueuedSend[] = [];
  private awaitingReply = 0;
  private nextId = 0;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  private closedError: VfioUserClientError | null = null;
  private readonly mappings = new Map<number, { areas: MappedArea[]; unmaps: (() => void)[] }>();
  /** The area of the last mappedView() (checked right after the access). */
  private lastMappedArea: MappedArea | null = null;
  private readonly cleanups: (() => void)[] = [];
  /** ioeventfd sets handed out and not yet released (closed at shutdown). */
  private readonly ioFdSets = new Set<RegionIoFds>();
  /** Reused output buffer (the wire module's serializers write into it). */
  private readonly writer = new MessageWriter();
  /**
   * Posted writes not yet written (and, pipelined, the message that follows them), sent as one
   * write: see send-batch.ts. Serialized mode queues posts as before instead.
   */
  private readonly batch = new SendBatch();
  private batchFlushQueued = false;
  private readonly flushLater = () => {
    this.batchFlushQueued = false;
    this.flushBatch();
  };
  private readonly closeFdList = (fds: readonly number[]) => this.closeFds(fds);
  /** Messages set aside while our replies pile up unread (see MAX_QUEUED_REPLY_BYTES). */
  private backlog: ParseEvent[] = [];

  constructor(channel: ClientChannel, options: VfioUserClientOptions = {}) {
    super();
    const maxDataXferSize = options.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE;
    this.options = {
      timeoutMs: options.timeoutMs ?? 10_000,
      serializeRequests: options.serializeRequests ?? false,
      maxDataXferSize,
      maxMsgFds: options.maxMsgFds ?? 16,
      maxMessageSize: options.maxMessageSize ?? maxDataXferSize + 64 * 1024,
    };
    this.postedWrites = new PostedWritePolicy(options.postedWrites);
    // Tracing wraps the channel; without it the client talks to the channel directly.
    if (options.logger?.trace) channel = traceChannel(channel, options.logger.trace);
    this.channel = channel;
    this.parser = new MessageParser({ maxMessageSize: this.options.maxMessageSize, closeFd: (fd) => channel.closeFd(fd) });
    const onEvent = (ev: ParseEvent) => {
      if (this.backlog.length > 0 || this.congested()) this.setAside(ev);
      else this.onEvent(ev);
    };
    channel.onDrain?.(() => this.drainBacklog());
    channel.start(
      (chunk, fds) => {
        if (this.closedError) this.closeFds(fds);
        else this.parser.parse(chunk, fds, onEvent);
      },
      (err) => this.shutdown(err === undefined ? "the server closed the connection" : `the connection failed: ${err.message}`, err),
    );
  }

  get closed(): boolean {
    return this.closedError !== null;
  }

  /** Requests sent (or queued) and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  // -------------------------------------------------------------------------------------------
  // Session setup

  /** VERSION negotiation. Fails with ERR_VERSION on an incompatible major or bad capabilities. */
  async negotiate(options: RequestOptions = {}): Promise<ServerCapabilities> {
    const caps = await this.request(
      Command.VERSION,
      "VERSION",
      (w, id) => writeVersionRequest(w, id, { capabilities: { maxMsgFds: this.options.maxMsgFds, maxDataXferSize: this.options.maxDataXferSize } }),
      (payload) => {
        const r = decodeVersionReply(payload);
        if (!r.ok) throw new VfioUserClientError("ERR_VERSION", `VERSION negotiation failed: ${r.problem}`, { command: Command.VERSION });
        return r.value;
      },
      options,
    );
    if (caps.major !== PROTOCOL_MAJOR) {
      const err = new VfioUserClientError(
        "ERR_VERSION",
        `server speaks vfio-user ${caps.major}.${caps.minor}, this client speaks ${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}: incompatible major version`,
        { command: Command.VERSION },
      );
      this.shutdown(err.message, err);
      throw err;
    }
    if (caps.minor > PROTOCOL_MINOR) {
      const err = new VfioUserClientError("ERR_VERSION", `server answered minor version ${caps.minor}, above the ${PROTOCOL_MINOR} proposed`, { command: Command.VERSION });
      this.shutdown(err.message, err);
      throw err;
    }
    this.capabilities = caps;
    return caps;
  }

  /** Largest data count per REGION_READ/WRITE: the server's max_data_xfer_size. */
  get maxTransfer(): number {
    return this.capabilities?.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE;
  }

  /** Most fds one request may carry: the server's max_msg_fds, and no more than this client's own. */
  get maxSendFds(): number {
    return Math.min(this.capabilities?.maxMsgFds ?? 1, this.options.maxMsgFds);
  }

  /**
   * Largest data count per REGION_READ / MIG_DATA_READ: the server's max_data_xfer_size, but no
   * more than a reply this client accepts (its own maxDataXferSize, and maxMessageSize less the
   * 16-byte header and the 16-byte access head).
   */
  get maxReadTransfer(): number {
    return Math.max(1, Math.min(this.maxTransfer, this.options.maxDataXferSize, this.options.maxMessageSize - 32));
  }

  async getDeviceInfo(options: RequestOptions = {}): Promise<DeviceInfo> {
    const info = await this.request(Command.DEVICE_GET_INFO, "DEVICE_GET_INFO", (w, id) => writeDeviceInfoRequest(w, id), (p) => unwrap(decodeDeviceInfoReply(p), Command.DEVICE_GET_INFO), options);
    this.deviceInfo = info;
    return info;
  }

  /**
   * Region info with capabilities. When the server offers an fd for mapping, the client keeps it
   * (closed on close()) for mapRegion(). Re-asks with a larger argsz when the capabilities did not
   * fit, up to 64 KiB.
   */
  async getRegionInfo(index: number, options: RequestOptions = {}): Promise<ClientRegionInfo> {
    checkU32(index, "region index");
    let argsz = REGION_INFO_ARGSZ;
    for (;;) {
      const info = await this.request(
        Command.DEVICE_GET_REGION_INFO,
        `DEVICE_GET_REGION_INFO region ${index}`,
        (w, id) => writeRegionInfoRequest(w, id, index, argsz),
        (payload, fds) => {
          const r = decodeRegionInfoReply(payload, index);
          if (!r.ok) {
            this.closeFds(fds);
            throw protocolError(Command.DEVICE_GET_REGION_INFO, r.problem);
          }
          const out: ClientRegionInfo = r.value;
          // Keep the first fd only when the region is mappable; anything else is closed.
          if (fds.length > 0 && out.mmappable) {
            out.fd = fds[0];
            this.closeFds(fds.slice(1));
          } else this.closeFds(fds);
          return out;
        },
        options,
        true,
      );
      // Spec, "Message sizes": a reply argsz above ours means the payload was cut. Servers
      // differ on keeping the CAPS flag in a cut reply (libvfio-user drops it), so argsz decides.
      if (info.argsz > argsz && info.argsz <= REGION_INFO_ARGSZ_LIMIT && info.capabilities.length === 0) {
        if (info.fd !== undefined) this.channel.closeFd(info.fd);
        argsz = info.argsz;
        continue;
      }
      // A mapping does not need the fd it was made from: the previous one is always released.
      const previous = this.regions.get(index);
      if (previous?.fd !== undefined && previous.fd !== info.fd) this.channel.closeFd(previous.fd);
      this.regions.set(index, info);
      return info;
    }
  }

  /**
   * The region's ioeventfd sub-regions (DEVICE_GET_REGION_IO_FDS) with the eventfds the server
   * passed; see RegionIoFds for who owns them. A region without any gives an empty list. Asks
   * again with a larger argsz when the server cut the reply (up to 64 KiB). Checks each entry
   * (decodeRegionIoFdsReply); fds no sub-region uses are closed at once.
   * Errors: ERR_REMOTE (e.g. EINVAL for a bad index, E2BIG above our max_msg_fds), ERR_PROTOCOL.
   */
  async getRegionIoFds(index: number, options: RequestOptions = {}): Promise<RegionIoFds> {
    checkU32(index, "region index");
    let argsz = IO_FDS_ARGSZ;
    for (;;) {
      const asked = argsz;
      const { decoded, fds } = await this.request(
        Command.DEVICE_GET_REGION_IO_FDS,
        `DEVICE_GET_REGION_IO_FDS region ${index}`,
        (w, id) => writeRegionIoFdsRequest(w, id, index, asked),
        (payload, fds) => {
          const r = decodeRegionIoFdsReply(payload, index, fds.length, this.regions.get(index)?.size);
          if (!r.ok) {
            this.closeFds(fds);
            throw protocolError(Command.DEVICE_GET_REGION_IO_FDS, r.problem, index);
          }
          const used = new Set(r.value.subRegions.map((sub) => sub.fdIndex));
          this.closeFds(fds.filter((_, i) => !used.has(i)));
          return { decoded: r.value, fds };
        },
        options,
        true,
      );
      if (decoded.subRegions.length === 0 && decoded.count > 0) {
        // Spec, "Message sizes": argsz says how much the full reply needs.
        if (decoded.argsz > asked && decoded.argsz <= IO_FDS_ARGSZ_LIMIT) {
          argsz = decoded.argsz;
          continue;
        }
        throw protocolError(Command.DEVICE_GET_REGION_IO_FDS, `the server reports ${decoded.count} sub-regions needing argsz ${decoded.argsz} but sent none for argsz ${asked}`, index);
      }
      return this.trackIoFds(index, decoded.subRegions, fds);
    }
  }

  private trackIoFds(index: number, subs: IoEventFdSubRegion[], received: number[]): RegionIoFds {
    const used = new Set(subs.map((sub) => sub.fdIndex));
    const kept = received.filter((_, i) => used.has(i));
    const subRegions = subs.map((sub) => ({ ...sub, region: index, fd: received[sub.fdIndex] }));
    let released = false;
    const set: RegionIoFds = {
      index,
      subRegions,
      fds: kept,
      get released() {
        return released;
      },
      ring: (which, value) => {
        const sub = typeof which === "number" ? subRegions[which] : which;
        if (!sub || !subRegions.includes(sub)) throw argumentError(`sub-region ${typeof which === "number" ? which : "given"} is not one of region ${index}'s ioeventfds`);
        if (released) throw new VfioUserClientError("ERR_CLOSED", `region ${index}'s ioeventfds were released`, { region: index });
        if (value !== undefined) {
          const v = BigInt(value);
          if (v < 0n || (sub.size !== 0 && v >> BigInt(sub.size * 8) !== 0n)) throw argumentError(`value ${value} does not fit the ${sub.size}-byte doorbell at ${hex(sub.offset)}`);
          if (sub.datamatch !== undefined && v !== sub.datamatch) {
            throw argumentError(`value ${hex(v)} does not match the doorbell's datamatch ${hex(sub.datamatch)}: such a write does not signal; send it with writeRegion()`);
          }
        }
        if (!this.eventFdWriter) throw argumentError("no eventfd writer: connect with connectVfioUser() or set client.eventFdWriter");
        // A doorbell is a posted write too: earlier posts leave on the socket first.
        this.flushBatch();
        this.eventFdWriter(sub.fd, 1);
      },
      release: () => {
        if (released) return;
        released = true;
        this.ioFdSets.delete(set);
        this.closeFds(kept);
      },
    };
    this.ioFdSets.add(set);
    return set;
  }

  async getIrqInfo(index: number, options: RequestOptions = {}): Promise<IrqInfo> {
    checkU32(index, "IRQ index");
    return this.request(Command.DEVICE_GET_IRQ_INFO, `DEVICE_GET_IRQ_INFO index ${index}`, (w, id) => writeIrqInfoRequest(w, id, index), (p) => unwrap(decodeIrqInfoReply(p, index), Command.DEVICE_GET_IRQ_INFO), options);
  }

  /**
   * Device info, every region's info, and (for PCI) each BAR's space from config space, which
   * the posted-write policy needs. Region infos are requested in one pipelined batch.
   */
  async probe(options: RequestOptions = {}): Promise<{ device: DeviceInfo; regions: ClientRegionInfo[] }> {
    const device = await this.getDeviceInfo(options);
    const indices = Array.from({ length: Math.min(device.numRegions, 64) }, (_, i) => i);
    const regions = await Promise.all(indices.map((i) => this.getRegionInfo(i, options)));
    if (device.isPci) {
      const config = this.regions.get(PciRegion.CONFIG);
      if (config && config.readable && config.size >= 0x28n) {
        const bars = await this.readRegion(PciRegion.CONFIG, 0x10, 24, options);
        for (const [index, space] of decodeBarSpaces(bars)) this.postedWrites.setRegionSpace(index, space);
      }
      this.postedWrites.setRegionSpace(PciRegion.CONFIG, "config");
      this.postedWrites.setRegionSpace(PciRegion.ROM, "other");
      this.postedWrites.setRegionSpace(PciRegion.VGA, "io"); // legacy VGA mixes I/O ports in
    }
    return { device, regions };
  }

  // -------------------------------------------------------------------------------------------
  // Region access

  /**
   * Reads `size` bytes at `offset` of a region. Splits at the server's max_data_xfer_size (chunks
   * pipelined). Reads entirely inside a mapped area are served from the mapping.
   * Errors: ERR_REMOTE (errno), ERR_REPLY_TOO_BIG (E2BIG: more data than asked),
   * ERR_SHORT_TRANSFER (`transferred`, `data` hold what arrived), ERR_PROTOCOL, ERR_TIMEOUT.
   */
  readRegion(region: number, offset: bigint | number, size: number, options: RequestOptions = {}): Promise<Uint8Array> {
    let into: Uint8Array;
    try {
      if (!(Number.isSafeInteger(size) && size >= 0 && typeof offset === "number" && this.fitsRegion(region, offset, size, "read"))) {
        this.checkAccess(region, offset, size, "read");
      }
      into = new Uint8Array(size);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.readInto(region, offset, into, options);
  }

  /**
   * readRegion() into the caller's buffer: reads `into.length` bytes at `offset`, copies each
   * reply's data straight into `into` (a buffer reused across reads costs no allocation) and
   * resolves with `into`. Same splitting, mapping and errors as readRegion(); after a failure
   * `into` may hold part of the data. Do not share one buffer between reads in flight.
   */
  readRegionInto(region: number, offset: bigint | number, into: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
    if (!(into instanceof Uint8Array)) return Promise.reject(argumentError("readRegionInto needs a Uint8Array to read into"));
    try {
      if (!(typeof offset === "number" && this.fitsRegion(region, offset, into.length, "read"))) this.checkAccess(region, offset, into.length, "read");
    } catch (err) {
      return Promise.reject(err);
    }
    return this.readInto(region, offset, into, options);
  }

  /** The read itself, arguments checked. One chunk: one pending object, no other allocation. */
  private readInto(region: number, offset: bigint | number, into: Uint8Array, options: RequestOptions): Promise<Uint8Array> {
    const size = into.length;
    if (this.mappings.size !== 0) {
      const start = BigInt(offset);
      const mapped = this.mappedView(region, start, size);
      if (mapped) {
        into.set(mapped);
        try {
          this.checkMappedArea(region, start, size);
        } catch (err) {
          return Promise.reject(err);
        }
        return Promise.resolve(into);
      }
    }
    if (size === 0) return Promise.resolve(into);
    if (this.closedError) return Promise.reject(this.closedError);
    const max = this.maxReadTransfer;
    if (size > max) return this.readChunked(region, BigInt(offset), into, max, options);
    const hi = typeof offset === "number" ? (offset < TWO_32 ? 0 : Math.floor(offset / TWO_32)) : hi32(offset);
    const lo = typeof offset === "number" ? offset - hi * TWO_32 : lo32(offset);
    return new Promise<Uint8Array>((resolve, reject) => this.sendRead(region, lo, hi, into, 0, size, true, resolve, reject, options));
  }

  /** A read above the transfer limit: chunks pipelined, then checked for a short one in order. */
  private async readChunked(region: number, start: bigint, into: Uint8Array, max: number, options: RequestOptions): Promise<Uint8Array> {
    const size = into.length;
    const parts: Promise<number>[] = [];
    for (let done = 0; done < size; done += max) {
      const count = Math.min(max, size - done);
      const at = start + BigInt(done);
      const into_ = done;
      parts.push(new Promise<number>((resolve, reject) => this.sendRead(region, lo32(at), hi32(at), into, into_, count, false, resolve, reject, options)));
    }
    const counts = await Promise.all(parts);
    let transferred = 0;
    for (let i = 0; i < counts.length; i++) {
      const asked = Math.min(max, size - i * max);
      transferred += counts[i];
      if (counts[i] < asked) throw shortRead(region, start, size, transferred, into);
    }
    return into;
  }

  /** Registers and sends one REGION_READ whose reply data lands in into[at, at + count). */
  private sendRead(
    region: number,
    offsetLo: number,
    offsetHi: number,
    into: Uint8Array,
    at: number,
    count: number,
    whole: boolean,
    resolve: (value: never) => void,
    reject: (error: unknown) => void,
    options: RequestOptions,
  ): void {
    const batched = !this.options.serializeRequests;
    if (batched && !this.batch.fits(REGION_ACCESS_HEAD)) this.flushBatch();
    let msgId: number;
    try {
      if (this.closedError) throw this.closedError;
      msgId = this.allocateId();
    } catch (err) {
      reject(err);
      return;
    }
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs;
    const deadline = timeoutMs > 0 ? performance.now() + timeoutMs : Infinity;
    const p = new RegionReadPending(msgId, deadline, region, offsetLo, offsetHi, into, at, count, whole, resolve, reject, this.closeFdList);
    this.pending.set(msgId, p);
    if (deadline !== Infinity) this.armSweep(timeoutMs);
    if (!batched) {
      this.enqueue({ bytes: this.encode((w, id) => writeRegionReadRequest(w, id, offsetLo, offsetHi, region, count), msgId), pending: p });
      return;
    }
    // Behind the posted writes not yet written, in the same socket write.
    this.batch.readRequest(msgId, offsetLo, offsetHi, region, count);
    const bytes = this.batch.take();
    try {
      this.channel.send(bytes);
    } catch (err) {
      this.pending.delete(msgId);
      p.fail(withRequest(new VfioUserClientError("ERR_CLOSED", `could not send: ${(err as Error).message}`, { cause: err }), p));
    }
  }

  /**
   * Writes `data` at `offset`. Memory-BAR writes are posted when the policy allows (resolved as
   * soon as they are handed to the socket); otherwise each chunk waits for its reply, and a reply
   * count below the chunk is ERR_SHORT_TRANSFER, above it ERR_REPLY_TOO_BIG.
   */
  writeRegion(region: number, offset: bigint | number, data: Uint8Array, options: WriteOptions = {}): Promise<WriteResult> {
    // Fast path of the common posted store: numeric offset, one message, nothing mapped. No
    // async frame: the settled POSTED_DONE promise is returned.
    if (
      typeof offset === "number" &&
      options.posted !== false &&
      this.mappings.size === 0 &&
      data.length !== 0 &&
      data.length <= this.maxTransfer &&
      this.postedWrites.canPost(region) &&
      this.fitsRegion(region, offset, data.length, "write")
    ) {
      const hi = offset < TWO_32 ? 0 : Math.floor(offset / TWO_32);
      try {
        this.postMessage(region, offset - hi * TWO_32, hi, data);
      } catch (err) {
        return Promise.reject(err);
      }
      return POSTED_DONE;
    }
    return this.writeRegionChecked(region, offset, data, options);
  }

  private async writeRegionChecked(region: number, offset: bigint | number, data: Uint8Array, options: WriteOptions): Promise<WriteResult> {
    const start = this.checkAccess(region, offset, data.length, "write");
    const mapped = this.mappedView(region, start, data.length);
    if (mapped) {
      mapped.set(data);
      this.checkMappedArea(region, start, data.length);
      return { posted: false, viaMapping: true };
    }
    if (data.length === 0) return { posted: false, viaMapping: false };
    const posted = options.posted !== false && this.postedWrites.shouldPost(region);
    const max = this.maxTransfer;
    if (posted) {
      for (let done = 0; done < data.length; done += max) {
        const at = start + BigInt(done);
        this.postMessage(region, lo32(at), hi32(at), data.subarray(done, Math.min(done + max, data.length)));
      }
      return { posted: true, viaMapping: false };
    }
    const parts: Promise<number>[] = [];
    for (let done = 0; done < data.length; done += max) {
      const chunk = data.subarray(done, Math.min(done + max, data.length));
      const at = start + BigInt(done);
      const count = chunk.length;
      parts.push(
        this.request(
          Command.REGION_WRITE,
          () => `REGION_WRITE region ${region} offset ${hex(at)} (${byteCount(count)})`,
          (w, id) => writeRegionWriteRequest(w, id, lo32(at), hi32(at), region, chunk, false),
          (payload) => {
            const r = decodeRegionAccessReply(payload, false);
            if (!r.ok) throw protocolError(Command.REGION_WRITE, r.problem, region, at, count);
            if (r.value.data.length !== 0) throw protocolError(Command.REGION_WRITE, `reply carries ${r.value.data.length} unexpected data bytes`, region, at, count);
            if (r.value.count > count) {
              throw new VfioUserClientError("ERR_REPLY_TOO_BIG", `REGION_WRITE reply claims ${r.value.count} bytes written, ${count} were sent (region ${region} offset ${hex(at)})`, {
                command: Command.REGION_WRITE, commandName: "REGION_WRITE", errno: Errno.E2BIG, region, offset: at, count,
              });
            }
            return r.value.count;
          },
          options,
        ),
      );
    }
    const counts = parts.length === 1 ? [await parts[0]] : await Promise.all(parts);
    let transferred = 0;
    for (let i = 0; i < counts.length; i++) {
      const asked = Math.min(max, data.length - i * max);
      transferred += counts[i];
      if (counts[i] < asked) {
        throw new VfioUserClientError("ERR_SHORT_TRANSFER", `short write: region ${region} offset ${hex(start)}: ${transferred} of ${data.length} bytes written`, {
          command: Command.REGION_WRITE, commandName: "REGION_WRITE", region, offset: start, count: data.length, transferred,
        });
      }
    }
    return { posted: false, viaMapping: false };
  }

  /** Little-endian value of 1, 2, 4 or 8 bytes. */
  async readValue(region: number, offset: bigint | number, width: 1 | 2 | 4 | 8, options: RequestOptions = {}): Promise<bigint> {
    checkWidth(width);
    const bytes = await this.readRegion(region, offset, width, options);
    let v = 0n;
    for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
    return v;
  }

  /** Writes a little-endian value of 1, 2, 4 or 8 bytes (see writeRegion() and post()). */
  writeValue(region: number, offset: bigint | number, width: 1 | 2 | 4 | 8, value: bigint | number, options: WriteOptions = {}): Promise<WriteResult> {
    if (options.posted !== false && typeof offset === "number") {
      try {
        if (this.postFast(region, offset, width, value)) return POSTED_DONE;
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.writeValueChecked(region, offset, width, value, options);
  }

  private async writeValueChecked(region: number, offset: bigint | number, width: 1 | 2 | 4 | 8, value: bigint | number, options: WriteOptions): Promise<WriteResult> {
    checkWidth(width);
    return this.writeRegion(region, offset, valueBytes(width, value), options);
  }

  /**
   * Synchronous store of a little-endian `width`-byte value: the path for a VMM's vCPU loop or a
   * test harness issuing many stores. Returns true when the store needs nothing more from the
   * caller: it went into a mapped area, or it was posted (NO_REPLY, no promise, no wait). Posts
   * are gathered and leave in one socket write before the event loop next waits (or every
   * 64 KiB), and any later request goes out behind them, so a read issued after posts sees
   * their effect.
   * Returns false, sending nothing, when the PCI ordering policy says this write must wait for
   * its reply (I/O BAR, config space, ROM, a region of unknown space, a region mapped under the
   * strict policy, posting disabled): issue it with writeValue() and await it.
   * A posted write that fails on the server is reported on the next request that wants a
   * reply: that request fails with ERR_REMOTE carrying the errno (it is not performed).
   * Throws ERR_ARGUMENT (width, value, region, an access outside the region), ERR_CLOSED,
   * ERR_REGION_TRUNCATED (a mapped area whose file the server shrank).
   */
  post(region: number, offset: bigint | number, width: 1 | 2 | 4 | 8, value: bigint | number): boolean {
    if (this.closedError) throw this.closedError;
    if (typeof offset === "number" && this.postFast(region, offset, width, value)) return true;
    checkWidth(width);
    const bytes = valueBytes(width, value);
    const start = this.checkAccess(region, offset, width, "write");
    const mapped = this.mappedView(region, start, width);
    if (mapped) {
      mapped.set(bytes);
      this.checkMappedArea(region, start, width);
      return true;
    }
    if (!this.postedWrites.shouldPost(region)) return false;
    this.postMessage(region, lo32(start), hi32(start), bytes);
    return true;
  }

  /**
   * Posts the store when everything is plain — numeric offset and value in range, nothing
   * mapped, the policy allows it, the access fits the region — and returns true; false (nothing
   * sent) sends the caller to the checked path, which explains any refusal.
   */
  private postFast(region: number, offset: number, width: number, value: bigint | number): boolean {
    let lo: number;
    let hi: number;
    if (typeof value === "number") {
      if (!(value >= 0 && value < VALUE_LIMIT[width]) || !Number.isInteger(value)) return false;
      hi = value < TWO_32 ? 0 : Math.floor(value / TWO_32);
      lo = value - hi * TWO_32;
    } else {
      if (typeof value !== "bigint" || !(value >= 0n && value < BIGINT_VALUE_LIMIT[width])) return false;
      lo = Number(value & 0xffff_ffffn);
      hi = Number(value >> 32n);
    }
    if (this.mappings.size !== 0 || !this.postedWrites.canPost(region) || !this.fitsRegion(region, offset, width, "write")) return false;
    const offsetHi = offset < TWO_32 ? 0 : Math.floor(offset / TWO_32);
    this.postStore(region, offset - offsetHi * TWO_32, offsetHi, width, lo, hi);
    return true;
  }

  /**
   * Resolves once the server has processed every request sent before it, posted writes
   * included: the server handles requests in order, so any replied request orders them.
   */
  async flush(options: RequestOptions = {}): Promise<void> {
    await this.getDeviceInfo(options);
  }

  // -------------------------------------------------------------------------------------------
  // Region mapping

  /**
   * Maps a region the server offered an fd for (its sparse areas, or the whole region) into the
   * client. From now on accesses inside a mapped area bypass the socket, and — under the strict
   * policy — memory-BAR writes are no longer posted.
   */
  async mapRegion(index: number): Promise<MappedArea[]> {
    const existing = this.mappings.get(index);
    if (existing) return existing.areas;
    const info = this.regions.get(index) ?? (await this.getRegionInfo(index));
    if (!info.mmappable || info.fd === undefined) {
      throw new VfioUserClientError("ERR_MAPPING", `region ${index} is not mappable (the server offered no fd)`, { region: index });
    }
    if (!this.regionMapper) throw new VfioUserClientError("ERR_MAPPING", "no region mapper is installed on this client", { region: index });
    const areas: MappedArea[] = [];
    const unmaps: (() => void)[] = [];
    const wanted = info.sparseAreas ?? [{ offset: 0n, size: info.size }];
    try {
      for (const area of wanted) {
        if (area.size === 0n) continue;
        const m = this.regionMapper.map(info.fd, info.offset + area.offset, area.size, info.writable);
        unmaps.push(m.unmap);
        areas.push({
          offset: area.offset,
          size: area.size,
          view: m.view,
          get truncated() {
            return m.truncated === true;
          },
        });
      }
    } catch (err) {
      for (const u of unmaps) u();
      throw new VfioUserClientError("ERR_MAPPING", `mapping region ${index} failed: ${(err as Error).message}`, { region: index, cause: err });
    }
    this.mappings.set(index, { areas, unmaps });
    this.postedWrites.noteMapped(index);
    return areas;
  }

  unmapRegion(index: number): void {
    const m = this.mappings.get(index);
    if (!m) return;
    this.mappings.delete(index);
    for (const u of m.unmaps) u();
    this.postedWrites.noteUnmapped(index);
  }

  mappedAreas(index: number): readonly MappedArea[] {
    return this.mappings.get(index)?.areas ?? [];
  }

  // -------------------------------------------------------------------------------------------
  // DMA

  /**
   * Makes [iova, iova + size) of client memory available to the server. With `fd` the server
   * mmaps it (fd passed with SCM_RIGHTS, borrowed: the caller keeps and closes it); without, the
   * server reaches it through DMA_READ / DMA_WRITE, which the client answers from `memory`.
   */
  async dmaMap(
    mapping: { iova: bigint | number; size: bigint | number; memory: Uint8Array; readable?: boolean; writable?: boolean; fd?: number; fileOffset?: bigint | number },
    options: RequestOptions = {},
  ): Promise<void> {
    const m: DmaMapping = {
      iova: BigInt(mapping.iova),
      size: BigInt(mapping.size),
      memory: mapping.memory,
      readable: mapping.readable ?? true,
      writable: mapping.writable ?? true,
      fd: mapping.fd,
      fileOffset: BigInt(mapping.fileOffset ?? 0),
    };
    const problem = this.dma.checkAdd(m);
    if (problem) throw argumentError(problem);
    if (m.fd !== undefined && this.maxSendFds < 1) throw argumentError("the server receives no fds (max_msg_fds 0): map this memory without an fd");
    // Spec, VERSION "pgsizes": the page sizes the server supports for DMA maps; a range must be
    // built of the smallest one.
    const pgsizes = this.capabilities?.pgsizes ?? DEFAULT_PGSIZES;
    const page = pgsizes & -pgsizes;
    if (page > 0n && (m.iova % page !== 0n || m.size % page !== 0n)) {
      throw argumentError(`DMA mapping at iova ${hex(m.iova)} of size ${hex(m.size)} is not aligned to the server's ${page}-byte page (pgsizes ${hex(pgsizes)})`);
    }
    const flags = (m.readable ? DmaMapFlag.READ : 0) | (m.writable ? DmaMapFlag.WRITE : 0);
    // Serve DMA to the range as soon as the server may use it (it may start before replying).
    this.dma.add(m);
    try {
      await this.request(
        Command.DMA_MAP,
        `DMA_MAP iova ${hex(m.iova)} size ${hex(m.size)}`,
        (w, id) => writeDmaMapRequest(w, id, { flags, offset: m.fd === undefined ? 0n : m.fileOffset, address: m.iova, size: m.size }),
        expectEmpty(Command.DMA_MAP),
        options,
        false,
        m.fd === undefined ? undefined : [m.fd],
      );
    } catch (err) {
      this.dma.remove(m.iova, m.size);
      throw err;
    }
  }

  /** Withdraws a mapping made by dmaMap() (exact range). The client serves it until the reply. */
  async dmaUnmap(iova: bigint | number, size: bigint | number, options: RequestOptions = {}): Promise<void> {
    const base = BigInt(iova);
    const length = BigInt(size);
    if (!this.dma.find(base, length)) throw argumentError(`no DMA mapping at iova ${hex(base)} with size ${hex(length)}`);
    await this.request(Command.DMA_UNMAP, `DMA_UNMAP iova ${hex(base)} size ${hex(length)}`, (w, id) => writeDmaUnmapRequest(w, id, { flags: 0, address: base, size: length }), (payload) => {
      // The spec has the server echo the request's entry; accept an empty payload as well.
      if (payload.length !== 0 && payload.length < 24) throw protocolError(Command.DMA_UNMAP, `reply payload is ${payload.length} bytes`);
    }, options);
    this.dma.remove(base, length);
  }

  // -------------------------------------------------------------------------------------------
  // Interrupts

  /**
   * Attaches eventfds (borrowed; the server gets its own copies) to vectors [start, start + n)
   * of an IRQ index for the TRIGGER action. An empty list de-assigns those vectors.
   */
  async setIrqEventfds(index: number, start: number, fds: readonly number[], options: RequestOptions & { count?: number } = {}): Promise<void> {
    const count = options.count ?? fds.length;
    const maxFds = this.maxSendFds;
    if (fds.length > maxFds) throw argumentError(`${fds.length} eventfds exceed the ${maxFds} fds one message may carry (max_msg_fds); attach them in smaller groups`);
    await this.request(
      Command.DEVICE_SET_IRQS,
      `DEVICE_SET_IRQS index ${index} start ${start} count ${count}`,
      (w, id) => writeIrqSetRequest(w, id, { flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, index, start, count }),
      expectEmpty(Command.DEVICE_SET_IRQS),
      options,
      false,
      fds.length > 0 ? fds : undefined,
    );
  }

  /** Disables every interrupt of an IRQ index (count 0 with DATA_NONE). */
  async disableIrqs(index: number, options: RequestOptions = {}): Promise<void> {
    await this.request(
      Command.DEVICE_SET_IRQS,
      `DEVICE_SET_IRQS disable index ${index}`,
      (w, id) => writeIrqSetRequest(w, id, { flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index, start: 0, count: 0 }),
      expectEmpty(Command.DEVICE_SET_IRQS),
      options,
    );
  }

  /** MASK / UNMASK / TRIGGER vectors [start, start + count) without data. */
  async irqAction(index: number, action: "mask" | "unmask" | "trigger", start: number, count: number, options: RequestOptions = {}): Promise<void> {
    const flag = action === "mask" ? IrqSetFlag.ACTION_MASK : action === "unmask" ? IrqSetFlag.ACTION_UNMASK : IrqSetFlag.ACTION_TRIGGER;
    await this.request(
      Command.DEVICE_SET_IRQS,
      `DEVICE_SET_IRQS ${action} index ${index}`,
      (w, id) => writeIrqSetRequest(w, id, { flags: IrqSetFlag.DATA_NONE | flag, index, start, count }),
      expectEmpty(Command.DEVICE_SET_IRQS),
      options,
    );
  }

  /** Emits an 'irq' event (used by the connect layer's eventfd watchers). */
  notifyIrq(event: IrqEvent): void {
    this.emit("irq", event);
  }

  // -------------------------------------------------------------------------------------------
  // Reset and migration

  async reset(options: RequestOptions = {}): Promise<void> {
    await this.request(Command.DEVICE_RESET, "DEVICE_RESET", (w, id) => writeDeviceResetRequest(w, id), expectEmpty(Command.DEVICE_RESET), options);
  }

  /** The MIGRATION feature's flags (MigrationFlag bits); ERR_REMOTE if unsupported. */
  async getMigrationFlags(options: RequestOptions = {}): Promise<bigint> {
    const data = await this.feature(DeviceFeatureFlag.GET | DeviceFeature.MIGRATION, new Uint8Array(0), 8, options);
    if (data.length < 8) throw protocolError(Command.DEVICE_FEATURE, `MIGRATION feature data is ${data.length} bytes, needs 8`);
    return new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true);
  }

  async getMigrationState(options: RequestOptions = {}): Promise<MigrationStateValue> {
    const data = await this.feature(DeviceFeatureFlag.GET | DeviceFeature.MIG_DEVICE_STATE, new Uint8Array(0), 8, options);
    if (data.length < 4) throw protocolError(Command.DEVICE_FEATURE, `MIG_DEVICE_STATE data is ${data.length} bytes, needs at least 4`);
    return new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true) as MigrationStateValue;
  }

  /** One arc of the migration state machine (the server completes it before replying). */
  async setMigrationState(state: MigrationStateValue, options: RequestOptions = {}): Promise<void> {
    // data_fd is unused by vfio-user (migration data travels in MIG_DATA_READ/WRITE).
    await this.feature(DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(state, -1), 8, options);
  }

  /** Up to `size` bytes of migration data; fewer means the stream is finished. */
  async migDataRead(size: number, options: RequestOptions = {}): Promise<Uint8Array> {
    checkU32(size, "size");
    return this.request(Command.MIG_DATA_READ, `MIG_DATA_READ ${size} bytes`, (w, id) => writeMigDataReadRequest(w, id, size), (payload) => {
      const r = decodeMigDataReadReply(payload);
      if (!r.ok) throw protocolError(Command.MIG_DATA_READ, r.problem);
      if (r.value.length > size) {
        throw new VfioUserClientError("ERR_REPLY_TOO_BIG", `MIG_DATA_READ reply carries ${r.value.length} bytes, ${size} were asked`, { command: Command.MIG_DATA_READ, errno: Errno.E2BIG });
      }
      return r.value.slice();
    }, options);
  }

  async migDataWrite(data: Uint8Array, options: RequestOptions = {}): Promise<void> {
    await this.request(Command.MIG_DATA_WRITE, `MIG_DATA_WRITE ${data.length} bytes`, (w, id) => writeMigDataWriteRequest(w, id, data), () => undefined, options);
  }

  /**
   * Saves the device state: RUNNING -> STOP -> STOP_COPY, reads the stream to its end, then
   * STOP (and RUNNING again when `resume`). The device is left stopped by default, as a
   * migration source is.
   */
  async saveDeviceState(options: RequestOptions & { resume?: boolean } = {}): Promise<Uint8Array> {
    const state = await this.getMigrationState(options);
    if (state !== MigrationState.STOP) await this.setMigrationState(MigrationState.STOP, options);
    await this.setMigrationState(MigrationState.STOP_COPY, options);
    const chunks: Uint8Array[] = [];
    const chunkSize = Math.min(MIG_CHUNK, this.maxReadTransfer);
    for (;;) {
      const part = await this.migDataRead(chunkSize, options);
      chunks.push(part);
      if (part.length < chunkSize) break;
    }
    await this.setMigrationState(MigrationState.STOP, options);
    if (options.resume) await this.setMigrationState(MigrationState.RUNNING, options);
    return concatBytes(chunks);
  }

  /** Loads a state saved by saveDeviceState(): STOP -> RESUMING, write, STOP -> RUNNING. */
  async loadDeviceState(data: Uint8Array, options: RequestOptions & { run?: boolean } = {}): Promise<void> {
    const state = await this.getMigrationState(options);
    if (state !== MigrationState.STOP) await this.setMigrationState(MigrationState.STOP, options);
    await this.setMigrationState(MigrationState.RESUMING, options);
    const chunkSize = Math.min(MIG_CHUNK, this.maxTransfer);
    for (let done = 0; done < data.length; done += chunkSize) {
      await this.migDataWrite(data.subarray(done, Math.min(done + chunkSize, data.length)), options);
    }
    await this.setMigrationState(MigrationState.STOP, options);
    if (options.run !== false) await this.setMigrationState(MigrationState.RUNNING, options);
  }

  private async feature(flags: number, data: Uint8Array, replyData: number, options: RequestOptions): Promise<Uint8Array> {
    return this.request(Command.DEVICE_FEATURE, `DEVICE_FEATURE flags ${hex(flags)}`, (w, id) => writeDeviceFeatureRequest(w, id, flags, data, 8 + replyData), (payload) => {
      const r = decodeFeatureReply(payload);
      if (!r.ok) throw protocolError(Command.DEVICE_FEATURE, r.problem);
      if ((r.value.flags & DeviceFeatureFlag.INDEX_MASK) !== (flags & DeviceFeatureFlag.INDEX_MASK)) {
        throw protocolError(Command.DEVICE_FEATURE, `reply is for feature ${r.value.flags & DeviceFeatureFlag.INDEX_MASK}, asked ${flags & DeviceFeatureFlag.INDEX_MASK}`);
      }
      return r.value.data.slice();
    }, options);
  }

  // -------------------------------------------------------------------------------------------
  // Lifetime

  /** Registers cleanup to run when the client closes (eventfd watchers, etc.). */
  onClose(cleanup: () => void): void {
    if (this.closed) cleanup();
    else this.cleanups.push(cleanup);
  }

  /** Fails every pending request with ERR_CLOSED, releases mappings and fds, closes the socket. */
  close(): void {
    this.flushBatch(); // posts issued before close() go to the channel first (best effort, as any send before a close)
    this.shutdown("the client closed the connection");
  }

  // -------------------------------------------------------------------------------------------
  // Request engine

  private allocateId(): number {
    for (let tries = 0; tries < MSG_ID_SPACE; tries++) {
      const id = this.nextId;
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(id) && (this.zombies.size === 0 || !this.zombies.has(id))) return id;
    }
    throw argumentError(`all ${MSG_ID_SPACE} message ids are in use by requests awaiting replies`);
  }

  /**
   * Sends one request and resolves with `decode(payload, fds)` of its reply. `decode` may throw a
   * VfioUserClientError to fail the request. Reply fds are closed unless `takesFds`.
   */
  private request<T>(
    command: number,
    what: string | (() => string),
    encode: (writer: MessageWriter, msgId: number) => void,
    decode: (payload: Uint8Array, fds: number[]) => T,
    options: RequestOptions,
    takesFds = false,
    sendFds?: readonly number[],
  ): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<T>((resolve, reject) => {
      let msgId: number;
      let bytes: Uint8Array;
      try {
        msgId = this.allocateId();
        bytes = this.encode(encode, msgId);
      } catch (err) {
        reject(err);
        return;
      }
      const timeoutMs = options.timeoutMs ?? this.options.timeoutMs;
      const p: Pending = {
        msgId,
        command,
        get what() {
          return typeof what === "string" ? what : what();
        },
        deadline: timeoutMs > 0 ? performance.now() + timeoutMs : Infinity,
        onReply: (payload, fds) => {
          if (!takesFds) this.closeFds(fds);
          let value: T;
          try {
            value = decode(payload, takesFds ? fds : []);
          } catch (err) {
            reject(err instanceof VfioUserClientError ? withRequest(err, p) : protocolError(command, `${p.what}: ${(err as Error).message}`));
            return;
          }
          resolve(value);
        },
        fail: reject,
      };
      this.pending.set(msgId, p);
      if (p.deadline !== Infinity) this.armSweep(timeoutMs);
      this.enqueue({ bytes, fds: sendFds, pending: p });
    });
  }

  /**
   * Id of a posted (NO_REPLY) message. No reply comes for it, but a server that answers one
   * anyway must not be taken for answering a request in flight: while any request is pending
   * (or timed out), the id skips theirs as allocateId() does.
   */
  private postedMsgId(): number {
    if (this.pending.size !== 0 || this.zombies.size !== 0) return this.allocateId();
    const id = this.nextId;
    this.nextId = (id + 1) & 0xffff;
    return id;
  }

  /** Posts a store of a `width`-byte value (policy and bounds already checked). */
  private postStore(region: number, offsetLo: number, offsetHi: number, width: number, valueLo: number, valueHi: number): void {
    if (this.closedError) throw this.closedError;
    if (this.options.serializeRequests) {
      const bytes = new Uint8Array(8);
      const v = new DataView(bytes.buffer);
      v.setUint32(0, valueLo, true);
      v.setUint32(4, valueHi, true);
      this.postMessage(region, offsetLo, offsetHi, bytes.subarray(0, width));
      return;
    }
    if (!this.batch.fits(REGION_ACCESS_HEAD + width)) this.flushBatch();
    this.batch.postStore(this.postedMsgId(), offsetLo, offsetHi, region, width, valueLo, valueHi);
    this.flushBeforeWaiting();
  }

  /** Posts a REGION_WRITE of `data` (policy and bounds already checked; at most maxTransfer). */
  private postMessage(region: number, offsetLo: number, offsetHi: number, data: Uint8Array): void {
    if (this.closedError) throw this.closedError;
    if (this.options.serializeRequests || REGION_ACCESS_HEAD + data.length > this.batch.capacity) {
      // Queued in order behind awaited replies (serialized), or too big to gather: on its own.
      const msgId = this.postedMsgId();
      this.enqueue({ bytes: this.encode((w, id) => writeRegionWriteRequest(w, id, offsetLo, offsetHi, region, data, true), msgId) });
      return;
    }
    if (!this.batch.fits(REGION_ACCESS_HEAD + data.length)) this.flushBatch();
    this.batch.postBytes(this.postedMsgId(), offsetLo, offsetHi, region, data);
    this.flushBeforeWaiting();
  }

  /**
   * Posts leave when this turn of the event loop ends (setImmediate runs before the loop waits
   * for I/O again), not when the current microtasks end: a caller awaiting each posted write
   * still gets one socket write per batch rather than one per write. Nothing waits on them, and
   * anything that must follow them (a request, a reply, a doorbell, close) flushes them first.
   */
  private flushBeforeWaiting(): void {
    if (this.batchFlushQueued) return;
    this.batchFlushQueued = true;
    setImmediate(this.flushLater);
  }

  /**
   * Sends the gathered posted writes now: before the loop waits, when the batch is full, and
   * before a message that may not join it (one with fds, a doorbell, close). A channel that
   * refuses means the connection is gone: the posts are lost with it, as any still on a dying
   * socket would be, and every request fails with ERR_CLOSED.
   */
  private flushBatch(): void {
    if (this.batch.length === 0) return;
    const bytes = this.batch.take();
    if (this.closedError) return;
    try {
      this.channel.send(bytes);
    } catch (err) {
      this.shutdown(`could not send posted writes: ${(err as Error).message}`, err);
    }
  }

  /**
   * One message from the shared writer. The view is sent at once (the channel copies what the
   * kernel does not take) unless sends are queued, in which case it is copied.
   */
  private encode(write: (writer: MessageWriter, msgId: number) => void, msgId: number): Uint8Array {
    try {
      write(this.writer, msgId);
    } catch (err) {
      this.writer.abandon();
      throw err;
    }
    const bytes = this.writer.take();
    return this.options.serializeRequests ? bytes.slice() : bytes;
  }

  private enqueue(item: QueuedSend): void {
    if (this.options.serializeRequests && (this.awaitingReply > 0 || this.sendQueue.length > 0)) {
      this.sendQueue.push(item);
      return;
    }
    this.transmit(item);
  }

  private transmit(item: QueuedSend): void {
    try {
      if (this.batch.length === 0) this.channel.send(item.bytes, item.fds);
      else if ((item.fds === undefined || item.fds.length === 0) && this.batch.fits(item.bytes.length)) {
        // Behind the posted writes not yet written, in the same socket write.
        this.batch.append(item.bytes);
        this.channel.send(this.batch.take());
      } else {
        // An fd-carrying message must end its sendmsg (parser.ts): posts go first, on their own.
        this.channel.send(this.batch.take());
        this.channel.send(item.bytes, item.fds);
      }
    } catch (err) {
      const e = new VfioUserClientError("ERR_CLOSED", `could not send: ${(err as Error).message}`, { cause: err });
      if (item.pending) {
        this.pending.delete(item.pending.msgId);
        item.pending.fail(withRequest(e, item.pending));
      } else throw e;
      return;
    }
    if (item.pending && this.options.serializeRequests) this.awaitingReply++;
  }

  /** Serialized mode: a reply (or failure) of a sent request lets the queue move on. */
  private released(): void {
    if (!this.options.serializeRequests) return;
    if (this.awaitingReply > 0) this.awaitingReply--;
    while (this.awaitingReply === 0 && this.sendQueue.length > 0 && !this.closedError) {
      this.transmit(this.sendQueue.shift()!);
    }
  }

  private settle(p: Pending): boolean {
    if (this.pending.get(p.msgId) !== p) return false;
    this.pending.delete(p.msgId);
    const queued = this.sendQueue.length === 0 ? -1 : this.sendQueue.findIndex((q) => q.pending === p);
    if (queued >= 0) this.sendQueue.splice(queued, 1);
    else this.released();
    return true;
  }

  private onEvent(ev: ParseEvent): void {
    if (ev.kind === "error") {
      // Framing errors are fatal (see wire/parser.ts). An oversized reply still fails its own
      // request with ERR_REPLY_TOO_BIG before the rest fail with ERR_CLOSED.
      if (ev.error.code === "WIRE_MESSAGE_TOO_LARGE") this.onOversized(ev.msgId!, ev.command!, ev.flags!, ev.error);
      const err = new VfioUserClientError("ERR_PROTOCOL", `the server sent an unframeable message: ${ev.error.message}`, { cause: ev.error });
      this.emit("protocolError", err);
      this.shutdown(`the connection was closed after a framing error: ${ev.error.message}`, err);
      return;
    }
    const type = ev.flags & HeaderFlag.TYPE_MASK;
    if (type === HeaderFlag.TYPE_REPLY) return this.onReply(ev);
    this.closeFds(ev.fds);
    if (type === HeaderFlag.TYPE_COMMAND) return this.serveCommand(ev);
    this.emit("protocolError", new VfioUserClientError("ERR_PROTOCOL", `message with unknown type ${type} (${commandName(ev.command)}, msg_id ${ev.msgId}); dropped`, { msgId: ev.msgId, command: ev.command }));
  }

  private congested(): boolean {
    return (this.channel.writableLength ?? 0) > MAX_QUEUED_REPLY_BYTES;
  }

  private setAside(ev: ParseEvent): void {
    this.backlog.push(ev.kind === "frame" ? { ...ev, body: ev.body.slice() } : ev);
    this.channel.pause?.();
  }

  /** Handles set-aside messages once the server has read our replies; then reads again. */
  private drainBacklog(): void {
    while (this.backlog.length > 0 && !this.closedError && !this.congested()) this.onEvent(this.backlog.shift()!);
    if (this.backlog.length === 0 && !this.closedError) this.channel.resume?.();
  }

  /** The pending request a reply answers, settled; undefined (reported) when there is none. */
  private claimReply(msgId: number, command: number): Pending | undefined {
    const p = this.pending.get(msgId);
    if (!p) {
      if (this.zombies.delete(msgId)) return undefined; // late reply to a timed-out request
      this.emit("protocolError", new VfioUserClientError("ERR_PROTOCOL", `reply with msg_id ${msgId} (${commandName(command)}) matches no request in flight; dropped`, { msgId, command }));
      return undefined;
    }
    this.settle(p);
    return p;
  }

  private onOversized(msgId: number, command: number, flags: number, error: WireError): void {
    const type = flags & HeaderFlag.TYPE_MASK;
    if (type === HeaderFlag.TYPE_COMMAND) return this.replyError({ msgId, command, flags }, Errno.EMSGSIZE);
    if (type !== HeaderFlag.TYPE_REPLY) return;
    // The reply's body never arrives here: it is dropped with the rest of the stream.
    const p = this.claimReply(msgId, command);
    if (!p) return;
    p.fail(withRequest(new VfioUserClientError("ERR_REPLY_TOO_BIG", `reply of ${error.actual} bytes exceeds the client's limit of ${this.options.maxMessageSize} bytes; the connection is closed`, { errno: Errno.E2BIG, cause: error }), p));
  }

  private onReply(f: Frame): void {
    const p = this.claimReply(f.msgId, f.command);
    if (!p) return this.closeFds(f.fds);
    if (f.command !== p.command) {
      this.closeFds(f.fds);
      p.fail(withRequest(protocolError(p.command, `reply carries command ${commandName(f.command)}, the request was ${commandName(p.command)}`), p));
      return;
    }
    if ((f.flags & HeaderFlag.ERROR) !== 0) {
      this.closeFds(f.fds);
      p.fail(withRequest(new VfioUserClientError("ERR_REMOTE", `server failed ${p.what}: ${describeErrno(f.error)}`, { errno: f.error }), p));
      return;
    }
    p.onReply(f.body, f.fds);
  }

  /** The server's own commands: DMA_READ / DMA_WRITE against dmaMap()'d memory. */
  private serveCommand(h: Frame): void {
    const payload = h.body;
    if (h.command === Command.DMA_READ || h.command === Command.DMA_WRITE) {
      const write = h.command === Command.DMA_WRITE;
      const r = decodeDmaAccessRequest(payload, write);
      if (!r.ok) return this.replyError(h, r.errno);
      const { address, count, data } = r.value;
      if (count > this.options.maxDataXferSize) return this.replyError(h, Errno.E2BIG);
      if (write) {
        const w = this.dma.write(address, data);
        if (!w.ok) return this.replyError(h, w.errno);
        if ((h.flags & HeaderFlag.NO_REPLY) === 0) this.sendReply((w) => writeDmaWriteReply(w, h.msgId, address, count));
      } else {
        const rd = this.dma.read(address, count);
        if (!rd.ok) return this.replyError(h, rd.errno);
        if ((h.flags & HeaderFlag.NO_REPLY) === 0) this.sendReply((w) => writeDmaReadReply(w, h.msgId, address, rd.value));
      }
      return;
    }
    this.replyError(h, Errno.ENOSYS);
  }

  private replyError(h: { msgId: number; command: number; flags: number }, errno: number): void {
    if ((h.flags & HeaderFlag.NO_REPLY) !== 0) return;
    this.sendReply((w) => writeErrorReply(w, h.msgId, h.command, errno));
  }

  /** Replies bypass the serialized queue: the server may be waiting on them to answer us. */
  private sendReply(write: (writer: MessageWriter) => void): void {
    if (this.closedError) return;
    try {
      write(this.writer);
      const bytes = this.writer.take();
      if (this.batch.length !== 0 && this.batch.fits(bytes.length)) {
        this.batch.append(bytes);
        this.channel.send(this.batch.take());
      } else {
        if (this.batch.length !== 0) this.channel.send(this.batch.take());
        this.channel.send(bytes);
      }
    } catch {
      // A closed channel: the close path fails everything pending. Leave the writer clean.
      this.writer.clear();
    }
  }

  private armSweep(timeoutMs: number): void {
    const period = Math.max(2, Math.min(250, Math.floor(timeoutMs / 4)));
    if (this.sweepTimer !== null && period >= this.sweepPeriod) return;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepPeriod = period;
    this.sweepTimer = setInterval(() => this.sweep(), period);
    this.sweepTimer.unref?.();
  }
  private sweepPeriod = Infinity;

  private sweep(): void {
    const now = performance.now();
    let live = 0;
    for (const p of this.pending.values(this.nextId)) {
      if (p.deadline === Infinity) continue;
      if (p.deadline > now) {
        live++;
        continue;
      }
      const wasQueued = this.sendQueue.some((q) => q.pending === p);
      this.settle(p);
      if (!wasQueued) this.zombies.add(p.msgId);
      p.fail(withRequest(new VfioUserClientError("ERR_TIMEOUT", `no reply to ${p.what} within the timeout; the server may be hung`), p));
    }
    if (live === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
      this.sweepPeriod = Infinity;
    }
  }

  private shutdown(reason: string, cause?: unknown): void {
    if (this.closedError) return;
    const err = new VfioUserClientError("ERR_CLOSED", reason, { cause });
    this.closedError = err;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const pending = this.pending.values(this.nextId);
    this.pending.clear();
    this.sendQueue.length = 0;
    this.batch.take(); // posts not yet written go down with the connection
    this.zombies.clear();
    for (const p of pending) p.fail(withRequest(new VfioUserClientError("ERR_CLOSED", `${p.what} failed: ${reason}`, { cause }), p));
    for (const index of [...this.mappings.keys()]) this.unmapRegion(index);
    for (const info of this.regions.values()) if (info.fd !== undefined) this.channel.closeFd(info.fd);
    this.regions.clear();
    for (const set of [...this.ioFdSets]) set.release();
    this.dma.clear();
    for (const ev of this.backlog) if (ev.kind === "frame") this.closeFds(ev.fds);
    this.backlog = [];
    this.parser.dispose();
    for (const c of this.cleanups.splice(0)) {
      try {
        c();
      } catch {
        // cleanup must not stop the others
      }
    }
    try {
      this.channel.close();
    } catch {
      // already closed
    }
    this.emit("close", cause === undefined ? undefined : err);
  }

  private closeFds(fds: readonly number[]): void {
    for (const fd of fds) this.channel.closeFd(fd);
  }

  /** True when a numeric access is certainly valid (else checkAccess() says why not). */
  private fitsRegion(region: number, offset: number, size: number, kind: "read" | "write"): boolean {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + size)) return false;
    const info = this.regions.get(region);
    if (!info) return Number.isInteger(region) && region >= 0 && region <= 0xffffffff;
    return offset + size <= Number(info.size) && (kind === "read" ? info.readable : info.writable);
  }

  private checkAccess(region: number, offset: bigint | number, size: number, kind: "read" | "write"): bigint {
    checkU32(region, "region index");
    if (!Number.isSafeInteger(size) || size < 0) throw argumentError(`size must be a non-negative integer, got ${size}`);
    // A number offset must be exact: above 2^53 it may already have lost bits (pass a bigint).
    if (typeof offset === "number" && !Number.isSafeInteger(offset)) throw argumentError(`offset ${offset} is not an exact integer; pass offsets at or above 2^53 as bigint`);
    const start = BigInt(offset);
    if (start < 0n || start + BigInt(size) > 1n << 64n) throw argumentError(`offset ${offset} + size ${size} is outside the 64-bit range`);
    const info = this.regions.get(region);
    if (info) {
      if (start + BigInt(size) > info.size) {
        throw new VfioUserClientError("ERR_ARGUMENT", `${kind} of ${byteCount(size)} at ${hex(start)} runs past the end of region ${region} (size ${hex(info.size)})`, { region, offset: start, count: size });
      }
      if (kind === "read" ? !info.readable : !info.writable) {
        throw new VfioUserClientError("ERR_ARGUMENT", `region ${region} is not ${kind === "read" ? "readable" : "writable"}`, { region, offset: start, count: size });
      }
    }
    return start;
  }

  /** The mapped bytes of [start, start + size) when one area holds them all; remembers the
   *  area for checkMappedArea(). */
  private mappedView(region: number, start: bigint, size: number): Uint8Array | undefined {
    const m = this.mappings.get(region);
    if (!m || size === 0) return undefined;
    for (const a of m.areas) {
      if (start >= a.offset && start + BigInt(size) <= a.offset + a.size) {
        const from = Number(start - a.offset);
        this.lastMappedArea = a;
        return a.view.subarray(from, from + size);
      }
    }
    return undefined;
  }

  /**
   * After an access through the area mappedView() returned: a server that shrank the region's
   * file under the mapping made it read zeros / drop writes, so the access failed. The region
   * is unmapped (later accesses go through the socket) and the access throws
   * ERR_REGION_TRUNCATED (errno EFAULT).
   */
  private checkMappedArea(region: number, start: bigint, size: number): void {
    const area = this.lastMappedArea;
    this.lastMappedArea = null;
    if (area === null || !area.truncated) return;
    this.unmapRegion(region);
    throw new VfioUserClientError(
      "ERR_REGION_TRUNCATED",
      `the server shrank the file behind mapped region ${region} (access at ${hex(start)}, ${size} bytes): the access failed and the region was unmapped`,
      { region, offset: start, count: size, errno: Errno.EFAULT },
    );
  }
}

/**
 * Requests awaiting replies, by msg_id: one slot per id of the 16-bit space. A Map costs a hash
 * and, as ids cycle, table churn on every request; a slot is one array access.
 */
class PendingTable {
  private readonly slots: (Pending | undefined)[] = new Array(MSG_ID_SPACE).fill(undefined);
  size = 0;

  get(msgId: number): Pending | undefined {
    return this.slots[msgId];
  }

  has(msgId: number): boolean {
    return this.slots[msgId] !== undefined;
  }

  set(msgId: number, p: Pending): void {
    if (this.slots[msgId] === undefined) this.size++;
    this.slots[msgId] = p;
  }

  delete(msgId: number): void {
    if (this.slots[msgId] === undefined) return;
    this.slots[msgId] = undefined;
    this.size--;
  }

  /**
   * The pending requests, oldest first (ids are handed out in order up to `nextId`). Walks back
   * from the newest id and stops at the last one found: a few slots when few are in flight.
   */
  values(nextId: number): Pending[] {
    const out: Pending[] = [];
    for (let i = 1; i <= MSG_ID_SPACE && out.length < this.size; i++) {
      const p = this.slots[(nextId - i) & (MSG_ID_SPACE - 1)];
      if (p !== undefined) out.push(p);
    }
    return out.reverse();
  }

  clear(): void {
    this.slots.fill(undefined);
    this.size = 0;
  }
}

/** BAR index -> address space, from the six BAR registers at config offset 0x10. */
export function decodeBarSpaces(bars: Uint8Array): Map<number, RegionSpace> {
  const out = new Map<number, RegionSpace>();
  const v = new DataView(bars.buffer, bars.byteOffset, bars.byteLength);
  for (let i = 0; i < 6 && (i + 1) * 4 <= bars.length; i++) {
    const bar = v.getUint32(i * 4, true);
    if (bar & 1) {
      out.set(i, "io");
      continue;
    }
    out.set(i, "memory");
    // A 64-bit memory BAR's upper dword is part of the same BAR.
    if (((bar >>> 1) & 3) === 2 && i < 5) out.set(++i, "memory");
  }
  return out;
}

function unwrap<T>(r: Decoded<T>, command: number): T {
  if (!r.ok) throw protocolError(command, r.problem);
  return r.value;
}

function expectEmpty(command: number): (payload: Uint8Array) => void {
  return (payload) => {
    // Servers differ on echoing request fields in otherwise empty replies; only a payload that
    // could not be an echo is wrong.
    if (payload.length > 4096) throw protocolError(command, `reply carries ${payload.length} unexpected bytes`);
  };
}

function protocolError(command: number, problem: string, region?: number, offset?: bigint, count?: number): VfioUserClientError {
  return new VfioUserClientError("ERR_PROTOCOL", `malformed ${commandName(command)} reply: ${problem}`, { command, commandName: commandName(command), errno: Errno.EPROTO, region, offset, count });
}

function argumentError(message: string): VfioUserClientError {
  return new VfioUserClientError("ERR_ARGUMENT", message);
}

/** Attaches the request's identity to an error raised for it. */
function withRequest(err: VfioUserClientError, p: Pending): VfioUserClientError {
  if (err.msgId !== undefined) return err;
  return new VfioUserClientError(err.code as VfioUserClientErrorCode, err.message, {
    command: p.command,
    commandName: commandName(p.command),
    msgId: p.msgId,
    errno: err.errno,
    region: err.region,
    offset: err.offset,
    count: err.count,
    transferred: err.transferred,
    data: err.data,
    cause: err.cause,
  });
}

function checkU32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw argumentError(`${what} must be a 32-bit unsigned integer, got ${value}`);
}

function checkWidth(width: number): void {
  if (width !== 1 && width !== 2 && width !== 4 && width !== 8) throw argumentError(`access width must be 1, 2, 4 or 8 bytes, got ${width}`);
}



function lo32(v: bigint): number {
  return Number(v & 0xffff_ffffn);
}

function hi32(v: bigint): number {
  return Number(v >> 32n);
}

/** Little-endian bytes of a `width`-byte value; ERR_ARGUMENT when it is not an integer that fits. */
function valueBytes(width: number, value: bigint | number): Uint8Array {
  if (typeof value === "number" ? !Number.isInteger(value) : typeof value !== "bigint") throw argumentError(`value ${value} is not an integer`);
  let v = BigInt(value);
  if (v < 0n || v >= 1n << BigInt(width * 8)) throw argumentError(`value ${value} does not fit in ${width} bytes`);
  const bytes = new Uint8Array(width);
  for (let i = 0; i < width; i++, v >>= 8n) bytes[i] = Number(v & 0xffn);
  return bytes;
}

function shortRead(region: number, start: bigint, size: number, transferred: number, into: Uint8Array): VfioUserClientError {
  return new VfioUserClientError("ERR_SHORT_TRANSFER", `short read: region ${region} offset ${hex(start)}: ${transferred} of ${size} bytes read`, {
    command: Command.REGION_READ, commandName: "REGION_READ", region, offset: start, count: size, transferred, data: into.slice(0, transferred),
  });
}

/**
 * A REGION_READ in flight. Its reply is checked (the same checks as decodeRegionReadReply, which
 * words the error when one fails) and its data copied straight into `into` at `at`: the one copy
 * from the receive buffer, no decoded object, no closures.
 */
class RegionReadPending implements Pending {
  readonly command = Command.REGION_READ;
  constructor(
    readonly msgId: number,
    readonly deadline: number,
    private readonly region: number,
    private readonly offsetLo: number,
    private readonly offsetHi: number,
    private readonly into: Uint8Array,
    private readonly at: number,
    private readonly count: number,
    /** A whole read (resolves `into`; a short reply is ERR_SHORT_TRANSFER) or one chunk of several (resolves the count). */
    private readonly whole: boolean,
    private readonly resolve: (value: never) => void,
    private readonly reject: (error: unknown) => void,
    private readonly closeFds: (fds: readonly number[]) => void,
  ) {}

  get what(): string {
    return `REGION_READ region ${this.region} offset ${hex(this.offset)} (${byteCount(this.count)})`;
  }

  private get offset(): bigint {
    return joinU64(this.offsetLo, this.offsetHi);
  }

  fail(error: VfioUserClientError): void {
    this.reject(error);
  }

  onReply(payload: Uint8Array, fds: number[]): void {
    if (fds.length !== 0) this.closeFds(fds);
    const n = payload.length - REGION_ACCESS_SIZE;
    if (n < 0 || readU32(payload, 12) !== n) {
      const wire = decodeRegionReadReply(payload);
      return this.failWith(protocolError(Command.REGION_READ, wire instanceof WireError ? wire.message : `reply of ${payload.length} bytes`, this.region, this.offset, this.count));
    }
    if (readU32(payload, 8) !== this.region || readU32(payload, 0) !== this.offsetLo || readU32(payload, 4) !== this.offsetHi) {
      const asked = `asked region ${this.region} offset ${hex(this.offset)}`;
      return this.failWith(protocolError(Command.REGION_READ, `reply is for region ${readU32(payload, 8)} offset ${hex(joinU64(readU32(payload, 0), readU32(payload, 4)))}, ${asked}`, this.region, this.offset, this.count));
    }
    if (n > this.count) {
      return this.failWith(new VfioUserClientError("ERR_REPLY_TOO_BIG", `REGION_READ reply carries ${n} bytes, ${this.count} were asked (region ${this.region} offset ${hex(this.offset)})`, {
        command: Command.REGION_READ, commandName: "REGION_READ", errno: Errno.E2BIG, region: this.region, offset: this.offset, count: this.count,
      }));
    }
    const into = this.into;
    if (n <= 16) for (let i = 0, at = this.at; i < n; i++) into[at + i] = payload[REGION_ACCESS_SIZE + i];
    else into.set(payload.subarray(REGION_ACCESS_SIZE, REGION_ACCESS_SIZE + n), this.at);
    if (!this.whole) return this.resolve(n as never);
    if (n < this.count) return this.reject(shortRead(this.region, this.offset, this.count, n, into));
    this.resolve(into as never);
  }

  private failWith(err: VfioUserClientError): void {
    this.reject(withRequest(err, this));
  }
}
