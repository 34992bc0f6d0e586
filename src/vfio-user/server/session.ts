// One client connection of the vfio-user server: framing, validation, dispatch to the device,
// replies, and the server's own DMA_READ / DMA_WRITE requests toward the client.
//
// Flow per received chunk: MessageParser yields every complete message; each request is
// validated, then handled, strictly in order, and its reply appended to one MessageWriter; when
// the chunk is done the replies go out in one send (a posted-write storm is one batch of device
// writes and no send at all). Every failure ends in `fail()`, which answers with an error reply
// carrying a real errno, or, for a posted (NO_REPLY) request, remembers the failure and answers
// the next request that wants a reply with it (see `postedFailure`).
import type { StreamConnection, CloseReason } from "../../transport/connection.js";
import { closeFdQuietly } from "../../transport/fd.js";
import type { PciFunction, PciIoEventFd } from "../../core/pci/api.js";
import { PciError } from "../../core/pci/errors.js";
import type { DmaContext } from "../../core/dma/context.js";
import { createHostDmaContext, hostEventFds } from "../../host/index.js";
import { DmaError } from "../../core/dma/errors.js";
import { DMA_PERM_READ, DMA_PERM_WRITE, type DmaMessageHook, type DmaPerm, type DmaTruncatedRegion } from "../../core/dma/api.js";
import {
  Command,
  HeaderFlag,
  Errno,
  PciRegion,
  PciIrq,
  DeviceInfoFlag,
  RegionInfoFlag,
  RegionCapId,
  DmaMapFlag,
  DmaUnmapFlag,
  IoFdType,
  IoEventFdFlag,
  DeviceFeature,
  DeviceFeatureFlag,
  MigrationFlag,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_MAX_BITMAP_SIZE,
  DEFAULT_MAX_MSG_FDS,
  DMA_UNMAP_SIZE,
  DEVICE_FEATURE_SIZE,
  MIG_DATA_SIZE,
  BITMAP_HEADER_SIZE,
  REGION_INFO_SIZE,
  REGION_IO_FDS_SIZE,
  DEVICE_INFO_SIZE,
  IRQ_INFO_SIZE,
  IRQ_SET_SIZE,
  REGION_ACCESS_SIZE,
  commandName,
  errnoName,
} from "../wire/constants.js";
import { WireError } from "../wire/errors.js";
import { MessageParser, isReply, isCommand, wantsReply, hasError, type Frame, type ParseEvent } from "../wire/parser.js";
import { MessageWriter, concatBytes } from "../wire/writer.js";
import { decodeVersion, type Capabilities } from "../wire/version.js";
import {
  decodeDmaMap,
  decodeDmaUnmap,
  decodeDeviceInfo,
  decodeRegionInfoRequest,
  decodeRegionIoFdsRequest,
  decodeIrqInfo,
  decodeIrqSet,
  decodeRegionWriteMulti,
  decodeDeviceFeature,
  decodeMigDeviceState,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  decodeDmaReadReply,
  decodeDmaWriteReply,
  writeErrorReply,
  writeEmptyReply,
  writeVersionReply,
  writeDmaUnmapReply,
  writeDeviceInfoReply,
  writeRegionInfoReply,
  writeRegionIoFdsReply,
  regionIoFdsReplySize,
  writeIrqInfoReply,
  writeRegionWriteReply,
  writeRegionReadReplyInPlace,
  readRegionAccessHead,
  newRegionAccessHead,
  writeRegionWriteMultiReply,
  writeDeviceFeatureReply,
  writeMigDataReadReply,
  writeDmaReadRequest,
  writeDmaWriteRequest,
  encodeMigrationFeature,
  encodeMigDeviceState,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  regionInfoReplySize,
  type RegionCap,
  type SubRegionIoFd,
  type DmaAccess,
} from "../wire/messages.js";
import { maxMessageSizeFor } from "../wire/index.js";
import { VfioUserServerError, badRequest } from "./errors.js";
import { IrqTable } from "./irqs.js";
import { DirtyLog, trackDirtyPages, isPowerOfTwoBig } from "./dirty.js";
import { MigrationFsm } from "./migration.js";
import { mmapAreas } from "./regions.js";

const U64_END = 1n << 64n;
/** Region offsets at or above 2^53 are past every region (BARs are at most 2^52 bytes). */
const SAFE_HI_LIMIT = 0x20_0000;
/** Smallest DMA page the server maps (the only one it advertises in pgsizes). */
const DMA_PAGE = 4096n;
/**
 * Backpressure: while more than this many reply bytes wait for a client that does not read them,
 * further requests are set aside (copied, in order) and reading stops; they are handled when the
 * queue drains. A client that pipelines requests without reading cannot grow our memory beyond
 * this plus one receive buffer of requests.
 */
const MAX_QUEUED_REPLY_BYTES = 16 * 1024 * 1024;
/**
 * Most DMA_READ/DMA_WRITE requests in flight toward one client. A client may announce a tiny
 * max_data_xfer_size, which splits one device DMA into a request per few bytes; past this a DMA
 * fails at once (EIO to the device) instead of flooding the client or running out of the 65 536
 * message ids.
 */
export const MAX_PENDING_DMA_REQUESTS = 4096;
/** Replies are flushed mid-chunk once this many bytes accumulate. */
const FLUSH_THRESHOLD = 1024 * 1024;

/** What the server gives every session. */
export interface SessionConfig {
  device: PciFunction;
  /** Largest count the server accepts in REGION_READ/WRITE and MIG_DATA_*, and advertises. */
  maxDataXferSize: number;
  /** Most fds the server accepts in one message (advertised as max_msg_fds). */
  maxMsgFds: number;
  /** Advertised max_dma_maps. */
  maxDmaMaps: number;
  /** Time a DMA_READ/DMA_WRITE request may wait for the client's reply. */
  dmaRequestTimeoutMs: number;
  log: (line: string) => void;
  /** Builds the DMA context of a session (tests substitute one without mmap). */
  createDma?: (hook: DmaMessageHook) => DmaContext;
}

