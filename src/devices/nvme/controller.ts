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
// work is drained round-robin, completions are posted, and each completion queue that got
// entries raises one interrupt for the whole pass (MSI-X vector of the queue, or INTx when
// MSI-X is off). With Doorbell Buffer Config the host writes tails and heads into a shadow
// buffer in its memory and rings the MMIO doorbell only when it crosses the EventIdx the
// controller publishes after draining a queue (the virtio-style scheme Linux implements in
// nvme_dbbuf_update_and_check_event).
//
// DMA goes through fn.dma, synchronously (guest RAM shared with the device: memfd DMA_MAP,
// SYNC_SYSMEM, or an in-process buffer); data moves straight between guest memory and the
// backing. A queue whose memory cannot be read or written is a fatal controller error: CSTS.CFS
// is set and processing stops until the host resets the controller (CC.EN 1 → 0).
import { createPciFunction } from "../../core/pci/function.js";
import type { AccessSize, PciDevice, PciFunction } from "../../core/pci/api.js";
import type { DmaApi } from "../../core/dma/api.js";
import type { CoreRef } from "../../core/wasm.js";
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
  FEATURE,
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
  NVME_WARNING_TEMPERATURE,
  smartLog,
  type ErrorLogEntry,
  type NvmeIdentity,
} from "./identify.js";
import { PrpSegments, walkPrps } from "./prp.js";

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
  serial?: string;
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

interface SubmissionQueue {
  id: number;
  base: bigint;
  size: number;
  head: number;
  tail: number;
  cq: CompletionQueue;
  /** Shadow doorbell and EventIdx addresses (Doorbell Buffer Config), or -1n. */
  shadow: bigint;
  eventIdx: bigint;
}

interface CompletionQueue {
  id: number;
  base: bigint;
  size: number;
  head: number;
  tail: number;
  phase: number;
  interruptsEnabled: boolean;
  vector: number;
  sqs: number;
  /** Entries were posted in this pass: raise the interrupt when the pass ends. */
  notify: boolean;
  /** A submission queue stopped because this queue was full. */
  blocked: boolean;
  shadow: bigint;
  eventIdx: bigint;
}

interface Features {
  arbitration: number;
  powerState: number;
  temperatureOver: number;
  temperatureUnder: number;
  errorRecovery: number;
  writeCache: number;
  interruptCoalescing: number;
  vectorConfig: Uint8Array;
  writeAtomicity: number;
  asyncEventConfig: number;
}

/** Outcome of a command that completes now: status + DW0; `undefined` = held (AER). */
type Completion = { status: number; result: number } | undefined;

