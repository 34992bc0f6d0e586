// A PCI function whose BAR access makes a synchronous DMA while it is being served: what the
// truncation scenarios use to reach guest memory the peer has shrunk.
import { createPciFunction } from "../../src/core/pci/function.js";
import type { PciFunction } from "../../src/core/pci/api.js";

/**
 * BAR0 (mem32, 4 KiB): offset 0 (8 bytes) = DMA address; offset 8 (4 bytes) = a 32-bit DMA
 * load (read) or store (write) at that address. Other offsets read 0 and ignore writes.
 */
export function createProbeDevice(): PciFunction {
  let address = 0n;
  const fn: PciFunction = createPciFunction({
    vendorId: 0x1234,
    deviceId: 0xdead,
    classCode: 0xff0000,
    bars: [{
      kind: "mem32",
      size: 4096,
      ops: {
        read: (offset) => (offset === 8 ? fn.dma!.readU32(address) : 0),
        write: (offset, _size, value) => {
          if (offset === 0) address = BigInt(value);
          else if (offset === 8) fn.dma!.writeU32(address, Number(value));
        },
        valid: { min: 4, max: 8 },
      },
    }],
  });
  return fn;
}
