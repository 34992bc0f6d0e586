// BARs and the expansion ROM of one function: declaration checks, the regions each one is
// built from in the memory core (device callbacks, core or caller RAM, ROM, with the MSI-X
// table/PBA and shadow windows overlaid), mapping into the bus as the guest programs the
// BARs (QEMU pci_update_mappings), and region-relative and bus accesses.
import type { AccessSize, BarSpec, DeviceContext, PciFunctionSpec, PciRegionInfo, RegionOps, RegisterOps } from "./api.js";
import { PCI_MAX_IOEVENTFDS_PER_BAR, PCI_ROM_REGION, type IoEventFdSpec } from "./api.js";
import type { FunctionCapability, StateReader, StateWriter } from "./capability.js";
import type { MsixCapability } from "./msix.js";
import { MemoryCore, MemoryRegion, AddressSpace, type IoOps } from "../memory/api.js";
import { MemoryError } from "../memory/errors.js";
import { MAX_RAM_REGION_SIZE } from "../abi/memory.js";
import type { CoreExports } from "../abi/exports.js";
import { BAR_FLAG_IO, BAR_FLAG_MEM64, BAR_FLAG_PREFETCH, BAR_FLAG_ROM } from "../abi/pci.js";
import { PciError } from "./errors.js";
import { ShadowWindowView, type ShadowState } from "./shadow.js";
import type { IoEventFdState } from "./ioeventfd.js";

/** Largest BAR the model accepts (region offsets stay exact as numbers). */
export const PCI_MAX_BAR_SIZE = 2 ** 52;

/** The callbacks of a callback BAR, in the memory core's form. */
type DeviceOps = Pick<IoOps, "read" | "write" | "valid" | "impl">;

export interface BarState {
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
  /** Declared ioeventfds (validated), with their eventfds once ioEventFds() made them. */
  ioeventfds: IoEventFdState[];
}

