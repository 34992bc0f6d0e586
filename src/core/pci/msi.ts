// MSI capability behaviour (QEMU hw/pci/msi.c): message composition, per-vector mask and
// pending bits, and what a write of the capability does. The capability's bytes and masks
// were laid out by caps.ts; they live in config space.
import type { MsiMessage } from "./api.js";
import type { MsiLayout } from "./caps.js";
import type { FunctionCapability } from "./capability.js";
import { put16, put32, u16, u32, type ConfigSpace } from "./config.js";
import type { InterruptRouter } from "./interrupts.js";
import * as R from "./regs.js";

export class MsiCapability implements FunctionCapability {
  constructor(
    private readonly layout: MsiLayout,
    private readonly cfg: ConfigSpace,
    private readonly router: InterruptRouter,
  ) {}

  get vectors(): number {
    return this.layout.vectors;
  }

  /** Whether MSI is enabled (config space, or the peer in "peer" delivery). */
  enabled(): boolean {
    if (this.router.delivery === "peer") return this.router.peerEnabled("msi");
    return (this.cfg.u16(this.layout.offset + R.PCI_MSI_FLAGS) & R.PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  /** QEMU msi_get_message: the low log2(enabled vectors) data bits carry the vector. */
  message(vector: number): MsiMessage {
    const msi = this.layout;
    const cfg = this.cfg.bytes();
    const flags = u16(cfg, msi.offset + R.PCI_MSI_FLAGS);
    const lo = u32(cfg, msi.offset + R.PCI_MSI_ADDRESS_LO);
    const address = msi.address64 ? (BigInt(u32(cfg, msi.offset + R.PCI_MSI_ADDRESS_HI)) << 32n) | BigInt(lo) : BigInt(lo);
    const enabled = 1 << ((flags & R.PCI_MSI_FLAGS_QSIZE) >> 4);
    let data = u16(cfg, msi.offset + msi.dataOffset);
    if (enabled > 1) data = (data & ~(enabled - 1)) | vector;
    return { address, data };
  }

  private enabledVectors(): number {
    const flags = this.cfg.u16(this.layout.offset + R.PCI_MSI_FLAGS);
    return 1 << ((flags & R.PCI_MSI_FLAGS_QSIZE) >> 4);
  }

  /** QEMU msi_notify: masked → pending bit set. */
  notify(vector: number): void {
    const router = this.router;
    if (router.disposed) return;
    if (router.delivery === "peer") {
      router.peerVector("msi", vector, () => this.message(vector));
      return;
    }
    const msi = this.layout;
    if (!this.enabled() || !Number.isInteger(vector) || vector < 0 || vector >= this.enabledVectors()) return;
    if (msi.perVectorMask) {
      const cfg = this.cfg.bytes();
      if (u32(cfg, msi.offset + msi.maskOffset) & (1 << vector)) {
        put32(cfg, msi.offset + msi.pendingOffset, u32(cfg, msi.offset + msi.pendingOffset) | (1 << vector));
        return;
      }
    }
    router.sink?.vector("msi", vector, this.message(vector));
  }

  /** QEMU msi_write_config: on enable, INTx is deasserted, an over-large MME is clamped,
   *  and pending vectors that are now unmasked fire. */
  configWrite(offset: number, size: number): void {
    const msi = this.layout;
    if (!(offset < msi.offset + msi.size && msi.offset < offset + size)) return;
    const cfg = this.cfg.bytes();
    let flags = u16(cfg, msi.offset + R.PCI_MSI_FLAGS);
    if (!(flags & R.PCI_MSI_FLAGS_ENABLE)) return;
    this.router.setIntxLevel(false);
    const mme = (flags & R.PCI_MSI_FLAGS_QSIZE) >> 4;
    const mmc = (flags & R.PCI_MSI_FLAGS_QMASK) >> 1;
    if (mme > mmc) {
      flags = (flags & ~R.PCI_MSI_FLAGS_QSIZE) | (mmc << 4);
      put16(cfg, msi.offset + R.PCI_MSI_FLAGS, flags);
    }
    if (!msi.perVectorMask) return;
    const n = this.enabledVectors();
    const live = n === 32 ? 0xffffffff : (1 << n) - 1;
    let pending = u32(cfg, msi.offset + msi.pendingOffset) & live;
    put32(cfg, msi.offset + msi.pendingOffset, pending);
    const mask = u32(cfg, msi.offset + msi.maskOffset);
    for (let v = 0; v < n; v++) {
      const bit = 1 << v;
      if (!(pending & bit) || mask & bit) continue;
      pending &= ~bit;
      put32(this.cfg.bytes(), msi.offset + msi.pendingOffset, pending >>> 0);
      this.notify(v);
    }
  }
}
