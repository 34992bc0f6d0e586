// The PCI function model: builds a function from a PciFunctionSpec and implements the
// PciFunction contract (api.ts). Config masking and BAR decode run in the wasm core
// (assembly/pci/config.ts). Each concern is a module behind one interface
// (capability.ts: config write, reset, save, restore): BARs (bars.ts, with shadow windows in
// shadow.ts and ioeventfds in ioeventfd.ts), INTx and the interrupt sink (interrupts.ts),
// MSI (msi.ts), MSI-X (msix.ts), power management (pm.ts), migration (state.ts). This file
// checks arguments and routes each call to the part that owns it.
import type {
  AccessSize,
  DeviceContext,
  EventFdSource,
  InterruptDelivery,
  InterruptSink,
  PciFunction,
  PciFunctionSpec,
  PciInterruptInfo,
  PciInterrupts,
  PciIoEventFd,
  PciRegionInfo,
  ShadowWindowAccess,
  VectorKind,
} from "./api.js";
import type { DmaApi } from "../dma/api.js";
import { instantiateCore, type CoreRef } from "../wasm.js";
import { MemoryCore, MemoryRegion, AddressSpace } from "../memory/api.js";
import type { CoreExports } from "../abi/exports.js";
import { CFGW_INTX_DISABLE_CHANGED, CFGW_INVALID } from "../abi/pci.js";
import { realClock, type DeviceClock } from "../clock.js";
import { PciError } from "./errors.js";
import { layoutCapabilities, type CapabilityLayout, type BarFacts } from "./caps.js";
import type { FunctionCapability } from "./capability.js";
import { ConfigSpace, pieceOf, put16, u16, u32 } from "./config.js";
import { Bars, declareBars, type BarState } from "./bars.js";
import { IoEventFds } from "./ioeventfd.js";
import { InterruptRouter } from "./interrupts.js";
import { MsiCapability } from "./msi.js";
import { MsixCapability, NO_MSIX } from "./msix.js";
import { PmCapability } from "./pm.js";
import { restoreState, saveState, type StateParts } from "./state.js";
import * as R from "./regs.js";

export { PCI_MAX_BAR_SIZE } from "./bars.js";

let sharedCore: CoreRef | undefined;
/** The core instance functions use unless given one: one wasm instance holding the memory
 *  core and the pci tables (a function block is 12.5 KiB of linear memory). */
export function defaultPciCore(): CoreRef {
  sharedCore ??= instantiateCore([MemoryCore.hostImports]);
  return sharedCore;
}

export interface CreatePciFunctionOptions {
  /**
   * Core instance holding the function's tables and BAR regions (default: a shared one). It
   * must have been instantiated with MemoryCore.hostImports among its factories.
   */
  core?: CoreRef;
  /**
   * Containers (of that core's MemoryCore) the BARs are mapped into when the guest enables
   * them — e.g. a VMM's system memory and I/O space. Default: the function's own, 2^64 bytes
   * of memory space and 2^32 of I/O space (see PciFunction.busAddressSpace).
   */
  bus?: { memory: MemoryRegion; io: MemoryRegion };
  /** The device's clock (DeviceContext.clock); default realClock. Tests pass a manual one. */
  clock?: DeviceClock;
}

function checkU(v: unknown, bits: number, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= 2 ** bits)
    throw new PciError("PCI_INVALID_SPEC", `${field} must be an integer in [0, 2^${bits})`, { field });
  return v;
}

function offsetNumber(offset: number | bigint, region: number): number {
  const n = typeof offset === "bigint" ? (offset >= 0n && offset < 2n ** 53n ? Number(offset) : -1) : offset;
  if (!Number.isInteger(n) || n < 0) throw new PciError("PCI_REGION_RANGE", `region ${region}: offset ${offset} is not a valid region offset`, { region, offset });
  return n;
}

function checkAccessSize(size: number): void {
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new PciError("PCI_ACCESS_SIZE", `access size ${size} is not 1, 2, 4 or 8`, { size });
}

const NO_MESSAGE = () => ({ address: 0n, data: 0 });

/** What a collected function's context hands a late callback (a timer): a disposed function's no-ops. */
const DETACHED_IRQ: PciInterrupts = {
  setIntx() {},
  msiEnabled: false,
  msixEnabled: false,
  notifyMsi() {},
  notifyMsix() {},
  notify: () => false,
  intxLevel: false,
};

/**
 * The context device callbacks get. It reaches its function through a WeakRef: the callbacks
 * sit in the memory core's dispatch table, which for the shared core lives as long as the
 * process, so a strong link would keep every function ever created (and, with it, its core
 * regions) alive. Built outside the class so its closures capture nothing else.
 */
