// QEMU's educational PCI device ("edu", QEMU docs/specs/edu.rst, hw/misc/edu.c), as a
// wasmdev function: ids 1234:11e8 rev 0x10, class 00ff, one 1 MiB MMIO BAR, INTx pin A and
// a one-vector 64-bit MSI capability. It is the default device of `wasmdev serve`.
//
// Registers (BAR 0; 4-byte accesses below 0x80, 4 or 8 bytes from 0x80; other sizes there
// read all-ones and are ignored, and 1/2-byte accesses are invalid on the bus):
//   0x00 RO  identification 0x010000ed
//   0x04 RW  liveness: reads back the bitwise inverse of what was written
//   0x08 RW  factorial: a write starts computing its factorial (mod 2^32) unless one is in
//            progress; read it back once status bit 0x01 clears
//   0x20 RW  status: 0x01 computing (RO), 0x80 raise interrupt 0x01 when a factorial ends
//   0x24 RO  interrupt status
//   0x60 WO  interrupt raise (ORed into the status)   0x64 WO interrupt acknowledge
//   0x80/0x88/0x90 RW DMA source / destination / count (ignored while a transfer runs)
//   0x98 RW  DMA command: 0x01 start, 0x02 direction (1 = EDU buffer to RAM), 0x04 raise
//            interrupt 0x100 when done. The 4 KiB buffer sits at device address 0x40000.
// The factorial runs asynchronously (QEMU uses a thread) and the DMA fires after a delay
// (QEMU: 100 ms virtual-time timer), so drivers must poll the busy bits as the spec says.
import { createPciFunction } from "../core/pci/function.js";
import type { DeviceContext, PciDevice, PciFunction } from "../core/pci/api.js";
import { PciError } from "../core/pci/errors.js";
import type { DeviceClock, DeviceTimer } from "../core/clock.js";
import type { CoreRef } from "../core/wasm.js";

export const EDU_VENDOR_ID = 0x1234;
export const EDU_DEVICE_ID = 0x11e8;
export const EDU_ID_VALUE = 0x010000ed;
export const EDU_BAR_SIZE = 1 << 20;
export const EDU_DMA_START = 0x40000;
export const EDU_DMA_SIZE = 4096;

export const EDU_REG = {
  ID: 0x00,
  LIVENESS: 0x04,
  FACTORIAL: 0x08,
  STATUS: 0x20,
  IRQ_STATUS: 0x24,
  IRQ_RAISE: 0x60,
  IRQ_ACK: 0x64,
  DMA_SRC: 0x80,
  DMA_DST: 0x88,
  DMA_CNT: 0x90,
  DMA_CMD: 0x98,
} as const;

export const EDU_STATUS_COMPUTING = 0x01;
export const EDU_STATUS_IRQFACT = 0x80;
export const EDU_FACT_IRQ = 0x001;
export const EDU_DMA_IRQ = 0x100;
export const EDU_DMA_RUN = 0x1;
export const EDU_DMA_TO_RAM = 0x2;
export const EDU_DMA_IRQ_ENABLE = 0x4;

export interface EduOptions {
  /** DMA address mask (QEMU's dma_mask property); default 2^28 - 1. */
  dmaMask?: bigint;
  /** Delay before a started DMA runs, ms (QEMU: 100). */
  dmaDelayMs?: number;
  /** Delay before a factorial completes, ms (default 0: the next timer tick). */
  factorialDelayMs?: number;
  /** Receives guest-error diagnostics (out-of-range DMA, clamped addresses, DMA faults). */
  onGuestError?: (message: string) => void;
  /** Clock the delays run on (default: real time; tests pass createManualClock()). */
  clock?: DeviceClock;
  /** Core instance to build the function in (default: the shared one). */
  core?: CoreRef;
}

export interface EduDevice extends PciDevice {}

const MASK64 = (1n << 64n) - 1n;
const CMD = 3;
/** Index into the DMA registers of a register offset, or -1. */
const dmaRegister = (offset: number) => (offset >= EDU_REG.DMA_SRC && offset <= EDU_REG.DMA_CMD && (offset & 7) === 0 ? (offset - EDU_REG.DMA_SRC) >> 3 : -1);
const STATE_SIZE = 16 + 32 + EDU_DMA_SIZE;

