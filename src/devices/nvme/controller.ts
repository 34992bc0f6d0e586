// An NVMe controller (NVMe base spec 1.4) with one namespace, as a plain PciFunction.
//
//   PCI   class 01:08:02 (NVM Express), INTA#, PM + MSI-X + PCIe capabilities
//   BAR0  64-bit memory, 16 KiB:
//         0x0000  controller registers (CAP VS INTMS INTMC CC CSTS NSSR AQA ASQ ACQ)
//         0x1000  doorbells, stride 4 (DSTRD 0): SQ y tail at 0x1000 + 8y, CQ y head at +4
//         0x2000  MSI-X table (one vector per completion queue)   0x3000  MSI-X PBA
//
// Commands run on the event loop shortly after their doorbell (a microtask), so the posted
// doorbell writes that arrive together are handled in one pass: every submission queue with
// work is drained round-robin (a queue drained and armed is idle, and is not read again until
// its doorbell rings), completions are posted, and each completion queue that got entries
// raises one interrupt for the whole pass (MSI-X vector of the queue, or INTx when MSI-X is
// off; Interrupt Coalescing, when the host sets it, holds I/O queues' interrupts longer). With Doorbell Buffer Config the host writes tails and heads into a shadow
// buffer in its memory and rings the MMIO doorbell only when it crosses the EventIdx the
// controller publishes after draining a queue (the virtio-style scheme Linux implements in
// nvme_dbbuf_update_and_check_event).
//
// The rings themselves (heads, tails, phase, full/empty, shadow doorbells and EventIdx) are
// src/devices/queues; features live in features.ts. Register and reset callbacks receive the
// function's DeviceContext and pass it down: DMA goes through ctx.dma, synchronously (guest
// RAM shared with the device: memfd DMA_MAP, SYNC_SYSMEM, or an in-process buffer); data
// moves straight between guest memory and the backing. A queue whose memory cannot be read or
// written is a fatal controller error: CSTS.CFS is set and processing stops until the host
// resets the controller (CC.EN 1 → 0).
import { createPciFunction } from "../../core/pci/function.js";
import type { DeviceContext, PciDevice, PciFunction } from "../../core/pci/api.js";
import type { DmaApi, DmaMapping } from "../../core/dma/api.js";
import type { CoreRef } from "../../core/wasm.js";
import type { DeviceClock, DeviceTimer } from "../../core/clock.js";
import { createFileBacking, createRamBacking, type NvmeBacking } from "./backing.js";
import {
  ADMIN,
  AER_INFO_ERR_INVALID_DB_REGISTER,
  AER_INFO_ERR_INVALID_DB_VALUE,
  AER_INFO_SMART_TEMPERATURE,
  AER_TYPE_ERROR,
  AER_TYPE_SMART,
  CC_EN,
  ccAms,
  ccCss,
  ccIocqes,
  ccIosqes,
  ccMps,
  ccShn,
  CNS,
  CQE_SIZE,
  CSTS_CFS,
  CSTS_RDY,
  CSTS_SHST_COMPLETE,
  CSTS_SHST_MASK,
  IO,
  LOG,
  NVME_REG,
  NVME_VERSION_1_4,
  SQE_SIZE,
  STATUS,
} from "./constants.js";
import {
  activeNamespaces,
  errorLog,
  firmwareSlotLog,
  identifyController,
  identifyNamespace,
  namespaceDescriptors,
  NVME_COMPOSITE_TEMPERATURE,
  smartLog,
  type ErrorLogEntry,
  type NvmeIdentity,
} from "./identify.js";
import { defaultFeatures, fail, getFeature, ok, setFeature, type CommandResult, type FeatureLimits, type Features } from "./features.js";
import { PrpSegments, walkPrps } from "./prp.js";
import { CompletionRing, ShadowDoorbell, SubmissionRing } from "../queues/index.js";

export const NVME_VENDOR_ID = 0x1234;
export const NVME_DEVICE_ID = 0x4e56;
export const NVME_CLASS_CODE = 0x010802;
export const NVME_BAR0_SIZE = 0x4000;
export const NVME_MSIX_TABLE_OFFSET = 0x2000;
export const NVME_MSIX_PBA_OFFSET = 0x3000;
/** Entries per queue (CAP.MQES + 1). */
export const NVME_MAX_QUEUE_ENTRIES = 1024;
/** Most I/O queue pairs a controller may be configured with. */
export const NVME_MAX_IO_QUEUES = 64;
/** Outstanding Asynchronous Event Requests (AERL + 1). */
export const NVME_AER_LIMIT = 4;
/** Error log entries kept (ELPE + 1). */
export const NVME_ERROR_LOG_ENTRIES = 4;
/** Maximum data transfer: 2^MDTS minimum-size (4 KiB) pages. */
export const NVME_MDTS = 8;
/** MPSMAX: pages up to 4 KiB << 4 = 64 KiB. */
const MPSMAX = 4;
/** Commands taken from one submission queue before the next queue gets a turn. */
const ARBITRATION_BURST = 64;

export interface NvmeOptions {
  /** Namespace size in bytes, a multiple of the LBA size (default 64 MiB; with `disk`, the
   *  file's size). */
  size?: number;
  /** Logical block size: 512 (default) or 4096. */
  lbaSize?: 512 | 4096;
  /** Back the namespace by this file instead of memory (Flush = fdatasync). */
  disk?: string;
  /** A backing made by the caller (overrides size/disk). The controller closes it on dispose. */
  backing?: NvmeBacking;
  /** I/O queue pairs offered (1..64, default 16). */
  ioQueues?: number;
  /** Offer Doorbell Buffer Config (shadow doorbells, OACS bit 8; default true). Without it the
   *  host rings an MMIO doorbell for every submission and every completion consumed. */
  shadowDoorbells?: boolean;
  serial?: string;
  /** Clock of the interrupt aggregation time (default: real time; tests pass a manual one). */
  clock?: DeviceClock;
  /** Receives guest-error and lifecycle lines (enable, reset, shutdown, fatal errors). */
  onEvent?: (event: NvmeEvent) => void;
  core?: CoreRef;
}

