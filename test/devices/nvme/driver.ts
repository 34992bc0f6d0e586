// A tiny scripted NVMe host driver for tests: guest memory is an in-process buffer registered
// in a DMA context at IOVA 0; the driver builds SQEs and PRPs in it, rings doorbells through
// BAR0 (region accesses, as a vfio-user REGION_WRITE reaches the device) and polls CQ phase
// tags. Field layouts are written from the NVMe base spec here, independently of the device.
import { createDmaContext, DMA_PERM_RW, type InterruptSink } from "../../../src/core/index.js";
import { createNvme, type NvmeController, type NvmeEvent, type NvmeOptions } from "../../../src/devices/nvme/index.js";

export const PAGE = 4096;

export interface Cqe {
  dw0: number;
  sqhd: number;
  sqid: number;
  cid: number;
  phase: number;
  /** 15-bit status field (DNR << 14 | SCT << 8 | SC). */
  status: number;
  sct: number;
  sc: number;
}

export interface Command {
  opcode: number;
  nsid?: number;
  flags?: number;
  prp1?: bigint;
  prp2?: bigint;
  /** DW10..DW15 */
  cdw?: number[];
  /** Overrides the command id the driver picks. */
  cid?: number;
}

interface HostQueue {
  base: bigint;
  size: number;
  tail: number;
  head: number;
  phase: number;
}

export interface DriverOptions extends NvmeOptions {
  /** Guest memory bytes (default 8 MiB). */
  memory?: number;
  /** Enable MSI-X with every vector unmasked before bring-up (default true). */
  msix?: boolean;
}

export class NvmeHost {
  readonly ctrl: NvmeController;
  readonly mem: Uint8Array;
  readonly view: DataView;
  readonly interrupts: string[] = [];
  readonly events: NvmeEvent[] = [];
  private nextPage = 1; // page 0 stays unused so address 0 is never a valid buffer
  private sq = new Map<number, HostQueue>();
  private cq = new Map<number, HostQueue>();
  private cidCounter = 0;
  /** Shadow doorbell and EventIdx buffers once configured. */
  shadow?: { db: bigint; ei: bigint };
  private closeDma: () => void;

  constructor(options: DriverOptions = {}) {
    const size = options.memory ?? 8 << 20;
    this.mem = new Uint8Array(size);
    this.view = new DataView(this.mem.buffer);
    this.ctrl = createNvme({ size: 1 << 20, ...options, onEvent: (e) => this.events.push(e) });
    const ctx = createDmaContext();
    ctx.table.add({ iova: 0n, size: BigInt(size), perm: DMA_PERM_RW, backing: { kind: "memory", bytes: this.mem } });
    this.ctrl.fn.attachDma(ctx.dma);
    this.closeDma = () => ctx.close();
    const sink: InterruptSink = {
      intx: (a) => this.interrupts.push(`intx:${a ? 1 : 0}`),
      vector: (kind, v) => this.interrupts.push(`${kind}:${v}`),
    };
    this.ctrl.fn.attachInterruptSink(sink);
    this.ctrl.fn.writeConfig(0x04, 2, 0x0006); // memory + bus master
    if (options.msix ?? true) this.enableMsix();
  }

  get fn() {
    return this.ctrl.fn;
  }

  /** Walks the capability list for `id`. */
  capability(id: number): number {
    for (let at = this.fn.readConfig(0x34, 1); at; at = this.fn.readConfig(at + 1, 1)) if (this.fn.readConfig(at, 1) === id) return at;
    return 0;
  }

  enableMsix() {
    const cap = this.capability(0x11);
    const vectors = (this.fn.readConfig(cap + 2, 2) & 0x7ff) + 1;
    const table = this.fn.readConfig(cap + 4, 4);
    for (let v = 0; v < vectors; v++) {
      const at = (table & ~7) + v * 16;
      this.rw(at, 0xfee00000 + v * 4);
      this.rw(at + 8, 0x40 + v);
      this.rw(at + 12, 0); // unmask
    }
    this.fn.writeConfig(cap + 2, 2, 0x8000);
  }

  rr(offset: number): number {
    return Number(this.fn.readRegion(0, offset, 4));
  }
  rr64(offset: number): bigint {
    return this.fn.readRegion(0, offset, 8);
  }
  rw(offset: number, value: number) {
    this.fn.writeRegion(0, offset, 4, BigInt(value >>> 0));
  }
  rw64(offset: number, value: bigint) {
    this.fn.writeRegion(0, offset, 8, value);
  }

