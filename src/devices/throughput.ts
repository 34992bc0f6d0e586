// A device for throughput measurement: a RAM-backed data BAR (no device code on any access,
// so benchmarks measure transport + dispatch) and a small register BAR with a doorbell.
//
//   BAR 0  memory, RAM-backed, `dataSize` bytes (default 1 MiB); optionally a caller-supplied
//          buffer with an fd so a vfio-user client can mmap it.
//   BAR 2  memory, 4 KiB registers (4-byte accesses; 8-byte ones are split):
//     0x00 RO  identification 0x77647470 ("wdtp")
//     0x04 WO  doorbell: counts the write, keeps the value, adds it to the sum, calls
//              `onDoorbell`, and fires MSI-X vector 0 (or pulses INTx: assert, deasserted by
//              IRQ_ACK) when bit 0 of CONTROL is set. Also an ioeventfd without datamatch
//              (4-byte writes): a VMM may ring it through an eventfd, and each wake-up arrives
//              here as one write whose value is the number of rings it folded together.
//     0x08 RO  doorbell count (low 32 bits)       } served from a shadow window (a ROM device
//     0x0c RO  last doorbell value                 } in the memory core): reads stay inside
//                                                    wasm and never reach the device
//     0x10 RW  scratch
//     0x14 RW  control: bit 0 = interrupt on doorbell
//     0x18 WO  interrupt acknowledge (deasserts INTx)
//     0x20 RO  doorbell sum: the values written to DOORBELL, added (low 32 bits; shadow window).
//              Rings written as value 1 over the socket and rings through the ioeventfd both
//              count one each here, so benchmarks compare the two paths by this register.
//     0x800    MSI-X table (2 vectors)     0xc00 MSI-X PBA
import { createPciFunction } from "../core/pci/function.js";
import type { DeviceContext, PciDevice, ShadowWindowAccess } from "../core/pci/api.js";
import type { CoreRef } from "../core/wasm.js";

export const THROUGHPUT_VENDOR_ID = 0x1234;
export const THROUGHPUT_DEVICE_ID = 0x5754;
export const THROUGHPUT_ID_VALUE = 0x77647470;

export const THROUGHPUT_REG = {
  ID: 0x00,
  DOORBELL: 0x04,
  DOORBELL_COUNT: 0x08,
  LAST_DOORBELL: 0x0c,
  SCRATCH: 0x10,
  CONTROL: 0x14,
  IRQ_ACK: 0x18,
  DOORBELL_SUM: 0x20,
} as const;
export const THROUGHPUT_CONTROL_IRQ = 0x1;

export interface ThroughputOptions {
  /** Data BAR size, a power of two ≥ 4 KiB (default 1 MiB). */
  dataSize?: number;
  /** Caller-owned data memory (e.g. a memfd mapping) and the fd a client may mmap. */
  data?: { bytes: Uint8Array; fd?: number; fdOffset?: bigint };
  /** Called on every doorbell write with the value written. */
  onDoorbell?: (value: number) => void;
  /** Core instance to build the function in (default: the shared one; see createPciFunction). */
  core?: CoreRef;
}

export interface ThroughputDevice extends PciDevice {
  /** Doorbell writes seen since creation/reset. */
  readonly doorbells: number;
  /** Sum of the doorbell values since creation/reset (mod 2^32): rings, when each is 1. */
  readonly doorbellSum: number;
}

export function createThroughputDevice(options: ThroughputOptions = {}): ThroughputDevice {
  const dataSize = options.data?.bytes.length ?? options.dataSize ?? 1 << 20;
  const onDoorbell = options.onDoorbell;
  let doorbells = 0;
  let lastValue = 0;
  let doorbellSum = 0;
  let scratch = 0;
  let control = 0;
  // Shadow window 0 covers 0x08..0x0f (count, then last value); window 1 the sum at 0x20.
  let counters: ShadowWindowAccess | undefined;
  let sum: ShadowWindowAccess | undefined;

  const mirror = (ctx: DeviceContext) => {
    counters ??= ctx.fn.shadowWindow(2, 0);
    sum ??= ctx.fn.shadowWindow(2, 1);
    counters.setUint32(0, doorbells >>> 0);
    counters.setUint32(4, lastValue);
    sum.setUint32(0, doorbellSum);
  };

  // 4-byte accesses only (valid 4..8, impl 4): 8-byte ones arrive as two calls.
  const read = (offset: number): number =>
    offset === THROUGHPUT_REG.ID ? THROUGHPUT_ID_VALUE : offset === THROUGHPUT_REG.SCRATCH ? scratch : offset === THROUGHPUT_REG.CONTROL ? control : 0;

  const write = (offset: number, _size: number, value: number, ctx: DeviceContext): void => {
    switch (offset) {
      case THROUGHPUT_REG.DOORBELL:
        doorbells++;
        lastValue = value;
        doorbellSum = (doorbellSum + value) >>> 0;
        mirror(ctx);
        onDoorbell?.(value);
        if (control & THROUGHPUT_CONTROL_IRQ && !ctx.irq.notify(0)) ctx.irq.setIntx(true);
        return;
      case THROUGHPUT_REG.SCRATCH:
        scratch = value;
        return;
      case THROUGHPUT_REG.CONTROL:
        control = value & THROUGHPUT_CONTROL_IRQ;
        return;
      case THROUGHPUT_REG.IRQ_ACK:
        ctx.irq.setIntx(false);
        return;
    }
  };

  const fn = createPciFunction(
    {
      name: "throughput",
      vendorId: THROUGHPUT_VENDOR_ID,
      deviceId: THROUGHPUT_DEVICE_ID,
      classCode: 0xff0000, // unassigned class: a test device
      interruptPin: 1,
      bars: [
        { kind: "mem32", size: dataSize, name: "data", ram: options.data ?? true },
        undefined,
        {
          kind: "mem32",
          size: 4096,
          name: "regs",
          registers: { read, write, valid: { min: 4, max: 8 }, impl: { min: 4, max: 4 } },
          shadow: [
            { offset: THROUGHPUT_REG.DOORBELL_COUNT, size: 8 },
            { offset: THROUGHPUT_REG.DOORBELL_SUM, size: 4 },
          ],
          ioeventfds: [{ offset: THROUGHPUT_REG.DOORBELL, size: 4 }],
        },
      ],
      capabilities: [{ kind: "msix", vectors: 2, tableBar: 2, tableOffset: 0x800, pbaBar: 2, pbaOffset: 0xc00 }],
      reset(ctx) {
        doorbells = lastValue = doorbellSum = scratch = control = 0;
        mirror(ctx);
      },
    },
    { core: options.core },
  );
  return {
    fn,
    get doorbells() {
      return doorbells;
    },
    get doorbellSum() {
      return doorbellSum;
    },
  };
}
