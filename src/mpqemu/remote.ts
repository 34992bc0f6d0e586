// The device side of mpqemu (QEMU 7.2 hw/remote/message.c + iohub.c + memory.c's role):
// serves one PciFunction over an adopted socket.
//
// - SYNC_SYSMEM maps the received RAM fds into a fresh DMA context and swaps it in, so the
//   device sees either the old set or the new one, never a mix (remote_sysmem_reconfig).
// - PCI_CFGREAD / PCI_CFGWRITE go to the function's config space; BAR_READ / BAR_WRITE are
//   decoded by bus address against the BARs the guest programmed. A bad size or a failed
//   access answers all-ones and the remote keeps serving (QEMU's remote exits instead).
// - SET_IRQFD: INTx with level semantics; on resample (the guest's EOI) the line is raised
//   again while the device still asserts it (intr_resample_handler).
// - Invalid messages are logged and their fds closed; requests that expect a reply get the
//   all-ones RET so the proxy never waits forever. A hang-up ends serving cleanly.
//
// Latency: requests are served straight from the event loop's readiness callback with raw
// recvmsg/sendmsg into preallocated memory. (A blocking ppoll for the next request after each
// reply was tried and measured ~5 µs slower per access here than waiting in the event loop.)
import { fstatSync } from "node:fs";
import type { InterruptSink, PciFunction } from "../core/pci/api.js";
import type { DmaContext } from "../core/dma/context.js";
import { createHostDmaContext } from "../host/index.js";
import { DMA_PERM_RW, type DmaTruncatedRegion, type FdMapper } from "../core/dma/api.js";
import { MpqemuError } from "./errors.js";
import {
  ALL_ONES, Cmd, MpqemuEncoder, MpqemuParser, expectsReply,
  type Encoded, type ParseEvent, type RequestMsg, type SysmemRegion,
} from "./wire.js";
import type { Logger, TraceEvent } from "../log.js";
import { traceReceived, traceSent } from "./trace.js";
import { RawSocket, type FdWatch } from "../transport/raw-socket.js";
import { closeFdQuietly as closeFd } from "../transport/fd.js";
import { EventFd } from "../transport/eventfd.js";

export interface MpqemuRemoteOptions {
  /** Connected socket from the VMM; the remote owns and closes it. */
  fd: number;
  fn: PciFunction;
  /**
   * Rejected messages, failed accesses and why serving stopped (warn); with `trace`, every
   * message both ways. Default: lines on stderr.
   */
  logger?: Logger;
  /** Older form of `logger`: one line per rejected message / failed access (ignored if logger is set). */
  log?: (line: string) => void;
  /** mmap for SYNC_SYSMEM fds (default: the transport's). */
  mapFd?: FdMapper;
  /** Failed accesses logged before further ones are only counted (default 20). */
  maxAccessLogs?: number;
}

export type RemoteEnd =
  /** The proxy hung up at a message boundary. */
  | { reason: "hangup" }
  /** The stream broke (framing error, truncated message, socket error); `error` says why. */
  | { reason: "error"; error: MpqemuError }
  /** close() was called. */
  | { reason: "closed" };

export interface RemoteStats {
  requests: number;
  rejected: number;
  failedAccesses: number;
  /** SYNC_SYSMEMs that replaced guest RAM. */
  sysmemSwaps: number;
  /** SYNC_SYSMEMs identical to the current layout (kept as is). */
  sysmemResends: number;
}

export class MpqemuRemote {
  readonly fn: PciFunction;
  /** Resolves when serving stops. */
  readonly ended: Promise<RemoteEnd>;
  readonly stats: RemoteStats = { requests: 0, rejected: 0, failedAccesses: 0, sysmemSwaps: 0, sysmemResends: 0 };

  private readonly sock: RawSocket;
  private readonly parser: MpqemuParser<RequestMsg>;
  private readonly enc = new MpqemuEncoder();
  private readonly log: (line: string) => void;
  private readonly mapFd: FdMapper | undefined;
  private readonly maxAccessLogs: number;
  private watch: FdWatch | null = null;
  private outQueue: { bytes: Uint8Array }[] = [];
  private dmaCtx: DmaContext | null = null;
  /** The mapped set, by file identity, to recognise QEMU's identical resends. */
  private sysmemKeys: string[] = [];
  /** INTx lines from SET_IRQFD (QEMU's irqfd and its resample fd), owned once adopted. */
  private irqfd: EventFd | null = null;
  private resamplefd: EventFd | null = null;
  private intxLevel = false;
  private finished = false;
  private resolveEnded!: (end: RemoteEnd) => void;
  private readonly onMessage: (ev: ParseEvent<RequestMsg>) => void;
  /** Set only when tracing (one test per sent message otherwise). */
  private readonly trace: ((event: TraceEvent) => void) | undefined;