export type NvmeEvent =
  | { kind: "enabled" }
  | { kind: "reset" }
  | { kind: "shutdown" }
  | { kind: "fatal"; reason: string }
  | { kind: "guest-error"; reason: string };

export interface NvmeController extends PciDevice {
  readonly fn: PciFunction;
  readonly backing: NvmeBacking;
  /** Current CSTS (RDY, CFS, SHST). */
  readonly csts: number;
  readonly cc: number;
  /** Counters: commands completed per kind since creation. */
  readonly stats: NvmeStats;
}

export interface NvmeStats {
  adminCommands: number;
  ioCommands: number;
  interrupts: number;
  mmioDoorbells: number;
  enables: number;
  shutdowns: number;
  fatalErrors: number;
}

/** An NVMe submission queue: a ring of 64-byte commands feeding one completion queue. */
class SubmissionQueue extends SubmissionRing {
  constructor(
    readonly id: number,
    base: bigint,
    size: number,
    readonly cq: CompletionQueue,
  ) {
    super(base, size, SQE_SIZE);
  }
}

/** An NVMe completion queue: a ring of 16-byte entries with a phase tag and one vector. */
class CompletionQueue extends CompletionRing {
  /** Submission queues that post here (a CQ with any cannot be deleted). */
  sqs = 0;
  /** Entries were posted in this pass: raise the interrupt when the pass ends. */
  notify = false;
  /** A submission queue stopped because this queue was full. */
  blocked = false;
  /** Entries posted since the queue last signalled its vector (interrupt coalescing). */
  unsignalled = 0;

  constructor(
    readonly id: number,
    base: bigint,
    size: number,
    readonly interruptsEnabled: boolean,
    readonly vector: number,
  ) {
    super(base, size, CQE_SIZE);
  }
}

/** Outcome of a command that completes now: status + DW0; `undefined` = held (AER). */
type Completion = CommandResult | undefined;


const hash16 = (text: string): Uint8Array => {
  // FNV-1a spread over 16 bytes: a stable NGUID per serial number.
  const out = new Uint8Array(16);
  let h = 0x811c9dc5;
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
    h = Math.imul(h ^ round, 0x01000193) >>> 0;
    new DataView(out.buffer).setUint32(round * 4, h, false);
  }
  return out;
};