  /** Zeroed, page-aligned guest memory. */
  alloc(pages = 1): bigint {
    const at = this.nextPage * PAGE;
    if (at + pages * PAGE > this.mem.length) throw new Error("test guest memory exhausted");
    this.nextPage += pages;
    this.mem.fill(0, at, at + pages * PAGE);
    return BigInt(at);
  }

  /** Sets up the admin queue and enables the controller; resolves with CSTS. */
  enable(adminEntries = 32, mps = 0): number {
    const asq = this.alloc(Math.ceil((adminEntries * 64) / PAGE));
    const acq = this.alloc(Math.ceil((adminEntries * 16) / PAGE));
    this.rw(0x24, ((adminEntries - 1) << 16) | (adminEntries - 1));
    this.rw64(0x28, asq);
    this.rw64(0x30, acq);
    this.sq.set(0, { base: asq, size: adminEntries, tail: 0, head: 0, phase: 1 });
    this.cq.set(0, { base: acq, size: adminEntries, tail: 0, head: 0, phase: 1 });
    this.rw(0x14, 1 | (mps << 7) | (6 << 16) | (4 << 20));
    return this.rr(0x1c);
  }

  disable(): number {
    this.rw(0x14, this.rr(0x14) & ~1);
    this.sq.clear();
    this.cq.clear();
    this.shadow = undefined;
    return this.rr(0x1c);
  }

  /** Writes a command into SQ `qid` and rings (or, with shadow doorbells, publishes) its tail. */
  submit(qid: number, cmd: Command, ring = true): number {
    const q = this.sq.get(qid);
    if (!q) throw new Error(`no host SQ ${qid}`);
    const cid = cmd.cid ?? (this.cidCounter = (this.cidCounter + 1) & 0xffff);
    const at = Number(q.base) + q.tail * 64;
    this.mem.fill(0, at, at + 64);
    this.view.setUint8(at, cmd.opcode);
    this.view.setUint8(at + 1, cmd.flags ?? 0);
    this.view.setUint16(at + 2, cid, true);
    this.view.setUint32(at + 4, cmd.nsid ?? 0, true);
    this.view.setBigUint64(at + 24, cmd.prp1 ?? 0n, true);
    this.view.setBigUint64(at + 32, cmd.prp2 ?? 0n, true);
    (cmd.cdw ?? []).forEach((v, i) => this.view.setUint32(at + 40 + i * 4, v >>> 0, true));
    q.tail = (q.tail + 1) % q.size;
    if (ring) this.ringSq(qid);
    return cid;
  }

  /** Tail doorbell: MMIO, or with shadow doorbells the Linux rule (shadow always; MMIO only
   *  when the new tail passes the controller's EventIdx). Returns whether MMIO was written. */
  ringSq(qid: number): boolean {
    return this.ring(qid, false, this.sq.get(qid)!.tail);
  }

  private ring(qid: number, isCq: boolean, value: number): boolean {
    const slot = (2 * qid + (isCq ? 1 : 0)) * 4;
    if (this.shadow && qid !== 0) {
      const dbAt = Number(this.shadow.db) + slot;
      const old = this.view.getUint32(dbAt, true);
      this.view.setUint32(dbAt, value, true);
      const ei = this.view.getUint32(Number(this.shadow.ei) + slot, true);
      // nvme_dbbuf_need_event: (u16)(new - ei - 1) < (u16)(new - old)
      if (((value - ei - 1) & 0xffff) >= ((value - old) & 0xffff)) return false;
    }
    this.rw(0x1000 + slot, value);
    return true;
  }

  /** The next completion on CQ `qid`, awaiting it (the device runs commands on the loop). */
  async complete(qid: number, ringHead = true, ms = 10_000): Promise<Cqe> {
    const q = this.cq.get(qid);
    if (!q) throw new Error(`no host CQ ${qid}`);
    const at = () => Number(q.base) + q.head * 16;
    await until(() => (this.view.getUint16(at() + 14, true) & 1) === q.phase, ms, () => `CQ ${qid} got no completion (CSTS ${this.rr(0x1c)})`);
    const a = at();
    const dw3 = this.view.getUint32(a + 12, true);
    const status = (dw3 >>> 17) & 0x7fff;
    const cqe: Cqe = {
      dw0: this.view.getUint32(a, true),
      sqhd: this.view.getUint16(a + 8, true),
      sqid: this.view.getUint16(a + 10, true),
      cid: dw3 & 0xffff,
      phase: (dw3 >>> 16) & 1,
      status,
      sct: (status >>> 8) & 7,
      sc: status & 0xff,
    };
    q.head = (q.head + 1) % q.size;
    if (q.head === 0) q.phase ^= 1;
    if (ringHead) this.ring(qid, true, q.head);
    return cqe;
  }