  constructor(opts: MpqemuRemoteOptions) {
    this.fn = opts.fn;
    const logger = opts.logger;
    this.log = logger ? (line) => logger.warn(line) : (opts.log ?? ((line) => process.stderr.write(`wasmdev mpqemu remote: ${line}\n`)));
    const trace = logger?.trace;
    this.trace = trace;
    this.onMessage = trace
      ? (ev) => {
          trace(traceReceived(ev));
          this.handle(ev);
        }
      : (ev) => this.handle(ev);
    this.mapFd = opts.mapFd;
    this.maxAccessLogs = opts.maxAccessLogs ?? 20;
    this.sock = new RawSocket(opts.fd);
    this.parser = new MpqemuParser<RequestMsg>("remote", closeFd);
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    const sink: InterruptSink = {
      intx: (asserted) => this.setIntx(asserted),
      vector: (kind) => {
        // mpqemu (7.2) has no MSI/MSI-X path; devices fall back to INTx when MSI is disabled.
        this.log(`device fired an ${kind} vector, which mpqemu cannot deliver`);
      },
    };
    this.fn.attachInterruptSink(sink);
  }

  /** Starts serving on the event loop. */
  start(): this {
    this.watch = this.sock.watch(() => this.onReadable(), () => this.flush());
    return this;
  }

  /** Stops serving, closes the socket and every fd received, unmaps guest RAM. */
  close(): void {
    this.finish({ reason: "closed" });
  }

  private finish(end: RemoteEnd): void {
    if (this.finished) return;
    this.finished = true;
    // QEMU's proxy answers all-ones for every access once its remote is gone, without a word
    // to the guest: the remote's log is where the reason shows.
    if (end.reason === "error") this.log(`stopped serving: ${end.error.message}`);
    this.watch?.stop();
    this.sock.close();
    this.parser.end();
    this.closeIntx();
    this.fn.attachInterruptSink(null);
    if (this.dmaCtx) {
      this.fn.attachDma(null);
      this.dmaCtx.close();
      this.dmaCtx = null;
    }
    this.resolveEnded(end);
  }

  // ---- I/O ----------------------------------------------------------------------------------

  private onReadable(): void {
    this.drain();
  }

  /** Reads until the socket would block; false once serving ended. */
  private drain(): boolean {
    while (!this.finished) {
      let r;
      try {
        r = this.sock.recv();
      } catch (err) {
        this.finish({ reason: "error", error: asMpqemu(err, "receive failed") });
        return false;
      }
      if (r.n < 0) return true;
      if (r.n === 0 && r.fds.length === 0) {
        const truncated = this.parser.end();
        this.finish(truncated ? { reason: "error", error: truncated } : { reason: "hangup" });
        return false;
      }
      if (r.truncatedFds) this.log("the kernel dropped fds beyond the control buffer (more than 16 in one message)");
      this.parser.push(r.data, r.fds, this.onMessage);
      // A short read took everything queued; skip the extra recvmsg that would only say
      // EAGAIN (the poll is level-triggered, so later data wakes us again). Messages with
      // fds end a read early, so keep reading after those.
      if (r.n < this.sock.recvCapacity && r.fds.length === 0) return !this.finished;
    }
    return false;
  }

  private send(frame: Encoded): void {
    if (this.finished) return;
    if (this.trace !== undefined) this.trace(traceSent(frame.bytes, frame.fds.length));
    if (this.outQueue.length === 0) {
      let n: number;
      try {
        n = this.sock.send(frame.bytes);
      } catch (err) {
        this.finish({ reason: "error", error: asMpqemu(err, "send failed") });
        return;
      }
      if (n === frame.bytes.length) return;
      this.outQueue.push({ bytes: frame.bytes.slice(n) });
    } else {
      this.outQueue.push({ bytes: frame.bytes.slice() });
    }
    this.watch?.wantWritable(true);
  }

  private flush(): void {
    try {
      while (this.outQueue.length > 0) {
        const head = this.outQueue[0];
        const n = this.sock.send(head.bytes);
        if (n < head.bytes.length) {
          head.bytes = head.bytes.subarray(n);
          return;
        }
        this.outQueue.shift();
      }
      this.watch?.wantWritable(false);
    } catch (err) {
      this.finish({ reason: "error", error: asMpqemu(err, "send failed") });
    }
  }

