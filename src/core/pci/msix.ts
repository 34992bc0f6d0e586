// MSI-X capability behaviour (QEMU hw/pci/msix.c): the vector table and pending-bit array
// the library serves inside a BAR, masking (per entry, function mask, disabled), and what a
// write of the capability's control word does.
import type { MsiMessage } from "./api.js";
import type { MsixLayout } from "./caps.js";
import type { FunctionCapability, StateReader, StateWriter } from "./capability.js";
import { put32, u32, type ConfigSpace } from "./config.js";
import type { InterruptRouter } from "./interrupts.js";
import type { IoOps } from "../memory/api.js";
import * as R from "./regs.js";

export class MsixCapability implements FunctionCapability {
  readonly table: Uint8Array;
  readonly pba: Uint8Array;
  private functionMasked = true;

  constructor(
    readonly layout: MsixLayout,
    private readonly cfg: ConfigSpace,
    private readonly router: InterruptRouter,
  ) {
    this.table = new Uint8Array(layout.tableSize);
    this.pba = new Uint8Array(layout.pbaSize);
    this.reset();
  }

  get vectors(): number {
    return this.layout.vectors;
  }

  enabled(): boolean {
    if (this.router.delivery === "peer") return this.router.peerEnabled("msix");
    return (this.cfg.u16(this.layout.offset + R.PCI_MSIX_FLAGS) & R.PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  /** Every entry masked, no pending bits, function masked (QEMU msix_reset). */
  reset(): void {
    const t = this.table;
    t.fill(0);
    for (let off = R.PCI_MSIX_ENTRY_VECTOR_CTRL; off < t.length; off += R.PCI_MSIX_ENTRY_SIZE) t[off] = R.PCI_MSIX_ENTRY_CTRL_MASKBIT;
    this.pba.fill(0);
    this.functionMasked = true;
  }

  private vectorMasked(vector: number, functionMasked: boolean): boolean {
    return functionMasked || (this.table[vector * 16 + R.PCI_MSIX_ENTRY_VECTOR_CTRL] & R.PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  /** QEMU msix_get_message. */
  message(vector: number): MsiMessage {
    const t = this.table;
    const e = vector * 16;
    return { address: (BigInt(u32(t, e + 4)) << 32n) | BigInt(u32(t, e)), data: u32(t, e + 8) };
  }

  /** QEMU msix_notify: masked (entry, function mask, or disabled) → PBA bit. */
  notify(vector: number): void {
    const router = this.router;
    if (router.disposed) return;
    if (router.delivery === "peer") {
      router.peerVector("msix", vector, () => (vector < this.layout.vectors ? this.message(vector) : { address: 0n, data: 0 }));
      return;
    }
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.layout.vectors) return;
    if (this.vectorMasked(vector, this.functionMasked)) {
      this.pba[vector >> 3] |= 1 << (vector & 7);
      return;
    }
    router.sink?.vector("msix", vector, this.message(vector));
  }

  /** QEMU msix_handle_mask_update: an unmasked vector with its PBA bit set fires now. */
  private maskUpdate(vector: number, wasMasked: boolean): void {
    const isMasked = this.vectorMasked(vector, this.functionMasked);
    if (!wasMasked || isMasked) return;
    const bit = 1 << (vector & 7);
    if (this.pba[vector >> 3] & bit) {
      this.pba[vector >> 3] &= ~bit;
      this.notify(vector);
    }
  }

  private functionMaskFromConfig(): number {
    const flags = this.cfg.u16(this.layout.offset + R.PCI_MSIX_FLAGS);
    this.functionMasked = !(flags & R.PCI_MSIX_FLAGS_ENABLE) || (flags & R.PCI_MSIX_FLAGS_MASKALL) !== 0;
    return flags;
  }

  /** QEMU msix_write_config (the control word's upper byte was written). */
  configWrite(offset: number, size: number): void {
    const msix = this.layout;
    if (!(offset <= msix.offset + 3 && msix.offset + 3 < offset + size)) return;
    const wasMasked = this.functionMasked;
    const flags = this.functionMaskFromConfig();
    if (!(flags & R.PCI_MSIX_FLAGS_ENABLE)) return;
    this.router.setIntxLevel(false);
    if (this.functionMasked === wasMasked) return;
    for (let v = 0; v < msix.vectors; v++) this.maskUpdate(v, this.vectorMasked(v, wasMasked));
  }

  /** The table as an I/O region (QEMU msix_table_mmio_ops: 4- and 8-byte accesses,
   *  implemented as 4-byte ones). */
  tableOps(owner: object): IoOps {
    return {
      read: (offset) => u32(this.table, offset),
      write: (offset, _size, value) => {
        const vector = offset >> 4;
        const wasMasked = this.vectorMasked(vector, this.functionMasked);
        put32(this.table, offset, Number(value) >>> 0);
        this.maskUpdate(vector, wasMasked);
      },
      valid: { min: 4, max: 8 },
      impl: { min: 4, max: 4 },
      owner,
      // Unmasking a vector may deliver it, and a sink may touch the device again.
      reentrancyGuard: false,
    };
  }

  /** The PBA: read-only pending bits (QEMU msix_pba_mmio_ops). */
  pbaOps(owner: object): IoOps {
    return {
      read: (offset) => u32(this.pba, offset),
      write() {},
      valid: { min: 4, max: 8 },
      impl: { min: 4, max: 4 },
      owner,
    };
  }

  save(out: StateWriter): void {
    out.blob(this.table);
    out.blob(this.pba);
  }

  /** Config space must be restored before the returned applier runs (it reads the mask). */
  restore(input: StateReader): () => void {
    const table = input.take(this.table.length);
    const pba = input.take(this.pba.length);
    return () => {
      this.table.set(table);
      this.pba.set(pba);
      this.functionMaskFromConfig();
    };
  }
}

/** Sections of a function without MSI-X: two empty ones, so every state has the same shape. */
export const NO_MSIX = {
  save(out: StateWriter): void {
    out.blob(new Uint8Array(0));
    out.blob(new Uint8Array(0));
  },
  restore(input: StateReader): () => void {
    input.take(0);
    input.take(0);
    return () => {};
  },
};
