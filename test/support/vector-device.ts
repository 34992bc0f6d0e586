// A PCI function with many interrupt vectors: an 8-vector MSI capability and a 12-vector MSI-X
// table (BAR0 at 0x800, PBA at 0xc00). Writing N to BAR0 offset 0 fires vector N on whichever
// of the two the guest enabled. For tests of how a VMM hands over many eventfds.
import { createPciFunction } from "../../src/core/pci/function.js";
import type { PciFunction } from "../../src/core/pci/api.js";

export const VECTOR_DEVICE_MSI_VECTORS = 8;
export const VECTOR_DEVICE_MSIX_VECTORS = 12;
export const VECTOR_DEVICE_MSIX_TABLE = 0x800;

export function createVectorDevice(): PciFunction {
  const fn: PciFunction = createPciFunction({
    name: "vectors",
    vendorId: 0x1234,
    deviceId: 0xfeed,
    classCode: 0xff0000,
    bars: [{
      kind: "mem32",
      size: 4096,
      ops: {
        read: () => 0,
        write: (offset, _size, value) => {
          if (offset === 0) fn.irq.notify(Number(value));
        },
        valid: { min: 4, max: 4 },
      },
    }],
    capabilities: [
      { kind: "msi", vectors: VECTOR_DEVICE_MSI_VECTORS, address64: true, perVectorMask: false },
      { kind: "msix", vectors: VECTOR_DEVICE_MSIX_VECTORS, tableBar: 0, tableOffset: VECTOR_DEVICE_MSIX_TABLE, pbaBar: 0, pbaOffset: 0xc00 },
    ],
  });
  return fn;
}
