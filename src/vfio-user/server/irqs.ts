// Interrupt state of one client session: per IRQ index (INTx, MSI, MSI-X, ERR, REQ) and vector,
// the client's trigger eventfd, the mask and pending bits, and optional mask/unmask eventfds.
// Implements the device's InterruptSink with "peer" delivery: the client (the VMM) emulates the
// MSI/MSI-X capability and table, so masking happens here, driven by SET_IRQS.
//
// Semantics follow Linux vfio-pci (drivers/vfio/pci/vfio_pci_intrs.c), which the vfio-user spec
// builds on: INTx is level-triggered and automasked (signalled once, then masked until the client
// unmasks; still asserted at unmask -> signalled again); a masked MSI/MSI-X vector that fires
// becomes pending and is signalled when unmasked. An eventfd given with ACTION_UNMASK (or
// ACTION_MASK) is one the device side *watches*: when the VMM signals it, the vector is unmasked
// (or masked), as vfio-pci's virqfd does for the INTx resample fd that QEMU passes under KVM
// (vfio_pci_set_intx_unmask with DATA_EVENTFD). The device never writes those fds.
import { EventFd } from "../../transport/eventfd.js";
import { TransportError } from "../../transport/errors.js";
import { closeFdQuietly } from "../../transport/fd.js";
import type { InterruptSink, MsiMessage, PciFunction, VectorKind } from "../../core/pci/api.js";
import { Errno, IrqInfoFlag, IrqSetFlag, PciIrq } from "../wire/constants.js";
import type { IrqSet } from "../wire/messages.js";
import { badRequest } from "./errors.js";

interface IrqLine {
  trigger: EventFd | null;
  /** Watched: a signal masks the vector. */
  maskOnSignal: EventFd | null;
  /** Watched: a signal unmasks the vector (the INTx resample fd). */
  unmaskOnSignal: EventFd | null;
  masked: boolean;
  pending: boolean;
  /** The last signal of `trigger` failed (logged once until one succeeds again). */
  failing: boolean;
}

interface IrqIndexState {
  count: number;
  flags: number;
  lines: IrqLine[];
}

const INDEX_NAMES = ["INTx", "MSI", "MSI-X", "ERR", "REQ"];

function newLine(): IrqLine {
  return { trigger: null, maskOnSignal: null, unmaskOnSignal: null, masked: false, pending: false, failing: false };
}

export interface IrqCounters {
  /** Eventfd signals sent, per index. */
  signalled: number[];
  /** Interrupts dropped, per index: no trigger eventfd was set, or signalling it failed. */
  dropped: number[];
}

export class IrqTable implements InterruptSink {
  private readonly indexes: IrqIndexState[];
  /** Device-side INTx level (what the function asserts). */
  private intxLevel = false;
  readonly counters: IrqCounters = { signalled: [0, 0, 0, 0, 0], dropped: [0, 0, 0, 0, 0] };

  constructor(
    private readonly fn: PciFunction,
    private readonly log: (line: string) => void = () => {},
  ) {
    const info = fn.interruptInfo;
    const mk = (count: number, flags: number): IrqIndexState => ({ count, flags, lines: Array.from({ length: count }, newLine) });
    this.indexes = [
      mk(info.intx ? 1 : 0, IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED),
      mk(info.msiVectors, IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE),
      mk(info.msixVectors, IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE),
      mk(1, IrqInfoFlag.EVENTFD),
      mk(1, IrqInfoFlag.EVENTFD),
    ];
  }

  /** DEVICE_GET_IRQ_INFO data for `index` (caller checked index < PciIrq.COUNT). */
  info(index: number): { flags: number; count: number } {
    const s = this.indexes[index];
    return { flags: s.flags, count: s.count };
  }

  /**
   * Applies a validated-shape SET_IRQS request. Takes ownership of `fds` on success and on
   * failure (they are closed when not kept). Throws VfioUserServerError with an errno.
   */
  set(req: IrqSet, fds: number[]): void {
    try {
      this.apply(req, fds);
    } catch (e) {
      for (const fd of fds) closeFdQuietly(fd);
      throw e;
    }
  }

