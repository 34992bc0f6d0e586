// A PCI function that remembers every BAR write in the order the server performed it: what a
// test needs to check that a peer's writes reached the device whole and in order, however the
// peer packed them on the wire.
import { createPciFunction } from "../../src/core/pci/function.js";
import type { AccessSize, PciFunction } from "../../src/core/pci/api.js";

export interface LoggedWrite {
  offset: number;
  size: AccessSize;
  value: number;
}

export const WRITE_LOG_BAR_SIZE = 4096;

/** BAR0: 4 KiB of 32-bit registers that read back the last value written; every write is logged. */
export function createWriteLogDevice(): { fn: PciFunction; writes: LoggedWrite[] } {
  const writes: LoggedWrite[] = [];
  const regs = new Uint32Array(WRITE_LOG_BAR_SIZE / 4);
  const fn = createPciFunction({
    name: "write-log",
    vendorId: 0x1234,
    deviceId: 0xbeef,
    classCode: 0xff0000,
    bars: [{
      kind: "mem32",
      size: WRITE_LOG_BAR_SIZE,
      ops: {
        read: (offset) => regs[offset >> 2]!,
        write: (offset, size, value) => {
          writes.push({ offset, size, value: Number(value) });
          regs[offset >> 2] = Number(value);
        },
        valid: { min: 4, max: 4 },
      },
    }],
  });
  return { fn, writes };
}
