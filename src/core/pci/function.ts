// The PCI function model: builds a function from a PciFunctionSpec and implements the
// PciFunction contract (api.ts). Config masking and BAR decode run in the wasm core
// (assembly/pci/config.ts); this host side owns capabilities' behaviour (MSI, MSI-X,
// power management), INTx levels, region dispatch, reset and migration state.
import type {
  AccessSize,
  BarSpec,
  InterruptDelivery,
  InterruptSink,
  IoEventFdSpec,
  MsiMessage,
  PciFunction,
  PciFunctionSpec,
  PciInterruptInfo,
  PciInterrupts,
  PciIoEventFd,
  PciRegionInfo,
  EventFdSource,
  FunctionEventFd,
  VectorKind,
} from "./api.js";
import { PCI_ROM_REGION, PCI_MAX_IOEVENTFDS_PER_BAR } from "./api.js";
import type { DmaApi } from "../dma/api.js";
import { instantiateCore, type CoreRef } from "../wasm.js";
import { MemoryCore, MemoryRegion, AddressSpace, type IoOps } from "../memory/api.js";
import { MemoryError } from "../memory/errors.js";
import { MAX_RAM_REGION_SIZE } from "../abi/memory.js";
import type { CoreExports } from "../abi/exports.js";
import { PciError } from "./errors.js";
import { layoutCapabilities, type CapabilityLayout, type BarFacts } from "./caps.js";
import * as R from "./regs.js";

import {
  BAR_FLAG_IO, BAR_FLAG_MEM64, BAR_FLAG_PREFETCH, BAR_FLAG_ROM, CFGW_INTX_DISABLE_CHANGED, CFGW_INVALID,
  CONFIG_OFF, WMASK_OFF, W1CMASK_OFF,
} from "../abi/pci.js";

/** Largest BAR the model accepts (region offsets stay exact as numbers). */
export const PCI_MAX_BAR_SIZE = 2 ** 52;

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
}

interface BarState {
  index: number;
  kind: "io" | "mem32" | "mem64" | "rom";
  size: number;
  prefetchable: boolean;
  /** Root of the BAR (offset 0 = BAR offset 0): device region plus overlays. */
  container: MemoryRegion;
  /** Region-relative access path (vfio-user REGION_READ/WRITE). */
  view: AddressSpace;
  /** Alias of the container that is mapped into the bus while the BAR decodes. */
  busAlias: MemoryRegion;
  /** Every region this BAR created, for dispose(). */
  owned: MemoryRegion[];
  /** Core RAM/ROM region holding the BAR's bytes (ram: true, ROM). */
  coreRam?: MemoryRegion;
  /** Caller-supplied RAM bytes. */
  externalRam?: Uint8Array;
  mmap?: { fd: number; offset: bigint };
  shadows: ShadowState[];
  spec?: BarSpec;
  /** Declared ioeventfds (validated), with their eventfds once ioEventFds() made them. */
  ioeventfds: IoEventFdState[];
}

/**
 * A shadow window: a ROM device in the memory core (QEMU ROMD mode) overlaying the BAR. Its
 * bytes live in the core's linear memory at `ptr` for the region's whole life (RAM regions are
 * allocated once and never move), so guest reads are served inside wasm; `view` is the
 * device-side view of them, re-made whenever linear memory grew (the old one is detached).
 */
interface ShadowState {
  region: MemoryRegion;
  ptr: number;
  size: number;
  view: Uint8Array;
}

interface IoEventFdState {
  offset: number;
  size: AccessSize;
  datamatch?: bigint;
  eventfd: FunctionEventFd | null;
}

const STATE_MAGIC = 0x49435044; // "DPCI" little-endian
const STATE_VERSION = 1;