  // ---- requests -----------------------------------------------------------------------------

  private handle(ev: ParseEvent<RequestMsg>): void {
    if (!ev.ok) {
      this.stats.rejected++;
      this.log(`rejected: ${ev.error.message}`);
      if (ev.fatal) {
        this.finish({ reason: "error", error: ev.error });
        return;
      }
      // Keep request/reply pairing: a proxy waiting on this command gets the error value.
      if (expectsReply(ev.cmd)) this.send(this.enc.ret(ALL_ONES));
      return;
    }
    this.stats.requests++;
    const m = ev.message;
    switch (m.cmd) {
      case Cmd.BAR_READ: {
        let value: bigint | undefined;
        if (m.size === 1 || m.size === 2 || m.size === 4 || m.size === 8) {
          try {
            value = this.fn.busRead(m.memory ? "mem" : "io", m.addr, m.size);
            if (value === undefined) this.accessFailed(`BAR_READ of ${m.size} bytes at ${space(m.memory)} 0x${m.addr.toString(16)} hits no BAR`);
          } catch (err) {
            this.accessFailed(`BAR_READ of ${m.size} bytes at ${space(m.memory)} 0x${m.addr.toString(16)}: ${(err as Error).message}`);
          }
        } else {
          this.accessFailed(`BAR_READ with access size ${m.size}`);
        }
        this.send(this.enc.ret(value ?? ALL_ONES));
        return;
      }
      case Cmd.BAR_WRITE: {
        let ok = false;
        if (m.size === 1 || m.size === 2 || m.size === 4 || m.size === 8) {
          try {
            ok = this.fn.busWrite(m.memory ? "mem" : "io", m.addr, m.size, BigInt.asUintN(m.size * 8, m.value)) !== false;
            if (!ok) this.accessFailed(`BAR_WRITE of ${m.size} bytes at ${space(m.memory)} 0x${m.addr.toString(16)} hits no BAR`);
          } catch (err) {
            this.accessFailed(`BAR_WRITE of ${m.size} bytes at ${space(m.memory)} 0x${m.addr.toString(16)}: ${(err as Error).message}`);
          }
        } else {
          this.accessFailed(`BAR_WRITE with access size ${m.size}`);
        }
        this.send(this.enc.ret(ok ? 0n : ALL_ONES));
        return;
      }
      case Cmd.PCI_CFGREAD: {
        let value: bigint = ALL_ONES;
        if (this.configAccessOk(m.addr, m.len)) {
          try {
            value = BigInt(this.fn.readConfig(m.addr, m.len as 1 | 2 | 4) >>> 0);
          } catch (err) {
            this.accessFailed(`config read of ${m.len} bytes at 0x${m.addr.toString(16)}: ${(err as Error).message}`);
          }
        }
        this.send(this.enc.ret(value));
        return;
      }
      case Cmd.PCI_CFGWRITE: {
        let ok = false;
        if (this.configAccessOk(m.addr, m.len)) {
          try {
            this.fn.writeConfig(m.addr, m.len as 1 | 2 | 4, m.value & lenMask(m.len));
            ok = true;
          } catch (err) {
            this.accessFailed(`config write of ${m.len} bytes at 0x${m.addr.toString(16)}: ${(err as Error).message}`);
          }
        }
        this.send(this.enc.ret(ok ? 0n : ALL_ONES));
        return;
      }
      case Cmd.SYNC_SYSMEM:
        this.syncSysmem(m.regions);
        return;
      case Cmd.SET_IRQFD:
        this.setIrqfd(m.irqfd, m.resamplefd);
        return;
      case Cmd.DEVICE_RESET:
        try {
          this.fn.reset();
        } catch (err) {
          this.log(`device reset failed: ${(err as Error).message}`);
        }
        this.send(this.enc.ret(null)); // QEMU's remote answers DEVICE_RESET with an empty RET
        return;
    }
  }

  private accessFailed(what: string): void {
    this.stats.failedAccesses++;
    if (this.stats.failedAccesses <= this.maxAccessLogs) {
      this.log(`${what}; answered all-ones${this.stats.failedAccesses === this.maxAccessLogs ? " (further failed accesses are only counted)" : ""}`);
    }
  }

  private configAccessOk(addr: number, len: number): boolean {
    if ((len === 1 || len === 2 || len === 4) && addr + len <= this.fn.configSize) return true;
    this.accessFailed(`config access of ${len} bytes at 0x${addr.toString(16)} is outside the ${this.fn.configSize}-byte config space`);
    return false;
  }

  // ---- guest RAM ----------------------------------------------------------------------------