interface PendingRequest {
  command: number;
  address: bigint;
  count: number;
  resolve: (data: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class Session {
  readonly device: PciFunction;
  private readonly parser: MessageParser;
  /** Replies, flushed once per received chunk. */
  private readonly out = new MessageWriter(64 * 1024);
  /** The server's own requests (DMA_READ/WRITE), sent at once. */
  private readonly requests = new MessageWriter(4096);
  private negotiated = false;
  /** The client's limits for our requests. */
  private clientMaxXfer = DEFAULT_MAX_DATA_XFER_SIZE;
  /** Most fds the client accepts in one message (its max_msg_fds; the spec's default is 1). */
  private clientMaxMsgFds = DEFAULT_MAX_MSG_FDS;
  private migrationPgsize = 4096;
  private maxBitmapBytes = DEFAULT_MAX_BITMAP_SIZE;
  private readonly dma: DmaContext;
  readonly irqs: IrqTable;
  readonly dirty = new DirtyLog();
  readonly migration: MigrationFsm;
  /** First failure of a posted request, not yet reported. */
  private postedFailure: VfioUserServerError | null = null;
  private pending = new Map<number, PendingRequest>();
  private nextRequestId = 0;
  private closed = false;
  /** Set once the session decided to close the connection. */
  private ending = false;
  /** Region sizes by index (0 = absent), fixed for the device's lifetime. */
  private readonly regionSizes: number[] = [];
  private readonly regionWritable: boolean[] = [];
  private readonly scratch = new Uint8Array(8);
  /** The decoded head of the REGION_READ / REGION_WRITE being handled (reused). */
  private readonly access = newRegionAccessHead();
  /** Unmaps of DMA_UNMAP'ed memory, done once the reply has left (see dmaUnmap). */
  private releases: (() => void)[] = [];
  private readonly deferRelease = (release: () => void) => {
    if (this.releases.length === 0) setImmediate(this.runReleases);
    this.releases.push(release);
  };
  private readonly runReleases = () => {
    const list = this.releases;
    this.releases = [];
    for (const release of list) {
      try {
        release();
      } catch (e) {
        this.config.log(`unmapping DMA memory failed: ${(e as Error).message}`);
      }
    }
  };
  /** Requests set aside while the client is not reading its replies (see MAX_QUEUED_REPLY_BYTES). */
  private backlog: ParseEvent[] = [];
  private readonly onEvent = (ev: ParseEvent) => {
    if (this.backlog.length > 0 || this.congested()) this.setAside(ev);
    else this.handleEvent(ev);
  };

  constructor(
    private readonly config: SessionConfig,
    readonly connection: StreamConnection,
    private readonly onClosed: (session: Session, reason: CloseReason) => void,
  ) {
    this.device = config.device;
    // Every message is handled before the parser's callback returns (or copied by setAside):
    // one reused frame, no allocation per request.
    this.parser = new MessageParser({ maxMessageSize: maxMessageSizeFor(config.maxDataXferSize), reuseFrames: true });
    const hook: DmaMessageHook = {
      read: (iova, length) => this.dmaRead(iova, length),
      write: (iova, data) => this.dmaWrite(iova, data),
    };
    // A client that shrinks a DMA_MAP'ed file under us: the device's access fails (EFAULT) and
    // the region is dropped (the DMA layer does both); log which one, and keep serving.
    const onBackingTruncated = (r: DmaTruncatedRegion) =>
      this.config.log(`client shrank the file of DMA region 0x${r.iova.toString(16)}+0x${r.size.toString(16)} under its mapping: device DMA to it failed with EFAULT and the region was removed`);
    this.dma = config.createDma ? config.createDma(hook) : createHostDmaContext({ hook, onBackingTruncated });
    this.irqs = new IrqTable(this.device, config.log);
    this.migration = new MigrationFsm(this.device);
    for (let i = 0; i < PciRegion.COUNT; i++) {
      if (i === PciRegion.CONFIG) {
        this.regionSizes.push(this.device.configSize);
        this.regionWritable.push(true);
      } else if (i <= PciRegion.ROM) {
        const info = this.device.regionInfo(i);
        this.regionSizes.push(info.upperHalfOf !== undefined ? 0 : Number(info.size));
        this.regionWritable.push(info.writable);
      } else {
        this.regionSizes.push(0); // no VGA region
        this.regionWritable.push(false);
      }
    }
    this.device.attachDma(trackDirtyPages(this.dma.dma, this.dirty));
    this.device.attachInterruptSink(this.irqs, "peer");
    // A doorbell rung through an ioeventfd is a posted write: its failure is reported the way a
    // failed NO_REPLY REGION_WRITE is, by the next request that wants a reply.
    this.device.setIoEventFdErrorHandler((e) => {
      const err = deviceFailure(e, e.region, typeof e.offset === "number" ? e.offset : undefined, e.size);
      this.config.log(`ioeventfd write failed with ${errnoName(err.errno)}: ${err.message}`);
      if (!this.postedFailure) this.postedFailure = err;
    });
    connection.on("close", (reason: CloseReason) => this.close(reason));
    connection.on("drain", () => this.drainBacklog());
    connection.onData((chunk, fds) => {
      this.parser.parse(chunk, fds, this.onEvent);
      this.flush();
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Regions the client registered with DMA_MAP (for tests and diagnostics). */
  dmaRegions() {
    return this.dma.table.regions();
  }

  /** Ends the session: closes the connection; state is dropped by the 'close' handler. */
  disconnect(): void {
    if (!this.connection.isClosed) this.connection.destroy();
  }

  // -------------------------------------------------------------------------------------------
  // receive path

  private handleEvent(ev: ParseEvent): void {
    if (this.ending) {
      // The connection is being closed: later messages are dropped (their fds closed).
      if (ev.kind === "frame") for (const fd of ev.fds) closeFdQuietly(fd);
      return;
    }
    if (ev.kind === "error") {
      this.onFramingError(ev.error, ev.fatal, ev.msgId, ev.command, ev.flags);
      return;
    }
    if (isReply(ev.flags)) {
      this.onReply(ev);
      return;
    }
    if (!isCommand(ev.flags)) {
      this.rejectFrame(ev, badRequest(Errno.EINVAL, `message type ${ev.flags & HeaderFlag.TYPE_MASK} is neither command nor reply`));
      return;
    }
    this.handleRequest(ev);
  }

  private onFramingError(error: WireError, fatal: boolean, msgId?: number, command?: number, flags?: number): void {
    if (fatal) {
      this.config.log(`protocol error, closing the connection: ${error.message}`);
      // Answer the request whose header broke framing (e.g. EMSGSIZE), then close: nothing
      // after it can be framed. The reply leaves with this flush's sendmsg, before the close.
      if (msgId !== undefined && command !== undefined && flags !== undefined && isCommand(flags) && wantsReply(flags)) {
        writeErrorReply(this.out, msgId, command, error.errno);
      }
      this.flush();
      this.ending = true;
      this.connection.destroy();
      return;
    }
    const err = new VfioUserServerError("VFIO_USER_BAD_REQUEST", error.message, { errno: error.errno, command, msgId, cause: error });
    if (msgId !== undefined && command !== undefined && flags !== undefined && isCommand(flags)) {
      this.fail(msgId, command, flags, err);
    } else {
      this.config.log(`dropped message: ${error.message}`);
    }
  }

  private handleRequest(f: Frame): void {
    try {
      if (this.postedFailure && wantsReply(f.flags)) {
        // An earlier posted request failed: this request reports it (and is not performed).
        const p = this.postedFailure;
        this.postedFailure = null;
        throw new VfioUserServerError("VFIO_USER_POSTED_FAILURE", `an earlier posted request failed: ${p.message}`, { errno: p.errno, cause: p });
      }
      if (!this.negotiated && f.command !== Command.VERSION) {
        throw new VfioUserServerError("VFIO_USER_NOT_NEGOTIATED", `${commandName(f.command)} before VERSION negotiation`, { errno: Errno.EINVAL });
      }
      if (f.fds.length > 0 && f.command !== Command.DMA_MAP && f.command !== Command.DEVICE_SET_IRQS) {
        throw badRequest(Errno.EINVAL, `${commandName(f.command)} carried ${f.fds.length} unexpected fds`);
      }
      if (f.fds.length > this.config.maxMsgFds) {
        throw badRequest(Errno.EINVAL, `${f.fds.length} fds exceed the negotiated max_msg_fds of ${this.config.maxMsgFds}`);
      }
      switch (f.command) {
        case Command.REGION_READ:
          return this.regionRead(f);
        case Command.REGION_WRITE:
          return this.regionWrite(f);
        case Command.VERSION:
          return this.version(f);
        case Command.DMA_MAP:
          return this.dmaMap(f);
        case Command.DMA_UNMAP:
          return this.dmaUnmap(f);
        case Command.DEVICE_GET_INFO:
          return this.deviceGetInfo(f);
        case Command.DEVICE_GET_REGION_INFO:
          return this.regionInfo(f);
        case Command.DEVICE_GET_REGION_IO_FDS:
          return this.regionIoFds(f);
        case Command.DEVICE_GET_IRQ_INFO:
          return this.irqInfo(f);
        case Command.DEVICE_SET_IRQS:
          return this.setIrqs(f);
        case Command.DEVICE_RESET:
          return this.reset(f);
        case Command.REGION_WRITE_MULTI:
          return this.regionWriteMulti(f);
        case Command.DEVICE_FEATURE:
          return this.deviceFeature(f);
        case Command.MIG_DATA_READ:
          return this.migDataRead(f);
        case Command.MIG_DATA_WRITE:
          return this.migDataWrite(f);
        case Command.DMA_READ:
        case Command.DMA_WRITE:
          throw new VfioUserServerError("VFIO_USER_UNKNOWN_COMMAND", `${commandName(f.command)} is a server-to-client command`, { errno: Errno.EINVAL });
        default:
          throw new VfioUserServerError("VFIO_USER_UNKNOWN_COMMAND", `unknown command ${f.command}`, { errno: Errno.ENOSYS });
      }
    } catch (e) {
      this.fail(f.msgId, f.command, f.flags, asServerError(e));
    } finally {
      // Fds a handler did not take (it empties f.fds when it keeps them) are closed here.
      if (f.fds.length) {
        for (const fd of f.fds) closeFdQuietly(fd);
        f.fds.length = 0;
      }
    }
  }

  /** The one error path: an error reply, or a remembered posted failure. */
  private fail(msgId: number, command: number, flags: number, err: VfioUserServerError): void {
    this.config.log(`${commandName(command)} (id ${msgId}) failed with ${errnoName(err.errno)}: ${err.message}`);
    if (wantsReply(flags)) {
      writeErrorReply(this.out, msgId, command, err.errno);
    } else if (!this.postedFailure) {
      this.postedFailure = err;
    }
  }

  private rejectFrame(f: Frame, err: VfioUserServerError): void {
    for (const fd of f.fds) closeFdQuietly(fd);
    f.fds.length = 0;
    this.fail(f.msgId, f.command, f.flags, err);
  }

  private flush(): void {
    if (this.out.length === 0) return;
    const bytes = this.out.take();
    if (this.connection.isClosed || this.ending) return;
    this.connection.send(bytes);
  }

  private congested(): boolean {
    if (this.out.length >= FLUSH_THRESHOLD) this.flush();
    return this.connection.writableLength > MAX_QUEUED_REPLY_BYTES;
  }

  private setAside(ev: ParseEvent): void {
    this.backlog.push(ev.kind === "frame" ? { ...ev, body: ev.body.slice(), fds: ev.fds.slice() } : ev);
    this.connection.pause();
  }

  /** Handles set-aside requests once the client has read its replies; then reads again. */
  private drainBacklog(): void {
    while (this.backlog.length > 0 && !this.closed && !this.congested()) this.handleEvent(this.backlog.shift()!);
    this.flush();
    if (this.backlog.length === 0 && !this.closed) this.connection.resume();
  }

  /** Sends `write`'s message with `fds`: alone in its sendmsg, after the replies before it. */
  private sendWithFds(write: (w: MessageWriter) => void, fds: number[]): void {
    this.flush();
    write(this.out);
    const bytes = this.out.take();
    if (!this.connection.isClosed && !this.ending) this.connection.send(bytes, fds);
  }

  // -------------------------------------------------------------------------------------------
  // VERSION

  private version(f: Frame): void {
    if (this.negotiated) throw new VfioUserServerError("VFIO_USER_NOT_NEGOTIATED", "VERSION was already negotiated", { errno: Errno.EINVAL });
    const v = decodeVersion(f.body);
    if (v instanceof WireError) throw wireFailure(v);
    if (v.major !== PROTOCOL_MAJOR) {
      // The spec has the server close the connection when it cannot speak the major version;
      // an error reply first tells the client why.
      writeErrorReply(this.out, f.msgId, f.command, Errno.EINVAL);
      this.config.log(`client proposed protocol ${v.major}.${v.minor}; this server speaks ${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}: closing`);
      this.flush();
      this.ending = true;
      this.connection.end();
      return;
    }
    const caps = v.capabilities ?? {};
    if (caps.maxDataXferSize !== undefined) this.clientMaxXfer = caps.maxDataXferSize;
    if (caps.maxMsgFds !== undefined) this.clientMaxMsgFds = caps.maxMsgFds;
    const reply: Capabilities = {
      maxMsgFds: this.config.maxMsgFds,
      maxDataXferSize: this.config.maxDataXferSize,
      pgsizes: DMA_PAGE,
      maxDmaMaps: this.config.maxDmaMaps,
    };
    if (caps.migration) {
      // The smaller of the two page sizes is used for dirty bitmaps.
      const ours = 4096;
      this.migrationPgsize = Math.min(ours, caps.migration.pgsize ?? ours);
      this.maxBitmapBytes = Math.min(DEFAULT_MAX_BITMAP_SIZE, caps.migration.maxBitmapSize ?? DEFAULT_MAX_BITMAP_SIZE);
      reply.migration = { pgsize: this.migrationPgsize, maxBitmapSize: this.maxBitmapBytes };
    }
    if (caps.writeMultiple) reply.writeMultiple = true;
    this.negotiated = true;
    writeVersionReply(this.out, f.msgId, { major: PROTOCOL_MAJOR, minor: Math.min(v.minor, PROTOCOL_MINOR), capabilities: reply });
  }

  // -------------------------------------------------------------------------------------------
  // region access (the hot path: fields read in place, no decode object)

  /** Validates an access and returns its offset as an exact number. */
  private checkAccess(command: number, region: number, lo: number, hi: number, count: number, write: boolean): number {
    if (region >= PciRegion.COUNT) throw badRequest(Errno.EINVAL, `region index ${region} out of range (0..${PciRegion.COUNT - 1})`, { command, region });
    const size = this.regionSizes[region];
    if (size === 0) throw badRequest(Errno.EINVAL, `region ${region} is not implemented by this device`, { command, region });
    if (write && !this.regionWritable[region]) throw badRequest(Errno.EINVAL, `region ${region} is read-only`, { command, region });
    if (count === 0) throw badRequest(Errno.EINVAL, `zero-byte access to region ${region}`, { command, region });
    if (count > this.config.maxDataXferSize) {
      throw badRequest(Errno.E2BIG, `count ${count} exceeds max_data_xfer_size ${this.config.maxDataXferSize}`, { command, region, count });
    }
    if (hi >= SAFE_HI_LIMIT) {
      throw badRequest(Errno.EINVAL, `offset 0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")} is past the end of region ${region}`, { command, region, count });
    }
    const offset = hi * 0x1_0000_0000 + lo;
    if (offset + count > size) {
      throw badRequest(Errno.EINVAL, `offset 0x${offset.toString(16)} + ${count} is past the end of region ${region} (size 0x${size.toString(16)})`, {
        command,
        region,
        offset,
        count,
      });
    }
    return offset;
  }

  private deviceRead(region: number, offset: number, dest: Uint8Array): void {
    if (region === PciRegion.CONFIG) this.device.readConfigBytes(offset, dest);
    else this.device.readRegionBytes(region, offset, dest);
  }

  private deviceWrite(region: number, offset: number, src: Uint8Array): void {
    if (region === PciRegion.CONFIG) this.device.writeConfigBytes(offset, src);
    else this.device.writeRegionBytes(region, offset, src);
  }

  private regionRead(f: Frame): void {
    const a = this.access;
    const bad = readRegionAccessHead(Command.REGION_READ, "request", f.body, false, a);
    if (bad !== null) throw wireFailure(bad);
    const lo = a.offsetLo;
    const hi = a.offsetHi;
    const region = a.region;
    const count = a.count;
    const offset = this.checkAccess(Command.REGION_READ, region, lo, hi, count, false);
    if (!wantsReply(f.flags)) {
      // A read nobody waits for still has the device's read side effects.
      this.deviceReadChecked(region, offset, count <= 8 ? this.scratch.subarray(0, count) : new Uint8Array(count));
      return;
    }
    const w = this.out;
    const dest = writeRegionReadReplyInPlace(w, f.msgId, lo, hi, region, count);
    try {
      this.deviceReadChecked(region, offset, dest);
    } catch (e) {
      w.abandonLast();
      throw e;
    }
  }

  private deviceReadChecked(region: number, offset: number, dest: Uint8Array): void {
    try {
      this.deviceRead(region, offset, dest);
    } catch (e) {
      throw deviceFailure(e, region, offset, dest.length);
    }
  }

  private regionWrite(f: Frame): void {
    const b = f.body;
    const a = this.access;
    const bad = readRegionAccessHead(Command.REGION_WRITE, "request", b, true, a);
    if (bad !== null) throw wireFailure(bad);
    const lo = a.offsetLo;
    const hi = a.offsetHi;
    const region = a.region;
    const count = a.count;
    const offset = this.checkAccess(Command.REGION_WRITE, region, lo, hi, count, true);
    try {
      this.deviceWrite(region, offset, b.subarray(REGION_ACCESS_SIZE));
    } catch (e) {
      throw deviceFailure(e, region, offset, count);
    }
    if (wantsReply(f.flags)) writeRegionWriteReply(this.out, f.msgId, lo, hi, region, count);
  }

  private regionWriteMulti(f: Frame): void {
    const req = decodeRegionWriteMulti(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    // Validate every entry before performing any.
    const offsets = req.writes.map((wr) => this.checkAccess(Command.REGION_WRITE_MULTI, wr.region, wr.offsetLo, wr.offsetHi, wr.count, true));
    req.writes.forEach((wr, i) => {
      try {
        this.deviceWrite(wr.region, offsets[i], wr.data);
      } catch (e) {
        throw deviceFailure(e, wr.region, offsets[i], wr.count);
      }
    });
    if (wantsReply(f.flags)) writeRegionWriteMultiReply(this.out, f.msgId, req.writes.length);
  }

  // -------------------------------------------------------------------------------------------
  // device information

  private deviceGetInfo(f: Frame): void {
    const req = decodeDeviceInfo(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.argsz < DEVICE_INFO_SIZE) throw badRequest(Errno.EINVAL, `DEVICE_GET_INFO argsz ${req.argsz} is below ${DEVICE_INFO_SIZE}`);
    if (!wantsReply(f.flags)) return;
    writeDeviceInfoReply(this.out, f.msgId, { flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI, numRegions: PciRegion.COUNT, numIrqs: PciIrq.COUNT });
  }

  private regionInfo(f: Frame): void {
    const req = decodeRegionInfoRequest(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.argsz < REGION_INFO_SIZE) throw badRequest(Errno.EINVAL, `DEVICE_GET_REGION_INFO argsz ${req.argsz} is below ${REGION_INFO_SIZE}`);
    const index = req.index;
    if (index >= PciRegion.COUNT) throw badRequest(Errno.EINVAL, `region index ${index} out of range (0..${PciRegion.COUNT - 1})`, { region: index });
    if (!wantsReply(f.flags)) return;
    let flags = 0;
    let size = 0n;
    let offset = 0n;
    const caps: RegionCap[] = [];
    let fd: number | undefined;
    if (index === PciRegion.CONFIG) {
      flags = RegionInfoFlag.READ | RegionInfoFlag.WRITE;
      size = BigInt(this.device.configSize);
    } else if (index <= PciRegion.ROM && this.regionSizes[index] > 0) {
      const info = this.device.regionInfo(index);
      size = info.size;
      if (info.readable) flags |= RegionInfoFlag.READ;
      if (info.writable) flags |= RegionInfoFlag.WRITE;
      // Mappable only for a client that can receive the region fd (its max_msg_fds).
      if (info.mmap && this.clientMaxMsgFds > 0) {
        const areas = mmapAreas(this.device, index, info.size);
        if (areas.length > 0) {
          flags |= RegionInfoFlag.MMAP;
          offset = info.mmap.offset;
          fd = info.mmap.fd;
          caps.push({ id: RegionCapId.SPARSE_MMAP, version: 1, areas });
        }
      }
    }
    const reply = { flags, index, size, offset, caps };
    // The fd travels only with the full reply (the one the client maps from).
    if (fd === undefined || req.argsz < regionInfoReplySize(caps)) {
      writeRegionInfoReply(this.out, f.msgId, reply, req.argsz);
      return;
    }
    this.sendWithFds((w) => writeRegionInfoReply(w, f.msgId, reply, req.argsz), [fd]);
  }

  private regionIoFds(f: Frame): void {
    const req = decodeRegionIoFdsRequest(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.argsz < REGION_IO_FDS_SIZE) throw badRequest(Errno.EINVAL, `DEVICE_GET_REGION_IO_FDS argsz ${req.argsz} is below ${REGION_IO_FDS_SIZE}`);
    if (req.flags !== 0 || req.count !== 0) throw badRequest(Errno.EINVAL, "DEVICE_GET_REGION_IO_FDS flags and count must be zero");
    if (req.index >= PciRegion.COUNT || this.regionSizes[req.index] === 0) {
      throw badRequest(Errno.EINVAL, `region index ${req.index} is out of range or not implemented`, { region: req.index });
    }
    if (!wantsReply(f.flags)) return;
    // Config space, VGA and the ROM have no ioeventfds; BARs have the ones the device declared.
    let ioefds: readonly PciIoEventFd[] = [];
    if (req.index <= PciRegion.BAR5) {
      try {
        ioefds = this.device.ioEventFds(req.index, hostEventFds);
      } catch (e) {
        throw deviceFailure(e, req.index);
      }
    }
    // One fd per sub-region (fd_index = position): each doorbell has its own eventfd.
    const subRegions: SubRegionIoFd[] = ioefds.map((e, i) => ({
      offset: BigInt(e.offset),
      size: BigInt(e.size),
      fdIndex: i,
      type: IoFdType.IOEVENTFD,
      flags: (e.datamatch !== undefined ? IoEventFdFlag.DATAMATCH : 0) | (e.space === "io" ? IoEventFdFlag.PIO : 0),
      datamatch: e.datamatch ?? 0n,
    }));
    const full = req.argsz >= regionIoFdsReplySize(subRegions.length);
    if (!full || subRegions.length === 0) {
      // Head only (argsz tells the client what to ask for), or nothing to offer: no fds.
      writeRegionIoFdsReply(this.out, f.msgId, req.index, subRegions, req.argsz);
      return;
    }
    if (subRegions.length > this.clientMaxMsgFds) {
      throw badRequest(Errno.E2BIG, `region ${req.index} has ${subRegions.length} ioeventfds, more than the client's max_msg_fds of ${this.clientMaxMsgFds}`, { region: req.index });
    }
    this.sendWithFds((w) => writeRegionIoFdsReply(w, f.msgId, req.index, subRegions, req.argsz), ioefds.map((e) => e.fd));
  }

  private irqInfo(f: Frame): void {
    const req = decodeIrqInfo(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.argsz < IRQ_INFO_SIZE) throw badRequest(Errno.EINVAL, `DEVICE_GET_IRQ_INFO argsz ${req.argsz} is below ${IRQ_INFO_SIZE}`);
    if (req.index >= PciIrq.COUNT) throw badRequest(Errno.EINVAL, `IRQ index ${req.index} out of range (0..${PciIrq.COUNT - 1})`);
    if (!wantsReply(f.flags)) return;
    const info = this.irqs.info(req.index);
    writeIrqInfoReply(this.out, f.msgId, { flags: info.flags, index: req.index, count: info.count });
  }

  private setIrqs(f: Frame): void {
    const req = decodeIrqSet(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.argsz < IRQ_SET_SIZE + req.data.length) throw badRequest(Errno.EINVAL, `DEVICE_SET_IRQS argsz ${req.argsz} is below the payload size`);
    const fds = f.fds.splice(0); // taken: IrqTable keeps or closes them
    this.irqs.set(req, fds);
    if (wantsReply(f.flags)) writeEmptyReply(this.out, f.msgId, Command.DEVICE_SET_IRQS);
  }

  private reset(f: Frame): void {
    if (f.body.length !== 0) throw badRequest(Errno.EINVAL, `DEVICE_RESET carries no payload, got ${f.body.length} bytes`);
    try {
      this.device.reset();
    } catch (e) {
      throw deviceFailure(e);
    }
    this.migration.reset();
    if (wantsReply(f.flags)) writeEmptyReply(this.out, f.msgId, Command.DEVICE_RESET);
  }

  // -------------------------------------------------------------------------------------------
  // DMA map table

  private dmaMap(f: Frame): void {
    const req = decodeDmaMap(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.argsz < 32) throw badRequest(Errno.EINVAL, `DMA_MAP argsz ${req.argsz} is below 32`);
    if ((req.flags & ~(DmaMapFlag.READ | DmaMapFlag.WRITE)) !== 0) throw badRequest(Errno.EINVAL, `DMA_MAP flags 0x${req.flags.toString(16)} has unknown bits`);
    const perm = (((req.flags & DmaMapFlag.READ) ? DMA_PERM_READ : 0) | ((req.flags & DmaMapFlag.WRITE) ? DMA_PERM_WRITE : 0)) as DmaPerm;
    if (perm === 0) throw badRequest(Errno.EINVAL, "DMA_MAP must grant read and/or write access");
    if (req.size === 0n || req.address + req.size > U64_END) throw badRequest(Errno.EINVAL, `DMA_MAP size ${req.size} at 0x${req.address.toString(16)} is empty or wraps past 2^64`);
    if (req.address % DMA_PAGE !== 0n || req.size % DMA_PAGE !== 0n) {
      throw badRequest(Errno.EINVAL, `DMA_MAP address 0x${req.address.toString(16)} and size 0x${req.size.toString(16)} must be multiples of the 4 KiB page size`);
    }
    if (f.fds.length > 1) throw badRequest(Errno.EINVAL, `DMA_MAP carried ${f.fds.length} fds, at most 1 is allowed`);
    const fd = f.fds.length === 1 ? f.fds[0] : undefined;
    // Memory of an unmap earlier in this batch goes first: it still counts against the limits.
    if (this.releases.length !== 0) this.runReleases();
    try {
      this.dma.table.add({
        iova: req.address,
        size: req.size,
        perm,
        backing: fd === undefined ? { kind: "message" } : { kind: "fd", fd, offset: req.offset, closeFd: true },
      });
    } catch (e) {
      throw dmaFailure(e, "DMA_MAP");
    }
    f.fds.length = 0; // the table owns the fd now (closed at unmap)
    if (wantsReply(f.flags)) writeEmptyReply(this.out, f.msgId, Command.DMA_MAP);
  }

  private dmaUnmap(f: Frame): void {
    const req = decodeDmaUnmap(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if ((req.flags & ~(DmaUnmapFlag.GET_DIRTY_BITMAP | DmaUnmapFlag.ALL)) !== 0) throw badRequest(Errno.EINVAL, `DMA_UNMAP flags 0x${req.flags.toString(16)} has unknown bits`);
    // argsz bounds the reply, which repeats the 24-byte request (the bitmap case is checked below).
    if (!req.bitmap && req.argsz < DMA_UNMAP_SIZE) throw badRequest(Errno.EINVAL, `DMA_UNMAP argsz ${req.argsz} is below ${DMA_UNMAP_SIZE}`);
    if (req.flags & DmaUnmapFlag.ALL) {
      if (req.flags & DmaUnmapFlag.GET_DIRTY_BITMAP || req.address !== 0n || req.size !== 0n) {
        throw badRequest(Errno.EINVAL, "DMA_UNMAP with the ALL flag takes address 0, size 0 and no dirty bitmap");
      }
      try {
        this.removeDeferred(() => this.dma.table.clear());
      } catch (e) {
        throw dmaFailure(e, "DMA_UNMAP");
      }
      if (wantsReply(f.flags)) writeDmaUnmapReply(this.out, f.msgId, req);
      return;
    }
    let bitmap: Uint8Array | undefined;
    if (req.bitmap) {
      const { pgsize, size } = req.bitmap;
      if (!this.dirty.isActive) throw badRequest(Errno.EINVAL, "DMA_UNMAP asked for a dirty bitmap but DMA logging is not started");
      if (!isPowerOfTwoBig(pgsize)) throw badRequest(Errno.EINVAL, `dirty bitmap page size ${pgsize} is not a power of two`);
      const needed = DirtyLog.bitmapBytes(req.size, pgsize);
      if (size < needed) throw badRequest(Errno.EINVAL, `dirty bitmap of ${size} bytes is too small for ${req.size} bytes at ${pgsize}-byte pages (needs ${needed})`);
      if (size > BigInt(Math.min(this.maxBitmapBytes, this.config.maxDataXferSize))) {
        throw badRequest(Errno.E2BIG, `dirty bitmap of ${size} bytes exceeds the ${Math.min(this.maxBitmapBytes, this.config.maxDataXferSize)}-byte limit`);
      }
      if (BigInt(req.argsz) < BigInt(DMA_UNMAP_SIZE + BITMAP_HEADER_SIZE) + size) {
        throw badRequest(Errno.EINVAL, `DMA_UNMAP argsz ${req.argsz} cannot hold the ${size}-byte bitmap`);
      }
      if (!this.hasDmaRegion(req.address, req.size)) throw badRequest(Errno.ENOENT, `no DMA mapping at 0x${req.address.toString(16)} of size 0x${req.size.toString(16)}`);
      bitmap = this.dirty.report(req.address, req.size, pgsize, Number(size));
    }
    try {
      this.removeDeferred(() => this.dma.table.remove(req.address, req.size));
    } catch (e) {
      throw dmaFailure(e, "DMA_UNMAP");
    }
    if (wantsReply(f.flags)) writeDmaUnmapReply(this.out, f.msgId, req, bitmap);
  }

  /**
   * Runs a DMA table removal whose munmap and fd close wait until the reply has left (the
   * check phase of this loop turn, right after the poll callback sent it): the system calls stay
   * off the reply path. The spec's rule (VFIO_USER_DMA_UNMAP: release all references to the
   * region before replying) holds for everything that can reach the memory: the region is out
   * of the table, the IOTLB and every live device map before the reply is written.
   */
  private removeDeferred(remove: () => void): void {
    const table = this.dma.table;
    table.deferRelease = this.deferRelease;
    try {
      remove();
    } finally {
      table.deferRelease = null;
    }
  }

  private hasDmaRegion(address: bigint, size: bigint): boolean {
    return this.dma.table.regions().some((r) => r.iova === address && r.size === size);
  }

  // -------------------------------------------------------------------------------------------
  // DEVICE_FEATURE and migration data

  private deviceFeature(f: Frame): void {
    const req = decodeDeviceFeature(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    const { flags, feature, data } = req;
    const GET = DeviceFeatureFlag.GET;
    const SET = DeviceFeatureFlag.SET;
    const PROBE = DeviceFeatureFlag.PROBE;
    if ((flags & ~(DeviceFeatureFlag.INDEX_MASK | GET | SET | PROBE)) !== 0) throw badRequest(Errno.EINVAL, `DEVICE_FEATURE flags 0x${flags.toString(16)} has unknown bits`);
    const get = (flags & GET) !== 0;
    const set = (flags & SET) !== 0;
    const probe = (flags & PROBE) !== 0;
    if (get && set && !probe) throw badRequest(Errno.EINVAL, "DEVICE_FEATURE GET and SET are exclusive unless probing");
    if (!get && !set && !probe) throw badRequest(Errno.EINVAL, "DEVICE_FEATURE needs GET, SET or PROBE");
    const supports: Record<number, { get: boolean; set: boolean }> = {
      [DeviceFeature.MIGRATION]: { get: true, set: false },
      [DeviceFeature.MIG_DEVICE_STATE]: { get: true, set: true },
      [DeviceFeature.DMA_LOGGING_START]: { get: false, set: true },
      [DeviceFeature.DMA_LOGGING_STOP]: { get: false, set: true },
      [DeviceFeature.DMA_LOGGING_REPORT]: { get: true, set: false },
    };
    const s = supports[feature];
    if (!s || (get && !s.get) || (set && !s.set)) {
      throw badRequest(Errno.EOPNOTSUPP, `device feature ${feature}${get ? " GET" : ""}${set ? " SET" : ""} is not supported`);
    }
    // Spec, VFIO_USER_DEVICE_FEATURE Reply: SET and PROBE replies repeat the request payload
    // (argsz included); a GET reply carries the feature data and argsz counts it.
    const reply = (payload: Uint8Array = data) => {
      // argsz bounds the reply; a GET reply is 8 bytes plus the feature data (DMA_LOGGING_REPORT
      // has its own rule below). GETs change nothing, so refusing here leaves no trace.
      if (get && !probe && feature !== DeviceFeature.DMA_LOGGING_REPORT && req.argsz < DEVICE_FEATURE_SIZE + payload.length) {
        throw badRequest(Errno.EINVAL, `DEVICE_FEATURE GET argsz ${req.argsz} cannot hold the ${DEVICE_FEATURE_SIZE + payload.length}-byte reply`);
      }
      if (wantsReply(f.flags)) writeDeviceFeatureReply(this.out, f.msgId, flags, payload, get && !probe ? undefined : req.argsz);
    };
    if (probe) return reply();
    switch (feature) {
      case DeviceFeature.MIGRATION:
        return reply(encodeMigrationFeature(MigrationFlag.STOP_COPY));
      case DeviceFeature.MIG_DEVICE_STATE: {
        if (get) return reply(encodeMigDeviceState(this.migration.state));
        const st = decodeMigDeviceState(data);
        if (st instanceof WireError) throw wireFailure(st);
        this.migration.setState(st.deviceState);
        return reply(encodeMigDeviceState(this.migration.state));
      }
      case DeviceFeature.DMA_LOGGING_START: {
        const ctl = decodeDmaLoggingControl(data);
        if (ctl instanceof WireError) throw wireFailure(ctl);
        const used = this.dirty.start(ctl.pageSize, ctl.ranges);
        return reply(encodeDmaLoggingControl(used, ctl.ranges));
      }
      case DeviceFeature.DMA_LOGGING_STOP:
        this.dirty.stop();
        return reply();
      case DeviceFeature.DMA_LOGGING_REPORT: {
        const r = decodeDmaLoggingReport(data);
        if (r instanceof WireError) throw wireFailure(r);
        if (!this.dirty.isActive) throw badRequest(Errno.EINVAL, "DMA_LOGGING_REPORT before DMA_LOGGING_START");
        if (!isPowerOfTwoBig(r.pageSize)) throw badRequest(Errno.EINVAL, `report page size ${r.pageSize} is not a power of two`);
        if (r.length === 0n || r.iova + r.length > U64_END) throw badRequest(Errno.EINVAL, "report range is empty or wraps past 2^64");
        const bytes = DirtyLog.bitmapBytes(r.length, r.pageSize);
        const limit = Math.min(this.maxBitmapBytes, this.config.maxDataXferSize);
        if (bytes > BigInt(limit)) throw badRequest(Errno.E2BIG, `a ${bytes}-byte bitmap exceeds the ${limit}-byte limit; report a smaller range`);
        // argsz need not count the bitmap: libvfio-user's client sizes it for the fixed part
        // only and expects the bitmap added (reply argsz = request argsz + bitmap bytes). The
        // bitmap is bounded by the limits above instead.
        if (req.argsz < 8 + 24) throw badRequest(Errno.EINVAL, `DEVICE_FEATURE argsz ${req.argsz} is below the 32-byte DMA_LOGGING_REPORT request`);
        return reply(encodeDmaLoggingReport(r.iova, r.length, r.pageSize, this.dirty.report(r.iova, r.length, r.pageSize, Number(bytes))));
      }
    }
  }

  private migDataRead(f: Frame): void {
    const req = decodeMigDataReadRequest(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.size > this.config.maxDataXferSize) throw badRequest(Errno.E2BIG, `MIG_DATA_READ size ${req.size} exceeds max_data_xfer_size ${this.config.maxDataXferSize}`);
    if (req.argsz < 8 + req.size) throw badRequest(Errno.EINVAL, `MIG_DATA_READ argsz ${req.argsz} cannot hold ${req.size} bytes`);
    const data = this.migration.read(req.size);
    // Padded to the asked size, real amount in `size`: libvfio-user's client accepts only a reply
    // of the requested length; readers that take `size` (QEMU, ours) ignore the padding.
    if (wantsReply(f.flags)) writeMigDataReadReply(this.out, f.msgId, data, req.size);
  }

  private migDataWrite(f: Frame): void {
    const req = decodeMigDataWriteRequest(f.body);
    if (req instanceof WireError) throw wireFailure(req);
    if (req.size > this.config.maxDataXferSize) throw badRequest(Errno.E2BIG, `MIG_DATA_WRITE size ${req.size} exceeds max_data_xfer_size ${this.config.maxDataXferSize}`);
    // Like MIG_DATA_READ (and libvfio-user): argsz covers the request's own header and data.
    if (req.argsz < MIG_DATA_SIZE + req.size) throw badRequest(Errno.EINVAL, `MIG_DATA_WRITE argsz ${req.argsz} cannot hold ${req.size} bytes`);
    this.migration.write(req.data);
    if (wantsReply(f.flags)) writeEmptyReply(this.out, f.msgId, Command.MIG_DATA_WRITE);
  }

  // -------------------------------------------------------------------------------------------
  // server -> client DMA (regions mapped without an fd)

  private dmaRead(iova: bigint, length: number): Promise<Uint8Array> {
    const tooMany = this.checkRequestBudget(Command.DMA_READ, iova, length);
    if (tooMany) return Promise.reject(tooMany);
    const chunks: Promise<Uint8Array>[] = [];
    for (let done = 0; done < length; ) {
      const n = Math.min(this.clientMaxXfer, length - done);
      chunks.push(this.request(Command.DMA_READ, iova + BigInt(done), n, null));
      done += n;
    }
    return Promise.all(chunks).then(concatBytes);
  }

  private async dmaWrite(iova: bigint, data: Uint8Array): Promise<void> {
    const tooMany = this.checkRequestBudget(Command.DMA_WRITE, iova, data.length);
    if (tooMany) throw tooMany;
    const parts: Promise<Uint8Array>[] = [];
    for (let done = 0; done < data.length; ) {
      const n = Math.min(this.clientMaxXfer, data.length - done);
      parts.push(this.request(Command.DMA_WRITE, iova + BigInt(done), n, data.subarray(done, done + n)));
      done += n;
    }
    await Promise.all(parts);
  }

  /** The error for a DMA whose requests would exceed MAX_PENDING_DMA_REQUESTS, else null. */
  private checkRequestBudget(command: number, iova: bigint, length: number): VfioUserServerError | null {
    const needed = Math.ceil(length / this.clientMaxXfer);
    if (this.pending.size + needed <= MAX_PENDING_DMA_REQUESTS) return null;
    return new VfioUserServerError(
      "VFIO_USER_DMA_REQUEST_FAILED",
      `${commandName(command)} of ${length} bytes at 0x${iova.toString(16)} needs ${needed} requests (the client's max_data_xfer_size is ${this.clientMaxXfer}); with ${this.pending.size} in flight that exceeds the limit of ${MAX_PENDING_DMA_REQUESTS} requests in flight`,
      { errno: Errno.EIO, command },
    );
  }

  private request(command: number, address: bigint, count: number, data: Uint8Array | null): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new VfioUserServerError("VFIO_USER_DISCONNECTED", "the client disconnected", { errno: Errno.ECONNRESET, command }));
    let id = this.nextRequestId;
    while (this.pending.has(id)) id = (id + 1) & 0xffff;
    this.nextRequestId = (id + 1) & 0xffff;
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VfioUserServerError("VFIO_USER_DMA_REQUEST_FAILED", `${commandName(command)} of ${count} bytes at 0x${address.toString(16)} got no reply within ${this.config.dmaRequestTimeoutMs} ms`, { errno: Errno.EIO, command, msgId: id }));
      }, this.config.dmaRequestTimeoutMs);
      timer.unref?.();
      this.pending.set(id, { command, address, count, resolve, reject, timer });
      if (command === Command.DMA_READ) writeDmaReadRequest(this.requests, id, address, count);
      else writeDmaWriteRequest(this.requests, id, address, data!);
      const bytes = this.requests.take();
      try {
        if (this.ending || this.connection.isClosed) throw new Error("the connection is closing");
        this.connection.send(bytes);
      } catch (cause) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new VfioUserServerError("VFIO_USER_DISCONNECTED", `cannot send ${commandName(command)}: ${(cause as Error).message}`, { errno: Errno.ECONNRESET, command, cause }));
      }
    });
  }

  private onReply(f: Frame): void {
    const p = this.pending.get(f.msgId);
    if (!p || p.command !== f.command) {
      // Not an answer to anything we asked. Dropped (its fds closed) and logged, never answered:
      // a reply to a reply carries the peer's id, which may be one of the peer's own pending
      // requests, and QEMU's hw/vfio-user/proxy.c (vfio_user_recv_one) would complete that
      // request with our error, or fail on an "unexpected reply". Nor is it a posted failure
      // for the next request. The parser consumed its body, so the stream stays in sync.
      for (const fd of f.fds) closeFdQuietly(fd);
      f.fds.length = 0;
      this.config.log(`dropped an unsolicited reply (${commandName(f.command)}, id ${f.msgId}${hasError(f.flags) ? `, error ${errnoName(f.error)}` : ""}): the server has no such request pending`);
      return;
    }
    this.pending.delete(f.msgId);
    clearTimeout(p.timer);
    for (const fd of f.fds) closeFdQuietly(fd);
    f.fds.length = 0;
    const fail = (message: string, errno: number) =>
      p.reject(new VfioUserServerError("VFIO_USER_DMA_REQUEST_FAILED", `${commandName(p.command)} at 0x${p.address.toString(16)}: ${message}`, { errno, command: p.command, msgId: f.msgId }));
    if (hasError(f.flags)) return fail(`the client answered ${errnoName(f.error)}`, f.error || Errno.EIO);
    const r = p.command === Command.DMA_READ ? decodeDmaReadReply(f.body) : decodeDmaWriteReply(f.body);
    if (r instanceof WireError) return fail(r.message, r.errno);
    // A header-only DMA_WRITE acknowledgement echoes nothing to compare.
    if (r.address !== undefined && (r.address !== p.address || r.count !== p.count)) return fail(`reply for ${r.count} bytes at 0x${r.address.toString(16)} does not match the request`, Errno.EIO);
    p.resolve(p.command === Command.DMA_READ ? (r as DmaAccess).data.slice() : new Uint8Array(0));
  }

  // -------------------------------------------------------------------------------------------
  // teardown

  private close(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    const truncated = this.parser.end();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new VfioUserServerError("VFIO_USER_DISCONNECTED", "the client disconnected before answering", { errno: Errno.ECONNRESET, command: p.command }));
    }
    this.pending.clear();
    for (const ev of this.backlog) if (ev.kind === "frame") for (const fd of ev.fds) closeFdQuietly(fd);
    this.backlog = [];
    // Spec, "Client Disconnection": unmap the client's memory, close its irq fds, keep the
    // device state.
    try {
      // The departed client's copies of the ioeventfds must not reach the device any more:
      // close ours (rings already counted are delivered first); the next client gets new ones.
      this.device.releaseIoEventFds();
    } catch (e) {
      this.config.log(`releasing ioeventfds failed: ${(e as Error).message}`);
    }
    try {
      this.device.setIoEventFdErrorHandler(null);
      this.device.attachInterruptSink(null);
      this.device.attachDma(null);
    } catch {
      // detaching never matters more than releasing the resources below
    }
    this.irqs.close();
    this.runReleases();
    try {
      this.dma.close();
    } catch (e) {
      this.config.log(`releasing DMA mappings failed: ${(e as Error).message}`);
    }
    this.dirty.reset();
    this.migration.reset();
    if (truncated) this.config.log(`client closed mid-message: ${truncated.message}`);
    this.onClosed(this, reason);
  }
}