function deviceContext(self: WeakRef<PciFunctionImpl>, name: string, clock: DeviceClock): DeviceContext {
  return {
    get fn() {
      const fn = self.deref();
      if (!fn) throw new PciError("PCI_DEVICE_ERROR", `${name} was garbage-collected without dispose(); its callbacks should not outlive it`);
      return fn;
    },
    get irq() {
      return self.deref()?.irq ?? DETACHED_IRQ;
    },
    get dma() {
      return self.deref()?.dma ?? null;
    },
    clock,
  };
}

interface Releasable {
  spec: PciFunctionSpec;
  ctx: DeviceContext;
  ioeventfds: IoEventFds;
  router: InterruptRouter;
  bars: Bars;
  x: CoreExports;
  fnPtr: number;
}

/** Everything dispose() gives back: eventfds, the BAR regions and the core's function block. */
function release(r: Releasable): void {
  r.ioeventfds.close(false);
  r.ioeventfds.disposed = true;
  r.router.disposed = true;
  r.router.sink = null;
  r.ioeventfds.setErrorHandler(null);
  try {
    r.spec.dispose?.(r.ctx);
  } finally {
    r.bars.dispose();
    r.x.pci_function_free(r.fnPtr);
  }
}

/**
 * A function dropped without dispose() releases its core regions, function block and
 * eventfds when it is garbage-collected (the shared core would otherwise keep them for the
 * life of the process). dispose() stays the way to release them at a known time.
 */
const collected = new FinalizationRegistry<Releasable>((r) => {
  try {
    release(r);
  } catch {
    // nothing to report to: the function is gone
  }
});

class PciFunctionImpl implements PciFunction {
  readonly name: string;
  readonly configSize: 256 | 4096;
  readonly interruptInfo: PciInterruptInfo;
  readonly irq: PciInterrupts;

  private readonly spec: PciFunctionSpec;
  private readonly x: CoreExports;
  private readonly fnPtr: number;
  private readonly config: ConfigSpace;
  private readonly caps: CapabilityLayout;
  private readonly initialConfig: Uint8Array;
  private readonly ctx: DeviceContext;
  private disposed = false;

  private readonly bars: Bars;
  private readonly ioeventfds: IoEventFds;
  private readonly router: InterruptRouter;
  private readonly msi: MsiCapability | undefined;
  private readonly msix: MsixCapability | undefined;
  private readonly pm: PmCapability | undefined;
  /** Every part, in the order config writes and resets reach them. */
  private readonly parts: FunctionCapability[];
  private readonly state: StateParts;

  private dmaApi: DmaApi | null = null;
  /** What release() needs, without a path back to this object (the registry holds it strongly). */
  private releasable: Releasable | undefined;