  private apply(req: IrqSet, fds: number[]): void {
    const { index, start, count, flags } = req;
    if (index >= PciIrq.COUNT) throw badRequest(Errno.EINVAL, `IRQ index ${index} out of range (0..${PciIrq.COUNT - 1})`);
    const dataFlags = flags & IrqSetFlag.DATA_MASK;
    const action = flags & IrqSetFlag.ACTION_MASK_ALL;
    if ((flags & ~(IrqSetFlag.DATA_MASK | IrqSetFlag.ACTION_MASK_ALL)) !== 0 || popcount(dataFlags) !== 1 || popcount(action) !== 1) {
      throw badRequest(Errno.EINVAL, `SET_IRQS flags 0x${flags.toString(16)} must hold exactly one DATA_* and one ACTION_* bit`);
    }
    const s = this.indexes[index];
    const name = INDEX_NAMES[index];
    if (dataFlags !== IrqSetFlag.DATA_EVENTFD && fds.length > 0) {
      throw badRequest(Errno.EINVAL, `SET_IRQS without DATA_EVENTFD carried ${fds.length} unexpected fds`);
    }
    // count 0 + DATA_NONE + TRIGGER: disable the whole index (VFIO convention).
    if (count === 0) {
      if (dataFlags === IrqSetFlag.DATA_NONE && action === IrqSetFlag.ACTION_TRIGGER && start === 0) {
        this.disableAll(index);
        return;
      }
      throw badRequest(Errno.EINVAL, `SET_IRQS count 0 is only valid with DATA_NONE | ACTION_TRIGGER and start 0`);
    }
    if (start >= s.count || count > s.count - start) {
      throw badRequest(Errno.EINVAL, `${name} vectors ${start}..${start + count - 1} out of range (${s.count} vectors)`);
    }
    if (action !== IrqSetFlag.ACTION_TRIGGER && (s.flags & IrqInfoFlag.MASKABLE) === 0) {
      throw badRequest(Errno.EINVAL, `${name} is not maskable`);
    }
    if (dataFlags === IrqSetFlag.DATA_EVENTFD) {
      if (fds.length !== 0 && fds.length !== count) {
        throw badRequest(Errno.EINVAL, `SET_IRQS DATA_EVENTFD for ${count} vectors carried ${fds.length} fds (need ${count}, or 0 to deassign)`);
      }
      const adopted = adoptAll(fds);
      fds.length = 0; // now owned by `adopted`
      for (let i = 0; i < count; i++) {
        const line = s.lines[start + i];
        const fd = adopted.length ? adopted[i] : null;
        if (action === IrqSetFlag.ACTION_TRIGGER) {
          line.trigger?.close();
          line.trigger = fd;
          if (fd === null) line.pending = false;
        } else if (action === IrqSetFlag.ACTION_MASK) {
          line.maskOnSignal?.close();
          line.maskOnSignal = fd;
          fd?.onReadable(() => this.mask(index, start + i));
        } else {
          line.unmaskOnSignal?.close();
          line.unmaskOnSignal = fd;
          fd?.onReadable(() => this.unmask(index, start + i));
        }
      }
      if (action === IrqSetFlag.ACTION_TRIGGER) this.updatePeerEnable(index);
      return;
    }
    const selected = (i: number) => dataFlags === IrqSetFlag.DATA_NONE || req.data[i] !== 0;
    for (let i = 0; i < count; i++) {
      if (!selected(i)) continue;
      const v = start + i;
      if (action === IrqSetFlag.ACTION_TRIGGER) this.fire(index, v);
      else if (action === IrqSetFlag.ACTION_MASK) this.mask(index, v);
      else this.unmask(index, v);
    }
  }

  // --- InterruptSink (called by the device) ---

  intx(asserted: boolean): void {
    this.intxLevel = asserted;
    if (asserted) this.fire(PciIrq.INTX, 0);
    else if (this.indexes[PciIrq.INTX].lines.length) this.indexes[PciIrq.INTX].lines[0].pending = false;
  }

  vector(kind: VectorKind, vector: number, _message: MsiMessage): void {
    this.fire(kind === "msix" ? PciIrq.MSIX : PciIrq.MSI, vector);
  }

  /** Signals the ERR index (e.g. an uncorrectable device error the VMM should see). */
  raiseError(): void {
    this.fire(PciIrq.ERR, 0);
  }

  /** Signals the REQ index (the device asks the VMM to release it). */
  requestRelease(): void {
    this.fire(PciIrq.REQ, 0);
  }

  /** Whether `vector` of `index` has a trigger eventfd. */
  hasTrigger(index: number, vector: number): boolean {
    return this.indexes[index]?.lines[vector]?.trigger != null;
  }