const ok = (result = 0): Completion => ({ status: STATUS.SUCCESS, result });
const fail = (status: number): Completion => ({ status, result: 0 });

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
  let features: Features = defaultFeatures();
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
  /** Bumped by every reset so a scheduled pass does not run against new state. */
  let generation = 0;

  const sqeBuffer = new Uint8Array(SQE_SIZE * ARBITRATION_BURST);
  const sqe = new DataView(sqeBuffer.buffer);
  const cqeBuffer = new Uint8Array(CQE_SIZE);
  const cqe = new DataView(cqeBuffer.buffer);
  const prpScratch = new Uint8Array(64 << 10);
  const segments = new PrpSegments();
  const u32Buffer = new Uint8Array(4);
  const u32View = new DataView(u32Buffer.buffer);

  function defaultFeatures(): Features {
    return {
      arbitration: 0,
      powerState: 0,
      temperatureOver: NVME_WARNING_TEMPERATURE,
      temperatureUnder: 0,
      errorRecovery: 0,
      writeCache: 1,
      interruptCoalescing: 0,
      vectorConfig: new Uint8Array(vectors),
      writeAtomicity: 0,
      asyncEventConfig: 0,
    };
  }

  const dmaApi = (): DmaApi => {
    const api = fn.dma;
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

  const readShadow = (addr: bigint): number => {
    dmaApi().readSync(addr, u32Buffer);
    return u32View.getUint32(0, true);
  };
  const writeShadow = (addr: bigint, value: number) => {
    u32View.setUint32(0, value, true);
    dmaApi().writeSync(addr, u32Buffer);
  };
  const attachShadow = (q: SubmissionQueue | CompletionQueue, isCq: boolean) => {
    if (!dbbuf) return;
    const at = BigInt((2 * q.id + (isCq ? 1 : 0)) * 4);
    q.shadow = dbbuf.shadow + at;
    q.eventIdx = dbbuf.eventIdx + at;
  };

  /** The SQ tail the host published in its shadow doorbell (out-of-range values ignored). */
  const refreshSqTail = (sq: SubmissionQueue) => {
    if (sq.shadow < 0n) return;
    const tail = readShadow(sq.shadow);
    if (tail < sq.size) sq.tail = tail;
  };
  const refreshCqHead = (cq: CompletionQueue) => {
    if (cq.shadow < 0n) return;
    const head = readShadow(cq.shadow);
    if (head < cq.size) cq.head = head;
  };

  // ---- processing ------------------------------------------------------------------------

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    const gen = generation;
    queueMicrotask(() => {
      scheduled = false;
      if (gen === generation) runPass();
    });
  };

  const running = () => (csts & (CSTS_RDY | CSTS_CFS)) === CSTS_RDY;

  function runPass() {
    if (!running()) return;
    try {
      deliverAsyncEvents();
      let progress = true;
      while (progress && running()) {
        progress = false;
        for (const sq of sqs) {
          if (sq && processQueue(sq)) progress = true;
          if (!running()) break;
        }
      }
    } catch (err) {
      fatal(`queue memory is not accessible: ${(err as Error).message}`);
    }
    raiseInterrupts();
  }

  /** Runs up to one arbitration burst of `sq`'s commands; true if any ran. */
  function processQueue(sq: SubmissionQueue): boolean {
    refreshSqTail(sq);
    let done = 0;
    for (;;) {
      while (sq.head !== sq.tail && done < ARBITRATION_BURST) {
        const available = (sq.tail - sq.head + sq.size) % sq.size;
        const batch = Math.min(available, sq.size - sq.head, ARBITRATION_BURST - done);
        dmaApi().readSync(sq.base + BigInt(sq.head * SQE_SIZE), sqeBuffer.subarray(0, batch * SQE_SIZE));
        for (let i = 0; i < batch; i++) {
          const cq = sq.cq;
          if (cqFull(cq)) {
            cq.blocked = true;
            return done > 0;
          }
          sq.head = (sq.head + 1) % sq.size;
          done++;
          const at = i * SQE_SIZE;
          const cid = sqe.getUint16(at + 2, true);
          const completion = sq.id === 0 ? adminCommand(at, cid) : ioCommand(at);
          if (!running() || sqs[sq.id] !== sq) return true; // fatal error, or the queue went away
          if (completion) post(cq, sq, cid, completion.status, completion.result);
        }
      }
      if (done >= ARBITRATION_BURST || sq.shadow < 0n) return done > 0;
      // Publish how far we got, then look again: a tail written before the host saw the new
      // EventIdx would otherwise wait for a doorbell that never comes.
      writeShadow(sq.eventIdx, sq.tail);
      const before = sq.tail;
      refreshSqTail(sq);
      if (sq.tail === before) return done > 0;
    }
  }

  function cqFull(cq: CompletionQueue): boolean {
    if ((cq.tail + 1) % cq.size !== cq.head) return false;
    refreshCqHead(cq);
    if ((cq.tail + 1) % cq.size !== cq.head) return false;
    // Ask for an MMIO doorbell when the host moves the head past where it is now.
    if (cq.eventIdx >= 0n) writeShadow(cq.eventIdx, cq.head);
    return true;
  }

  function post(cq: CompletionQueue, sq: SubmissionQueue, cid: number, status: number, result: number) {
    // CQE (§4.6): DW0 result, DW2 SQ head + SQ id, DW3 command id, phase, status.
    cqe.setUint32(0, result >>> 0, true);
    cqe.setUint32(4, 0, true);
    cqe.setUint16(8, sq.head, true);
    cqe.setUint16(10, sq.id, true);
    cqe.setUint16(12, cid, true);
    cqe.setUint16(14, ((status << 1) | cq.phase) & 0xffff, true);
    dmaApi().writeSync(cq.base + BigInt(cq.tail * CQE_SIZE), cqeBuffer);
    cq.tail++;
    if (cq.tail === cq.size) {
      cq.tail = 0;
      cq.phase ^= 1;
    }
    cq.notify = true;
    if (status !== STATUS.SUCCESS && sq.id !== 0) recordError(sq.id, cid, status);
  }

  function raiseInterrupts() {
    let intxNeeded = false;
    for (const cq of cqs) {
      if (!cq || !cq.notify) continue;
      cq.notify = false;
      if (!cq.interruptsEnabled) continue;
      stats.interrupts++;
      if (!fn.irq.notify(cq.vector)) intxNeeded = true;
    }
    if (intxNeeded || fn.irq.intxLevel) updateIntx();
  }

  /** INTx is level-triggered: asserted while an interrupt-enabled CQ holds entries the host
   *  has not consumed and INTMS does not mask its vector (QEMU nvme_irq_check). */
  function updateIntx() {
    if (fn.irq.msixEnabled) {
      if (fn.irq.intxLevel) fn.irq.setIntx(false);
      return;
    }
    let pending = 0;
    for (const cq of cqs) {
      if (!cq || !cq.interruptsEnabled) continue;
      if (cq.head !== cq.tail) {
        try {
          refreshCqHead(cq);
        } catch {
          // the shadow buffer went away; keep the MMIO head
        }
      }
      if (cq.head !== cq.tail) pending |= 1 << (cq.vector & 31);
    }
    fn.irq.setIntx((pending & ~intms) !== 0);
  }

  function recordError(sqid: number, cid: number, status: number) {
    errorCount++;
    errors.push({ count: errorCount, sqid, cid, status, parameter: 0xffff, lba: 0n, nsid: 0 });
    if (errors.length > NVME_ERROR_LOG_ENTRIES) errors.shift();
  }

  // ---- asynchronous events ---------------------------------------------------------------

  function queueEvent(type: number, info: number, log: number) {
    if (pendingEvents.some((e) => e.type === type && e.info === info)) return;
    pendingEvents.push({ type, info, log });
    schedule();
  }

  function deliverAsyncEvents() {
    const admin = cqs[0];
    const adminSq = sqs[0];
    if (!admin || !adminSq) return;
    for (let i = 0; i < pendingEvents.length && pendingAers.length > 0; ) {
      const event = pendingEvents[i];
      if (maskedEventTypes & (1 << event.type) || cqFull(admin)) {
        i++;
        continue;
      }
      pendingEvents.splice(i, 1);
      maskedEventTypes |= 1 << event.type;
      const cid = pendingAers.shift()!;
      post(admin, adminSq, cid, STATUS.SUCCESS, event.type | (event.info << 8) | (event.log << 16));
    }
  }

  function updateTemperatureWarning() {
    const over = NVME_COMPOSITE_TEMPERATURE >= features.temperatureOver;
    const under = features.temperatureUnder !== 0 && NVME_COMPOSITE_TEMPERATURE <= features.temperatureUnder;
    const warn = over || under;
    const was = (criticalWarning & 0x02) !== 0;
    criticalWarning = warn ? criticalWarning | 0x02 : criticalWarning & ~0x02;
    // A SMART event is reported only when Async Event Configuration enables its warning bit.
    if (warn && !was && features.asyncEventConfig & 0x02) queueEvent(AER_TYPE_SMART, AER_INFO_SMART_TEMPERATURE, LOG.SMART);
  }

  // ---- data transfer helpers ---------------------------------------------------------------

  /** Walks the command's PRPs for `length` bytes; returns a status (0 = segments ready). */
  function mapPrps(at: number, length: number): number {
    const prp1 = sqe.getBigUint64(at + 24, true);
    const prp2 = sqe.getBigUint64(at + 32, true);
    if (sqeBuffer[at + 1] & 0xc0) return STATUS.INVALID_FIELD; // PSDT: SGLs are not supported
    return walkPrps(dmaApi(), prp1, prp2, length, pageSize, prpScratch, segments);
  }

  /**
   * Copies between `data` and the host buffer an admin command's PRPs describe: into guest
   * memory when `intoGuest`, out of it otherwise. Returns a status (0 = done).
   */
  function copyWithHost(at: number, data: Uint8Array, intoGuest: boolean): number {
    const status = mapPrps(at, data.length);
    if (status) return status;
    try {
      if (intoGuest) dmaApi().writeListSync(segments, data);
      else dmaApi().readListSync(segments, data);
    } catch {
      return STATUS.DATA_TRANSFER_ERROR;
    }
    return 0;
  }
  const toHost = (at: number, data: Uint8Array) => copyWithHost(at, data, true);
  const fromHost = (at: number, data: Uint8Array) => copyWithHost(at, data, false);

  // ---- admin commands --------------------------------------------------------------------

  const dw = (at: number, n: number) => sqe.getUint32(at + 40 + (n - 10) * 4, true);
  const nsidOf = (at: number) => sqe.getUint32(at + 4, true);

  function adminCommand(at: number, cid: number): Completion {
    stats.adminCommands++;
    const opcode = sqeBuffer[at];
    if (sqeBuffer[at + 1] & 0x03) return fail(STATUS.INVALID_FIELD); // fused operations
    switch (opcode) {
      case ADMIN.IDENTIFY:
        return identify(at);
      case ADMIN.GET_FEATURES:
        return getFeatures(at);
      case ADMIN.SET_FEATURES:
        return setFeatures(at);
      case ADMIN.CREATE_CQ:
        return createCq(at);
      case ADMIN.CREATE_SQ:
        return createSq(at);
      case ADMIN.DELETE_SQ:
        return deleteSq(at);
      case ADMIN.DELETE_CQ:
        return deleteCq(at);
      case ADMIN.GET_LOG_PAGE:
        return getLogPage(at);
      case ADMIN.ASYNC_EVENT_REQUEST:
        if (pendingAers.length >= NVME_AER_LIMIT) return fail(STATUS.AER_LIMIT_EXCEEDED);
        pendingAers.push(cid);
        schedule();
        return undefined;
      case ADMIN.ABORT:
        // Every command but an AER completes before the next one is fetched, so there is
        // never one to abort: DW0 bit 0 = "not aborted" (§5.1).
        return ok(1);
      case ADMIN.DOORBELL_BUFFER_CONFIG:
        return doorbellBufferConfig(at);
      default:
        return fail(STATUS.INVALID_OPCODE);
    }
  }

  function identify(at: number): Completion {
    const cns = dw(at, 10) & 0xff;
    const csi = dw(at, 11) >>> 24;
    const nsid = nsidOf(at);
    switch (cns) {
      case CNS.NAMESPACE:
        if (nsid === 0xffffffff) return done(toHost(at, idNamespace)); // common capabilities
        if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(at, idNamespace));
      case CNS.CONTROLLER:
        return done(toHost(at, idController));
      case CNS.ACTIVE_NS_LIST:
      case CNS.CSI_ACTIVE_NS_LIST:
        if (cns === CNS.CSI_ACTIVE_NS_LIST && csi !== 0) return fail(STATUS.INVALID_FIELD);
        if (nsid >= 0xfffffffe) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(at, activeNamespaces(nsid, 1)));
      case CNS.NS_DESCRIPTORS:
        if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(at, idDescriptors));
      case CNS.CSI_NAMESPACE:
        // NVM command set specific structures carry nothing this controller needs (§1.4
        // of the NVM command set spec): zeros.
        if (csi !== 0) return fail(STATUS.INVALID_FIELD);
        if (nsid !== 1) return fail(STATUS.INVALID_NAMESPACE);
        return done(toHost(at, new Uint8Array(4096)));
      case CNS.CSI_CONTROLLER:
        if (csi !== 0) return fail(STATUS.INVALID_FIELD);
        return done(toHost(at, new Uint8Array(4096)));
      default:
        return fail(STATUS.INVALID_FIELD);
    }
  }

  const done = (status: number): Completion => (status ? fail(status) : ok());

  function featureValue(fid: number, at: number, f: Features): Completion {
    switch (fid) {
      case FEATURE.ARBITRATION:
        return ok(f.arbitration);
      case FEATURE.POWER_MANAGEMENT:
        return ok(f.powerState);
      case FEATURE.TEMPERATURE_THRESHOLD: {
        const sel = (dw(at, 11) >>> 16) & 0xf;
        const th = (dw(at, 11) >>> 20) & 0x3;
        if (th > 1) return fail(STATUS.INVALID_FIELD);
        if (sel !== 0) return ok(th === 0 ? 0xffff : 0); // sensors that do not exist
        return ok(th === 0 ? f.temperatureOver : f.temperatureUnder);
      }
      case FEATURE.ERROR_RECOVERY:
        return ok(f.errorRecovery);
      case FEATURE.VOLATILE_WRITE_CACHE:
        return ok(f.writeCache);
      case FEATURE.NUMBER_OF_QUEUES:
        return ok((ioQueues - 1) | ((ioQueues - 1) << 16));
      case FEATURE.INTERRUPT_COALESCING:
        return ok(f.interruptCoalescing);
      case FEATURE.INTERRUPT_VECTOR_CONFIG: {
        const iv = dw(at, 11) & 0xffff;
        if (iv >= vectors) return fail(STATUS.INVALID_FIELD);
        return ok(iv | (f.vectorConfig[iv] << 16));
      }
      case FEATURE.WRITE_ATOMICITY:
        return ok(f.writeAtomicity);
      case FEATURE.ASYNC_EVENT_CONFIG:
        return ok(f.asyncEventConfig);
      default:
        return fail(STATUS.INVALID_FIELD);
    }
  }

  function getFeatures(at: number): Completion {
    const fid = dw(at, 10) & 0xff;
    const sel = (dw(at, 10) >>> 8) & 0x7;
    switch (sel) {
      case 0: // current
        return featureValue(fid, at, features);
      case 1: // default
      case 2: // saved: nothing is saveable, so saved values are the defaults
        return featureValue(fid, at, defaultFeatures());
      case 3: {
        // supported capabilities: changeable (bit 2); nothing saveable or namespace specific
        const probe = featureValue(fid, at, features);
        if (!probe || probe.status) return probe;
        return ok(fid === FEATURE.NUMBER_OF_QUEUES || fid === FEATURE.WRITE_ATOMICITY || fid === FEATURE.ERROR_RECOVERY || fid === FEATURE.ARBITRATION || fid === FEATURE.POWER_MANAGEMENT || fid === FEATURE.TEMPERATURE_THRESHOLD || fid === FEATURE.VOLATILE_WRITE_CACHE || fid === FEATURE.INTERRUPT_COALESCING || fid === FEATURE.INTERRUPT_VECTOR_CONFIG || fid === FEATURE.ASYNC_EVENT_CONFIG ? 0x4 : 0);
      }
      default:
        return fail(STATUS.INVALID_FIELD);
    }
  }

  function setFeatures(at: number): Completion {
    const dw10 = dw(at, 10);
    const dw11 = dw(at, 11);
    const fid = dw10 & 0xff;
    if (dw10 >>> 31) return fail(STATUS.FEATURE_NOT_SAVEABLE);
    switch (fid) {
      case FEATURE.ARBITRATION:
        features.arbitration = dw11 & 0xffffff07;
        return ok();
      case FEATURE.POWER_MANAGEMENT:
        if ((dw11 & 0x1f) !== 0) return fail(STATUS.INVALID_FIELD); // one power state (NPSS 0)
        features.powerState = dw11 & 0xff;
        return ok();
      case FEATURE.TEMPERATURE_THRESHOLD: {
        const sel = (dw11 >>> 16) & 0xf;
        const th = (dw11 >>> 20) & 0x3;
        if (th > 1) return fail(STATUS.INVALID_FIELD);
        if (sel !== 0 && sel !== 0xf) return ok(); // sensors that do not exist ignore it
        if (th === 0) features.temperatureOver = dw11 & 0xffff;
        else features.temperatureUnder = dw11 & 0xffff;
        updateTemperatureWarning();
        return ok();
      }
      case FEATURE.ERROR_RECOVERY:
        features.errorRecovery = dw11 & 0x1ffff;
        return ok();
      case FEATURE.VOLATILE_WRITE_CACHE:
        features.writeCache = dw11 & 1;
        if (!features.writeCache) backing.flush();
        return ok();
      case FEATURE.NUMBER_OF_QUEUES: {
        const nsqr = dw11 & 0xffff;
        const ncqr = dw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return fail(STATUS.INVALID_FIELD);
        // The controller allocates its full count whatever was asked (the host uses the
        // smaller of the two), as QEMU does.
        return ok((ioQueues - 1) | ((ioQueues - 1) << 16));
      }
      case FEATURE.INTERRUPT_COALESCING:
        features.interruptCoalescing = dw11 & 0xffff;
        return ok();
      case FEATURE.INTERRUPT_VECTOR_CONFIG: {
        const iv = dw11 & 0xffff;
        if (iv >= vectors) return fail(STATUS.INVALID_FIELD);
        features.vectorConfig[iv] = (dw11 >>> 16) & 1;
        return ok();
      }
      case FEATURE.WRITE_ATOMICITY:
        features.writeAtomicity = dw11 & 1;
        return ok();
      case FEATURE.ASYNC_EVENT_CONFIG:
        features.asyncEventConfig = dw11 & 0x1ff;
        updateTemperatureWarning();
        return ok();
      default:
        return fail(STATUS.INVALID_FIELD);
    }
  }

  function queueBaseStatus(base: bigint): number {
    return base & BigInt(pageSize - 1) ? STATUS.PRP_OFFSET_INVALID : 0;
  }

  function createCq(at: number): Completion {
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
    if (iv >= vectors || (!fn.irq.msixEnabled && iv !== 0 && ien)) return fail(STATUS.INVALID_INTERRUPT_VECTOR);
    const status = queueBaseStatus(base);
    if (status) return fail(status);
    const cq: CompletionQueue = { id: qid, base, size, head: 0, tail: 0, phase: 1, interruptsEnabled: ien, vector: iv, sqs: 0, notify: false, blocked: false, shadow: -1n, eventIdx: -1n };
    attachShadow(cq, true);
    cqs[qid] = cq;
    return ok();
  }

  function createSq(at: number): Completion {
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
    const sq: SubmissionQueue = { id: qid, base, size, head: 0, tail: 0, cq, shadow: -1n, eventIdx: -1n };
    attachShadow(sq, false);
    sqs[qid] = sq;
    cq.sqs++;
    return ok();
  }

  function deleteSq(at: number): Completion {
    const qid = dw(at, 10) & 0xffff;
    const sq = qid === 0 ? undefined : sqs[qid];
    if (!sq) return fail(STATUS.INVALID_QUEUE_IDENTIFIER);
    sqs[qid] = undefined;
    sq.cq.sqs--;
    return ok();
  }

  function deleteCq(at: number): Completion {
    const qid = dw(at, 10) & 0xffff;
    const cq = qid === 0 ? undefined : cqs[qid];
    if (!cq) return fail(STATUS.INVALID_QUEUE_IDENTIFIER);
    if (cq.sqs > 0) return fail(STATUS.INVALID_QUEUE_DELETION);
    cqs[qid] = undefined;
    updateIntx();
    return ok();
  }

  function getLogPage(at: number): Completion {
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
    const status = toHost(at, log.subarray(start, start + length));
    if (status) return fail(status);
    // Reading the log page without Retain Asynchronous Event re-arms events of its type.
    if (!rae && eventType >= 0 && maskedEventTypes & (1 << eventType)) {
      maskedEventTypes &= ~(1 << eventType);
      schedule();
    }
    return ok();
  }

  function doorbellBufferConfig(at: number): Completion {
    const shadow = sqe.getBigUint64(at + 24, true);
    const eventIdx = sqe.getBigUint64(at + 32, true);
    const mask = BigInt(pageSize - 1);
    if (shadow === 0n || eventIdx === 0n || shadow & mask || eventIdx & mask) return fail(STATUS.INVALID_FIELD);
    dbbuf = { shadow, eventIdx };
    // Existing queues start from their current MMIO values (QEMU nvme_dbbuf_config).
    for (const sq of sqs) {
      if (!sq) continue;
      attachShadow(sq, false);
      writeShadow(sq.shadow, sq.tail);
      writeShadow(sq.eventIdx, sq.tail);
    }
    for (const cq of cqs) {
      if (!cq) continue;
      attachShadow(cq, true);
      writeShadow(cq.shadow, cq.head);
      writeShadow(cq.eventIdx, cq.head);
    }
    return ok();
  }

  // ---- I/O commands ----------------------------------------------------------------------

  function ioCommand(at: number): Completion {
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
    if (opcode === IO.DATASET_MANAGEMENT) return datasetManagement(at);
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
    const prpStatus = mapPrps(at, length);
    if (prpStatus) return fail(prpStatus);
    const api = dmaApi();
    let pos = offset;
    try {
      // RAM: the whole PRP list is translated in one call into the core, then copied straight
      // between guest memory and the backing.
      if (opcode === IO.READ) {
        if (backing.bytes) api.writeListSync(segments, backing.bytes.subarray(offset, offset + length));
        else {
          for (let i = 0; i < segments.count; i++) {
            readIntoGuest(api, segments.iova[i], pos, segments.length[i]);
            pos += segments.length[i];
          }
        }
        smart.readCommands++;
        smart.bytesRead += length;
      } else {
        if (backing.bytes) api.readListSync(segments, backing.bytes.subarray(offset, offset + length));
        else {
          for (let i = 0; i < segments.count; i++) {
            writeFromGuest(api, segments.iova[i], pos, segments.length[i]);
            pos += segments.length[i];
          }
        }
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

  // File backings: the backing reads into / writes from zero-copy views of guest memory.
  function readIntoGuest(api: DmaApi, iova: bigint, pos: number, n: number) {
    const mapping = api.map(iova, n, "from-device", () => {});
    try {
      for (const view of mapping.views) {
        backing.read(pos, view);
        pos += view.length;
      }
    } finally {
      mapping.release();
    }
  }

  function writeFromGuest(api: DmaApi, iova: bigint, pos: number, n: number) {
    const mapping = api.map(iova, n, "to-device", () => {});
    try {
      for (const view of mapping.views) {
        backing.write(pos, view);
        pos += view.length;
      }
    } finally {
      mapping.release();
    }
  }

  function datasetManagement(at: number): Completion {
    const ranges = (dw(at, 10) & 0xff) + 1;
    const deallocate = (dw(at, 11) & 0x4) !== 0;
    const list = new Uint8Array(ranges * 16);
    const status = fromHost(at, list);
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

  function startController() {
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
    const cq: CompletionQueue = { id: 0, base: acq, size: acqs, head: 0, tail: 0, phase: 1, interruptsEnabled: true, vector: 0, sqs: 1, notify: false, blocked: false, shadow: -1n, eventIdx: -1n };
    cqs = [cq];
    sqs = [{ id: 0, base: asq, size: asqs, head: 0, tail: 0, cq, shadow: -1n, eventIdx: -1n }];
    csts = (csts & CSTS_SHST_MASK) | CSTS_RDY;
    stats.enables++;
    emit({ kind: "enabled" });
  }

  /** Controller reset (CC.EN 1 → 0, §7.3.2): queues deleted, outstanding commands (AERs)
   *  dropped, features back to defaults. Registers other than CC/CSTS keep their values. */
  function resetController() {
    generation++;
    scheduled = false;
    sqs = [];
    cqs = [];
    dbbuf = undefined;
    pendingAers.length = 0;
    pendingEvents.length = 0;
    maskedEventTypes = 0;
    features = defaultFeatures();
    criticalWarning = 0;
    csts &= CSTS_SHST_MASK;
    fn.irq.setIntx(false);
    emit({ kind: "reset" });
  }

  function shutdown() {
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

  function writeCc(value: number) {
    const old = cc;
    cc = value >>> 0;
    if ((old & CC_EN) && !(cc & CC_EN)) {
      resetController();
    } else if (!(old & CC_EN) && cc & CC_EN) {
      startController();
    }
    if (ccShn(cc) && !ccShn(old)) shutdown();
    else if (!ccShn(cc) && ccShn(old)) csts &= ~CSTS_SHST_MASK;
  }

  // ---- registers -------------------------------------------------------------------------

  function doorbell(offset: number, value: number) {
    stats.mmioDoorbells++;
    if (!running()) return; // QEMU ignores doorbells while the controller is not ready
    const index = (offset - NVME_REG.DOORBELLS) >>> 2;
    const qid = index >>> 1;
    const isCq = (index & 1) === 1;
    const queue = isCq ? cqs[qid] : sqs[qid];
    if (!queue) {
      guestError(`doorbell write to ${isCq ? "CQ" : "SQ"} ${qid}, which does not exist`);
      recordError(0xffff, 0xffff, STATUS.INVALID_FIELD);
      queueEvent(AER_TYPE_ERROR, AER_INFO_ERR_INVALID_DB_REGISTER, LOG.ERROR);
      return;
    }
    let v = value & 0xffff;
    if (v >= queue.size) {
      guestError(`doorbell value ${v} is beyond ${isCq ? "CQ" : "SQ"} ${qid}'s ${queue.size} entries`);
      recordError(0xffff, 0xffff, STATUS.INVALID_FIELD);
      queueEvent(AER_TYPE_ERROR, AER_INFO_ERR_INVALID_DB_VALUE, LOG.ERROR);
      return;
    }
    try {
      if (queue.shadow >= 0n) {
        if (qid === 0) {
          // Linux never updates the admin queue's shadow entries, only its MMIO doorbells:
          // keep the shadow in step (as QEMU's nvme_process_db does for queue 0).
          writeShadow(queue.shadow, v);
        } else {
          // An I/O queue's shadow is written before its MMIO doorbell (which the host rings only
          // when EventIdx asks) and is authoritative: our MMIO writes arrive as posted messages,
          // so the value one carries may be older than the shadow by the time it is handled.
          const shadowValue = readShadow(queue.shadow);
          if (shadowValue < queue.size) v = shadowValue;
        }
      }
    } catch (err) {
      fatal(`shadow doorbell buffer is not accessible: ${(err as Error).message}`);
      return;
    }
    if (isCq) {
      const cq = queue as CompletionQueue;
      cq.head = v;
      if (cq.blocked || pendingEvents.length) {
        cq.blocked = false;
        schedule();
      }
      if (!fn.irq.msixEnabled) updateIntx();
    } else {
      (queue as SubmissionQueue).tail = v;
      schedule();
    }
  }

  const read = (offset: number, _size: AccessSize): number => {
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

  const write = (offset: number, _size: AccessSize, value: number | bigint): void => {
    const v = Number(value) >>> 0;
    if (offset >= NVME_REG.DOORBELLS) {
      if (offset < NVME_REG.DOORBELLS + 8 * (ioQueues + 1)) doorbell(offset, v);
      else guestError(`write to 0x${offset.toString(16)}, past the doorbells of ${ioQueues + 1} queue pairs`);
      return;
    }
    switch (offset) {
      case NVME_REG.INTMS:
        // INTMS/INTMC apply to INTx and MSI only (§3.1.3); with MSI-X the table masks.
        if (fn.irq.msixEnabled) return;
        intms = (intms | v) >>> 0;
        updateIntx();
        return;
      case NVME_REG.INTMC:
        if (fn.irq.msixEnabled) return;
        intms = (intms & ~v) >>> 0;
        updateIntx();
        return;
      case NVME_REG.CC:
        writeCc(v);
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
  function powerOnReset() {
    // SMART Unsafe Shutdowns counts power lost without CC.SHN first (§5.14.1.2). For this device
    // that is a function reset of a ready controller (a VM reset, or the next VMM after one was
    // killed); a controller reset (CC.EN 1 → 0) keeps power and is not one. Linux disables the
    // controller at every probe, because the firmware (SeaBIOS) left it enabled.
    if ((csts & (CSTS_RDY | CSTS_SHST_MASK)) === CSTS_RDY) smart.unsafeShutdowns++;
    resetController();
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
          ops: { read, write, valid: { min: 4, max: 8 }, impl: { min: 4, max: 4 } },
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
        backing.close();
      },
    },
    { core: options.core },
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