export function createNvme(options: NvmeOptions = {}): NvmeController {
  const lbaSize = options.lbaSize ?? 512;
  if (lbaSize !== 512 && lbaSize !== 4096) throw new RangeError(`nvme: LBA size must be 512 or 4096, not ${lbaSize}`);
  const lbaShift = lbaSize === 512 ? 9 : 12;
  const ioQueues = options.ioQueues ?? 16;
  if (!Number.isInteger(ioQueues) || ioQueues < 1 || ioQueues > NVME_MAX_IO_QUEUES) throw new RangeError(`nvme: ioQueues must be 1..${NVME_MAX_IO_QUEUES}`);
  const backing = options.backing ?? (options.disk !== undefined ? createFileBacking(options.disk, options.size) : createRamBacking(options.size ?? 64 << 20));
  if (backing.size % lbaSize !== 0 || backing.size < lbaSize) {
    backing.close();
    throw new RangeError(`nvme: namespace size ${backing.size} is not a positive multiple of the ${lbaSize}-byte LBA size`);
  }
  const blockCount = backing.size / lbaSize;
  const blocks = BigInt(blockCount);
  const serial = options.serial ?? "WASMDEV0001";
  const emit = options.onEvent ?? (() => {});
  const vectors = ioQueues + 1;
  const identity: NvmeIdentity = {
    vendorId: NVME_VENDOR_ID,
    subsystemVendorId: NVME_VENDOR_ID,
    serial,
    model: "wasmdev NVMe controller",
    firmware: "1.0",
    mdts: NVME_MDTS,
    cntlid: 0,
    aerl: NVME_AER_LIMIT - 1,
    acl: 3,
    elpe: NVME_ERROR_LOG_ENTRIES - 1,
    blocks,
    lbaShift,
    nguid: hash16(serial),
    doorbellBuffer: options.shadowDoorbells ?? true,
  };
  const idController = identifyController(identity);
  const idNamespace = identifyNamespace(identity);
  const idDescriptors = namespaceDescriptors(identity);

  // CAP (§3.1.1): MQES, CQR, TO = 7.5 s, DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX.
  const cap = BigInt(NVME_MAX_QUEUE_ENTRIES - 1) | (1n << 16n) | (15n << 24n) | (1n << 37n) | (BigInt(MPSMAX) << 52n);
  const createdAt = Date.now();

  let cc = 0;
  let csts = 0;
  let aqa = 0;
  let asq = 0n;
  let acq = 0n;
  let intms = 0;
  let pageSize = 4096;
  let sqs: (SubmissionQueue | undefined)[] = [];
  let cqs: (CompletionQueue | undefined)[] = [];
  let dbbuf: { shadow: bigint; eventIdx: bigint } | undefined;
  const limits: FeatureLimits = { ioQueues, vectors };
  let features: Features = defaultFeatures(limits);
  const pendingAers: number[] = [];
  const pendingEvents: { type: number; info: number; log: number }[] = [];
  let maskedEventTypes = 0;
  let criticalWarning = 0;
  const errors: ErrorLogEntry[] = [];
  let errorCount = 0n;
  // Per-command counters are numbers (exact to 2^53: 8 PiB, or 2^53 commands) so the I/O path
  // allocates no BigInt; the log page widens them.
  const smart = { bytesRead: 0, bytesWritten: 0, readCommands: 0, writeCommands: 0, unsafeShutdowns: 0n };
  const stats: NvmeStats = { adminCommands: 0, ioCommands: 0, interrupts: 0, mmioDoorbells: 0, enables: 0, shutdowns: 0, fatalErrors: 0 };
  let scheduled = false;
  /** Pending end of an interrupt aggregation time. */
  let coalesceTimer: DeviceTimer | undefined;
  /** Bumped by every reset so a scheduled pass does not run against new state. */
  let generation = 0;

  const sqeBuffer = new Uint8Array(SQE_SIZE * ARBITRATION_BURST);
  const sqe = new DataView(sqeBuffer.buffer);
  const cqeBuffer = new Uint8Array(CQE_SIZE);
  const cqe = new DataView(cqeBuffer.buffer);
  const prpScratch = new Uint8Array(64 << 10);
  const segments = new PrpSegments();

  const dmaOf = (ctx: DeviceContext): DmaApi => {
    const api = ctx.dma;
    if (!api) throw new Error("no DMA API attached to the function");
    return api;
  };

  const fatal = (reason: string) => {
    if (csts & CSTS_CFS) return;
    csts |= CSTS_CFS;
    stats.fatalErrors++;
    emit({ kind: "fatal", reason });
  };

  const guestError = (reason: string) => emit({ kind: "guest-error", reason });

  // ---- shadow doorbells ------------------------------------------------------------------

  /** Queue y's shadow doorbell and EventIdx words: SQ at 2y, CQ at 2y + 1, 4 bytes each
   *  (§5.7, with CAP.DSTRD 0). */
  const shadowOf = (qid: number, isCq: boolean) => {
    if (!dbbuf) return null;
    const at = BigInt((2 * qid + (isCq ? 1 : 0)) * 4);
    return new ShadowDoorbell(dbbuf.shadow + at, dbbuf.eventIdx + at);
  };

  // ---- processing ------------------------------------------------------------------------

  const schedule = (ctx: DeviceContext) => {
    if (scheduled) return;
    scheduled = true;
    const gen = generation;
    queueMicrotask(() => {
      scheduled = false;
      if (gen === generation) runPass(ctx);
    });
  };

  const running = () => (csts & (CSTS_RDY | CSTS_CFS)) === CSTS_RDY;

  function runPass(ctx: DeviceContext) {
    if (!running()) return;
    try {
      deliverAsyncEvents(ctx);
      let progress = true;
      while (progress && running()) {
        progress = false;
        for (const sq of sqs) {
          if (sq && processQueue(ctx, sq)) progress = true;
          if (!running()) break;
        }
      }
    } catch (err) {
      fatal(`queue memory is not accessible: ${(err as Error).message}`);
    }
    raiseInterrupts(ctx);
  }

  /** Runs up to one arbitration burst of `sq`'s commands; true if any ran. An idle queue (drained
   *  with its EventIdx published, or no shadow) waits for its doorbell: no memory is read. */
  function processQueue(ctx: DeviceContext, sq: SubmissionQueue): boolean {
    if (sq.idle) return false;
    const mem = dmaOf(ctx);
    sq.refresh(mem);
    let done = 0;
    do {
      while (!sq.empty && done < ARBITRATION_BURST) {
        const batch = sq.contiguous(ARBITRATION_BURST - done);
        mem.readSync(sq.address(sq.head), sqeBuffer.subarray(0, batch * SQE_SIZE));
        for (let i = 0; i < batch; i++) {
          const cq = sq.cq;
          if (cq.full(mem)) {
            cq.blocked = true;
            return done > 0;
          }
          sq.consume(1);
          done++;
          const at = i * SQE_SIZE;
          const cid = sqe.getUint16(at + 2, true);
          const completion = sq.id === 0 ? adminCommand(ctx, at, cid) : ioCommand(ctx, at);
          if (!running() || sqs[sq.id] !== sq) return true; // fatal error, or the queue went away
          if (completion) post(ctx, cq, sq, cid, completion.status, completion.result);
        }
      }
    } while (done < ARBITRATION_BURST && sq.armSubmission(mem));
    return done > 0;
  }

  function post(ctx: DeviceContext, cq: CompletionQueue, sq: SubmissionQueue, cid: number, status: number, result: number) {
    // CQE (§4.6): DW0 result, DW2 SQ head + SQ id, DW3 command id, phase, status.
    cqe.setUint32(0, result >>> 0, true);
    cqe.setUint32(4, 0, true);
    cqe.setUint16(8, sq.head, true);
    cqe.setUint16(10, sq.id, true);
    cqe.setUint16(12, cid, true);
    cqe.setUint16(14, ((status << 1) | cq.phase) & 0xffff, true);
    dmaOf(ctx).writeSync(cq.slot(), cqeBuffer);
    cq.advance();
    cq.notify = true;
    cq.unsignalled++;
    if (status !== STATUS.SUCCESS && sq.id !== 0) recordError(sq.id, cid, status);
  }

  /**
   * End of a pass: each completion queue that got entries signals its vector once. With
   * Interrupt Coalescing set (§5.21.1.8: both THR and TIME nonzero; never the admin queue,
   * nor a vector whose Interrupt Vector Configuration sets Coalescing Disable) an I/O queue
   * signals once THR + 1 entries are unsignalled, or when TIME × 100 µs has passed since the
   * first of them (on ctx.clock; Node's real-time timers round a delay below 1 ms up to 1 ms).
   */
  function raiseInterrupts(ctx: DeviceContext) {
    const thr = (features.interruptCoalescing & 0xff) + 1;
    const time = (features.interruptCoalescing >>> 8) & 0xff;
    const coalescing = thr > 1 && time > 0;
    let intxNeeded = false;
    for (const cq of cqs) {
      if (!cq || !cq.notify) continue;
      cq.notify = false;
      if (!cq.interruptsEnabled) continue;
      if (coalescing && cq.id !== 0 && !features.vectorConfig[cq.vector] && ctx.irq.msixEnabled) {
        if (cq.unsignalled < thr) {
          coalesceTimer ??= ctx.clock.setTimeout(() => flushCoalesced(ctx), time / 10);
          continue;
        }
      }
      cq.unsignalled = 0;
      stats.interrupts++;
      if (!ctx.irq.notify(cq.vector)) intxNeeded = true;
    }
    if (intxNeeded || ctx.irq.intxLevel) updateIntx(ctx);
  }

  /** The aggregation time ran out (or coalescing was turned off): signal what is held. */
  function flushCoalesced(ctx: DeviceContext) {
    coalesceTimer?.cancel();
    coalesceTimer = undefined;
    for (const cq of cqs) {
      if (!cq || !cq.unsignalled) continue;
      cq.unsignalled = 0;
      if (!cq.interruptsEnabled || !running()) continue;
      stats.interrupts++;
      ctx.irq.notify(cq.vector);
    }
  }

  /** INTx is level-triggered: asserted while an interrupt-enabled CQ holds entries the host
   *  has not consumed and INTMS does not mask its vector (QEMU nvme_irq_check). */
  function updateIntx(ctx: DeviceContext) {
    if (ctx.irq.msixEnabled) {
      if (ctx.irq.intxLevel) ctx.irq.setIntx(false);
      return;
    }
    let pending = 0;
    for (const cq of cqs) {
      if (!cq || !cq.interruptsEnabled) continue;
      if (cq.pending) {
        try {
          cq.refresh(dmaOf(ctx));
        } catch {
          // the shadow buffer went away; keep the MMIO head
        }
      }
      if (cq.pending) pending |= 1 << (cq.vector & 31);
    }
    ctx.irq.setIntx((pending & ~intms) !== 0);
  }

  function recordError(sqid: number, cid: number, status: number) {
    errorCount++;
    errors.push({ count: errorCount, sqid, cid, status, parameter: 0xffff, lba: 0n, nsid: 0 });
    if (errors.length > NVME_ERROR_LOG_ENTRIES) errors.shift();
  }

  // ---- asynchronous events ---------------------------------------------------------------

  function queueEvent(ctx: DeviceContext, type: number, info: number, log: number) {
    if (pendingEvents.some((e) => e.type === type && e.info === info)) return;
    pendingEvents.push({ type, info, log });
    schedule(ctx);
  }

  function deliverAsyncEvents(ctx: DeviceContext) {
    const admin = cqs[0];
    const adminSq = sqs[0];
    if (!admin || !adminSq) return;
    for (let i = 0; i < pendingEvents.length && pendingAers.length > 0; ) {
      const event = pendingEvents[i];
      if (maskedEventTypes & (1 << event.type) || admin.full(dmaOf(ctx))) {
        i++;
        continue;
      }
      pendingEvents.splice(i, 1);
      maskedEventTypes |= 1 << event.type;
      const cid = pendingAers.shift()!;
      post(ctx, admin, adminSq, cid, STATUS.SUCCESS, event.type | (event.info << 8) | (event.log << 16));
    }
  }

  function updateTemperatureWarning(ctx: DeviceContext) {
    const over = NVME_COMPOSITE_TEMPERATURE >= features.temperatureOver;
    const under = features.temperatureUnder !== 0 && NVME_COMPOSITE_TEMPERATURE <= features.temperatureUnder;
    const warn = over || under;
    const was = (criticalWarning & 0x02) !== 0;
    criticalWarning = warn ? criticalWarning | 0x02 : criticalWarning & ~0x02;
    // A SMART event is reported only when Async Event Configuration enables its warning bit.
    if (warn && !was && features.asyncEventConfig & 0x02) queueEvent(ctx, AER_TYPE_SMART, AER_INFO_SMART_TEMPERATURE, LOG.SMART);
  }

  // ---- data transfer helpers ---------------------------------------------------------------

  /** Walks the command's PRPs for `length` bytes; returns a status (0 = segments ready). */
  function mapPrps(ctx: DeviceContext, at: number, length: number): number {
    const prp1 = sqe.getBigUint64(at + 24, true);
    const prp2 = sqe.getBigUint64(at + 32, true);
    if (sqeBuffer[at + 1] & 0xc0) return STATUS.INVALID_FIELD; // PSDT: SGLs are not supported
    return walkPrps(dmaOf(ctx), prp1, prp2, length, pageSize, prpScratch, segments);
  }

  /**
   * Copies between `data` and the host buffer an admin command's PRPs describe: into guest
   * memory when `intoGuest`, out of it otherwise. Returns a status (0 = done).
   */
  function copyWithHost(ctx: DeviceContext, at: number, data: Uint8Array, intoGuest: boolean): number {
    const status = mapPrps(ctx, at, data.length);
    if (status) return status;
    try {
      if (intoGuest) dmaOf(ctx).writeListSync(segments, data);
      else dmaOf(ctx).readListSync(segments, data);
    } catch {
      return STATUS.DATA_TRANSFER_ERROR;
    }
    return 0;
  }
  const toHost = (ctx: DeviceContext, at: number, data: Uint8Array) => copyWithHost(ctx, at, data, true);
  const fromHost = (ctx: DeviceContext, at: number, data: Uint8Array) => copyWithHost(ctx, at, data, false);

  // ---- admin commands --------------------------------------------------------------------

  const dw = (at: number, n: number) => sqe.getUint32(at + 40 + (n - 10) * 4, true);
  const nsidOf = (at: number) => sqe.getUint32(at + 4, true);

  function adminCommand(ctx: DeviceContext, at: number, cid: number): Completion {
    stats.adminCommands++;
    const opcode = sqeBuffer[at];
    if (sqeBuffer[at + 1] & 0x03) return fail(STATUS.INVALID_FIELD); // fused operations
    switch (opcode) {
      case ADMIN.IDENTIFY:
        return identify(ctx, at);
      case ADMIN.GET_FEATURES:
        return getFeature(dw(at, 10), dw(at, 11), features, limits);
      case ADMIN.SET_FEATURES: {
        const r = setFeature(dw(at, 10), dw(at, 11), features, limits);
        if (r.effect === "temperature") updateTemperatureWarning(ctx);
        else if (r.effect === "write-cache-off") backing.flush();
        else if (r.effect === "coalescing") flushCoalesced(ctx); // new settings apply to new entries
        return r;
      }
      case ADMIN.CREATE_CQ:
        return createCq(ctx, at);
      case ADMIN.CREATE_SQ:
        return createSq(ctx, at);
      case ADMIN.DELETE_SQ:
        return deleteSq(ctx, at);
      case ADMIN.DELETE_CQ:
        return deleteCq(ctx, at);
      case ADMIN.GET_LOG_PAGE:
        return getLogPage(ctx, at);
      case ADMIN.ASYNC_EVENT_REQUEST:
        if (pendingAers.length >= NVME_AER_LIMIT) return fail(STATUS.AER_LIMIT_EXCEEDED);
        pendingAers.push(cid);
        schedule(ctx);
        return undefined;
      case ADMIN.ABORT:
        // Every command but an AER completes before the next one is fetched, so there is
        // never one to abort: DW0 bit 0 = "not aborted" (§5.1).
        return ok(1);
      case ADMIN.DOORBELL_BUFFER_CONFIG:
        if (!identity.doorbellBuffer) return fail(STATUS.INVALID_OPCODE);
        return doorbellBufferConfig(ctx, at);
      default:
        return fail(STATUS.INVALID_OPCODE);
    }
  }

  function identify(ctx: DeviceContext, at: number): Completion {
    const cns = dw(at, 10) & 0xff;
    const csi = dw(at, 11) >>> 24;
    const nsid = nsidOf(at);
    switch (cns) {
      case CNS.NAMESPACE:
        if (nsid === 0xffffffff) return done(toHost(ctx, at, idNamespace)); // common capabilities
        if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(ctx, at, idNamespace));
      case CNS.CONTROLLER:
        return done(toHost(ctx, at, idController));
      case CNS.ACTIVE_NS_LIST:
      case CNS.CSI_ACTIVE_NS_LIST:
        if (cns === CNS.CSI_ACTIVE_NS_LIST && csi !== 0) return fail(STATUS.INVALID_FIELD);
        if (nsid >= 0xfffffffe) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(ctx, at, activeNamespaces(nsid, 1)));
      case CNS.NS_DESCRIPTORS:
        if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(ctx, at, idDescriptors));
      case CNS.CSI_NAMESPACE:
        // NVM command set specific structures carry nothing this controller needs (§1.4
        // of the NVM command set spec): zeros.
        if (csi !== 0) return fail(STATUS.INVALID_FIELD);
        if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(ctx, at, new Uint8Array(4096)));
      case CNS.CSI_CONTROLLER:
        if (csi !== 0) return fail(STATUS.INVALID_FIELD);
        return done(toHost(ctx, at, new Uint8Array(4096)));
      default:
        return fail(STATUS.INVALID_FIELD);
    }
  }

  const done = (status: number): Completion => (status ? fail(status) : ok());

  function queueBaseStatus(base: bigint): number {
    return base & BigInt(pageSize - 1) ? STATUS.PRP_OFFSET_INVALID : 0;
  }

  function createCq(ctx: DeviceContext, at: number): Completion {
    const dw10 = dw(at, 10);
    const dw11 = dw(at, 11);
    const qid = dw10 & 0xffff;
    const size = (dw10 >>> 16) + 1;
    const contiguous = dw11 & 1;
    const ien = (dw11 & 2) !== 0;
    const iv = dw11 >>> 16;
    const base = sqe.getBigUint64(at + 24, true);
    if (qid === 0 || qid > ioQueues || cqs[qid]) return fail(STATUS.INVALID_QUEUE_IDENTIFIER);
    if (size < 2 || size > NVME_MAX_QUEUE_ENTRIES) return fail(STATUS.INVALID_QUEUE_SIZE);
    if (!contiguous) return fail(STATUS.INVALID_FIELD); // CAP.CQR: queues must be contiguous
    if (ccIocqes(cc) !== 4) return fail(STATUS.INVALID_FIELD);
    if (iv >= vectors || (!ctx.irq.msixEnabled && iv !== 0 && ien)) return fail(STATUS.INVALID_INTERRUPT_VECTOR);
    const status = queueBaseStatus(base);
    if (status) return fail(status);
    const cq = new CompletionQueue(qid, base, size, ien, iv);
    cq.shadow = shadowOf(qid, true);
    cqs[qid] = cq;
    return ok();
  }

  function createSq(ctx: DeviceContext, at: number): Completion {
    const dw10 = dw(at, 10);
    const dw11 = dw(at, 11);
    const qid = dw10 & 0xffff;
    const size = (dw10 >>> 16) + 1;
    const contiguous = dw11 & 1;
    const cqid = dw11 >>> 16;
    const base = sqe.getBigUint64(at + 24, true);
    if (qid === 0 || qid > ioQueues || sqs[qid]) return fail(STATUS.INVALID_QUEUE_IDENTIFIER);
    const cq = cqid === 0 ? undefined : cqs[cqid];
    if (!cq) return fail(STATUS.COMPLETION_QUEUE_INVALID);
    if (size < 2 || size > NVME_MAX_QUEUE_ENTRIES) return fail(STATUS.INVALID_QUEUE_SIZE);
    if (!contiguous) return fail(STATUS.INVALID_FIELD);
    if (ccIosqes(cc) !== 6) return fail(STATUS.INVALID_FIELD);
    const status = queueBaseStatus(base);
    if (status) return fail(status);
    const sq = new SubmissionQueue(qid, base, size, cq);
    sq.shadow = shadowOf(qid, false);
    sqs[qid] = sq;
    cq.sqs++;
    return ok();
  }

  function deleteSq(ctx: DeviceContext, at: number): Completion {
    const qid = dw(at, 10) & 0xffff;
    const sq = qid === 0 ? undefined : sqs[qid];
    if (!sq) return fail(STATUS.INVALID_QUEUE_IDENTIFIER);
    sqs[qid] = undefined;
    sq.cq.sqs--;
    return ok();
  }

  function deleteCq(ctx: DeviceContext, at: number): Completion {
    const qid = dw(at, 10) & 0xffff;
    const cq = qid === 0 ? undefined : cqs[qid];
    if (!cq) return fail(STATUS.INVALID_QUEUE_IDENTIFIER);
    if (cq.sqs > 0) return fail(STATUS.INVALID_QUEUE_DELETION);
    cqs[qid] = undefined;
    updateIntx(ctx);
    return ok();
  }

  function getLogPage(ctx: DeviceContext, at: number): Completion {
    const dw10 = dw(at, 10);
    const lid = dw10 & 0xff;
    const rae = (dw10 >>> 15) & 1;
    const numd = ((dw10 >>> 16) | ((dw(at, 11) & 0xffff) << 16)) + 1;
    const offset = sqe.getBigUint64(at + 48, true);
    const nsid = nsidOf(at);
    if (offset & 3n) return fail(STATUS.INVALID_FIELD);
    let log: Uint8Array;
    let eventType = -1;
    switch (lid) {
      case LOG.ERROR:
        log = errorLog(errors, NVME_ERROR_LOG_ENTRIES);
        eventType = AER_TYPE_ERROR;
        break;
      case LOG.SMART:
        if (nsid !== 0 && nsid !== 1 && nsid !== 0xffffffff) return fail(STATUS.INVALID_NAMESPACE);
        log = smartLog({
          criticalWarning,
          temperature: NVME_COMPOSITE_TEMPERATURE,
          bytesRead: BigInt(smart.bytesRead),
          bytesWritten: BigInt(smart.bytesWritten),
          readCommands: BigInt(smart.readCommands),
          writeCommands: BigInt(smart.writeCommands),
          powerCycles: 1n,
          powerOnSeconds: (Date.now() - createdAt) / 1000,
          unsafeShutdowns: smart.unsafeShutdowns,
          errorLogEntries: errorCount,
        });
        eventType = AER_TYPE_SMART;
        break;
      case LOG.FIRMWARE_SLOT:
        log = firmwareSlotLog(identity.firmware);
        break;
      default:
        return fail(STATUS.INVALID_LOG_PAGE);
    }
    if (offset >= BigInt(log.length)) return fail(STATUS.INVALID_FIELD);
    const start = Number(offset);
    const length = Math.min(numd * 4, log.length - start);
    const status = toHost(ctx, at, log.subarray(start, start + length));
    if (status) return fail(status);
    // Reading the log page without Retain Asynchronous Event re-arms events of its type.
    if (!rae && eventType >= 0 && maskedEventTypes & (1 << eventType)) {
      maskedEventTypes &= ~(1 << eventType);
      schedule(ctx);
    }
    return ok();
  }

  function doorbellBufferConfig(ctx: DeviceContext, at: number): Completion {
    const shadow = sqe.getBigUint64(at + 24, true);
    const eventIdx = sqe.getBigUint64(at + 32, true);
    const mask = BigInt(pageSize - 1);
    if (shadow === 0n || eventIdx === 0n || shadow & mask || eventIdx & mask) return fail(STATUS.INVALID_FIELD);
    dbbuf = { shadow, eventIdx };
    // Existing queues start from their current MMIO values (QEMU nvme_dbbuf_config).
    const mem = dmaOf(ctx);
    for (const q of [...sqs, ...cqs]) {
      if (!q) continue;
      const shadow = (q.shadow = shadowOf(q.id, q instanceof CompletionQueue)!);
      if (q instanceof SubmissionQueue) q.idle = false; // armed through the shadow at the next pass
      const value = q instanceof CompletionQueue ? q.head : q.tail;
      shadow.write(mem, value);
      shadow.publish(mem, value);
    }
    return ok();
  }

  // ---- I/O commands ----------------------------------------------------------------------

  function ioCommand(ctx: DeviceContext, at: number): Completion {
    stats.ioCommands++;
    const opcode = sqeBuffer[at];
    if (sqeBuffer[at + 1] & 0x03) return fail(STATUS.INVALID_FIELD);
    const nsid = nsidOf(at);
    if (opcode === IO.FLUSH) {
      if (nsid !== 1 && nsid !== 0xffffffff) return fail(STATUS.INVALID_NAMESPACE);
      backing.flush();
      return ok();
    }
    if (opcode !== IO.READ && opcode !== IO.WRITE && opcode !== IO.WRITE_ZEROES && opcode !== IO.DATASET_MANAGEMENT) return fail(STATUS.INVALID_OPCODE);
    if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
    if (opcode === IO.DATASET_MANAGEMENT) return datasetManagement(ctx, at);
    // SLBA in numbers: any upper dword past 2^21 is beyond every namespace (blocks < 2^53).
    const slbaHigh = dw(at, 11);
    const dw12 = dw(at, 12);
    const nlb = (dw12 & 0xffff) + 1;
    const slba = slbaHigh * 2 ** 32 + dw(at, 10);
    if (slbaHigh >= 2 ** 21 || slba + nlb > blockCount) return fail(STATUS.LBA_OUT_OF_RANGE);
    const offset = slba * lbaSize;
    const length = nlb * lbaSize;
    if (opcode === IO.WRITE_ZEROES) {
      backing.zero(offset, length);
      return ok();
    }
    if (length > (4096 << NVME_MDTS)) return fail(STATUS.INVALID_FIELD);
    const prpStatus = mapPrps(ctx, at, length);
    if (prpStatus) return fail(prpStatus);
    const api = dmaOf(ctx);
    try {
      // RAM: the whole PRP list is translated in one call into the core, then copied straight
      // between guest memory and the backing. A file: one preadv/pwritev into zero-copy views
      // of guest memory.
      if (opcode === IO.READ) {
        if (backing.bytes) api.writeListSync(segments, backing.bytes.subarray(offset, offset + length));
        else fileTransfer(api, offset, "from-device");
        smart.readCommands++;
        smart.bytesRead += length;
      } else {
        if (backing.bytes) api.readListSync(segments, backing.bytes.subarray(offset, offset + length));
        else fileTransfer(api, offset, "to-device");
        if (dw12 & (1 << 30) || !features.writeCache) backing.flush(); // FUA
        smart.writeCommands++;
        smart.bytesWritten += length;
      }
    } catch (err) {
      guestError(`I/O data transfer failed: ${(err as Error).message}`);
      return fail(STATUS.DATA_TRANSFER_ERROR);
    }
    return ok();
  }

  const mappings: DmaMapping[] = [];
  const views: Uint8Array[] = [];
  /** Moves the mapped PRP segments between guest memory and the file at `offset`. */
  function fileTransfer(api: DmaApi, offset: number, direction: "from-device" | "to-device") {
    try {
      for (let i = 0; i < segments.count; i++) {
        const m = api.map(segments.iova[i], segments.length[i], direction, () => {});
        mappings.push(m);
        for (const v of m.views) views.push(v);
      }
      if (direction === "from-device") backing.readv(offset, views);
      else backing.writev(offset, views);
    } finally {
      for (const m of mappings) m.release();
      mappings.length = 0;
      views.length = 0;
    }
  }

  function datasetManagement(ctx: DeviceContext, at: number): Completion {
    const ranges = (dw(at, 10) & 0xff) + 1;
    const deallocate = (dw(at, 11) & 0x4) !== 0;
    const list = new Uint8Array(ranges * 16);
    const status = fromHost(ctx, at, list);
    if (status) return fail(status);
    const view = new DataView(list.buffer);
    // Check every range before changing anything.
    for (let i = 0; i < ranges; i++) {
      const nlb = view.getUint32(i * 16 + 4, true);
      const slba = view.getBigUint64(i * 16 + 8, true);
      if (slba + BigInt(nlb) > blocks) return fail(STATUS.LBA_OUT_OF_RANGE);
    }
    if (!deallocate) return ok(); // attributes are hints
    for (let i = 0; i < ranges; i++) {
      const nlb = view.getUint32(i * 16 + 4, true);
      const slba = view.getBigUint64(i * 16 + 8, true);
      // Deallocated blocks read as zeros (DLFEAT).
      if (nlb) backing.zero(Number(slba) * lbaSize, nlb * lbaSize);
    }
    return ok();
  }

  // ---- controller state ------------------------------------------------------------------

  function startController(ctx: DeviceContext) {
    const mps = ccMps(cc);
    const asqs = (aqa & 0xfff) + 1;
    const acqs = ((aqa >>> 16) & 0xfff) + 1;
    const page = 4096 << mps;
    const problem =
      ccCss(cc) !== 0 ? "CC.CSS is not the NVM command set"
      : ccAms(cc) !== 0 ? "CC.AMS selects an arbitration mechanism other than round robin"
      : mps > MPSMAX ? `CC.MPS ${mps} is above MPSMAX ${MPSMAX}`
      : asqs < 2 || acqs < 2 ? "AQA describes an admin queue of fewer than 2 entries"
      : asq === 0n || acq === 0n ? "ASQ or ACQ is 0"
      : asq & BigInt(page - 1) || acq & BigInt(page - 1) ? "ASQ or ACQ is not page aligned"
      : undefined;
    if (problem) {
      // QEMU nvme_start_ctrl refuses the same way: the controller reports a fatal status.
      guestError(`controller enable refused: ${problem}`);
      fatal(problem);
      return;
    }
    pageSize = page;
    const cq = new CompletionQueue(0, acq, acqs, true, 0);
    cq.sqs = 1;
    cqs = [cq];
    sqs = [new SubmissionQueue(0, asq, asqs, cq)];
    csts = (csts & CSTS_SHST_MASK) | CSTS_RDY;
    stats.enables++;
    emit({ kind: "enabled" });
  }

  /** Controller reset (CC.EN 1 → 0, §7.3.2): queues deleted, outstanding commands (AERs)
   *  dropped, features back to defaults. Registers other than CC/CSTS keep their values. */
  function resetController(ctx: DeviceContext) {
    generation++;
    coalesceTimer?.cancel();
    coalesceTimer = undefined;
    scheduled = false;
    sqs = [];
    cqs = [];
    dbbuf = undefined;
    pendingAers.length = 0;
    pendingEvents.length = 0;
    maskedEventTypes = 0;
    features = defaultFeatures(limits);
    criticalWarning = 0;
    csts &= CSTS_SHST_MASK;
    ctx.irq.setIntx(false);
    emit({ kind: "reset" });
  }

  function shutdown(ctx: DeviceContext) {
    // Everything completed is already in the backing; make it durable, then report done.
    try {
      backing.flush();
    } catch (err) {
      guestError(`flush at shutdown failed: ${(err as Error).message}`);
    }
    csts = (csts & ~CSTS_SHST_MASK) | CSTS_SHST_COMPLETE;
    stats.shutdowns++;
    emit({ kind: "shutdown" });
  }

  function writeCc(ctx: DeviceContext, value: number) {
    const old = cc;
    cc = value >>> 0;
    if ((old & CC_EN) && !(cc & CC_EN)) {
      resetController(ctx);
    } else if (!(old & CC_EN) && cc & CC_EN) {
      startController(ctx);
    }
    if (ccShn(cc) && !ccShn(old)) shutdown(ctx);
    else if (!ccShn(cc) && ccShn(old)) csts &= ~CSTS_SHST_MASK;
  }

  // ---- registers -------------------------------------------------------------------------

  function doorbell(ctx: DeviceContext, offset: number, value: number) {
    stats.mmioDoorbells++;
    if (!running()) return; // QEMU ignores doorbells while the controller is not ready
    const index = (offset - NVME_REG.DOORBELLS) >>> 2;
    const qid = index >>> 1;
    const isCq = (index & 1) === 1;
    const queue = isCq ? cqs[qid] : sqs[qid];
    if (!queue) {
      guestError(`doorbell write to ${isCq ? "CQ" : "SQ"} ${qid}, which does not exist`);
      recordError(0xffff, 0xffff, STATUS.INVALID_FIELD);
      queueEvent(ctx, AER_TYPE_ERROR, AER_INFO_ERR_INVALID_DB_REGISTER, LOG.ERROR);
      return;
    }
    const v = value & 0xffff;
    if (!queue.valid(v)) {
      guestError(`doorbell value ${v} is beyond ${isCq ? "CQ" : "SQ"} ${qid}'s ${queue.size} entries`);
      recordError(0xffff, 0xffff, STATUS.INVALID_FIELD);
      queueEvent(ctx, AER_TYPE_ERROR, AER_INFO_ERR_INVALID_DB_VALUE, LOG.ERROR);
      return;
    }
    queue.ring(v);
    try {
      if (queue.shadow && qid === 0) {
        // Linux never updates the admin queue's shadow entries, only its MMIO doorbells:
        // keep the shadow in step (as QEMU's nvme_process_db does for queue 0).
        queue.shadow.write(dmaOf(ctx), v);
      } else {
        // An I/O queue's shadow is written before its MMIO doorbell (which the host rings only
        // when EventIdx asks) and is authoritative: our MMIO writes arrive as posted messages,
        // so the value one carries may be older than the shadow by the time it is handled.
        queue.refresh(dmaOf(ctx));
      }
    } catch (err) {
      fatal(`shadow doorbell buffer is not accessible: ${(err as Error).message}`);
      return;
    }
    if (queue instanceof CompletionQueue) {
      if (queue.blocked || pendingEvents.length) {
        queue.blocked = false;
        schedule(ctx);
      }
      if (!ctx.irq.msixEnabled) updateIntx(ctx);
    } else {
      schedule(ctx);
    }
  }

  // Registers take 4- and 8-byte accesses (§3.1: 64-bit registers may be accessed as one
  // qword or two dwords). read/write see the dwords; an 8-byte access is the two dwords in
  // address order, so CAP, ASQ and ACQ read and write the same either way.
  const read = (offset: number): number => {
    switch (offset) {
      case NVME_REG.CAP:
        return Number(cap & 0xffffffffn);
      case NVME_REG.CAP + 4:
        return Number(cap >> 32n);
      case NVME_REG.VS:
        return NVME_VERSION_1_4;
      case NVME_REG.INTMS:
      case NVME_REG.INTMC:
        return intms;
      case NVME_REG.CC:
        return cc;
      case NVME_REG.CSTS:
        return csts;
      case NVME_REG.AQA:
        return aqa;
      case NVME_REG.ASQ:
        return Number(asq & 0xffffffffn);
      case NVME_REG.ASQ + 4:
        return Number(asq >> 32n);
      case NVME_REG.ACQ:
        return Number(acq & 0xffffffffn);
      case NVME_REG.ACQ + 4:
        return Number(acq >> 32n);
      default:
        return 0; // NSSR, CMB registers (no CMB), reserved space and doorbells read as 0
    }
  };

  const read64 = (offset: number): bigint => BigInt(read(offset)) | (BigInt(read(offset + 4)) << 32n);
  const write64 = (offset: number, value: bigint, ctx: DeviceContext): void => {
    write(offset, 4, Number(value & 0xffffffffn), ctx);
    write(offset + 4, 4, Number(value >> 32n), ctx);
  };

  const write = (offset: number, _size: number, value: number, ctx: DeviceContext): void => {
    const v = value >>> 0;
    if (offset >= NVME_REG.DOORBELLS) {
      if (offset < NVME_REG.DOORBELLS + 8 * (ioQueues + 1)) doorbell(ctx, offset, v);
      else guestError(`write to 0x${offset.toString(16)}, past the doorbells of ${ioQueues + 1} queue pairs`);
      return;
    }
    switch (offset) {
      case NVME_REG.INTMS:
        // INTMS/INTMC apply to INTx and MSI only (§3.1.3); with MSI-X the table masks.
        if (ctx.irq.msixEnabled) return;
        intms = (intms | v) >>> 0;
        updateIntx(ctx);
        return;
      case NVME_REG.INTMC:
        if (ctx.irq.msixEnabled) return;
        intms = (intms & ~v) >>> 0;
        updateIntx(ctx);
        return;
      case NVME_REG.CC:
        writeCc(ctx, v);
        return;
      case NVME_REG.AQA:
        aqa = v & 0x0fff0fff;
        return;
      case NVME_REG.ASQ:
        asq = (asq & 0xffffffff00000000n) | BigInt(v & ~0xfff);
        return;
      case NVME_REG.ASQ + 4:
        asq = (asq & 0xffffffffn) | (BigInt(v) << 32n);
        return;
      case NVME_REG.ACQ:
        acq = (acq & 0xffffffff00000000n) | BigInt(v & ~0xfff);
        return;
      case NVME_REG.ACQ + 4:
        acq = (acq & 0xffffffffn) | (BigInt(v) << 32n);
        return;
      case NVME_REG.NSSR:
        return; // NVM subsystem reset is not supported (CAP.NSSRS 0): writes are ignored
      default:
        return; // CAP, VS, CSTS and reserved registers are read-only
    }
  };

  /** Everything back to power-on values (function-level reset, vfio-user DEVICE_RESET). */
  function powerOnReset(ctx: DeviceContext) {
    // SMART Unsafe Shutdowns counts power lost without CC.SHN first (§5.14.1.2). For this device
    // that is a function reset of a ready controller (a VM reset, or the next VMM after one was
    // killed); a controller reset (CC.EN 1 → 0) keeps power and is not one. Linux disables the
    // controller at every probe, because the firmware (SeaBIOS) left it enabled.
    if ((csts & (CSTS_RDY | CSTS_SHST_MASK)) === CSTS_RDY) smart.unsafeShutdowns++;
    resetController(ctx);
    cc = 0;
    csts = 0;
    aqa = 0;
    asq = 0n;
    acq = 0n;
    intms = 0;
    pageSize = 4096;
  }

  const fn: PciFunction = createPciFunction(
    {
      name: "nvme",
      vendorId: NVME_VENDOR_ID,
      deviceId: NVME_DEVICE_ID,
      subsystemVendorId: NVME_VENDOR_ID,
      subsystemId: NVME_DEVICE_ID,
      revision: 0x02,
      classCode: NVME_CLASS_CODE,
      interruptPin: 1,
      bars: [
        {
          kind: "mem64",
          size: NVME_BAR0_SIZE,
          name: "nvme-registers",
          registers: { read, write, read64, write64, valid: { min: 4, max: 8 }, impl: { min: 4, max: 8 } },
        },
      ],
      capabilities: [
        { kind: "pm" },
        { kind: "msix", vectors, tableBar: 0, tableOffset: NVME_MSIX_TABLE_OFFSET, pbaBar: 0, pbaOffset: NVME_MSIX_PBA_OFFSET },
        { kind: "pcie", deviceType: "endpoint" },
      ],
      reset: powerOnReset,
      dispose() {
        generation++;
        coalesceTimer?.cancel();
        backing.close();
      },
    },
    { core: options.core, clock: options.clock },
  );

  return {
    fn,
    backing,
    get csts() {
      return csts;
    },
    get cc() {
      return cc;
    },
    stats,
  };
}
