// The VMM side of mpqemu (QEMU 7.2 hw/remote/proxy.c's role), as a library class: starts or
// adopts a remote device process, shares memfd-backed RAM (SYNC_SYSMEM), installs an INTx
// irqfd pair (SET_IRQFD), forwards config and BAR accesses, probes and programs BARs, resets
// the device, and watches liveness. Every wait is a promise on the event loop.
//
//   const proxy = await MpqemuProxy.start({ command: ["qemu-system-x86_64", "-machine", "x-remote",
//     ..., "-object", "x-remote-object,id=r0,devid=d0,fd={fd}"] });
//   const info = await proxy.probe();
//   const bars = await proxy.programBars(info);
//   const status = await proxy.barRead(0, 0x8, 4);
//   await proxy.close();
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import type { AccessSize, BarKind } from "../core/pci/api.js";
import { MpqemuError } from "./errors.js";
import {
  Cmd, MpqemuEncoder, MpqemuParser, cmdName, type Encoded, type ParseEvent, type RetMsg,
} from "./wire.js";
import { RawSocket, type FdWatch } from "../transport/raw-socket.js";
import { closeFdQuietly as closeFd, socketpair } from "../transport/fd.js";
import { memfdCreate, mmapFd, type MappedRegion } from "../transport/shm.js";
import { EventFd } from "../transport/eventfd.js";
import type { Logger, TraceEvent } from "../log.js";
import { traceReceived, traceSent } from "./trace.js";

export interface MpqemuProxyOptions {
  /** Command line of the remote; the argument text `{fd}` becomes the fd number the child
   *  sees for its end of the socketpair. */
  command?: readonly string[];
  /** Adopt this connected socket instead (the proxy owns and closes it). */
  fd?: number;
  /** Bytes of memfd-backed guest RAM shared with SYNC_SYSMEM (default 16 MiB; 0 = none). */
  ramSize?: number;
  /** Guest-physical address of that RAM (default 0). */
  ramGpa?: bigint;
  /** A request without a reply for this long means the remote is lost (default 3000 ms). */
  timeoutMs?: number;
  /** The same bound for the first answer, which waits for the remote process to start (exec,
   *  QEMU's machine creation: seconds on a busy machine). Default max(10 000, timeoutMs). */
  startTimeoutMs?: number;
  /** Interval of the liveness probe while idle (default 1000 ms; 0 disables). */
  heartbeatMs?: number;
  /** What to do with the child's stderr (default "inherit"); "pipe" keeps its last 4 KiB in
   *  `stderrTail` and quotes it in lost-contact errors. */
  stderr?: "inherit" | "ignore" | "pipe";
  /** Diagnostics (warn) and, with `trace`, every message both ways (default: none). */
  logger?: Logger;
  /** Older form of `logger`: diagnostics lines (ignored if logger is set). */
  log?: (line: string) => void;
}

export interface ProbedBar {
  index: number;
  kind: BarKind;
  prefetchable: boolean;
  /** Decoded size in bytes (the 7.2 proxy sizes only the low dword; we size 64-bit BARs fully). */
  size: bigint;
}

export interface ProbeInfo {
  vendorId: number;
  deviceId: number;
  revision: number;
  /** 24-bit class code. */
  classCode: number;
  headerType: number;
  subsystemVendorId: number;
  subsystemId: number;
  interruptPin: number;
  bars: ProbedBar[];
}

export interface BarAssignment extends ProbedBar {
  address: bigint;
}

interface Pending {
  cmd: number;
  sentAt: number;
  resolve: (msg: RetMsg) => void;
  reject: (err: MpqemuError) => void;
}

const CHILD_FD = 3;
const PCI_COMMAND_IO = 0x1;
const PCI_COMMAND_MEMORY = 0x2;
const PCI_COMMAND_MASTER = 0x4;
const PCI_CACHE_LINE_SIZE = 0x0c;
/** Written to the cache line size register at start-up; see awaitStartupReset(). */
const STARTUP_MARK = 0x10;