interface Declared {
  kind: BarState["kind"];
  size: number;
  spec?: BarSpec;
  /** Callback BARs: the device's callbacks, bound to its context. */
  ops?: DeviceOps;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function checkConstraints(ops: { valid?: RegionOps["valid"]; impl?: RegionOps["impl"] }, field: string): void {
  for (const c of [ops.valid, ops.impl]) {
    if (!c) continue;
    for (const v of [c.min, c.max]) if (v !== undefined && v !== 1 && v !== 2 && v !== 4 && v !== 8) throw new PciError("PCI_INVALID_SPEC", `${field}: access sizes must be 1, 2, 4 or 8`, { field });
    if (c.min !== undefined && c.max !== undefined && c.min > c.max) throw new PciError("PCI_INVALID_SPEC", `${field}: min access size exceeds max`, { field });
  }
  if (ops.impl?.unaligned && !ops.valid?.unaligned) throw new PciError("PCI_INVALID_SPEC", `${field}: impl.unaligned needs valid.unaligned`, { field });
}

/**
 * The memory core's callbacks for a BarSpec.registers declaration: numbers for accesses of up
 * to 4 bytes, read64/write64 (bigint) for 8-byte ones, or the byte-oriented `access`.
 */
function registerOps(r: RegisterOps, ctx: DeviceContext, field: string): DeviceOps {
  if ("access" in r && r.access !== undefined) {
    const access = r.access;
    if (typeof access !== "function") throw new PciError("PCI_INVALID_SPEC", `${field}.access must be a function`, { field: `${field}.access` });
    if ("read" in r || "write" in r) throw new PciError("PCI_INVALID_SPEC", `${field}: give access, or read and write, not both`, { field });
    // One scratch buffer per BAR: an access callback runs to completion before the next one
    // (the memory core's re-entrancy guard refuses nested accesses to the same device).
    const scratch = new Uint8Array(8);
    const dv = new DataView(scratch.buffer);
    const pieces = [scratch, scratch.subarray(0, 1), scratch.subarray(0, 2), scratch, scratch.subarray(0, 4), scratch, scratch, scratch, scratch];
    return {
      read(offset, size) {
        scratch.fill(0);
        access(offset, pieces[size], false, ctx);
        return size === 4 ? dv.getUint32(0, true) : size === 8 ? dv.getBigUint64(0, true) : size === 2 ? dv.getUint16(0, true) : scratch[0];
      },
      write(offset, size, value) {
        if (size === 8) dv.setBigUint64(0, value as bigint, true);
        else dv.setUint32(0, value as number, true);
        access(offset, pieces[size], true, ctx);
      },
      valid: r.valid,
      impl: r.impl ?? { min: 1, max: 8 },
    };
  }
  const n = r as Extract<RegisterOps, { read: unknown }>;
  if (typeof n.read !== "function" || typeof n.write !== "function")
    throw new PciError("PCI_INVALID_SPEC", `${field}: give access, or read and write`, { field });
  if ((n.read64 === undefined) !== (n.write64 === undefined)) throw new PciError("PCI_INVALID_SPEC", `${field}: give both read64 and write64, or neither`, { field });
  const wide = n.read64 !== undefined;
  if (!wide && n.impl?.max === 8) throw new PciError("PCI_INVALID_SPEC", `${field}.impl.max: 8-byte accesses need read64 and write64`, { field: `${field}.impl` });
  const { read, write, read64, write64 } = n;
  if (!wide)
    return {
      read: (offset, size) => read(offset, size as 1 | 2 | 4, ctx),
      write: (offset, size, value) => write(offset, size as 1 | 2 | 4, value as number, ctx),
      valid: n.valid,
      impl: n.impl,
    };
  return {
    read: (offset, size) => (size === 8 ? read64!(offset, ctx) : read(offset, size, ctx)),
    write: (offset, size, value) => (size === 8 ? write64!(offset, value as bigint, ctx) : write(offset, size, value as number, ctx)),
    valid: n.valid,
    impl: n.impl ?? { min: 1, max: 8 },
  };
}

/** RegionOps (the original callback form) bound to the device's context. */
function regionOps(o: RegionOps, ctx: DeviceContext): DeviceOps {
  const { read, write } = o;
  return { read: (offset, size) => read(offset, size, ctx), write: (offset, size, value) => write(offset, size, value, ctx), valid: o.valid, impl: o.impl };
}

/**
 * Checks the BAR and ROM declarations and registers them with the core's function block.
 * Returns slot → declaration (7 slots: six BARs, then the ROM).
 */
export function declareBars(spec: PciFunctionSpec, x: CoreExports, fnPtr: number, ctx: DeviceContext): (Declared | undefined)[] {
  const declared: (Declared | undefined)[] = new Array(7);
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
    if ((b.ops ? 1 : 0) + (b.registers ? 1 : 0) + (b.ram ? 1 : 0) !== 1)
      throw new PciError("PCI_INVALID_SPEC", `${field}: give exactly one of registers or ops (callbacks) or ram`, { field });
    const callbacks = !!(b.ops || b.registers);
    if (b.ram === true && size > MAX_RAM_REGION_SIZE) throw new PciError("PCI_INVALID_SPEC", `${field}.ram: core RAM regions hold at most ${MAX_RAM_REGION_SIZE} bytes; supply ram.bytes for larger BARs`, { field: `${field}.ram` });
    if (b.ram && b.ram !== true && (!(b.ram.bytes instanceof Uint8Array) || b.ram.bytes.length !== size))
      throw new PciError("PCI_INVALID_SPEC", `${field}.ram.bytes must be a Uint8Array of exactly ${size} bytes`, { field: `${field}.ram.bytes` });
    if (b.shadow?.length && !callbacks) throw new PciError("PCI_INVALID_SPEC", `${field}.shadow: shadow windows need a callback BAR`, { field: `${field}.shadow` });
    if (b.ioeventfds?.length && !callbacks) throw new PciError("PCI_INVALID_SPEC", `${field}.ioeventfds: ioeventfds need a callback BAR (a RAM BAR has no write handler)`, { field: `${field}.ioeventfds` });
    let ops: DeviceOps | undefined;
    if (b.ops) {
      checkConstraints(b.ops, `${field}.ops`);
      ops = regionOps(b.ops, ctx);
    } else if (b.registers) {
      checkConstraints(b.registers, `${field}.registers`);
      ops = registerOps(b.registers, ctx, `${field}.registers`);
    }
    if (ops) checkIoEventFds(b.ioeventfds ?? [], `${field}.ioeventfds`, size, ops);
    const flags = (b.kind === "io" ? BAR_FLAG_IO : 0) | (b.kind === "mem64" ? BAR_FLAG_MEM64 : 0) | (b.prefetchable ? BAR_FLAG_PREFETCH : 0);
    if (x.pci_bar_register(fnPtr, i, Number(sizeBig & 0xffffffffn), Number(sizeBig >> 32n), flags) !== 0)
      throw new PciError("PCI_INVALID_SPEC", `${field}: the core rejected the BAR declaration`, { field });
    declared[i] = { kind: b.kind, size, spec: b, ops };
  }
  if (spec.rom) {
    const bytes = spec.rom.bytes;
    if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new PciError("PCI_INVALID_SPEC", "rom.bytes must be a non-empty Uint8Array", { field: "rom.bytes" });
    const size = spec.rom.size ?? Math.max(2048, 2 ** Math.ceil(Math.log2(bytes.length)));
    if (!isPow2(size) || size < 2048 || size < bytes.length || size > Math.min(2 ** 31, MAX_RAM_REGION_SIZE))
      throw new PciError("PCI_INVALID_SPEC", `rom.size must be a power of two ≥ 2048, ≥ rom.bytes.length and ≤ 1 GiB`, { field: "rom.size" });
    if (x.pci_bar_register(fnPtr, 6, size >>> 0, 0, BAR_FLAG_ROM) !== 0) throw new PciError("PCI_INVALID_SPEC", "the core rejected the ROM declaration", { field: "rom" });
    declared[6] = { kind: "rom", size };
  }
  return declared;
}