  constructor(spec: PciFunctionSpec, options: CreatePciFunctionOptions) {
    this.spec = spec;
    this.name = spec.name ?? "pci-function";
    const wantsExtended = (spec.extendedCapabilities?.length ?? 0) > 0 || (spec.capabilities ?? []).some((c) => c.kind === "pcie");
    const configSize = spec.configSize ?? (wantsExtended ? 4096 : 256);
    if (configSize !== 256 && configSize !== 4096) throw new PciError("PCI_INVALID_SPEC", `configSize must be 256 or 4096, not ${configSize}`, { field: "configSize" });
    this.configSize = configSize;
    checkU(spec.vendorId, 16, "vendorId");
    checkU(spec.deviceId, 16, "deviceId");
    checkU(spec.classCode, 24, "classCode");
    const pin = spec.interruptPin ?? 0;
    if (![0, 1, 2, 3, 4].includes(pin)) throw new PciError("PCI_INVALID_SPEC", `interruptPin must be 0..4, not ${pin}`, { field: "interruptPin" });

    this.ctx = deviceContext(new WeakRef(this), this.name, options.clock ?? realClock);
    const core = options.core ?? defaultPciCore();
    this.x = core.exports;
    const mem = MemoryCore.attach(core);
    this.fnPtr = this.x.pci_function_create(configSize) >>> 0;
    if (this.fnPtr === 0) throw new PciError("PCI_INVALID_SPEC", "the core refused the config size", { field: "configSize" });
    this.config = new ConfigSpace(core, this.fnPtr);
    let declared;
    try {
      const cfg = this.config.bytes();
      put16(cfg, R.PCI_VENDOR_ID, spec.vendorId);
      put16(cfg, R.PCI_DEVICE_ID, spec.deviceId);
      cfg[R.PCI_REVISION_ID] = checkU(spec.revision ?? 0, 8, "revision");
      cfg[R.PCI_CLASS_PROG] = spec.classCode & 0xff;
      put16(cfg, R.PCI_CLASS_DEVICE, spec.classCode >>> 8);
      put16(cfg, R.PCI_SUBSYSTEM_VENDOR_ID, checkU(spec.subsystemVendorId ?? 0, 16, "subsystemVendorId"));
      put16(cfg, R.PCI_SUBSYSTEM_ID, checkU(spec.subsystemId ?? 0, 16, "subsystemId"));
      cfg[R.PCI_INTERRUPT_PIN] = pin;

      declared = declareBars(spec, this.x, this.fnPtr, this.ctx);
      const facts: BarFacts[] = [];
      for (let i = 0; i < 6; i++) {
        const d = declared[i];
        facts.push({ present: !!d, io: d?.kind === "io", size: d?.size ?? 0 });
      }
      this.caps = layoutCapabilities(spec.capabilities ?? [], spec.extendedCapabilities ?? [], configSize, facts, this.config.bytes(), this.config.wmask(), this.config.w1cmask());
    } catch (e) {
      this.x.pci_function_free(this.fnPtr);
      throw e;
    }
    this.router = new InterruptRouter(this.config, pin !== 0);
    this.msi = this.caps.msi ? new MsiCapability(this.caps.msi, this.config, this.router) : undefined;
    this.msix = this.caps.msix ? new MsixCapability(this.caps.msix, this.config, this.router) : undefined;
    this.pm = this.caps.pm !== undefined ? new PmCapability(this.caps.pm, this.config) : undefined;
    const barsOptions = { name: this.name, mem, memory: core.memory, x: this.x, fnPtr: this.fnPtr, declared, rom: spec.rom?.bytes, msix: this.msix, bus: options.bus };
    this.bars = new Bars(barsOptions);
    this.ioeventfds = new IoEventFds(this.bars, this.name);
    try {
      this.bars.build(barsOptions);
    } catch (e) {
      this.dispose();
      throw e;
    }
    // Reset order: the MSI-X table, BAR mappings and shadow windows, then the INTx level
    // (which may call the sink), then the capabilities that only mirror config space.
    this.parts = [this.msix, this.bars, this.router, this.pm, this.msi].filter((p) => p !== undefined);
    this.initialConfig = this.config.bytes().slice(0, configSize);
    this.interruptInfo = { intx: pin !== 0, msiVectors: this.caps.msi?.vectors ?? 0, msixVectors: this.caps.msix?.vectors ?? 0 };
    this.irq = this.makeInterrupts();
    this.state = {
      name: this.name,
      configSize,
      config: () => this.config.bytes(),
      intxLevel: () => this.router.level,
      capabilities: this.caps.list,
      sections: [this.msix ?? NO_MSIX, this.bars],
      restored: (intx) => {
        this.pm?.restored();
        this.router.restoreLevel(intx);
      },
      device: {
        save: spec.saveState ? () => spec.saveState!(this.ctx) : undefined,
        restore: spec.restoreState ? (state) => spec.restoreState!(state, this.ctx) : undefined,
      },
    };
    this.releasable = { spec, ctx: this.ctx, ioeventfds: this.ioeventfds, router: this.router, bars: this.bars, x: this.x, fnPtr: this.fnPtr };
    collected.register(this, this.releasable, this);
  }

  // ---- config space --------------------------------------------------------------------