  /** Whether CQ `qid` holds a completion now (no waiting). */
  hasCompletion(qid: number): boolean {
    const q = this.cq.get(qid)!;
    return (this.view.getUint16(Number(q.base) + q.head * 16 + 14, true) & 1) === q.phase;
  }

  sqTail(qid: number): number {
    return this.sq.get(qid)!.tail;
  }

  ringCqHead(qid: number) {
    this.ring(qid, true, this.cq.get(qid)!.head);
  }

  async admin(cmd: Command): Promise<Cqe> {
    const cid = this.submit(0, cmd);
    const cqe = await this.complete(0);
    if (cqe.cid !== cid) throw new Error(`admin completion for cid ${cqe.cid}, expected ${cid}`);
    return cqe;
  }

  async io(qid: number, cmd: Command): Promise<Cqe> {
    const cid = this.submit(qid, { nsid: 1, ...cmd });
    const cqe = await this.complete(qid);
    if (cqe.cid !== cid) throw new Error(`I/O completion for cid ${cqe.cid}, expected ${cid}`);
    return cqe;
  }

  async identify(cns: number, nsid = 0): Promise<{ cqe: Cqe; data: Uint8Array }> {
    const buf = this.alloc();
    const cqe = await this.admin({ opcode: 0x06, nsid, prp1: buf, cdw: [cns] });
    return { cqe, data: this.mem.slice(Number(buf), Number(buf) + PAGE) };
  }

  /** Creates I/O CQ + SQ `qid` (MSI-X vector `qid`) and their host-side state. */
  async createIoQueuePair(qid: number, entries = 64, vector = qid): Promise<void> {
    const cqBase = this.alloc(Math.ceil((entries * 16) / PAGE));
    const sqBase = this.alloc(Math.ceil((entries * 64) / PAGE));
    let cqe = await this.admin({ opcode: 0x05, prp1: cqBase, cdw: [((entries - 1) << 16) | qid, (vector << 16) | 0x3] });
    if (cqe.status) throw new Error(`Create I/O CQ ${qid}: status 0x${cqe.status.toString(16)}`);
    cqe = await this.admin({ opcode: 0x01, prp1: sqBase, cdw: [((entries - 1) << 16) | qid, (qid << 16) | 0x1] });
    if (cqe.status) throw new Error(`Create I/O SQ ${qid}: status 0x${cqe.status.toString(16)}`);
    this.cq.set(qid, { base: cqBase, size: entries, tail: 0, head: 0, phase: 1 });
    this.sq.set(qid, { base: sqBase, size: entries, tail: 0, head: 0, phase: 1 });
  }

  forgetQueue(qid: number) {
    this.sq.delete(qid);
    this.cq.delete(qid);
  }

  /** Standard bring-up: enable, Identify, Set Number of Queues, one I/O queue pair. */
  async bringUp(ioPairs = 1, entries = 64): Promise<void> {
    const csts = this.enable();
    if (!(csts & 1)) throw new Error(`controller not ready: CSTS ${csts}`);
    for (let q = 1; q <= ioPairs; q++) await this.createIoQueuePair(q, entries);
  }

  fill(addr: bigint, length: number, seed: number) {
    let x = seed >>> 0 || 1;
    for (let i = 0; i < length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.mem[Number(addr) + i] = x & 0xff;
    }
  }

  bytes(addr: bigint, length: number): Uint8Array {
    return this.mem.slice(Number(addr), Number(addr) + length);
  }

  close() {
    this.fn.dispose();
    this.closeDma();
  }
}

/** Awaits a condition on the event loop; a deadline, not a timing assertion. */
export async function until(cond: () => boolean, ms = 10_000, what: () => string = () => "condition not reached") {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(what());
    await new Promise((r) => setImmediate(r));
  }
}

/** Status Field values, from the spec's tables (not the device's constants). */
export const SF = {
  SUCCESS: 0,
  INVALID_OPCODE: 0x4001,
  INVALID_FIELD: 0x4002,
  DATA_TRANSFER_ERROR: 0x0004,
  INVALID_NAMESPACE: 0x400b,
  PRP_OFFSET_INVALID: 0x4013,
  LBA_OUT_OF_RANGE: 0x4080,
  CQ_INVALID: 0x4100,
  INVALID_QID: 0x4101,
  INVALID_QUEUE_SIZE: 0x4102,
  AER_LIMIT: 0x4105,
  INVALID_VECTOR: 0x4108,
  INVALID_LOG_PAGE: 0x4109,
  INVALID_QUEUE_DELETION: 0x410c,
  NOT_SAVEABLE: 0x410d,
} as const;