/**
 * The VMM side of one remote PCI function. Create with MpqemuProxy.start(); requests return
 * promises and may be issued concurrently (they are pipelined and answered in order).
 *
 * Events: 'intx' (asserted: boolean) when the latched INTx level changes (irqfd raised, or
 * eoi()); 'lost' (error: MpqemuError) once, when the remote dies, hangs up, stops answering
 * within `timeoutMs` or sends something that is not a valid reply. After 'lost' every request
 * rejects with that error; close() still releases everything.
 */
export class MpqemuProxy extends EventEmitter {
  readonly child: ChildProcess | null;
  /** The shared guest RAM (view of the memfd mapping), or null without RAM. */
  readonly ram: Uint8Array | null;
  readonly ramGpa: bigint;

  private readonly sock: RawSocket;
  private readonly watch: FdWatch;
  private readonly parser: MpqemuParser<RetMsg>;
  private readonly enc = new MpqemuEncoder();
  private readonly pending: Pending[] = [];
  private outQueue: { bytes: Uint8Array; fds: number[] }[] = [];
  private readonly timeoutMs: number;
  /** Reply deadline in force: startTimeoutMs until the first reply, then timeoutMs. */
  private replyTimeoutMs: number;
  private readonly log: (line: string) => void;
  private timeoutTimer: NodeJS.Timeout | null = null;
  /** The request timeoutTimer watches, and when the last reply arrived (Date.now()). */
  private timedHead: Pending | undefined;
  private lastReplyAt = 0;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private failure: MpqemuError | null = null;
  private closing = false;
  private ramMapping: MappedRegion | null = null;
  private ramFd = -1;
  /** The INTx pair sent with SET_IRQFD: the remote signals irqfd, we signal resamplefd at EOI. */
  private irqfd: EventFd | null = null;
  private resamplefd: EventFd | null = null;
  private intxAsserted = false;
  private childExited: Promise<void>;
  private bars: BarAssignment[] = [];
  /** Last 4 KiB of the child's stderr when started with stderr: "pipe". */
  stderrTail = "";
  private readonly onReplyEvent: (ev: ParseEvent<RetMsg>) => void;
  /** Set only when tracing (one test per sent message otherwise). */
  private readonly trace: ((event: TraceEvent) => void) | undefined;