/** Declaration checks of a BAR's ioeventfds (IoEventFdSpec's rules, MSI-X overlap aside). */
function checkIoEventFds(list: readonly IoEventFdSpec[], field: string, barSize: number, ops: DeviceOps): void {
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

/**
 * Callbacks of a shadow window's ROM device. Writes are handed to the device's own write
 * callback at the BAR offset, under the device's constraints. Reads are served by the core
 * from the window's bytes without any callback (ROMD mode, which the function never turns
 * off); `read` only answers the same bytes, should ROMD mode ever be off.
 */
function shadowOps(view: () => ShadowWindowView, base: number, device: DeviceOps, owner: object): IoOps {
  return {
    read(offset, size) {
      const v = view();
      if (size === 1) return v.getUint8(offset);
      if (size === 2) return v.getUint16(offset);
      if (size === 4) return v.getUint32(offset);
      return v.getBigUint64(offset);
    },
    write(offset, size, value) {
      device.write(base + offset, size, value);
    },
    valid: device.valid,
    impl: device.impl,
    owner,
  };
}

export interface BarsOptions {
  name: string;
  mem: MemoryCore;
  /** The core's linear memory (shadow windows' bytes live there). */
  memory: WebAssembly.Memory;
  x: CoreExports;
  fnPtr: number;
  declared: (Declared | undefined)[];
  rom?: Uint8Array;
  msix?: MsixCapability;
  bus?: { memory: MemoryRegion; io: MemoryRegion };
}

export class Bars implements FunctionCapability {
  readonly slots: (BarState | undefined)[] = new Array(7);
  /** Slot → decoded bus address (undefined = unmapped), mirrored from the core. */
  private readonly mapped: (bigint | undefined)[] = new Array(7).fill(undefined);
  private readonly busRoots: { memory: MemoryRegion; io: MemoryRegion };
  private busSpaces: { memory?: AddressSpace; io?: AddressSpace } = {};
  /** Regions and spaces this function created for its own bus (dispose()). */
  private readonly ownBus: boolean;
  private readonly name: string;
  private readonly mem: MemoryCore;
  private readonly x: CoreExports;
  private readonly fnPtr: number;

  constructor(o: BarsOptions) {
    this.name = o.name;
    this.mem = o.mem;
    this.x = o.x;
    this.fnPtr = o.fnPtr;
    this.ownBus = !o.bus;
    if (o.bus) this.busRoots = o.bus;
    else {
      const memory = o.mem.container(`${o.name}.bus-memory`, 2n ** 64n);
      const io = o.mem.container(`${o.name}.bus-io`, 2n ** 32n);
      this.busRoots = { memory, io };
      // Address spaces over them are created on first busAddressSpace() call: every space
      // in the core is re-rendered at each commit, so idle ones are not free.
    }
  }

  /**
   * Builds each BAR in the memory core: a container (the BAR's own address space for
   * region-relative access) holding the device region — I/O callbacks, core RAM, caller RAM
   * or ROM — with the MSI-X table, PBA and shadow windows overlaid at priority 1 (QEMU
   * msix_init overlays table and PBA the same way), and an alias that pci_update_mappings
   * maps into the bus.
   */
  build(o: BarsOptions): void {
    const mem = this.mem;
    const msix = o.msix;
    const owner = {};
    mem.transaction(() => {
      for (let i = 0; i <= 6; i++) {
        const d = o.declared[i];
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
          ioeventfds: (d.spec?.ioeventfds ?? []).map((e) => ({ offset: e.offset, size: e.size, datamatch: e.datamatch === undefined ? undefined : BigInt(e.datamatch), eventfd: null })),
        };
        const b = d.spec;
        if (d.kind === "rom") {
          const image = new Uint8Array(d.size);
          image.set(o.rom!);
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
          container.addSubregion(0, track(mem.io(`${tag}.mmio`, d.size, { ...d.ops!, owner })));
        }
        const overlays: { start: number; end: number }[] = [];
        if (msix && msix.layout.tableBar === i) {
          const l = msix.layout;
          container.addSubregion(l.tableOffset, track(mem.io(`${tag}.msix-table`, l.tableSize, msix.tableOps(owner))), 1);
          overlays.push({ start: l.tableOffset, end: l.tableOffset + l.tableSize });
        }
        if (msix && msix.layout.pbaBar === i) {
          const l = msix.layout;
          container.addSubregion(l.pbaOffset, track(mem.io(`${tag}.msix-pba`, l.pbaSize, msix.pbaOps(owner))), 1);
          overlays.push({ start: l.pbaOffset, end: l.pbaOffset + l.pbaSize });
        }
        // Writes to the MSI-X table/PBA never reach the device's write, so an ioeventfd there
        // could not deliver anything.
        st.ioeventfds.forEach((e, k) => {
          for (const ov of overlays)
            if (e.offset < ov.end && ov.start < e.offset + e.size)
              throw new PciError("PCI_INVALID_SPEC", `bars[${i}].ioeventfds[${k}]: overlaps the MSI-X table/PBA`, { field: `bars[${i}].ioeventfds[${k}]` });
        });
        const windows = b?.shadow ?? [];
        for (let w = 0; w < windows.length; w++) {
          const win = windows[w];
          const field = `bars[${i}].shadow[${w}]`;
          if (!Number.isInteger(win.offset) || !Number.isInteger(win.size) || win.size <= 0 || win.offset < 0 || win.offset + win.size > d.size)
            throw new PciError("PCI_INVALID_SPEC", `${field}: window must lie inside the BAR (${d.size} bytes)`, { field });
          for (const ov of overlays)
            if (win.offset < ov.end && ov.start < win.offset + win.size) throw new PciError("PCI_INVALID_SPEC", `${field}: window overlaps another shadow window or the MSI-X table/PBA`, { field });
          overlays.push({ start: win.offset, end: win.offset + win.size });
          const shadow = {} as ShadowState;
          shadow.region = track(mem.romDevice(`${tag}.shadow${w}`, win.size, shadowOps(() => shadow.window, win.offset, d.ops!, owner)));
          const bytes = shadow.region.ramBytes();
          shadow.window = new ShadowWindowView(o.memory, bytes.byteOffset, win.size);
          st.shadows.push(shadow);
          container.addSubregion(win.offset, shadow.region, 1);
        }
        st.busAlias = track(mem.alias(`${tag}@bus`, container, 0, d.size));
        this.slots[i] = st;
      }
    });
    for (const b of this.slots) if (b) b.view = b.container.view();
  }

  /**
   * Mirrors the core's decoded BAR addresses and (re)maps each changed BAR's alias in the
   * bus containers (QEMU pci_update_mappings: unmap at the old address, map at the new one
   * with priority 1), all in one memory-core transaction.
   */
  refreshMappings(): void {
    let changed = false;
    const next: (bigint | undefined)[] = new Array(7);
    for (let i = 0; i < 7; i++) {
      if (!this.slots[i]) continue;
      const lo = this.x.pci_bar_address_lo(this.fnPtr, i) >>> 0;
      const hi = this.x.pci_bar_address_hi(this.fnPtr, i) >>> 0;
      next[i] = lo === 0xffffffff && hi === 0xffffffff ? undefined : (BigInt(hi) << 32n) | BigInt(lo);
      if (next[i] !== this.mapped[i]) changed = true;
    }
    if (!changed) return;
    this.mem.transaction(() => {
      for (let i = 0; i < 7; i++) {
        const b = this.slots[i];
        if (!b || next[i] === this.mapped[i]) continue;
        const root = b.kind === "io" ? this.busRoots.io : this.busRoots.memory;
        if (this.mapped[i] !== undefined) root.removeSubregion(b.busAlias);
        this.mapped[i] = next[i];
        if (next[i] !== undefined) root.addSubregion(next[i]!, b.busAlias, 1);
      }
    });
  }

  /** Re-decodes every BAR from config space (after a reset or a restore rewrote it). */
  updateMappings(): void {
    this.x.pci_update_mappings(this.fnPtr);
    this.refreshMappings();
  }

  address(index: number): bigint | undefined {
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
    const b = this.slots[index];
    const upper = index > 0 && this.slots[index - 1]?.kind === "mem64" ? index - 1 : undefined;
    if (!b) return { index, kind: index === PCI_ROM_REGION ? "rom" : "mem32", size: 0n, prefetchable: false, readable: false, writable: false, upperHalfOf: upper };
    return { index, kind: b.kind, size: BigInt(b.size), prefetchable: b.prefetchable, readable: true, writable: b.kind !== "rom", mmap: b.mmap };
  }

  checkRegion(b: BarState, offset: number, length: number): void {
    if (offset > b.size || length > b.size - offset)
      throw new PciError("PCI_REGION_RANGE", `region ${b.index}: ${length} bytes at 0x${offset.toString(16)} pass the end of the ${b.size}-byte region`, { region: b.index, offset, size: length });
  }

  /** Converts the memory core's failure into the PCI layer's error. */
  failed(b: BarState, offset: number, size: number, e: unknown): never {
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

  read(b: BarState, off: number, size: AccessSize): bigint {
    try {
      return size === 8 ? b.view.read64(off) : BigInt(b.view.read(off, size));
    } catch (e) {
      this.failed(b, off, size, e);
    }
  }

  write(b: BarState, off: number, size: AccessSize, value: bigint): void {
    try {
      b.view.write(off, size, size === 8 ? BigInt.asUintN(64, value) : Number(BigInt.asUintN(size * 8, value)));
    } catch (e) {
      this.failed(b, off, size, e);
    }
  }

  readBytes(b: BarState, off: number, dest: Uint8Array): void {
    this.checkRegion(b, off, dest.length);
    if (dest.length === 0) return;
    try {
      b.view.readBytes(off, dest);
    } catch (e) {
      this.failed(b, off, dest.length, e);
    }
  }

  writeBytes(b: BarState, off: number, src: Uint8Array): void {
    this.checkRegion(b, off, src.length);
    if (src.length === 0) return;
    try {
      b.view.writeBytes(off, src);
    } catch (e) {
      this.failed(b, off, src.length, e);
    }
  }

  /** BAR decode in the pci core: the slot decoding [address, address + size), or -1. */
  decode(space: "mem" | "io", address: bigint, size: number): number {
    if (typeof address !== "bigint" || address < 0n || address > 0xffffffffffffffffn) return -1;
    return this.x.pci_bar_decode(this.fnPtr, space === "io" ? 1 : 0, Number(address & 0xffffffffn), Number(address >> 32n), size);
  }

  /** The region offset of the last successful decode(). */
  decodedOffset(): number {
    return this.x.pci_decoded_offset_hi(this.fnPtr) * 2 ** 32 + (this.x.pci_decoded_offset_lo(this.fnPtr) >>> 0);
  }

  /** A BAR's RAM contents (fresh view each call: core memory may have grown). */
  private ramOf(b: BarState): Uint8Array | undefined {
    if (b.kind === "rom") return undefined;
    return b.externalRam ?? b.coreRam?.ramBytes();
  }

  /** Shadow windows read zero after a reset; the new mappings follow the reset config. */
  reset(): void {
    this.updateMappings();
    for (const b of this.slots) for (const s of b?.shadows ?? []) s.window.fill(0);
  }

  save(out: StateWriter): void {
    for (let i = 0; i < 6; i++) {
      const b = this.slots[i];
      out.blob((b && this.ramOf(b)) ?? new Uint8Array(0));
      const shadows = b?.shadows ?? [];
      out.blob(new Uint8Array([shadows.length]));
      for (const s of shadows) out.blob(s.window.bytes());
    }
  }

  /** Config space must be restored before the returned applier runs (it re-decodes BARs). */
  restore(input: StateReader): () => void {
    const barData: { ram: Uint8Array; shadows: Uint8Array[] }[] = [];
    for (let i = 0; i < 6; i++) {
      const b = this.slots[i];
      const ram = input.take(b ? (this.ramOf(b)?.length ?? 0) : 0);
      const shadowCount = input.take(1)[0];
      if (shadowCount !== (b?.shadows.length ?? 0)) input.fail(`BAR ${i} shadow window count differs`);
      const shadows: Uint8Array[] = [];
      for (let s = 0; s < shadowCount; s++) shadows.push(input.take(b!.shadows[s].window.size));
      barData.push({ ram, shadows });
    }
    return () => {
      for (let i = 0; i < 6; i++) {
        const b = this.slots[i];
        if (!b) continue;
        this.ramOf(b)?.set(barData[i].ram);
        barData[i].shadows.forEach((s, k) => b.shadows[k].window.set(s));
      }
      this.updateMappings();
    };
  }

  /** Unmaps and frees every region of the BARs and the function's own bus. */
  dispose(): void {
    this.mem.transaction(() => {
      for (let i = 0; i < 7; i++) {
        const b = this.slots[i];
        if (b && this.mapped[i] !== undefined) (b.kind === "io" ? this.busRoots.io : this.busRoots.memory).removeSubregion(b.busAlias);
        this.mapped[i] = undefined;
      }
    });
    for (const b of this.slots) {
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
  }
}
