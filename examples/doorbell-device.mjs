// A custom PCI device served over vfio-user: a RAM BAR and a doorbell register that raises MSI.
//
//   node examples/doorbell-device.mjs [SOCKET]      (default ./doorbell.sock; Ctrl-C stops it)
//
//   BAR 0  64 KiB of RAM, served by the wasm core: no device code runs on these accesses
//   BAR 2  4 KiB of registers, 4-byte accesses only:
//            0x00 RO  identification 0x6c6c6562 ("bell")
//            0x04 WO  doorbell: remembers the value and raises MSI vector 0 (when the VMM
//                     enabled MSI)
//            0x08 RO  how many times the doorbell rang
//            0x0c RO  the last value rung
//
// Other programs import createDoorbellDevice() (examples/qemu-attach.mjs does).
import { createPciFunction, VfioUserServer } from "wasmdev";
import { fileURLToPath } from "node:url";

export const DOORBELL_VENDOR_ID = 0x1234;
export const DOORBELL_DEVICE_ID = 0xbe11;
export const REG = { ID: 0x00, DOORBELL: 0x04, COUNT: 0x08, LAST: 0x0c };
const ID_VALUE = 0x6c6c6562;

/** The device as a PciFunction, plus what it saw (for the caller to print or check). */
export function createDoorbellDevice() {
  const state = { rung: 0, last: 0 };
  const fn = createPciFunction({
    name: "doorbell",
    vendorId: DOORBELL_VENDOR_ID,
    deviceId: DOORBELL_DEVICE_ID,
    classCode: 0xff0000, // no PCI class: a vendor-specific device
    bars: [
      { kind: "mem32", size: 64 * 1024, name: "ram", ram: true },
      undefined,
      {
        kind: "mem32",
        size: 4096,
        name: "regs",
        registers: {
          valid: { min: 4, max: 4 },
          read(offset) {
            if (offset === REG.ID) return ID_VALUE;
            if (offset === REG.COUNT) return state.rung >>> 0;
            if (offset === REG.LAST) return state.last;
            return 0;
          },
          write(offset, _size, value, ctx) {
            if (offset !== REG.DOORBELL) return;
            state.rung++;
            state.last = value;
            ctx.irq.notify(0); // MSI vector 0; does nothing while the VMM has MSI disabled
          },
        },
      },
    ],
    capabilities: [{ kind: "msi", vectors: 1, address64: true }],
    reset() {
      state.rung = 0;
      state.last = 0;
    },
  });
  return { fn, state };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const socketPath = process.argv[2] ?? "doorbell.sock";
  const { fn } = createDoorbellDevice();
  const server = VfioUserServer.listen({ device: fn, socketPath, log: (line) => console.error(line) });
  console.log(`serving the doorbell device on ${socketPath} (Ctrl-C stops it)`);
  const stop = async () => {
    await server.close(); // also removes the socket
    fn.dispose();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