  private constructor(sockFd: number, child: ChildProcess | null, opts: MpqemuProxyOptions) {
    super();
    this.child = child;
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.replyTimeoutMs = opts.startTimeoutMs ?? Math.max(10_000, this.timeoutMs);
    const logger = opts.logger;
    this.log = logger ? (line) => logger.warn(line) : (opts.log ?? (() => {}));
    const trace = logger?.trace;
    this.trace = trace;
    this.onReplyEvent = trace
      ? (ev) => {
          trace(traceReceived(ev));
          this.onReply(ev);
        }
      : (ev) => this.onReply(ev);
    this.ramGpa = opts.ramGpa ?? 0n;
    this.sock = new RawSocket(sockFd);
    this.parser = new MpqemuParser<RetMsg>("proxy", closeFd);
    this.watch = this.sock.watch(() => this.onReadable(), () => this.flush());
    const ramSize = opts.ramSize ?? 16 << 20;
    this.ram = null;
    if (ramSize > 0) {
      this.ramFd = memfdCreate("wasmdev-guest-ram", ramSize);
      this.ramMapping = mmapFd(this.ramFd, 0n, ramSize);
      this.ram = this.ramMapping.bytes();
    }
    child?.stderr?.setEncoding("utf8");
    child?.stderr?.on("data", (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-4096);
    });
    this.childExited = new Promise<void>((resolve) => {
      if (!child) return resolve();
      // A failed spawn (ENOENT, EACCES) emits 'error' and never 'exit'.
      child.once("error", () => resolve());
      child.once("exit", (code, signal) => {
        resolve();
        if (!this.closing) {
          // Let the last stderr lines arrive before quoting them.
          setImmediate(() => this.fail(this.lost(`remote process exited (${signal ?? `code ${code}`})`)));
        }
      });
    });
    if (opts.heartbeatMs !== 0) {
      this.heartbeatTimer = setInterval(() => this.heartbeat(), opts.heartbeatMs ?? 1000);
      this.heartbeatTimer.unref();
    }
  }

  /**
   * Starts the remote (or adopts `fd`), shares RAM, installs the INTx irqfd pair, resets the
   * device (as QEMU's proxy does at machine reset) and waits until a remote that resets itself
   * once at start-up (QEMU's) has done so. Rejects with MPQEMU_LOST_CONTACT if the remote
   * never answers.
   */
  static async start(opts: MpqemuProxyOptions): Promise<MpqemuProxy> {
    let sockFd: number;
    let child: ChildProcess | null = null;
    if (opts.command) {
      if (opts.fd !== undefined) throw new MpqemuError("MPQEMU_BAD_ARGUMENT", "mpqemu: give either command or fd, not both");
      if (opts.command.length === 0 || !opts.command.some((a) => a.includes("{fd}"))) {
        throw new MpqemuError("MPQEMU_BAD_ARGUMENT", "mpqemu: the remote command must contain {fd} where the socket's fd number goes");
      }
      const [mine, theirs] = socketpair();
      const argv = opts.command.map((a) => a.replaceAll("{fd}", String(CHILD_FD)));
      try {
        child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", opts.stderr ?? "inherit", theirs] });
      } finally {
        closeFd(theirs);
      }
      // A spawn failure (ENOENT) surfaces as an 'error' event; treat it as the remote exiting.
      child.once("error", (err) => proxy?.fail(new MpqemuError("MPQEMU_LOST_CONTACT", `mpqemu: could not start the remote: ${err.message}`, { cause: err })));
      sockFd = mine;
    } else if (opts.fd !== undefined) {
      sockFd = opts.fd;
    } else {
      throw new MpqemuError("MPQEMU_BAD_ARGUMENT", "mpqemu: MpqemuProxy.start needs a command or an fd");
    }
    let proxy: MpqemuProxy | undefined;
    try {
      proxy = new MpqemuProxy(sockFd, child, opts);
    } catch (err) {
      closeFd(sockFd);
      if (child?.pid !== undefined) child.kill("SIGKILL");
      throw err;
    }
    try {
      await proxy.setup();
    } catch (err) {
      await proxy.close();
      throw err;
    }
    return proxy;
  }

  private async setup(): Promise<void> {
    if (this.ramFd >= 0 && this.ram) {
      this.send(this.enc.syncSysmem([{ gpa: this.ramGpa, size: BigInt(this.ram.length), offset: 0n, fd: this.ramFd }]));
    }
    this.irqfd = EventFd.create();
    this.resamplefd = EventFd.create();
    this.send(this.enc.setIrqfd(this.irqfd.fd, this.resamplefd.fd));
    this.irqfd.onReadable(() => this.onIrq());
    // One batch: mark the cache line size register, reset the device, read the mark back.
    const [, , mark] = await Promise.all([
      this.configWrite(PCI_CACHE_LINE_SIZE, 1, STARTUP_MARK),
      this.reset(),
      this.configRead(PCI_CACHE_LINE_SIZE, 1),
    ]);
    if (mark === STARTUP_MARK) await this.awaitStartupReset();
  }

  /**
   * QEMU 7.2's remote enters its message loop from a machine-init-done notifier and runs
   * qemu_system_reset (qdev_machine_creation_done) right after that loop first finds the socket
   * empty. Everything served before then is wiped: BARs, the command register, device state.
   * How long requests keep arriving first is pure scheduling (a remote preempted between its
   * reply and its next read sees the next request), so no fixed quiet time is safe on a busy
   * machine. Instead observe the reset: it clears the cache line size register, which
   * DEVICE_RESET (the device's own reset) leaves alone in QEMU. A remote whose DEVICE_RESET
   * resets config space (ours) or that has no writable CLS already read 0 in setup().
   *
   * Polls with doubling pauses: each pause is a chance for the remote to find its socket empty,
   * so a remote whose reads lag by D gets there once a pause exceeds D (about 2D of polling).
   * A remote that keeps the mark for the whole liveness timeout (one adopted after its start-up
   * reset) is taken as it is; the mark is cleared.
   */
  private async awaitStartupReset(): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    for (let pause = 1; ; pause *= 2) {
      await new Promise((r) => setTimeout(r, pause));
      if ((await this.configRead(PCI_CACHE_LINE_SIZE, 1)) !== STARTUP_MARK) return;
      if (Date.now() >= deadline) break;
    }
    this.log(`mpqemu: the remote kept its start-up mark for ${this.timeoutMs} ms (no start-up reset); continuing`);
    await this.configWrite(PCI_CACHE_LINE_SIZE, 1, 0);
  }

  /** Whether the remote currently has INTx asserted (as latched from the irqfd). */
  get intx(): boolean {
    return this.intxAsserted;
  }

  /** BAR assignments made by programBars(). */
  get assignedBars(): readonly BarAssignment[] {
    return this.bars;
  }

  /**
   * End of interrupt: drops the latched INTx level and signals the resample fd; a remote that
   * still asserts the line raises the irqfd again (level semantics).
   */
  eoi(): void {
    if (!this.resamplefd) return;
    if (this.intxAsserted) {
      this.intxAsserted = false;
      this.emit("intx", false);
    }
    this.resamplefd.signal();
  }

  /** Resolves with the next INTx assertion (or immediately if asserted). */
  waitIntx(timeoutMs = this.timeoutMs): Promise<void> {
    if (this.intxAsserted) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = () => {
        settled = true;
        clearTimeout(t);
        this.off("intx", onIntx);
        this.off("lost", onLost);
      };
      const onIntx = (level: boolean) => {
        if (!level) return;
        done();
        resolve();
      };
      // A remote that dies will never interrupt: say so instead of waiting out the timeout.
      const onLost = (err: MpqemuError) => {
        done();
        reject(err);
      };
      const t = setTimeout(() => {
        // libuv runs due timers before it polls for I/O, so after this process was starved of
        // CPU an irqfd signalled in time may not have been seen yet. Decide after the loop has
        // polled: between two immediates queued one inside the other there is always a poll.
        setImmediate(() =>
          setImmediate(() => {
            if (settled) return;
            done();
            reject(new MpqemuError("MPQEMU_LOST_CONTACT", `mpqemu: no INTx within ${timeoutMs} ms`));
          }),
        );
      }, timeoutMs);
      this.on("intx", onIntx);
      this.on("lost", onLost);
    });
  }

  /** The irqfd polled readable and its counter was read (non-zero). */
  private onIrq(): void {
    if (!this.intxAsserted) {
      this.intxAsserted = true;
      this.emit("intx", true);
    }
  }

  // ---- requests ---------------------------------------------------------------------------

  /** Config read of 1, 2 or 4 bytes. */
  async configRead(offset: number, len: 1 | 2 | 4): Promise<number> {
    checkConfig(offset, len);
    const r = await this.request(this.enc.configRead(offset, len));
    return Number(BigInt.asUintN(32, r.value ?? 0n)) >>> 0;
  }

  async configWrite(offset: number, len: 1 | 2 | 4, value: number): Promise<void> {
    checkConfig(offset, len);
    await this.request(this.enc.configWrite(offset, value >>> 0, len));
  }

  /** One access by bus address; reads return the low `size` bytes of the remote's answer. */
  async busRead(space: "mem" | "io", address: bigint, size: AccessSize): Promise<bigint> {
    checkSize(size);
    const r = await this.request(this.enc.barRead(address, size, space === "mem"));
    return BigInt.asUintN(size * 8, r.value ?? 0n);
  }

  async busWrite(space: "mem" | "io", address: bigint, size: AccessSize, value: bigint | number): Promise<void> {
    checkSize(size);
    await this.request(this.enc.barWrite(address, BigInt.asUintN(size * 8, BigInt(value)), size, space === "mem"));
  }

  /** Access at `offset` inside BAR `bar` as programmed by programBars(). */
  async barRead(bar: number, offset: number | bigint, size: AccessSize): Promise<bigint> {
    const b = this.barFor(bar, offset, size);
    return this.busRead(b.kind === "io" ? "io" : "mem", b.address + BigInt(offset), size);
  }

  async barWrite(bar: number, offset: number | bigint, size: AccessSize, value: bigint | number): Promise<void> {
    const b = this.barFor(bar, offset, size);
    return this.busWrite(b.kind === "io" ? "io" : "mem", b.address + BigInt(offset), size, value);
  }

  private barFor(bar: number, offset: number | bigint, size: number): BarAssignment {
    const b = this.bars.find((x) => x.index === bar);
    if (!b) throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: BAR ${bar} is not programmed (call programBars first)`);
    const off = BigInt(offset);
    if (off < 0n || off + BigInt(size) > b.size) {
      throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: access [${off}, +${size}) is outside BAR ${bar} (${b.size} bytes)`);
    }
    return b;
  }

  /** DEVICE_RESET; resolves when the remote acknowledged it. */
  async reset(): Promise<void> {
    await this.request(this.enc.deviceReset());
  }

  /** Reads the identity header and sizes every BAR (write all-ones, read back, restore). */
  async probe(): Promise<ProbeInfo> {
    const id = await this.configRead(0x00, 4);
    const classRev = await this.configRead(0x08, 4);
    const header = await this.configRead(0x0c, 4);
    const subsys = await this.configRead(0x2c, 4);
    const intr = await this.configRead(0x3c, 4);
    const info: ProbeInfo = {
      vendorId: id & 0xffff,
      deviceId: id >>> 16,
      revision: classRev & 0xff,
      classCode: classRev >>> 8,
      headerType: (header >>> 16) & 0xff,
      subsystemVendorId: subsys & 0xffff,
      subsystemId: subsys >>> 16,
      interruptPin: (intr >>> 8) & 0xff,
      bars: [],
    };
    // Decoding must be off while BARs hold all-ones (PCI spec: size with decode disabled).
    const cmd = await this.configRead(0x04, 2);
    await this.configWrite(0x04, 2, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
    for (let i = 0; i < 6; i++) {
      const reg = 0x10 + 4 * i;
      const orig = await this.configRead(reg, 4);
      await this.configWrite(reg, 4, 0xffffffff);
      const low = await this.configRead(reg, 4);
      await this.configWrite(reg, 4, orig);
      if (low === 0) continue;
      if (low & 1) {
        const mask = low & 0xfffffffc;
        const size = BigInt((~mask + 1) >>> 0) & 0xffffn;
        if (mask !== 0) info.bars.push({ index: i, kind: "io", prefetchable: false, size: size === 0n ? 0x10000n : size });
        continue;
      }
      const type = (low >>> 1) & 3;
      const prefetchable = (low & 8) !== 0;
      if (type === 2 && i < 5) {
        const origHi = await this.configRead(reg + 4, 4);
        await this.configWrite(reg + 4, 4, 0xffffffff);
        const high = await this.configRead(reg + 4, 4);
        await this.configWrite(reg + 4, 4, origHi);
        const mask = (BigInt(high >>> 0) << 32n) | BigInt((low & 0xfffffff0) >>> 0);
        const size = BigInt.asUintN(64, ~mask + 1n);
        if (mask !== 0n) info.bars.push({ index: i, kind: "mem64", prefetchable, size });
        i++;
        continue;
      }
      const mask = (low & 0xfffffff0) >>> 0;
      if (mask !== 0) info.bars.push({ index: i, kind: "mem32", prefetchable, size: BigInt((~mask + 1) >>> 0 || 0x100000000) });
    }
    await this.configWrite(0x04, 2, cmd);
    return info;
  }

  /**
   * Assigns naturally aligned addresses (memory from `memBase`, I/O from `ioBase`), writes the
   * BARs and enables I/O, memory and bus mastering in the command register.
   */
  async programBars(info: ProbeInfo, bases: { memBase?: bigint; ioBase?: bigint } = {}): Promise<BarAssignment[]> {
    let mem = bases.memBase ?? 0xe000_0000n;
    let io = bases.ioBase ?? 0xc000n;
    const out: BarAssignment[] = [];
    // Largest first keeps every BAR naturally aligned without holes growing too much.
    for (const bar of [...info.bars].sort((a, b) => (a.size < b.size ? 1 : a.size > b.size ? -1 : 0))) {
      const align = bar.size;
      let addr: bigint;
      if (bar.kind === "io") {
        addr = (io + align - 1n) & ~(align - 1n);
        io = addr + bar.size;
      } else {
        addr = (mem + align - 1n) & ~(align - 1n);
        mem = addr + bar.size;
      }
      const reg = 0x10 + 4 * bar.index;
      await this.configWrite(reg, 4, Number(addr & 0xffff_ffffn));
      if (bar.kind === "mem64") await this.configWrite(reg + 4, 4, Number(addr >> 32n));
      out.push({ ...bar, address: addr });
    }
    const cmd = await this.configRead(0x04, 2);
    await this.configWrite(0x04, 2, cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    this.bars = out.sort((a, b) => a.index - b.index);
    return this.bars;
  }

  /** Sends an arbitrary frame and resolves with the next reply (fault injection, tests). */
  rawRequest(frame: Encoded): Promise<RetMsg> {
    return this.request(frame);
  }

  private request(frame: Encoded): Promise<RetMsg> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new MpqemuError("MPQEMU_CLOSED", "mpqemu: proxy is closed"));
    return new Promise<RetMsg>((resolve, reject) => {
      this.pending.push({ cmd: new DataView(frame.bytes.buffer, frame.bytes.byteOffset).getInt32(0, true), sentAt: Date.now(), resolve, reject });
      this.send(frame);
      this.armTimeout();
    });
  }

  /** Writes `frame` now if nothing is queued; whatever the socket does not take is queued (copied). */
  private send(frame: Encoded): void {
    if (this.failure) return;
    if (this.trace !== undefined) this.trace(traceSent(frame.bytes, frame.fds.length));
    if (this.outQueue.length === 0) {
      let n: number;
      try {
        n = this.sock.send(frame.bytes, frame.fds);
      } catch (err) {
        this.fail(this.lost((err as Error).message, err));
        return;
      }
      if (n === frame.bytes.length) return;
      // fds went with the first byte if anything was sent.
      this.outQueue.push({ bytes: frame.bytes.slice(n), fds: n > 0 ? [] : frame.fds });
      this.watch.wantWritable(true);
      return;
    }
    this.outQueue.push({ bytes: frame.bytes.slice(), fds: frame.fds });
    this.flush();
  }

  private flush(): void {
    try {
      while (this.outQueue.length > 0) {
        const head = this.outQueue[0];
        const n = this.sock.send(head.bytes, head.fds);
        if (n === 0 && head.bytes.length > 0) break; // EAGAIN: wait for writability
        if (n < head.bytes.length) {
          head.bytes = head.bytes.subarray(n);
          head.fds = []; // fds went with the first byte
          break;
        }
        this.outQueue.shift();
      }
      this.watch.wantWritable(this.outQueue.length > 0);
    } catch (err) {
      this.fail(this.lost((err as Error).message, err));
    }
  }

  private onReadable(): void {
    for (;;) {
      if (this.sock.isClosed) return;
      let r;
      try {
        r = this.sock.recv();
      } catch (err) {
        this.fail(this.lost((err as Error).message, err));
        return;
      }
      if (r.n < 0) return;
      if (r.n === 0 && r.fds.length === 0) {
        const trunc = this.parser.end();
        this.fail(trunc ?? this.lost("the remote hung up"));
        return;
      }
      this.parser.push(r.data, r.fds, this.onReplyEvent);
      // A short read took everything queued (the poll is level-triggered for later data).
      if (r.n < this.sock.recvCapacity && r.fds.length === 0) return;
    }
  }

  private onReply(ev: ParseEvent<RetMsg>): void {
    if (!ev.ok) {
      // A reply we cannot match breaks request/reply pairing for good.
      this.fail(this.lost(`invalid reply (${ev.error.message})`, ev.error, ev.cmd));
      return;
    }
    const p = this.pending.shift();
    if (!p) {
      this.fail(this.lost("unsolicited RET from the remote"));
      return;
    }
    this.lastReplyAt = Date.now();
    this.replyTimeoutMs = this.timeoutMs; // the remote is up: from now on, plain liveness
    this.armTimeout();
    p.resolve(ev.message);
  }

  /**
   * Liveness deadline of the oldest unanswered request. The remote answers in order, so a
   * request waits its turn behind everything pipelined before it: its clock starts when it
   * was issued or when the previous reply arrived, whichever is later. (Counting from issue
   * time alone turned a deep pipeline on a busy machine into a false "lost contact".)
   */
  private armTimeout(): void {
    const head = this.pending[0];
    if (this.timeoutTimer) {
      if (head === this.timedHead && !this.failure) return; // already armed for this request
      clearTimeout(this.timeoutTimer);
      this.timeoutTimer = null;
    }
    this.timedHead = head;
    if (!head || this.failure) return;
    const left = Math.max(0, Math.max(head.sentAt, this.lastReplyAt) + this.replyTimeoutMs - Date.now());
    this.timeoutTimer = setTimeout(() => this.onTimeout(head), left);
  }

  private onTimeout(head: Pending): void {
    this.timeoutTimer = null;
    this.timedHead = undefined;
    // libuv runs due timers before it polls for I/O: after this process was starved of CPU,
    // the reply may already be waiting in the socket. Read what is there before judging.
    this.onReadable();
    if (this.failure || this.pending[0] !== head) return; // answered (onReply re-armed) or failed
    this.fail(this.lost(`no reply to ${cmdName(head.cmd)} within ${this.replyTimeoutMs} ms`, undefined, head.cmd));
  }

  private heartbeat(): void {
    if (this.pending.length > 0 || this.failure || this.closing) return;
    // A harmless read; a dead or hung remote turns into a LOST_CONTACT failure via the timeout.
    this.configRead(0, 2).catch(() => {});
  }

  private fail(err: MpqemuError): void {
    if (this.failure) return;
    this.failure = err;
    this.log(err.message);
    if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const p of this.pending.splice(0)) p.reject(err);
    this.outQueue = [];
    this.watch.stop();
    if (!this.sock.isClosed) this.sock.close();
    if (!this.closing) this.emit("lost", err);
    if (this.childRunning()) this.child!.kill("SIGKILL");
  }

  /** A LOST_CONTACT error, quoting the remote's stderr when it is captured. */
  private lost(what: string, cause?: unknown, cmd?: number): MpqemuError {
    return new MpqemuError("MPQEMU_LOST_CONTACT", `mpqemu: lost contact with device: ${what}${this.stderrNote()}`, { cause, cmd });
  }

  private stderrNote(): string {
    const t = this.stderrTail.trim();
    return t ? `; remote stderr: ${t.split("\n").slice(-5).join(" | ")}` : "";
  }

  /**
   * A child that failed to spawn has no pid, and ChildProcess.kill() on it would end up as
   * kill(0, sig): the whole process group, including us. Only signal a real, live child.
   */
  private childRunning(): boolean {
    const c = this.child;
    return c !== null && c.pid !== undefined && c.exitCode === null && c.signalCode === null;
  }

  /** Why the connection failed, or null while healthy. */
  get error(): MpqemuError | null {
    return this.failure;
  }

  /**
   * Hangs up (the remote exits on EOF), waits up to `graceMs` for the child, then kills it;
   * releases RAM and eventfds. Idempotent.
   */
  async close(graceMs = 2000): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
      if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
      const err = new MpqemuError("MPQEMU_CLOSED", "mpqemu: proxy closed");
      for (const p of this.pending.splice(0)) p.reject(err);
      this.watch.stop();
      if (!this.sock.isClosed) this.sock.close();
      if (this.childRunning()) {
        const kill = setTimeout(() => this.childRunning() && this.child!.kill("SIGKILL"), graceMs);
        await this.childExited;
        clearTimeout(kill);
      }
      this.ramMapping?.unmap();
      closeFd(this.ramFd);
      this.ramFd = -1;
      this.irqfd?.close();
      this.resamplefd?.close();
      this.irqfd = this.resamplefd = null;
    }
    await this.childExited;
  }
}

function checkConfig(offset: number, len: number): void {
  if (!(len === 1 || len === 2 || len === 4) || !Number.isInteger(offset) || offset < 0 || offset + len > 4096) {
    throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: config access of ${len} bytes at ${offset} is outside the 4 KiB config space`);
  }
}

function checkSize(size: number): void {
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8) {
    throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: access size ${size} is not 1, 2, 4 or 8`);
  }
}