  private syncSysmem(regions: SysmemRegion[]): void {
    // QEMU's proxy resends the RAM layout after every memory topology change (each BAR
    // programmed, PAM toggled...), usually unchanged: keep the current mapping then.
    const keys = regions.map(sysmemKey);
    if (keys.length === this.sysmemKeys.length && keys.every((k, i) => k !== null && k === this.sysmemKeys[i])) {
      for (const r of regions) closeFd(r.fd);
      this.stats.sysmemResends++;
      return;
    }
    // Build the whole new set first; only a complete set replaces the current one.
    // A RAM file the VMM shrinks under us: the device's DMA into it fails (EFAULT; a BAR access
    // that needed it answers all-ones) and the DMA layer drops that region. Forget the layout
    // key too, so a resend of the same fds is mapped (and checked) again.
    const onBackingTruncated = (r: DmaTruncatedRegion) => {
      this.log(`guest RAM at 0x${r.iova.toString(16)}+0x${r.size.toString(16)} was shrunk under its mapping by the VMM: DMA to it failed and the region was removed`);
      if (this.dmaCtx === ctx) this.sysmemKeys = [];
    };
    const ctx = createHostDmaContext({ mapFd: this.mapFd, onBackingTruncated });
    let added = 0;
    try {
      for (const r of regions) {
        ctx.table.add({ iova: r.gpa, size: r.size, perm: DMA_PERM_RW, backing: { kind: "fd", fd: r.fd, offset: r.offset, closeFd: true } });
        added++;
      }
    } catch (err) {
      this.log(`SYNC_SYSMEM rejected, keeping the previous guest RAM: ${(err as Error).message}`);
      ctx.close(); // unmaps and closes the fds of the regions already added
      for (const r of regions.slice(added)) closeFd(r.fd);
      return;
    }
    const old = this.dmaCtx;
    this.dmaCtx = ctx;
    this.sysmemKeys = keys.map((k) => k ?? "");
    this.stats.sysmemSwaps++;
    this.fn.attachDma(ctx.dma);
    old?.close();
  }

  /** Guest RAM regions currently mapped (for diagnostics and tests). */
  get sysmem(): { gpa: bigint; size: bigint }[] {
    return (this.dmaCtx?.table.regions() ?? []).map((r) => ({ gpa: r.iova, size: r.size }));
  }

  // ---- INTx ---------------------------------------------------------------------------------

  private setIrqfd(irqfd: number, resamplefd: number): void {
    this.closeIntx();
    let irq: EventFd | null = null;
    try {
      irq = EventFd.adopt(irqfd);
      const resample = EventFd.adopt(resamplefd);
      this.irqfd = irq;
      this.resamplefd = resample;
    } catch (err) {
      // Not eventfds: INTx stays off rather than writing 8 bytes into some other file.
      if (irq) irq.close();
      else closeFd(irqfd);
      closeFd(resamplefd);
      this.log(`SET_IRQFD ignored: ${(err as Error).message}`);
      return;
    }
    // The counter is read when the fd polls readable, never blindly: QEMU makes every fd it
    // receives blocking, and O_NONBLOCK is shared with it.
    this.resamplefd.onReadable(() => this.onResample());
    if (this.intxLevel) this.raise();
  }

  private closeIntx(): void {
    this.irqfd?.close();
    this.resamplefd?.close();
    this.irqfd = this.resamplefd = null;
  }

  private setIntx(asserted: boolean): void {
    if (asserted && !this.intxLevel) {
      this.intxLevel = true;
      this.raise();
    } else if (!asserted) {
      this.intxLevel = false;
    }
  }

  private raise(): void {
    if (!this.irqfd) return;
    try {
      this.irqfd.signal();
    } catch (err) {
      this.log(`cannot signal the irqfd: ${(err as Error).message}`);
    }
  }

  private onResample(): void {
    if (this.intxLevel) this.raise();
  }
}

/** gpa/size/offset plus the file's identity (an fd number says nothing: each resend is a new fd). */
function sysmemKey(r: SysmemRegion): string | null {
  try {
    const st = fstatSync(r.fd, { bigint: true });
    return `${r.gpa}:${r.size}:${r.offset}:${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

function space(memory: boolean): string {
  return memory ? "memory" : "I/O";
}

function lenMask(len: number): number {
  return len === 4 ? 0xffffffff : (1 << (len * 8)) - 1;
}

function asMpqemu(err: unknown, what: string): MpqemuError {
  if (err instanceof MpqemuError) return err;
  return new MpqemuError("MPQEMU_SYSTEM", `mpqemu: ${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

