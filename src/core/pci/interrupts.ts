// Where a function's interrupts go: the INTx pin (level, status bit, the command register's
// INTx-disable bit) and the sink the server attached, with its delivery mode. MSI and MSI-X
// (msi.ts, msix.ts) compose messages and hand them to this router.
import type { InterruptDelivery, InterruptSink, MsiMessage, VectorKind } from "./api.js";
import type { FunctionCapability } from "./capability.js";
import { type ConfigSpace } from "./config.js";
import { PciError } from "./errors.js";
import * as R from "./regs.js";

export class InterruptRouter implements FunctionCapability {
  /** Device-side INTx level (before INTx-disable). */
  level = false;
  /** The pin as the bus sees it. */
  private output = false;
  sink: InterruptSink | null = null;
  delivery: InterruptDelivery = "device";
  peer: { kind: VectorKind | "intx" | null; count: number } = { kind: null, count: 0 };
  disposed = false;

  constructor(
    private readonly cfg: ConfigSpace,
    private readonly hasPin: boolean,
  ) {}

  attach(sink: InterruptSink | null, delivery: InterruptDelivery): void {
    this.sink = sink;
    this.delivery = delivery;
    this.peer = { kind: null, count: 0 };
    if (sink && this.output) sink.intx(true);
  }

  setPeer(kind: VectorKind | "intx", count: number): void {
    if (!Number.isInteger(count) || count < 0) throw new PciError("PCI_INVALID_SPEC", `peer interrupt count ${count} is invalid`, { field: "count" });
    this.peer = count === 0 ? { kind: null, count: 0 } : { kind, count };
  }

  /** "peer" delivery: whether the VMM enabled vectors of `kind`. */
  peerEnabled(kind: VectorKind): boolean {
    return this.peer.kind === kind;
  }

  /** "peer" delivery: hands `vector` to the sink when the VMM enabled it. */
  peerVector(kind: VectorKind, vector: number, message: () => MsiMessage): void {
    if (this.peer.kind === kind && vector >= 0 && vector < this.peer.count) this.sink?.vector(kind, vector, message());
  }

  /** QEMU pci_set_irq / pci_irq_handler: level-triggered, status bit mirrors the level. */
  setIntxLevel(level: boolean): void {
    if (!this.hasPin || this.disposed) return;
    if (level === this.level) return;
    this.level = level;
    const cfg = this.cfg.bytes();
    if (level) cfg[R.PCI_STATUS] |= R.PCI_STATUS_INTERRUPT;
    else cfg[R.PCI_STATUS] &= ~R.PCI_STATUS_INTERRUPT;
    this.updateOutput();
  }

  /** The pin as the bus sees it: asserted and not disabled (QEMU pci_irq_disabled). */
  updateOutput(): void {
    const disabled = (this.cfg.u16(R.PCI_COMMAND) & R.PCI_COMMAND_INTX_DISABLE) !== 0;
    const out = this.level && !disabled;
    if (out === this.output) return;
    this.output = out;
    this.sink?.intx(out);
  }

  reset(): void {
    this.level = false;
    this.updateOutput();
  }

  /** Migration: the level travels in the state header; config space carries the rest. */
  restoreLevel(level: boolean): void {
    this.level = level;
    this.updateOutput();
  }
}
