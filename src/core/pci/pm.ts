// Power management capability behaviour (PCI PM 1.2 §7.1.3; QEMU has no generic model):
// D0 and D3hot only. The core applies PMCSR's write mask; a write selecting D1 or D2,
// which the capability does not advertise, leaves the power state as it was.
import type { FunctionCapability } from "./capability.js";
import type { ConfigSpace } from "./config.js";
import * as R from "./regs.js";

export class PmCapability implements FunctionCapability {
  /** The power state before the write being applied: config space only changes through
   *  writes, reset and restore, and each of those ends here. */
  private state: number;

  constructor(
    private readonly offset: number,
    private readonly cfg: ConfigSpace,
  ) {
    this.state = this.current();
  }

  private current(): number {
    return this.cfg.bytes()[this.offset + R.PCI_PM_CTRL] & R.PCI_PM_CTRL_STATE_MASK;
  }

  configWrite(offset: number, size: number): void {
    const pmcsr = this.offset + R.PCI_PM_CTRL;
    if (offset < this.offset + 6 && pmcsr < offset + size) {
      const cfg = this.cfg.bytes();
      const st = cfg[pmcsr] & R.PCI_PM_CTRL_STATE_MASK;
      if (st === 1 || st === 2) cfg[pmcsr] = (cfg[pmcsr] & ~R.PCI_PM_CTRL_STATE_MASK) | this.state;
    }
    this.state = this.current();
  }

  reset(): void {
    this.state = this.current();
  }

  /** After config space was restored. */
  restored(): void {
    this.state = this.current();
  }
}