  isMasked(index: number, vector: number): boolean {
    return this.indexes[index]?.lines[vector]?.masked ?? false;
  }

  /** Closes every eventfd (client disconnect). */
  close(): void {
    for (let i = 0; i < this.indexes.length; i++) {
      const s = this.indexes[i];
      for (const line of s.lines) {
        line.trigger?.close();
        line.maskOnSignal?.close();
        line.unmaskOnSignal?.close();
        Object.assign(line, newLine());
      }
    }
    try {
      this.fn.setPeerInterrupts("msi", 0);
      this.fn.setPeerInterrupts("msix", 0);
    } catch {
      // device already detached
    }
  }

  // --- internals ---

  private fire(index: number, vector: number): void {
    const line = this.indexes[index].lines[vector];
    if (!line) return;
    if (line.masked) {
      line.pending = true;
      return;
    }
    if (!line.trigger) {
      this.counters.dropped[index]++;
      return;
    }
    // The device calls in here from its own timers too (an exception there ends the process):
    // whatever a client did to its eventfd, a failed signal loses this interrupt and is logged.
    const failure = trySignal(line.trigger);
    if (failure !== null) {
      this.counters.dropped[index]++;
      if (!line.failing) this.log(`${INDEX_NAMES[index]} vector ${vector} could not be signalled (${failure}); interrupt dropped`);
      line.failing = true;
      return;
    }
    line.failing = false;
    this.counters.signalled[index]++;
    if (index === PciIrq.INTX) {
      // Level-triggered INTx is automasked until the client's UNMASK (vfio_intx_handler).
      line.masked = true;
      line.pending = true;
    }
  }

  private mask(index: number, vector: number): void {
    const line = this.indexes[index].lines[vector];
    if (line.masked) return;
    line.masked = true;
  }

  private unmask(index: number, vector: number): void {
    const line = this.indexes[index].lines[vector];
    if (!line.masked) return;
    line.masked = false;
    if (index === PciIrq.INTX) {
      // Still asserted at unmask: signal again (vfio_pci_intx_unmask_handler).
      line.pending = false;
      if (this.intxLevel) this.fire(index, vector);
    } else if (line.pending) {
      line.pending = false;
      this.fire(index, vector);
    }
  }

  private disableAll(index: number): void {
    for (const line of this.indexes[index].lines) {
      line.trigger?.close();
      line.trigger = null;
      line.pending = false;
      line.masked = false;
    }
    this.updatePeerEnable(index);
  }

  /** Tells the device how many MSI/MSI-X vectors the VMM enabled ("peer" delivery). */
  private updatePeerEnable(index: number): void {
    if (index !== PciIrq.MSI && index !== PciIrq.MSIX) return;
    const lines = this.indexes[index].lines;
    let n = 0;
    for (let i = lines.length - 1; i >= 0; i--) {
      if (lines[i].trigger) {
        n = i + 1;
        break;
      }
    }
    this.fn.setPeerInterrupts(index === PciIrq.MSI ? "msi" : "msix", n);
  }
}

function popcount(x: number): number {
  let n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}

/** Signals `e`; returns why it failed (null on success). */
function trySignal(e: EventFd): string | null {
  try {
    e.signal();
    return null;
  } catch (err) {
    return (err as Error)?.message ?? String(err);
  }
}

/**
 * Adopts every fd as an EventFd; on failure closes all of them and throws: EINVAL for an fd that
 * is not an eventfd (a file, pipe or socket would be written 8 bytes per interrupt; EventFd.adopt
 * refuses it, as Linux vfio's eventfd_ctx_fdget does), EBADF for one that cannot be used.
 */
function adoptAll(fds: number[]): EventFd[] {
  const out: EventFd[] = [];
  for (let i = 0; i < fds.length; i++) {
    try {
      out.push(EventFd.adopt(fds[i]));
    } catch (cause) {
      for (const e of out) e.close();
      for (let j = i; j < fds.length; j++) closeFdQuietly(fds[j]);
      fds.length = 0;
      const notEventFd = cause instanceof TransportError && cause.code === "ERR_INVALID_ARGUMENT";
      throw badRequest(notEventFd ? Errno.EINVAL : Errno.EBADF, `SET_IRQS fd #${i} ${notEventFd ? "is not an eventfd" : "cannot be used as an eventfd"}`, { cause });
    }
  }
  return out;
}