function u16(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}
function u32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}
function put16(b: Uint8Array, at: number, v: number) {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
}
function put32(b: Uint8Array, at: number, v: number) {
  put16(b, at, v & 0xffff);
  put16(b, at + 2, v >>> 16);
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
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

class PciFunctionImpl implements PciFunction {
  readonly name: string;
  readonly configSize: 256 | 4096;
  readonly interruptInfo: PciInterruptInfo;
  readonly irq: PciInterrupts;

  private readonly spec: PciFunctionSpec;
  private readonly core: CoreRef;
  private readonly x: CoreExports;
  private readonly fnPtr: number;
  private buffer: ArrayBuffer | undefined;
  private cfgView!: Uint8Array;
  private wmaskView!: Uint8Array;
  private w1cView!: Uint8Array;

  private readonly bars: (BarState | undefined)[] = new Array(7);
  private readonly declared: ({ kind: BarState["kind"]; size: number; spec?: BarSpec } | undefined)[] = new Array(7);
  private readonly mem: MemoryCore;
  private readonly busRoots: { memory: MemoryRegion; io: MemoryRegion };
  private busSpaces: { memory?: AddressSpace; io?: AddressSpace } = {};
  /** Regions and spaces this function created for its own bus (dispose()). */
  private readonly ownBus: boolean;
  private disposed = false;
  private readonly caps: CapabilityLayout;
  private readonly initialConfig: Uint8Array;
  /** Slot → decoded bus address (undefined = unmapped), mirrored from the core. */
  private readonly mapped: (bigint | undefined)[] = new Array(7).fill(undefined);

  // Interrupt state.
  private intxLevelValue = false;
  private intxOutput = false;
  private sink: InterruptSink | null = null;
  private delivery: InterruptDelivery = "device";
  private peer: { kind: VectorKind | "intx" | null; count: number } = { kind: null, count: 0 };
  private readonly msixTable: Uint8Array;
  private readonly msixPba: Uint8Array;
  private msixFunctionMasked = true;

  private dmaApi: DmaApi | null = null;

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

    this.core = options.core ?? defaultPciCore();
    this.x = this.core.exports;
    this.mem = MemoryCore.attach(this.core);
    this.fnPtr = this.x.pci_function_create(configSize) >>> 0;
    if (this.fnPtr === 0) throw new PciError("PCI_INVALID_SPEC", "the core refused the config size", { field: "configSize" });
    try {
      this.refresh();
      const cfg = this.cfgView;
      put16(cfg, R.PCI_VENDOR_ID, spec.vendorId);
      put16(cfg, R.PCI_DEVICE_ID, spec.deviceId);
      cfg[R.PCI_REVISION_ID] = checkU(spec.revision ?? 0, 8, "revision");
      cfg[R.PCI_CLASS_PROG] = spec.classCode & 0xff;
      put16(cfg, R.PCI_CLASS_DEVICE, spec.classCode >>> 8);
      put16(cfg, R.PCI_SUBSYSTEM_VENDOR_ID, checkU(spec.subsystemVendorId ?? 0, 16, "subsystemVendorId"));
      put16(cfg, R.PCI_SUBSYSTEM_ID, checkU(spec.subsystemId ?? 0, 16, "subsystemId"));
      cfg[R.PCI_INTERRUPT_PIN] = pin;

      this.declareBars(spec);
      this.refresh();
      const facts: BarFacts[] = [];
      for (let i = 0; i < 6; i++) {
        const d = this.declared[i];
        facts.push({ present: !!d, io: d?.kind === "io", size: d?.size ?? 0 });
      }
      this.caps = layoutCapabilities(spec.capabilities ?? [], spec.extendedCapabilities ?? [], configSize, facts, this.cfgView, this.wmaskView, this.w1cView);
    } catch (e) {
      this.x.pci_function_free(this.fnPtr);
      throw e;
    }
    const msix = this.caps.msix;
    this.msixTable = new Uint8Array(msix ? msix.tableSize : 0);
    this.msixPba = new Uint8Array(msix ? msix.pbaSize : 0);
    this.msixResetTable();
    this.ownBus = !options.bus;
    if (options.bus) this.busRoots = options.bus;
    else {
      const memory = this.mem.container(`${this.name}.bus-memory`, 2n ** 64n);
      const io = this.mem.container(`${this.name}.bus-io`, 2n ** 32n);
      this.busRoots = { memory, io };
      // Address spaces over them are created on first busAddressSpace() call: every space
      // in the core is re-rendered at each commit, so idle ones are not free.
    }
    try {
      this.buildRegions(spec);
    } catch (e) {
      this.dispose();
      throw e;
    }
    this.refresh();
    this.initialConfig = this.cfgView.slice(0, configSize);
    this.interruptInfo = { intx: pin !== 0, msiVectors: this.caps.msi?.vectors ?? 0, msixVectors: msix?.vectors ?? 0 };
    this.irq = this.makeInterrupts();
  }

  // ---- linear-memory views -------------------------------------------------------------

  private refresh(): void {
    const buf = this.core.memory.buffer;
    if (buf === this.buffer) return;
    this.buffer = buf;
    this.cfgView = new Uint8Array(buf, this.fnPtr + CONFIG_OFF, 4096);
    this.wmaskView = new Uint8Array(buf, this.fnPtr + WMASK_OFF, 4096);
    this.w1cView = new Uint8Array(buf, this.fnPtr + W1CMASK_OFF, 4096);
  }

  private cfg(): Uint8Array {
    if (this.core.memory.buffer !== this.buffer) this.refresh();
    return this.cfgView;
  }

  // ---- declaration ---------------------------------------------------------------------

  private declareBars(spec: PciFunctionSpec): void {
    const list = spec.bars ?? [];
    if (list.length > 6) throw new PciError("PCI_INVALID_SPEC", "a type 0 function has at most six BARs", { field: "bars" });
    for (let i = 0; i < list.length; i++) {
      const b = list[i];
      if (!b) continue;
      const field = `bars[${i}]`;
      if (b.kind !== "io" && b.kind !== "mem32" && b.kind !== "mem64") throw new PciError("PCI_INVALID_SPEC", `${field}.kind must be "io", "mem32" or "mem64"`, { field: `${field}.kind` });
      const sizeBig = typeof b.size === "bigint" ? b.size : Number.isInteger(b.size) && b.size > 0 ? BigInt(b.size) : -1n;
      if (sizeBig <= 0n || (sizeBig & (sizeBig - 1n)) !== 0n) throw new PciError("PCI_INVALID_SPEC", `${field}.size must be a power of two, not ${b.size}`, { field: `${field}.size` });
      if (sizeBig > BigInt(PCI_MAX_BAR_SIZE)) throw new PciError("PCI_INVALID_SPEC", `${field}.size exceeds the model's limit of 2^52 bytes`, { field: `${field}.size` });
      const size = Number(sizeBig);
      if (b.kind === "io" && (size < 4 || size > 256)) throw new PciError("PCI_INVALID_SPEC", `${field}.size: an I/O BAR is 4..256 bytes`, { field: `${field}.size` });
      if (b.kind !== "io" && size < 16) throw new PciError("PCI_INVALID_SPEC", `${field}.size: a memory BAR is at least 16 bytes`, { field: `${field}.size` });
      if (b.kind === "mem32" && size > 2 ** 31) throw new PciError("PCI_INVALID_SPEC", `${field}.size: a 32-bit BAR is at most 2 GiB; use mem64`, { field: `${field}.size` });
      if (b.kind === "mem64" && i === 5) throw new PciError("PCI_INVALID_SPEC", `${field}: a 64-bit BAR needs slot ${i + 1} for its upper half`, { field });
      if (b.kind === "mem64" && list[i + 1]) throw new PciError("PCI_INVALID_SPEC", `bars[${i + 1}]: slot is the upper half of the 64-bit BAR ${i}`, { field: `bars[${i + 1}]` });
      if (b.kind === "io" && b.prefetchable) throw new PciError("PCI_INVALID_SPEC", `${field}.prefetchable: I/O BARs cannot be prefetchable`, { field: `${field}.prefetchable` });
      if (!!b.ops === !!b.ram) throw new PciError("PCI_INVALID_SPEC", `${field}: give exactly one of ops (callbacks) or ram`, { field });
      if (b.ram === true && size > MAX_RAM_REGION_SIZE) throw new PciError("PCI_INVALID_SPEC", `${field}.ram: core RAM regions hold at most ${MAX_RAM_REGION_SIZE} bytes; supply ram.bytes for larger BARs`, { field: `${field}.ram` });
      if (b.ram && b.ram !== true && (!(b.ram.bytes instanceof Uint8Array) || b.ram.bytes.length !== size))
        throw new PciError("PCI_INVALID_SPEC", `${field}.ram.bytes must be a Uint8Array of exactly ${size} bytes`, { field: `${field}.ram.bytes` });
      if (b.shadow?.length && !b.ops) throw new PciError("PCI_INVALID_SPEC", `${field}.shadow: shadow windows need a callback BAR`, { field: `${field}.shadow` });
      if (b.ioeventfds?.length && !b.ops) throw new PciError("PCI_INVALID_SPEC", `${field}.ioeventfds: ioeventfds need a callback BAR (a RAM BAR has no write handler)`, { field: `${field}.ioeventfds` });
      if (b.ops) {
        for (const c of [b.ops.valid, b.ops.impl]) {
          if (!c) continue;
          for (const v of [c.min, c.max]) if (v !== undefined && v !== 1 && v !== 2 && v !== 4 && v !== 8) throw new PciError("PCI_INVALID_SPEC", `${field}.ops: access sizes must be 1, 2, 4 or 8`, { field: `${field}.ops` });
          if (c.min !== undefined && c.max !== undefined && c.min > c.max) throw new PciError("PCI_INVALID_SPEC", `${field}.ops: min access size exceeds max`, { field: `${field}.ops` });
        }
        if (b.ops.impl?.unaligned && !b.ops.valid?.unaligned) throw new PciError("PCI_INVALID_SPEC", `${field}.ops: impl.unaligned needs valid.unaligned`, { field: `${field}.ops` });
        checkIoEventFds(b.ioeventfds ?? [], `${field}.ioeventfds`, size, b.ops);
      }
      const flags = (b.kind === "io" ? BAR_FLAG_IO : 0) | (b.kind === "mem64" ? BAR_FLAG_MEM64 : 0) | (b.prefetchable ? BAR_FLAG_PREFETCH : 0);
      if (this.x.pci_bar_register(this.fnPtr, i, Number(sizeBig & 0xffffffffn), Number(sizeBig >> 32n), flags) !== 0)
        throw new PciError("PCI_INVALID_SPEC", `${field}: the core rejected the BAR declaration`, { field });
      this.declared[i] = { kind: b.kind, size, spec: b };
    }
    if (spec.rom) {
      const bytes = spec.rom.bytes;
      if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new PciError("PCI_INVALID_SPEC", "rom.bytes must be a non-empty Uint8Array", { field: "rom.bytes" });
      const size = spec.rom.size ?? Math.max(2048, 2 ** Math.ceil(Math.log2(bytes.length)));
      if (!isPow2(size) || size < 2048 || size < bytes.length || size > Math.min(2 ** 31, MAX_RAM_REGION_SIZE))
        throw new PciError("PCI_INVALID_SPEC", `rom.size must be a power of two ≥ 2048, ≥ rom.bytes.length and ≤ 1 GiB`, { field: "rom.size" });
      if (this.x.pci_bar_register(this.fnPtr, 6, size >>> 0, 0, BAR_FLAG_ROM) !== 0) throw new PciError("PCI_INVALID_SPEC", "the core rejected the ROM declaration", { field: "rom" });
      this.declared[6] = { kind: "rom", size };
    }
  }

  /**
   * Builds each BAR in the memory core: a container (the BAR's own address space for
   * region-relative access) holding the device region — I/O callbacks, core RAM, caller RAM
   * or ROM — with the MSI-X table, PBA and shadow windows overlaid at priority 1 (QEMU
   * msix_init overlays table and PBA the same way), and an alias that pci_update_mappings
   * maps into the bus.
   */
  private buildRegions(spec: PciFunctionSpec): void {
    const mem = this.mem;
    const msix = this.caps.msix;
    const owner = {};
    mem.transaction(() => {
      for (let i = 0; i <= 6; i++) {
        const d = this.declared[i];
        if (!d) continue;
        const owned: MemoryRegion[] = [];
        const track = (r: MemoryRegion) => (owned.push(r), r);
        const tag = `${this.name}.bar${i}`;
        const container = track(mem.container(tag, d.size));
        const st: BarState = {
          index: i,
          kind: d.kind,
          size: d.size,
          prefetchable: !!d.spec?.prefetchable,
          container,
          view: undefined as unknown as AddressSpace,
          busAlias: undefined as unknown as MemoryRegion,
          owned,
          shadows: [],
          spec: d.spec,
          ioeventfds: (d.spec?.ioeventfds ?? []).map((e) => ({ offset: e.offset, size: e.size, datamatch: e.datamatch === undefined ? undefined : BigInt(e.datamatch), eventfd: null })),
        };
        const b = d.spec;
        if (d.kind === "rom") {
          const image = new Uint8Array(d.size);
          image.set(spec.rom!.bytes);
          st.coreRam = track(mem.rom(`${this.name}.rom`, d.size, image));
          container.addSubregion(0, st.coreRam);
        } else if (b!.ram === true) {
          st.coreRam = track(mem.ram(`${tag}.ram`, d.size));
          container.addSubregion(0, st.coreRam);
        } else if (b!.ram) {
          st.externalRam = b!.ram.bytes;
          if (b!.ram.fd !== undefined) st.mmap = { fd: b!.ram.fd, offset: b!.ram.fdOffset ?? 0n };
          container.addSubregion(0, track(mem.io(`${tag}.ram`, d.size, bytesOps(b!.ram.bytes, owner))));
        } else {
          container.addSubregion(0, track(mem.io(`${tag}.mmio`, d.size, { ...b!.ops!, read: b!.ops!.read, write: b!.ops!.write, owner })));
        }
        const overlays: { start: number; end: number }[] = [];
        if (msix && msix.tableBar === i) {
          container.addSubregion(msix.tableOffset, track(mem.io(`${tag}.msix-table`, msix.tableSize, this.msixTableOps(owner))), 1);
          overlays.push({ start: msix.tableOffset, end: msix.tableOffset + msix.tableSize });
        }
        if (msix && msix.pbaBar === i) {
          container.addSubregion(msix.pbaOffset, track(mem.io(`${tag}.msix-pba`, msix.pbaSize, this.msixPbaOps(owner))), 1);
          overlays.push({ start: msix.pbaOffset, end: msix.pbaOffset + msix.pbaSize });
        }
        // Writes to the MSI-X table/PBA never reach ops.write, so an ioeventfd there could not
        // deliver anything.
        st.ioeventfds.forEach((e, k) => {
          for (const o of overlays)
            if (e.offset < o.end && o.start < e.offset + e.size)
              throw new PciError("PCI_INVALID_SPEC", `bars[${i}].ioeventfds[${k}]: overlaps the MSI-X table/PBA`, { field: `bars[${i}].ioeventfds[${k}]` });
        });
        const windows = b?.shadow ?? [];
        for (let w = 0; w < windows.length; w++) {
          const win = windows[w];
          const field = `bars[${i}].shadow[${w}]`;
          if (!Number.isInteger(win.offset) || !Number.isInteger(win.size) || win.size <= 0 || win.offset < 0 || win.offset + win.size > d.size)
            throw new PciError("PCI_INVALID_SPEC", `${field}: window must lie inside the BAR (${d.size} bytes)`, { field });
          for (const o of overlays)
            if (win.offset < o.end && o.start < win.offset + win.size) throw new PciError("PCI_INVALID_SPEC", `${field}: window overlaps another shadow window or the MSI-X table/PBA`, { field });
          overlays.push({ start: win.offset, end: win.offset + win.size });
          const shadow = {} as ShadowState;
          shadow.region = track(mem.romDevice(`${tag}.shadow${w}`, win.size, shadowOps(() => this.shadowBytes(shadow), win.offset, b!.ops!, owner)));
          shadow.view = shadow.region.ramBytes();
          shadow.ptr = shadow.view.byteOffset;
          shadow.size = win.size;
          st.shadows.push(shadow);
          container.addSubregion(win.offset, shadow.region, 1);
        }
        st.busAlias = track(mem.alias(`${tag}@bus`, container, 0, d.size));
        this.bars[i] = st;
      }
    });
    for (const b of this.bars) if (b) b.view = b.container.view();
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
    const cfg = this.cfg();
    let v = size === 1 ? cfg[offset] : size === 2 ? u16(cfg, offset) : u32(cfg, offset);
    if (this.spec.configRead) v = this.spec.configRead(offset, size, v) >>> 0;
    return v;
  }

  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void {
    this.checkConfig(offset, size);
    this.configWriteChecked(offset, size, value >>> 0);
  }

  private configWriteChecked(offset: number, size: number, value: number): void {
    const msi = this.caps.msi;
    const pm = this.caps.pm;
    const oldPmState = pm !== undefined ? this.cfg()[pm + R.PCI_PM_CTRL] & R.PCI_PM_CTRL_STATE_MASK : 0;
    const result = this.x.pci_config_write(this.fnPtr, offset, size, value) >>> 0;
    if (result & CFGW_INVALID) throw new PciError("PCI_CONFIG_RANGE", `config write at 0x${offset.toString(16)} rejected by the core`, { offset, size });
    if (result & 0x7f) this.refreshMappings();
    if (result & CFGW_INTX_DISABLE_CHANGED) this.updateIntxOutput();
    if (pm !== undefined && offset < pm + 6 && pm + R.PCI_PM_CTRL < offset + size) {
      // D1/D2 are not supported: a write selecting them leaves the state unchanged.
      const cfg = this.cfg();
      const st = cfg[pm + R.PCI_PM_CTRL] & R.PCI_PM_CTRL_STATE_MASK;
      if (st === 1 || st === 2) cfg[pm + R.PCI_PM_CTRL] = (cfg[pm + R.PCI_PM_CTRL] & ~R.PCI_PM_CTRL_STATE_MASK) | oldPmState;
    }
    if (msi && offset < msi.offset + msi.size && msi.offset < offset + size) this.msiWriteConfig();
    const msix = this.caps.msix;
    if (msix && offset <= msix.offset + 3 && msix.offset + 3 < offset + size) this.msixWriteConfig();
    this.spec.configWrite?.(offset, size as 1 | 2 | 4, value);
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
    return this.cfg().slice(0, this.configSize);
  }

  // ---- BARs ----------------------------------------------------------------------------

  /**
   * Mirrors the core's decoded BAR addresses and (re)maps each changed BAR's alias in the
   * bus containers (QEMU pci_update_mappings: unmap at the old address, map at the new one
   * with priority 1), all in one memory-core transaction.
   */
  private refreshMappings(): void {
    let changed = false;
    const next: (bigint | undefined)[] = new Array(7);
    for (let i = 0; i < 7; i++) {
      if (!this.bars[i]) continue;
      const lo = this.x.pci_bar_address_lo(this.fnPtr, i) >>> 0;
      const hi = this.x.pci_bar_address_hi(this.fnPtr, i) >>> 0;
      next[i] = lo === 0xffffffff && hi === 0xffffffff ? undefined : (BigInt(hi) << 32n) | BigInt(lo);
      if (next[i] !== this.mapped[i]) changed = true;
    }
    if (!changed) return;
    this.mem.transaction(() => {
      for (let i = 0; i < 7; i++) {
        const b = this.bars[i];
        if (!b || next[i] === this.mapped[i]) continue;
        const root = b.kind === "io" ? this.busRoots.io : this.busRoots.memory;
        if (this.mapped[i] !== undefined) root.removeSubregion(b.busAlias);
        this.mapped[i] = next[i];
        if (next[i] !== undefined) root.addSubregion(next[i]!, b.busAlias, 1);
      }
    });
  }

  barAddress(index: number): bigint | undefined {
    return this.mapped[index];
  }

  busAddressSpace(space: "mem" | "io"): AddressSpace {
    const key = space === "io" ? "io" : "memory";
    let as = this.busSpaces[key];
    if (!as) {
      as = this.mem.addressSpace(`${this.name}.${key}`, this.busRoots[key]);
      this.busSpaces[key] = as;
    }
    return as;
  }

  regionInfo(index: number): PciRegionInfo {
    if (!Number.isInteger(index) || index < 0 || index > PCI_ROM_REGION) throw new PciError("PCI_REGION_INDEX", `region ${index} does not exist (0..5 = BARs, 6 = ROM)`, { region: index });
    const b = this.bars[index];
    const upper = index > 0 && this.bars[index - 1]?.kind === "mem64" ? index - 1 : undefined;
    if (!b) return { index, kind: index === PCI_ROM_REGION ? "rom" : "mem32", size: 0n, prefetchable: false, readable: false, writable: false, upperHalfOf: upper };
    return { index, kind: b.kind, size: BigInt(b.size), prefetchable: b.prefetchable, readable: true, writable: b.kind !== "rom", mmap: b.mmap };
  }

  private bar(index: number): BarState {
    if (this.disposed) throw new PciError("PCI_REGION_INDEX", `${this.name} was disposed`, { region: index });
    const b = Number.isInteger(index) && index >= 0 && index <= 6 ? this.bars[index] : undefined;
    if (!b) throw new PciError("PCI_REGION_INDEX", `region ${index} is not implemented by ${this.name}`, { region: index });
    return b;
  }

  private checkRegion(b: BarState, offset: number, length: number): void {
    if (offset > b.size || length > b.size - offset)
      throw new PciError("PCI_REGION_RANGE", `region ${b.index}: ${length} bytes at 0x${offset.toString(16)} pass the end of the ${b.size}-byte region`, { region: b.index, offset, size: length });
  }

  /** Converts the memory core's failure into the PCI layer's error. */
  private failed(b: BarState, offset: number, size: number, e: unknown): never {
    if (e instanceof MemoryError) {
      if (e.code === "DEVICE_ERROR")
        throw new PciError("PCI_DEVICE_ERROR", `region ${b.index}: the device failed a ${size}-byte access at 0x${offset.toString(16)}`, { region: b.index, offset, size, cause: e.cause ?? e });
      if (e.code === "DECODE_ERROR" || e.code === "ACCESS_ERROR")
        throw new PciError(
          "PCI_ACCESS_INVALID",
          e.code === "ACCESS_ERROR"
            ? `region ${b.index}: re-entrant ${size}-byte access at 0x${offset.toString(16)} refused (the device is already in a callback)`
            : `region ${b.index}: a ${size}-byte access at 0x${offset.toString(16)} is not valid for this region`,
          { region: b.index, offset, size, cause: e },
        );
    }
    throw e;
  }

  private read(b: BarState, off: number, size: AccessSize): bigint {
    try {
      return size === 8 ? b.view.read64(off) : BigInt(b.view.read(off, size));
    } catch (e) {
      this.failed(b, off, size, e);
    }
  }

  private write(b: BarState, off: number, size: AccessSize, value: bigint): void {
    try {
      b.view.write(off, size, size === 8 ? BigInt.asUintN(64, value) : Number(BigInt.asUintN(size * 8, value)));
    } catch (e) {
      this.failed(b, off, size, e);
    }
  }

  readRegion(index: number, offset: number | bigint, size: AccessSize): bigint {
    checkAccessSize(size);
    const b = this.bar(index);
    const off = offsetNumber(offset, index);
    this.checkRegion(b, off, size);
    return this.read(b, off, size);
  }

  writeRegion(index: number, offset: number | bigint, size: AccessSize, value: bigint): void {
    checkAccessSize(size);
    const b = this.bar(index);
    const off = offsetNumber(offset, index);
    this.checkRegion(b, off, size);
    this.write(b, off, size, value);
  }

  readRegionBytes(index: number, offset: number | bigint, dest: Uint8Array): void {
    const b = this.bar(index);
    const off = offsetNumber(offset, index);
    this.checkRegion(b, off, dest.length);
    if (dest.length === 0) return;
    try {
      b.view.readBytes(off, dest);
    } catch (e) {
      this.failed(b, off, dest.length, e);
    }
  }

  writeRegionBytes(index: number, offset: number | bigint, src: Uint8Array): void {
    const b = this.bar(index);
    const off = offsetNumber(offset, index);
    this.checkRegion(b, off, src.length);
    if (src.length === 0) return;
    try {
      b.view.writeBytes(off, src);
    } catch (e) {
      this.failed(b, off, src.length, e);
    }
  }

  /** BAR decode in the pci core: the slot decoding [address, address + size), or -1. */
  private decode(space: "mem" | "io", address: bigint, size: number): number {
    if (typeof address !== "bigint" || address < 0n || address > 0xffffffffffffffffn) return -1;
    return this.x.pci_bar_decode(this.fnPtr, space === "io" ? 1 : 0, Number(address & 0xffffffffn), Number(address >> 32n), size);
  }

  private decodedOffset(): number {
    return this.x.pci_decoded_offset_hi(this.fnPtr) * 2 ** 32 + (this.x.pci_decoded_offset_lo(this.fnPtr) >>> 0);
  }

  busRead(space: "mem" | "io", address: bigint, size: AccessSize): bigint | undefined {
    checkAccessSize(size);
    const slot = this.disposed ? -1 : this.decode(space, address, size);
    if (slot < 0) return undefined;
    return this.read(this.bars[slot]!, this.decodedOffset(), size);
  }

  busWrite(space: "mem" | "io", address: bigint, size: AccessSize, value: bigint): boolean {
    checkAccessSize(size);
    const slot = this.disposed ? -1 : this.decode(space, address, size);
    if (slot < 0) return false;
    this.write(this.bars[slot]!, this.decodedOffset(), size, value);
    return true;
  }

  shadow(bar: number, window = 0): Uint8Array {
    const b = this.bar(bar);
    const s = b.shadows[window];
    if (!s) throw new PciError("PCI_REGION_INDEX", `region ${bar} has no shadow window ${window}`, { region: bar });
    return this.shadowBytes(s);
  }

  /** The current view of a shadow window's bytes in linear memory (re-made after growth). */
  private shadowBytes(s: ShadowState): Uint8Array {
    if (s.view.buffer !== this.core.memory.buffer) s.view = new Uint8Array(this.core.memory.buffer, s.ptr, s.size);
    return s.view;
  }

  /** Unmaps and frees every region and table of this function; later calls fail. */
  dispose(): void {
    if (this.disposed) return;
    this.closeIoEventFds(false);
    this.disposed = true;
    this.sink = null;
    this.dmaApi = null;
    this.ioEventFdErrorHandler = null;
    this.spec.dispose?.();
    this.mem.transaction(() => {
      for (let i = 0; i < 7; i++) {
        const b = this.bars[i];
        if (b && this.mapped[i] !== undefined) (b.kind === "io" ? this.busRoots.io : this.busRoots.memory).removeSubregion(b.busAlias);
        this.mapped[i] = undefined;
      }
    });
    for (const b of this.bars) {
      if (!b) continue;
      b.view?.destroy();
      // children first: the alias, then overlays and the device region, then the container
      b.busAlias?.destroy();
      for (const r of b.owned.slice(1).reverse()) {
        if (r === b.busAlias) continue;
        b.container.removeSubregion(r);
        r.destroy();
      }
      b.container.destroy();
    }
    if (this.ownBus) {
      this.busSpaces.memory?.destroy();
      this.busSpaces.io?.destroy();
      this.busRoots.memory.destroy();
      this.busRoots.io.destroy();
    }
    this.x.pci_function_free(this.fnPtr);
  }

  // ---- ioeventfds ----------------------------------------------------------------------

  ioEventFds(index: number, source: EventFdSource): readonly PciIoEventFd[] {
    if (!Number.isInteger(index) || index < 0 || index > PCI_ROM_REGION) throw new PciError("PCI_REGION_INDEX", `region ${index} does not exist (0..5 = BARs, 6 = ROM)`, { region: index });
    if (this.disposed) throw new PciError("PCI_REGION_INDEX", `${this.name} was disposed`, { region: index });
    const b = this.bars[index];
    if (!b || b.ioeventfds.length === 0) return [];
    const made: FunctionEventFd[] = [];
    try {
      for (const e of b.ioeventfds) {
        if (e.eventfd) continue;
        const efd = source.create();
        made.push(efd);
        efd.onReadable((count) => this.deliverIoEventFd(b, e, count));
        e.eventfd = efd;
      }
    } catch (err) {
      for (const e of b.ioeventfds) if (e.eventfd && made.includes(e.eventfd)) e.eventfd = null;
      for (const efd of made) efd.close();
      throw new PciError("PCI_RESOURCE", `region ${index}: cannot create its ioeventfds: ${(err as Error).message}`, { region: index, cause: err });
    }
    const space = b.kind === "io" ? "io" : "mem";
    return b.ioeventfds.map((e) => ({ region: index, offset: e.offset, size: e.size, datamatch: e.datamatch, space, fd: e.eventfd!.fd }));
  }

  releaseIoEventFds(): void {
    if (!this.disposed) this.closeIoEventFds(true);
  }

  setIoEventFdErrorHandler(handler: ((error: PciError) => void) | null): void {
    this.ioEventFdErrorHandler = handler;
  }

  private ioEventFdErrorHandler: ((error: PciError) => void) | null = null;

  /** Closes every eventfd; with `deliver`, signals already counted reach the device first. */
  private closeIoEventFds(deliver: boolean): void {
    for (const b of this.bars) {
      for (const e of b?.ioeventfds ?? []) {
        const efd = e.eventfd;
        if (!efd) continue;
        e.eventfd = null;
        let pending = 0;
        try {
          if (deliver) pending = efd.read();
        } finally {
          efd.close();
        }
        if (pending > 0) this.deliverIoEventFd(b!, e, pending);
      }
    }
  }

  /** One wake-up of an ioeventfd: `count` signals folded into one write (see IoEventFdSpec). */
  private deliverIoEventFd(b: BarState, e: IoEventFdState, count: number): void {
    if (this.disposed) return;
    const max = (1n << BigInt(e.size * 8)) - 1n;
    const rings = BigInt(count);
    const value = e.datamatch ?? (rings > max ? max : rings);
    try {
      this.write(b, e.offset, e.size, value);
    } catch (err) {
      const error = err instanceof PciError ? err : new PciError("PCI_DEVICE_ERROR", `region ${b.index}: ioeventfd write failed`, { region: b.index, offset: e.offset, size: e.size, cause: err });
      const handler = this.ioEventFdErrorHandler;
      if (handler) handler(error);
      else {
        const cause = error.cause instanceof Error ? ` (${error.cause.message})` : "";
        process.emitWarning(`${this.name}: ioeventfd write of ${e.size} bytes at region ${b.index} offset 0x${e.offset.toString(16)} failed: ${error.message}${cause}`, { code: error.code });
      }
    }
  }

  // ---- interrupts ----------------------------------------------------------------------

  private makeInterrupts(): PciInterrupts {
    const self = this;
    return {
      setIntx(level: boolean) {
        self.setIntxLevel(level);
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
        return self.intxLevelValue;
      },
    };
  }

  attachInterruptSink(sink: InterruptSink | null, delivery: InterruptDelivery = "device"): void {
    this.sink = sink;
    this.delivery = delivery;
    this.peer = { kind: null, count: 0 };
    if (sink && this.intxOutput) sink.intx(true);
  }

  setPeerInterrupts(kind: VectorKind | "intx", count: number): void {
    if (!Number.isInteger(count) || count < 0) throw new PciError("PCI_INVALID_SPEC", `peer interrupt count ${count} is invalid`, { field: "count" });
    this.peer = count === 0 ? { kind: null, count: 0 } : { kind, count };
  }

  /** QEMU pci_set_irq / pci_irq_handler: level-triggered, status bit mirrors the level. */
  private setIntxLevel(level: boolean): void {
    if (this.interruptInfo.intx === false || this.disposed) return;
    if (level === this.intxLevelValue) return;
    this.intxLevelValue = level;
    const cfg = this.cfg();
    if (level) cfg[R.PCI_STATUS] |= R.PCI_STATUS_INTERRUPT;
    else cfg[R.PCI_STATUS] &= ~R.PCI_STATUS_INTERRUPT;
    this.updateIntxOutput();
  }

  /** The pin as the bus sees it: asserted and not disabled (QEMU pci_irq_disabled). */
  private updateIntxOutput(): void {
    const disabled = (u16(this.cfg(), R.PCI_COMMAND) & R.PCI_COMMAND_INTX_DISABLE) !== 0;
    const out = this.intxLevelValue && !disabled;
    if (out === this.intxOutput) return;
    this.intxOutput = out;
    this.sink?.intx(out);
  }

  private msiEnabled(): boolean {
    if (this.delivery === "peer") return this.peer.kind === "msi";
    const msi = this.caps.msi;
    return !!msi && (u16(this.cfg(), msi.offset + R.PCI_MSI_FLAGS) & R.PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  private msixEnabled(): boolean {
    if (this.delivery === "peer") return this.peer.kind === "msix";
    const msix = this.caps.msix;
    return !!msix && (u16(this.cfg(), msix.offset + R.PCI_MSIX_FLAGS) & R.PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  /** QEMU msi_get_message: the low log2(enabled vectors) data bits carry the vector. */
  private msiMessage(vector: number): MsiMessage {
    const msi = this.caps.msi!;
    const cfg = this.cfg();
    const flags = u16(cfg, msi.offset + R.PCI_MSI_FLAGS);
    const lo = u32(cfg, msi.offset + R.PCI_MSI_ADDRESS_LO);
    const address = msi.address64 ? (BigInt(u32(cfg, msi.offset + R.PCI_MSI_ADDRESS_HI)) << 32n) | BigInt(lo) : BigInt(lo);
    const enabled = 1 << ((flags & R.PCI_MSI_FLAGS_QSIZE) >> 4);
    let data = u16(cfg, msi.offset + msi.dataOffset);
    if (enabled > 1) data = (data & ~(enabled - 1)) | vector;
    return { address, data };
  }

  private msiEnabledVectors(): number {
    const msi = this.caps.msi!;
    const flags = u16(this.cfg(), msi.offset + R.PCI_MSI_FLAGS);
    return 1 << ((flags & R.PCI_MSI_FLAGS_QSIZE) >> 4);
  }

  /** QEMU msi_notify. */
  private msiNotify(vector: number): void {
    if (this.disposed) return;
    const msi = this.caps.msi;
    if (this.delivery === "peer") {
      if (this.peer.kind === "msi" && vector >= 0 && vector < this.peer.count) this.sink?.vector("msi", vector, msi ? this.msiMessage(vector) : { address: 0n, data: 0 });
      return;
    }
    if (!msi || !this.msiEnabled() || !Number.isInteger(vector) || vector < 0 || vector >= this.msiEnabledVectors()) return;
    if (msi.perVectorMask) {
      const cfg = this.cfg();
      if (u32(cfg, msi.offset + msi.maskOffset) & (1 << vector)) {
        put32(cfg, msi.offset + msi.pendingOffset, u32(cfg, msi.offset + msi.pendingOffset) | (1 << vector));
        return;
      }
    }
    this.sink?.vector("msi", vector, this.msiMessage(vector));
  }

  /** QEMU msi_write_config: on enable, INTx is deasserted, an over-large MME is clamped,
   *  and pending vectors that are now unmasked fire. */
  private msiWriteConfig(): void {
    const msi = this.caps.msi!;
    const cfg = this.cfg();
    let flags = u16(cfg, msi.offset + R.PCI_MSI_FLAGS);
    if (!(flags & R.PCI_MSI_FLAGS_ENABLE)) return;
    this.setIntxLevel(false);
    const mme = (flags & R.PCI_MSI_FLAGS_QSIZE) >> 4;
    const mmc = (flags & R.PCI_MSI_FLAGS_QMASK) >> 1;
    if (mme > mmc) {
      flags = (flags & ~R.PCI_MSI_FLAGS_QSIZE) | (mmc << 4);
      put16(cfg, msi.offset + R.PCI_MSI_FLAGS, flags);
    }
    if (!msi.perVectorMask) return;
    const n = this.msiEnabledVectors();
    const live = n === 32 ? 0xffffffff : (1 << n) - 1;
    let pending = u32(cfg, msi.offset + msi.pendingOffset) & live;
    put32(cfg, msi.offset + msi.pendingOffset, pending);
    const mask = u32(cfg, msi.offset + msi.maskOffset);
    for (let v = 0; v < n; v++) {
      const bit = 1 << v;
      if (!(pending & bit) || mask & bit) continue;
      pending &= ~bit;
      put32(this.cfg(), msi.offset + msi.pendingOffset, pending >>> 0);
      this.msiNotify(v);
    }
  }

  private msixResetTable(): void {
    const t = this.msixTable;
    t.fill(0);
    for (let off = R.PCI_MSIX_ENTRY_VECTOR_CTRL; off < t.length; off += R.PCI_MSIX_ENTRY_SIZE) t[off] = R.PCI_MSIX_ENTRY_CTRL_MASKBIT;
    this.msixPba.fill(0);
    this.msixFunctionMasked = true;
  }

  private msixVectorMasked(vector: number, functionMasked: boolean): boolean {
    return functionMasked || (this.msixTable[vector * 16 + R.PCI_MSIX_ENTRY_VECTOR_CTRL] & R.PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  private msixMessage(vector: number): MsiMessage {
    const t = this.msixTable;
    const e = vector * 16;
    return { address: (BigInt(u32(t, e + 4)) << 32n) | BigInt(u32(t, e)), data: u32(t, e + 8) };
  }

  /** QEMU msix_notify: masked (entry, function mask, or disabled) → PBA bit. */
  private msixNotify(vector: number): void {
    if (this.disposed) return;
    const msix = this.caps.msix;
    if (this.delivery === "peer") {
      if (this.peer.kind === "msix" && vector >= 0 && vector < this.peer.count) this.sink?.vector("msix", vector, msix && vector < msix.vectors ? this.msixMessage(vector) : { address: 0n, data: 0 });
      return;
    }
    if (!msix || !Number.isInteger(vector) || vector < 0 || vector >= msix.vectors) return;
    if (this.msixVectorMasked(vector, this.msixFunctionMasked)) {
      this.msixPba[vector >> 3] |= 1 << (vector & 7);
      return;
    }
    this.sink?.vector("msix", vector, this.msixMessage(vector));
  }

  /** QEMU msix_handle_mask_update: an unmasked vector with its PBA bit set fires now. */
  private msixMaskUpdate(vector: number, wasMasked: boolean): void {
    const isMasked = this.msixVectorMasked(vector, this.msixFunctionMasked);
    if (!wasMasked || isMasked) return;
    const bit = 1 << (vector & 7);
    if (this.msixPba[vector >> 3] & bit) {
      this.msixPba[vector >> 3] &= ~bit;
      this.msixNotify(vector);
    }
  }

  /** QEMU msix_write_config (the control word's upper byte was written). */
  private msixWriteConfig(): void {
    const msix = this.caps.msix!;
    const flags = u16(this.cfg(), msix.offset + R.PCI_MSIX_FLAGS);
    const wasMasked = this.msixFunctionMasked;
    const enabled = (flags & R.PCI_MSIX_FLAGS_ENABLE) !== 0;
    this.msixFunctionMasked = !enabled || (flags & R.PCI_MSIX_FLAGS_MASKALL) !== 0;
    if (!enabled) return;
    this.setIntxLevel(false);
    if (this.msixFunctionMasked === wasMasked) return;
    for (let v = 0; v < msix.vectors; v++) this.msixMaskUpdate(v, this.msixVectorMasked(v, wasMasked));
  }

  /** The MSI-X table as an I/O region (QEMU msix_table_mmio_ops: 4- and 8-byte accesses,
   *  implemented as 4-byte ones). */
  private msixTableOps(owner: object): IoOps {
    const self = this;
    return {
      read(offset) {
        return u32(self.msixTable, offset);
      },
      write(offset, _size, value) {
        const vector = offset >> 4;
        const wasMasked = self.msixVectorMasked(vector, self.msixFunctionMasked);
        put32(self.msixTable, offset, Number(value) >>> 0);
        self.msixMaskUpdate(vector, wasMasked);
      },
      valid: { min: 4, max: 8 },
      impl: { min: 4, max: 4 },
      owner,
      // Unmasking a vector may deliver it, and a sink may touch the device again.
      reentrancyGuard: false,
    };
  }

  /** The PBA: read-only pending bits (QEMU msix_pba_mmio_ops). */
  private msixPbaOps(owner: object): IoOps {
    const self = this;
    return {
      read(offset) {
        return u32(self.msixPba, offset);
      },
      write() {},
      valid: { min: 4, max: 8 },
      impl: { min: 4, max: 4 },
      owner,
    };
  }

  // ---- DMA -----------------------------------------------------------------------------

  get dma(): DmaApi | null {
    return this.dmaApi;
  }

  attachDma(dma: DmaApi | null): void {
    this.dmaApi = dma;
  }

  // ---- reset ---------------------------------------------------------------------------

  reset(): void {
    if (this.disposed) return;
    const cfg = this.cfg();
    cfg.set(this.initialConfig);
    this.msixResetTable();
    this.x.pci_update_mappings(this.fnPtr);
    this.refreshMappings();
    this.intxLevelValue = false;
    this.updateIntxOutput();
    for (const b of this.bars) for (const s of b?.shadows ?? []) this.shadowBytes(s).fill(0);
    this.spec.reset?.();
  }

  /** A BAR's RAM contents (fresh view each call: core memory may have grown). */
  private ramOf(b: BarState): Uint8Array | undefined {
    if (b.kind === "rom") return undefined;
    return b.externalRam ?? b.coreRam?.ramBytes();
  }

  // ---- migration -----------------------------------------------------------------------

  saveState(): Uint8Array {
    const parts: Uint8Array[] = [];
    const header = new Uint8Array(16);
    put32(header, 0, STATE_MAGIC);
    put32(header, 4, STATE_VERSION);
    put32(header, 8, this.configSize);
    put32(header, 12, this.intxLevelValue ? 1 : 0);
    parts.push(header, this.configSnapshot());
    const blob = (bytes: Uint8Array) => {
      const len = new Uint8Array(4);
      put32(len, 0, bytes.length);
      parts.push(len, bytes.slice());
    };
    blob(this.msixTable);
    blob(this.msixPba);
    for (let i = 0; i < 6; i++) {
      const b = this.bars[i];
      blob((b && this.ramOf(b)) ?? new Uint8Array(0));
      const shadows = b?.shadows ?? [];
      blob(new Uint8Array([shadows.length]));
      for (const s of shadows) blob(this.shadowBytes(s));
    }
    blob(this.spec.saveState?.() ?? new Uint8Array(0));
    const total = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  restoreState(state: Uint8Array): void {
    const fail = (why: string): never => {
      throw new PciError("PCI_STATE_FORMAT", `${this.name}: saved state does not fit this function: ${why}`);
    };
    if (!(state instanceof Uint8Array) || state.length < 16) fail("too short");
    if (u32(state, 0) !== STATE_MAGIC || u32(state, 4) !== STATE_VERSION) fail("bad magic or version");
    if (u32(state, 8) !== this.configSize) fail("config space size differs");
    const intx = u32(state, 12) === 1;
    let at = 16;
    if (state.length < at + this.configSize) fail("truncated config space");
    const config = state.subarray(at, at + this.configSize);
    at += this.configSize;
    const take = (expect?: number): Uint8Array => {
      if (at + 4 > state.length) fail("truncated");
      const len = u32(state, at);
      at += 4;
      if (at + len > state.length) fail("truncated");
      if (expect !== undefined && len !== expect) fail(`a section is ${len} bytes, expected ${expect}`);
      const bytes = state.subarray(at, at + len);
      at += len;
      return bytes;
    };
    // Parse everything before changing anything.
    const table = take(this.msixTable.length);
    const pba = take(this.msixPba.length);
    const barData: { ram: Uint8Array; shadows: Uint8Array[] }[] = [];
    for (let i = 0; i < 6; i++) {
      const b = this.bars[i];
      const ram = take(b ? (this.ramOf(b)?.length ?? 0) : 0);
      const shadowCount = take(1)[0];
      if (shadowCount !== (b?.shadows.length ?? 0)) fail(`BAR ${i} shadow window count differs`);
      const shadows: Uint8Array[] = [];
      for (let s = 0; s < shadowCount; s++) shadows.push(take(b!.shadows[s].size));
      barData.push({ ram, shadows });
    }
    const device = take();
    if (at !== state.length) fail("trailing bytes");
    // Read-only identity must match: ids, revision, class, header type, subsystem, pin,
    // the capability pointer.
    const cur = this.cfg();
    for (const [o, n] of [[0, 4], [8, 4], [0x0e, 1], [0x2c, 4], [0x34, 1], [0x3d, 1]] as const)
      for (let i = o; i < o + n; i++) if (cur[i] !== config[i]) fail(`read-only register at 0x${i.toString(16)} differs`);
    for (const c of this.caps.list) if (config[c.offset] !== c.id) fail(`capability at 0x${c.offset.toString(16)} differs`);
    if (this.spec.restoreState) this.spec.restoreState(device);
    else if (device.length) fail("device state present but the device cannot restore it");
    this.cfg().set(config);
    this.msixTable.set(table);
    this.msixPba.set(pba);
    for (let i = 0; i < 6; i++) {
      const b = this.bars[i];
      if (!b) continue;
      this.ramOf(b)?.set(barData[i].ram);
      barData[i].shadows.forEach((s, k) => this.shadowBytes(b.shadows[k]).set(s));
    }
    const msix = this.caps.msix;
    if (msix) {
      const flags = u16(this.cfg(), msix.offset + R.PCI_MSIX_FLAGS);
      this.msixFunctionMasked = !(flags & R.PCI_MSIX_FLAGS_ENABLE) || (flags & R.PCI_MSIX_FLAGS_MASKALL) !== 0;
    }
    this.x.pci_update_mappings(this.fnPtr);
    this.refreshMappings();
    this.intxLevelValue = intx;
    this.updateIntxOutput();
  }
}

/** I/O-region callbacks over caller-owned bytes (a RAM BAR whose memory lives outside the
 *  core, e.g. a memfd mapping a vfio-user client may also mmap). */
function bytesOps(bytes: Uint8Array, owner: object): IoOps {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    read(offset, size) {
      if (size === 1) return dv.getUint8(offset);
      if (size === 2) return dv.getUint16(offset, true);
      if (size === 4) return dv.getUint32(offset, true);
      return dv.getBigUint64(offset, true);
    },
    write(offset, size, value) {
      if (size === 1) dv.setUint8(offset, Number(value));
      else if (size === 2) dv.setUint16(offset, Number(value), true);
      else if (size === 4) dv.setUint32(offset, Number(value), true);
      else dv.setBigUint64(offset, BigInt(value), true);
    },
    valid: { min: 1, max: 8, unaligned: true },
    impl: { min: 1, max: 8, unaligned: true },
    owner,
  };
}

/** Declaration checks of a BAR's ioeventfds (IoEventFdSpec's rules, MSI-X overlap aside). */
function checkIoEventFds(list: readonly IoEventFdSpec[], field: string, barSize: number, ops: import("./api.js").RegionOps): void {
  if (!Array.isArray(list)) throw new PciError("PCI_INVALID_SPEC", `${field} must be an array`, { field });
  if (list.length > PCI_MAX_IOEVENTFDS_PER_BAR) throw new PciError("PCI_INVALID_SPEC", `${field}: at most ${PCI_MAX_IOEVENTFDS_PER_BAR} ioeventfds per BAR, got ${list.length}`, { field });
  const validMin = ops.valid?.min ?? 1;
  const validMax = ops.valid?.max ?? 8;
  const seen: { offset: number; size: number; datamatch?: bigint }[] = [];
  list.forEach((e, k) => {
    const f = `${field}[${k}]`;
    const { offset, size } = e;
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new PciError("PCI_INVALID_SPEC", `${f}.size must be 1, 2, 4 or 8`, { field: `${f}.size` });
    if (!Number.isInteger(offset) || offset < 0 || offset % size !== 0 || offset + size > barSize)
      throw new PciError("PCI_INVALID_SPEC", `${f}.offset must be aligned to the size and lie inside the ${barSize}-byte BAR`, { field: `${f}.offset` });
    if (size < validMin || size > validMax) throw new PciError("PCI_INVALID_SPEC", `${f}.size: the BAR's valid access sizes are ${validMin}..${validMax}`, { field: `${f}.size` });
    let datamatch: bigint | undefined;
    if (e.datamatch !== undefined) {
      const d = e.datamatch;
      const ok = typeof d === "bigint" || (typeof d === "number" && Number.isSafeInteger(d));
      datamatch = ok ? BigInt(d) : -1n;
      if (datamatch < 0n || datamatch >= 1n << BigInt(size * 8)) throw new PciError("PCI_INVALID_SPEC", `${f}.datamatch must be an unsigned integer that fits in ${size} bytes`, { field: `${f}.datamatch` });
    }
    for (const o of seen) {
      if (offset >= o.offset + o.size || o.offset >= offset + size) continue;
      // KVM's rule (ioeventfd_check_collision): the same register may carry several
      // ioeventfds only when each matches its own value.
      if (o.offset !== offset || o.size !== size || datamatch === undefined || o.datamatch === undefined || o.datamatch === datamatch)
        throw new PciError("PCI_INVALID_SPEC", `${f}: collides with another ioeventfd (same register needs distinct datamatch values; partial overlaps are refused)`, { field: f });
    }
    seen.push({ offset, size, datamatch });
  });
}

/**
 * Callbacks of a shadow window's ROM device. Writes are handed to the device's own write
 * callback at the BAR offset, under the device's constraints. Reads are served by the core
 * from the window's bytes without any callback (ROMD mode, which the function never turns
 * off); `read` only answers the same bytes, should ROMD mode ever be off.
 */
function shadowOps(bytes: () => Uint8Array, base: number, device: IoOps | import("./api.js").RegionOps, owner: object): IoOps {
  return {
    read(offset, size) {
      const b = bytes();
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      if (size === 1) return dv.getUint8(offset);
      if (size === 2) return dv.getUint16(offset, true);
      if (size === 4) return dv.getUint32(offset, true);
      return dv.getBigUint64(offset, true);
    },
    write(offset, size, value) {
      device.write(base + offset, size, value);
    },
    valid: device.valid,
    impl: device.impl,
    owner,
  };
}

/** Largest dword-contained piece at `at` of at most `len` bytes, naturally aligned. */
function pieceOf(at: number, len: number): 1 | 2 | 4 {
  if ((at & 3) === 0 && len >= 4) return 4;
  if ((at & 1) === 0 && len >= 2) return 2;
  return 1;
}

/**
 * Builds a PCI function from its declaration. Throws PciError("PCI_INVALID_SPEC") naming
 * the offending field when the declaration is inconsistent.
 */
export function createPciFunction(spec: PciFunctionSpec, options: CreatePciFunctionOptions = {}): PciFunction {
  return new PciFunctionImpl(spec, options);
}