// ---------------------------------------------------------------------------------------------
// error mapping

function asServerError(e: unknown): VfioUserServerError {
  if (e instanceof VfioUserServerError) return e;
  if (e instanceof WireError) return wireFailure(e);
  return new VfioUserServerError("VFIO_USER_DEVICE_ERROR", `internal error: ${(e as Error)?.message ?? String(e)}`, { errno: Errno.EIO, cause: e });
}

function wireFailure(e: WireError): VfioUserServerError {
  return new VfioUserServerError("VFIO_USER_BAD_REQUEST", e.message, { errno: e.errno, command: e.command, cause: e });
}

/** Device errors: the PCI layer says which errno (EINVAL for bad accesses, EIO for a master
 *  abort), unless the device failed because a DMA it made while handling the access failed:
 *  then the DMA layer's errno (EFAULT for memory the client no longer backs). Anything else the
 *  model throws is EIO. */
function deviceFailure(e: unknown, region?: number, offset?: number, count?: number): VfioUserServerError {
  if (e instanceof VfioUserServerError) return e;
  const dma = e instanceof DmaError ? e : e instanceof PciError && e.cause instanceof DmaError ? e.cause : null;
  return new VfioUserServerError("VFIO_USER_DEVICE_ERROR", `device: ${(e as Error)?.message ?? String(e)}`, {
    errno: dma !== null ? dma.errno : e instanceof PciError ? e.errno : Errno.EIO,
    region,
    offset,
    count,
    cause: e,
  });
}

/** Map-table errors carry their errno (EEXIST overlap, ENOENT unknown range, ENOSPC limits). */
function dmaFailure(e: unknown, what: string): VfioUserServerError {
  return new VfioUserServerError("VFIO_USER_DMA_MAP_ERROR", `${what}: ${(e as Error)?.message ?? String(e)}`, {
    errno: e instanceof DmaError ? e.errno : Errno.EIO,
    cause: e,
  });
}