  private checkConfig(offset: number, size: number): void {
    if (this.disposed) throw new PciError("PCI_CONFIG_RANGE", `${this.name} was disposed`, { offset, size });
    if (size !== 1 && size !== 2 && size !== 4) throw new PciError("PCI_CONFIG_ALIGN", `config access size ${size} is not 1, 2 or 4`, { offset, size });
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.configSize)
      throw new PciError("PCI_CONFIG_RANGE", `config access of ${size} bytes at 0x${offset.toString(16)} is outside the ${this.configSize}-byte config space`, { offset, size });
    if ((offset & 3) + size > 4) throw new PciError("PCI_CONFIG_ALIGN", `config access of ${size} bytes at 0x${offset.toString(16)} crosses a dword boundary`, { offset, size });
  }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    this.checkConfig(offset, size);
    const cfg = this.config.bytes();
    let v = size === 1 ? cfg[offset] : size === 2 ? u16(cfg, offset) : u32(cfg, offset);
    if (this.spec.configRead) v = this.spec.configRead(offset, size, v, this.ctx) >>> 0;
    return v;
  }

  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void {
    this.checkConfig(offset, size);
    this.configWriteChecked(offset, size, value >>> 0);
  }

  /** The core applies the masks and decodes BARs; then each part sees the write (QEMU
   *  pci_default_write_config, then the capabilities' write_config), then the device. */
  private configWriteChecked(offset: number, size: number, value: number): void {
    const result = this.x.pci_config_write(this.fnPtr, offset, size, value) >>> 0;
    if (result & CFGW_INVALID) throw new PciError("PCI_CONFIG_RANGE", `config write at 0x${offset.toString(16)} rejected by the core`, { offset, size });
    if (result & 0x7f) this.bars.refreshMappings();
    if (result & CFGW_INTX_DISABLE_CHANGED) this.router.updateOutput();
    for (const part of this.parts) part.configWrite?.(offset, size);
    this.spec.configWrite?.(offset, size as 1 | 2 | 4, value, this.ctx);
  }

  readConfigBytes(offset: number, dest: Uint8Array): void {
    this.checkConfigRange(offset, dest.length);
    let pos = 0;
    while (pos < dest.length) {
      const at = offset + pos;
      const n = pieceOf(at, dest.length - pos);
      const v = this.readConfig(at, n);
      for (let i = 0; i < n; i++) dest[pos + i] = (v >>> (8 * i)) & 0xff;
      pos += n;
    }
  }

  writeConfigBytes(offset: number, src: Uint8Array): void {
    this.checkConfigRange(offset, src.length);
    let pos = 0;
    while (pos < src.length) {
      const at = offset + pos;
      const n = pieceOf(at, src.length - pos);
      let v = 0;
      for (let i = n - 1; i >= 0; i--) v = v * 256 + src[pos + i];
      this.configWriteChecked(at, n, v);
      pos += n;
    }
  }

  private checkConfigRange(offset: number, length: number): void {
    if (this.disposed) throw new PciError("PCI_CONFIG_RANGE", `${this.name} was disposed`, { offset, size: length });
    if (!Number.isInteger(offset) || offset < 0 || !Number.isInteger(length) || length < 0 || offset + length > this.configSize)
      throw new PciError("PCI_CONFIG_RANGE", `config access of ${length} bytes at 0x${offset.toString(16)} is outside the ${this.configSize}-byte config space`, { offset, size: length });
  }

  configSnapshot(): Uint8Array {
    if (this.disposed) throw new PciError("PCI_CONFIG_RANGE", `${this.name} was disposed`);
    return this.config.bytes().slice(0, this.configSize);
  }

  // ---- BARs ----------------------------------------------------------------------------

  barAddress(index: number): bigint | undefined {
    return this.bars.address(index);
  }

  busAddressSpace(space: "mem" | "io"): AddressSpace {
    return this.bars.busAddressSpace(space);
  }

  regionInfo(index: number): PciRegionInfo {
    return this.bars.regionInfo(index);
  }

  private bar(index: number): BarState {
    if (this.disposed) throw new PciError("PCI_REGION_INDEX", `${this.name} was disposed`, { region: index });
    const b = Number.isInteger(index) && index >= 0 && index <= 6 ? this.bars.slots[index] : undefined;
    if (!b) throw new PciError("PCI_REGION_INDEX", `region ${index} is not implemented by ${this.name}`, { region: index });
    return b;
  }

  readRegion(index: number, offset: number | bigint, size: AccessSize): bigint {
    checkAccessSize(size);
    const b = this.bar(index);
    const off = offsetNumber(offset, index);
    this.bars.checkRegion(b, off, size);
    return this.bars.read(b, off, size);
  }

  writeRegion(index: number, offset: number | bigint, size: AccessSize, value: bigint): void {
    checkAccessSize(size);
    const b = this.bar(index);
    const off = offsetNumber(offset, index);
    this.bars.checkRegion(b, off, size);
    this.bars.write(b, off, size, value);
  }

  readRegionBytes(index: number, offset: number | bigint, dest: Uint8Array): void {
    this.bars.readBytes(this.bar(index), offsetNumber(offset, index), dest);
  }

  writeRegionBytes(index: number, offset: number | bigint, src: Uint8Array): void {
    this.bars.writeBytes(this.bar(index), offsetNumber(offset, index), src);
  }

  busRead(space: "mem" | "io", address: bigint, size: AccessSize): bigint | undefined {
    checkAccessSize(size);
    const slot = this.disposed ? -1 : this.bars.decode(space, address, size);
    if (slot < 0) return undefined;
    return this.bars.read(this.bars.slots[slot]!, this.bars.decodedOffset(), size);
  }

  busWrite(space: "mem" | "io", address: bigint, size: AccessSize, value: bigint): boolean {
    checkAccessSize(size);
    const slot = this.disposed ? -1 : this.bars.decode(space, address, size);
    if (slot < 0) return false;
    this.bars.write(this.bars.slots[slot]!, this.bars.decodedOffset(), size, value);
    return true;
  }

  shadowWindow(bar: number, window = 0): ShadowWindowAccess {
    const s = this.bar(bar).shadows[window];
    if (!s) throw new PciError("PCI_REGION_INDEX", `region ${bar} has no shadow window ${window}`, { region: bar });
    return s.window;
  }

  shadow(bar: number, window = 0): Uint8Array {
    return this.shadowWindow(bar, window).bytes();
  }

  // ---- ioeventfds ----------------------------------------------------------------------

  ioEventFds(index: number, source: EventFdSource): readonly PciIoEventFd[] {
    return this.ioeventfds.get(index, source);
  }

  releaseIoEventFds(): void {
    if (!this.disposed) this.ioeventfds.close(true);
  }

  setIoEventFdErrorHandler(handler: ((error: PciError) => void) | null): void {
    this.ioeventfds.setErrorHandler(handler);
  }

  // ---- interrupts ----------------------------------------------------------------------

  private msiEnabled(): boolean {
    return this.msi ? this.msi.enabled() : this.router.delivery === "peer" && this.router.peerEnabled("msi");
  }

  private msixEnabled(): boolean {
    return this.msix ? this.msix.enabled() : this.router.delivery === "peer" && this.router.peerEnabled("msix");
  }

  private msiNotify(vector: number): void {
    if (this.msi) this.msi.notify(vector);
    else if (this.router.delivery === "peer" && !this.router.disposed) this.router.peerVector("msi", vector, NO_MESSAGE);
  }

  private msixNotify(vector: number): void {
    if (this.msix) this.msix.notify(vector);
    else if (this.router.delivery === "peer" && !this.router.disposed) this.router.peerVector("msix", vector, NO_MESSAGE);
  }

  private makeInterrupts(): PciInterrupts {
    const self = this;
    const router = this.router;
    return {
      setIntx(level: boolean) {
        router.setIntxLevel(level);
      },
      get msiEnabled() {
        return self.msiEnabled();
      },
      get msixEnabled() {
        return self.msixEnabled();
      },
      notifyMsi(vector: number) {
        self.msiNotify(vector);
      },
      notifyMsix(vector: number) {
        self.msixNotify(vector);
      },
      notify(vector: number) {
        if (self.msixEnabled()) self.msixNotify(vector);
        else if (self.msiEnabled()) self.msiNotify(vector);
        else return false;
        return true;
      },
      get intxLevel() {
        return router.level;
      },
    };
  }

  attachInterruptSink(sink: InterruptSink | null, delivery: InterruptDelivery = "device"): void {
    this.router.attach(sink, delivery);
  }

  setPeerInterrupts(kind: VectorKind | "intx", count: number): void {
    this.router.setPeer(kind, count);
  }

  // ---- DMA -----------------------------------------------------------------------------

  get dma(): DmaApi | null {
    return this.dmaApi;
  }

  attachDma(dma: DmaApi | null): void {
    this.dmaApi = dma;
  }

  // ---- reset, migration, dispose -------------------------------------------------------

  reset(): void {
    if (this.disposed) return;
    this.config.bytes().set(this.initialConfig);
    for (const part of this.parts) part.reset?.();
    this.spec.reset?.(this.ctx);
  }

  saveState(): Uint8Array {
    return saveState(this.state);
  }

  restoreState(state: Uint8Array): void {
    restoreState(this.state, state);
  }

  /** Unmaps and frees every region and table of this function; later calls fail. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.dmaApi = null;
    collected.unregister(this);
    release(this.releasable ?? { spec: this.spec, ctx: this.ctx, ioeventfds: this.ioeventfds, router: this.router, bars: this.bars, x: this.x, fnPtr: this.fnPtr });
  }
}

/**
 * Builds a PCI function from its declaration. Throws PciError("PCI_INVALID_SPEC") naming
 * the offending field when the declaration is inconsistent.
 */
export function createPciFunction(spec: PciFunctionSpec, options: CreatePciFunctionOptions = {}): PciFunction {
  return new PciFunctionImpl(spec, options);
}