/** Creates an edu device. */
export function createEdu(options: EduOptions = {}): EduDevice {
  const dmaMask = options.dmaMask ?? (1n << 28n) - 1n;
  const dmaDelay = options.dmaDelayMs ?? 100;
  const factDelay = options.factorialDelayMs ?? 0;
  const report = options.onGuestError ?? (() => {});

  let addr4 = 0;
  let fact = 0;
  let status = 0;
  let irqStatus = 0;
  /** DMA source, destination, count and command: 64-bit registers at 0x80, 0x88, 0x90, 0x98
   *  (only the command's low bits mean anything, but it reads back as written). */
  const dma = [0n, 0n, 0n, 0n];
  const buffer = new Uint8Array(EDU_DMA_SIZE);
  let factTimer: DeviceTimer | undefined;
  let dmaTimer: DeviceTimer | undefined;
  /** Bumped by reset so an in-flight asynchronous DMA does not complete into new state. */
  let epoch = 0;

  const raiseIrq = (ctx: DeviceContext, val: number) => {
    irqStatus = (irqStatus | val) >>> 0;
    if (irqStatus) {
      if (ctx.irq.msiEnabled) ctx.irq.notifyMsi(0);
      else ctx.irq.setIntx(true);
    }
  };
  const lowerIrq = (ctx: DeviceContext, val: number) => {
    irqStatus = (irqStatus & ~val) >>> 0;
    if (!irqStatus && !ctx.irq.msiEnabled) ctx.irq.setIntx(false);
  };

  const finishFactorial = (ctx: DeviceContext) => {
    factTimer = undefined;
    // edu_fact_thread multiplies down from the value. Mod 2^32 every n! from 34! on is 0 (34!
    // holds 2^32): answer that at once instead of looping up to 2^32 times on the event loop,
    // which stalled the whole server for a guest that wrote a large value.
    let ret = 1;
    if (fact >= 34) ret = 0;
    else for (let v = fact; v > 0; v--) ret = Math.imul(ret, v) >>> 0;
    fact = ret;
    status &= ~EDU_STATUS_COMPUTING;
    if (status & EDU_STATUS_IRQFACT) raiseIrq(ctx, EDU_FACT_IRQ);
  };

  const clamp = (addr: bigint) => {
    const res = addr & dmaMask;
    if (res !== addr) report(`edu: clamping DMA address 0x${addr.toString(16)} to 0x${res.toString(16)}`);
    return res;
  };

  const runDma = async (ctx: DeviceContext) => {
    dmaTimer = undefined;
    const [src, dst, cnt, cmd] = dma;
    if (!(cmd & 1n)) return;
    const myEpoch = epoch;
    const toRam = (Number(cmd & 0xffn) & EDU_DMA_TO_RAM) !== 0;
    const devAddr = toRam ? src : dst;
    const start = BigInt(EDU_DMA_START);
    // QEMU edu_check_range only logs and then overruns its buffer; we refuse the transfer.
    const inRange = devAddr >= start && cnt <= BigInt(EDU_DMA_SIZE) && devAddr + cnt <= start + BigInt(EDU_DMA_SIZE);
    if (!inRange) {
      report(`edu: DMA range 0x${devAddr.toString(16)}+0x${cnt.toString(16)} is outside the buffer 0x40000-0x40fff; transfer skipped`);
    } else if (cnt > 0n) {
      const at = Number(devAddr - start);
      const window = buffer.subarray(at, at + Number(cnt));
      const api = ctx.dma;
      try {
        if (!api) throw new PciError("PCI_NO_DMA", "edu: DMA started with no DMA API attached to the function");
        if (toRam) await api.write(clamp(dst), window);
        else await api.read(clamp(src), window);
      } catch (e) {
        // QEMU ignores pci_dma_read/write failures; the transfer still completes.
        report(`edu: DMA failed: ${(e as Error).message}`);
      }
    }
    if (myEpoch !== epoch) return;
    dma[CMD] &= ~1n;
    if (Number(dma[CMD] & 0xffn) & EDU_DMA_IRQ_ENABLE) raiseIrq(ctx, EDU_DMA_IRQ);
  };

  const startFactorial = (ctx: DeviceContext) => {
    factTimer = ctx.clock.setTimeout(() => finishFactorial(ctx), factDelay);
  };
  const startDma = (ctx: DeviceContext) => {
    dmaTimer?.cancel();
    dmaTimer = ctx.clock.setTimeout(() => void runDma(ctx), dmaDelay);
  };
  const stopTimers = () => {
    epoch++;
    factTimer?.cancel();
    dmaTimer?.cancel();
    factTimer = dmaTimer = undefined;
  };

  /** A DMA register write (4 or 8 bytes: the value is zero-extended to 64 bits). */
  const writeDma = (offset: number, v: bigint, ctx: DeviceContext) => {
    const reg = dmaRegister(offset);
    if (reg < 0 || (reg === CMD && !(v & 1n))) return;
    if (dma[CMD] & 1n) return; // registers are frozen while a transfer runs
    dma[reg] = v;
    if (reg === CMD) startDma(ctx);
  };

  // valid/impl 4..8: read and write see 4-byte accesses, read64/write64 the 8-byte ones.
  const read = (offset: number): number => {
    switch (offset) {
      case EDU_REG.ID:
        return EDU_ID_VALUE;
      case EDU_REG.LIVENESS:
        return addr4;
      case EDU_REG.FACTORIAL:
        return fact;
      case EDU_REG.STATUS:
        return status;
      case EDU_REG.IRQ_STATUS:
        return irqStatus;
    }
    const reg = dmaRegister(offset);
    return reg < 0 ? 0xffffffff : Number(dma[reg] & 0xffffffffn);
  };

  const write = (offset: number, _size: number, value: number, ctx: DeviceContext): void => {
    switch (offset) {
      case EDU_REG.LIVENESS:
        addr4 = ~value >>> 0;
        return;
      case EDU_REG.FACTORIAL:
        if (status & EDU_STATUS_COMPUTING) return;
        fact = value;
        status |= EDU_STATUS_COMPUTING;
        startFactorial(ctx);
        return;
      case EDU_REG.STATUS:
        if (value & EDU_STATUS_IRQFACT) status |= EDU_STATUS_IRQFACT;
        else status &= ~EDU_STATUS_IRQFACT;
        return;
      case EDU_REG.IRQ_RAISE:
        raiseIrq(ctx, value);
        return;
      case EDU_REG.IRQ_ACK:
        lowerIrq(ctx, value);
        return;
    }
    writeDma(offset, BigInt(value), ctx);
  };

  // Below 0x80 only 4-byte accesses mean anything: 8-byte ones read all-ones and are ignored.
  const read64 = (offset: number): bigint => (dmaRegister(offset) < 0 ? MASK64 : dma[dmaRegister(offset)]);

  const fn: PciFunction = createPciFunction(
    {
      name: "edu",
      vendorId: EDU_VENDOR_ID,
      deviceId: EDU_DEVICE_ID,
      revision: 0x10,
      classCode: 0x00ff00,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      interruptPin: 1,
      bars: [{ kind: "mem32", size: EDU_BAR_SIZE, name: "edu-mmio", registers: { read, write, read64, write64: writeDma, valid: { min: 4, max: 8 }, impl: { min: 4, max: 8 } } }],
      capabilities: [{ kind: "msi", vectors: 1, address64: true, perVectorMask: false }],
      reset() {
        stopTimers();
        addr4 = fact = status = irqStatus = 0;
        dma.fill(0n);
        buffer.fill(0);
      },
      dispose: stopTimers,
      saveState() {
        // Busy bits are saved as they are; the destination restarts a factorial or transfer
        // that was in flight (QEMU's own edu has no migration support).
        const out = new Uint8Array(STATE_SIZE);
        const dv = new DataView(out.buffer);
        dv.setUint32(0, addr4, true);
        dv.setUint32(4, fact, true);
        dv.setUint32(8, status, true);
        dv.setUint32(12, irqStatus, true);
        dma.forEach((v, i) => dv.setBigUint64(16 + 8 * i, v, true));
        out.set(buffer, 48);
        return out;
      },
      restoreState(state, ctx) {
        if (state.length !== STATE_SIZE) throw new PciError("PCI_STATE_FORMAT", `edu: device state is ${state.length} bytes, expected ${STATE_SIZE}`);
        const dv = new DataView(state.buffer, state.byteOffset, state.length);
        addr4 = dv.getUint32(0, true);
        fact = dv.getUint32(4, true);
        status = dv.getUint32(8, true);
        irqStatus = dv.getUint32(12, true);
        for (let i = 0; i < 4; i++) dma[i] = dv.getBigUint64(16 + 8 * i, true);
        buffer.set(state.subarray(48));
        stopTimers();
        if (status & EDU_STATUS_COMPUTING) startFactorial(ctx);
        if (dma[CMD] & 1n) startDma(ctx);
      },
    },
    { clock: options.clock, core: options.core },
  );
  return { fn };
}
