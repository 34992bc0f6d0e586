// Public device-author and server-facing API of the PCI function model (issue #4).
//
// A device author describes a PCI function once (`PciFunctionSpec`) and gets back a
// `PciFunction` (src/core/pci/function.ts: `createPciFunction(spec)`) that the protocol
// servers serve: vfio-user (#6) by region index + offset, mpqemu (#8) by bus address.
// The library owns config-space bookkeeping — BAR sizing and decode, the command register,
// the capability chain, MSI/MSI-X state, INTx status — with QEMU's semantics
// (hw/pci/pci.c, hw/pci/msi.c, hw/pci/msix.c, hw/pci/pcie.c); masks and BAR decode run in
// the wasm core (assembly/pci).
//
// Address kinds: a *bus address* is what the guest programmed into a BAR (guest-physical
// for memory BARs, a port number for I/O BARs); a *region offset* is a byte offset inside
// one BAR (0 ≤ offset < size). 64-bit addresses are `bigint`. BAR sizes are at most 2^52
// bytes so region offsets are exact as `number` (a `bigint` is accepted everywhere too).
//
//   const fn = createPciFunction({
//     vendorId: 0x1234, deviceId: 0x11e8, classCode: 0x00ff00, interruptPin: 1,
//     bars: [{ kind: "mem32", size: 1 << 20, registers: {
//       read: (offset, size, ctx) => ...,            // 1/2/4-byte accesses: plain numbers
//       write: (offset, size, value, ctx) => { if (offset === 0x60) ctx.irq.notify(0); },
//       valid: { min: 4, max: 4 } } }],
//     capabilities: [{ kind: "msi", vectors: 1, address64: true }],
//     reset: (ctx) => { ... },
//   });
//   fn.writeConfig(0x10, 4, 0xfebf0000); fn.writeConfig(0x04, 2, 0x0002);
//   fn.busRead("mem", 0xfebf0000n, 4);   // → the device's read(0, 4)
import type { DmaApi } from "../dma/api.js";
import type { AccessConstraints, AccessSize, AddressSpace } from "../memory/api.js";
import type { PciError } from "./errors.js";
import type { DeviceClock } from "../clock.js";

// Access sizes and their constraints are the memory core's (one definition for both layers).
export type { AccessSize, AccessConstraints } from "../memory/api.js";

/**
 * What every device callback receives as its last argument: the function it belongs to, so
 * callbacks need not close over the factory's return value.
 */
export interface DeviceContext {
  /** Throws PCI_DEVICE_ERROR from a callback that outlived its garbage-collected function (a
   *  stray timer); `irq` then does nothing and `dma` is null, as after dispose(). */
  readonly fn: PciFunction;
  /** `fn.irq`. */
  readonly irq: PciInterrupts;
  /** `fn.dma`: the DMA API the server bound, or null (check before DMA). */
  readonly dma: DmaApi | null;
  /** Timers of the device (CreatePciFunctionOptions.clock; default: real time). */
  readonly clock: DeviceClock;
}

/**
 * Register callbacks of an MMIO or port-I/O BAR (BarSpec.registers), in one of two forms.
 * Offsets are region offsets; values are little-endian unsigned integers.
 * Callbacks run synchronously on the server's loop; long work should be deferred
 * (ctx.clock, promises) and completion reported through registers and interrupts.
 */
export type RegisterOps = NumberRegisterOps | ByteRegisterOps;

/**
 * Accesses of 1, 2 and 4 bytes carry plain numbers (no bigint on that path). 8-byte accesses
 * go to read64/write64 when given (then `impl.max` defaults to 8); without them `impl.max` is
 * at most 4 and the library splits 8-byte bus accesses into 4-byte calls (QEMU
 * access_with_adjusted_size). createPciFunction throws PCI_INVALID_SPEC for read64 without
 * write64 (or the reverse), `impl.max` 8 without them, or both this form and `access`.
 */
export interface NumberRegisterOps {
  /** Returns the value read; only the low `size` bytes are used. */
  read(offset: number, size: 1 | 2 | 4, ctx: DeviceContext): number;
  write(offset: number, size: 1 | 2 | 4, value: number, ctx: DeviceContext): void;
  read64?(offset: number, ctx: DeviceContext): bigint;
  write64?(offset: number, value: bigint, ctx: DeviceContext): void;
  /** Sizes the bus may issue (as RegionOps.valid). */
  valid?: AccessConstraints;
  /** Sizes the callbacks implement (default 1..4, or 1..8 with read64/write64). */
  impl?: AccessConstraints;
}

/**
 * One callback for both directions, byte-oriented, for register files: `bytes` holds the
 * access's bytes in bus (little-endian) order — filled by the callback on a read (it arrives
 * zeroed), the written data on a write. `bytes` is only valid during the call. Accesses the
 * region's `impl` allows arrive whole (default 1..8 bytes); others are split or widened.
 */
export interface ByteRegisterOps {
  access(offset: number, bytes: Uint8Array, isWrite: boolean, ctx: DeviceContext): void;
  valid?: AccessConstraints;
  impl?: AccessConstraints;
}

/**
 * Callbacks of an MMIO or port-I/O BAR in their original form (BarSpec.ops; BarSpec.registers
 * is the form to write new devices against). Values are `number` for sizes 1/2/4, `bigint`
 * for size 8. A read may return either type; only the low `size` bytes are used.
 */
export interface RegionOps {
  read(offset: number, size: AccessSize, ctx: DeviceContext): number | bigint;
  write(offset: number, size: AccessSize, value: number | bigint, ctx: DeviceContext): void;
  /** Sizes the bus may issue; any other access fails with PciError("PCI_ACCESS_INVALID")
   *  (QEMU: MEMTX_DECODE_ERROR; a read of it yields 0). */
  valid?: AccessConstraints;
  /** Sizes the callbacks implement (default 1..4); the library splits or widens the rest. */
  impl?: AccessConstraints;
}

/**
 * A range of a BAR whose reads are served from the core's memory without calling the device,
 * while writes still go to the device's write callback: a ROM device in ROMD mode in the
 * memory core (QEMU memory_region_init_rom_device), so a read never leaves wasm — not per
 * access, not in a replayed trace. Like QEMU's direct ROMD reads, reads of any size and alignment are served
 * (the BAR's `valid`/`impl` constraints apply to writes only). The device keeps the bytes
 * current through `PciFunction.shadowWindow(bar, window)` (e.g. mirrored status registers a
 * driver polls). Windows must lie inside the BAR and must not overlap each other or the MSI-X
 * table/PBA.
 */
export interface ShadowWindow {
  offset: number;
  size: number;
}

/**
 * A doorbell-style register a VMM may turn into an ioeventfd (vfio-user
 * DEVICE_GET_REGION_IO_FDS, KVM_IOEVENTFD): a guest write there signals an eventfd instead of
 * travelling over the socket. The library owns the eventfd, watches it on the event loop and
 * turns each wake-up into one write(offset, size, value) of the device — the same callback a
 * REGION_WRITE reaches, so the device has one write handler either way:
 * - with `datamatch`, only writes of exactly that value signal (KVM semantics); the device sees
 *   a write of `datamatch`. Signals that arrive before the loop runs are coalesced into one
 *   write, as QEMU's ioeventfd handlers coalesce them (event_notifier_test_and_clear).
 * - without `datamatch`, every write of `size` bytes signals and its value is lost; the device
 *   sees a write whose value is the eventfd counter: how many times the doorbell rang since the
 *   last delivery (≥ 1; a KVM ioeventfd adds 1 per guest write, a peer signalling the eventfd
 *   directly adds what it writes), saturated at the register's width.
 * Rules: inside a callback BAR, naturally aligned, a size the BAR's `valid` constraints accept,
 * outside the MSI-X table/PBA. Two sub-regions may share an (offset, size) only when both have
 * datamatch values and they differ (KVM's collision rule); partial overlaps are refused.
 */
export interface IoEventFdSpec {
  offset: number;
  size: AccessSize;
  /** Fits in `size` bytes. */
  datamatch?: number | bigint;
}

/** Most ioeventfds one BAR may declare (each is an fd in one vfio-user reply). */
export const PCI_MAX_IOEVENTFDS_PER_BAR = 32;

/** Kinds of base address registers. A `mem64` BAR occupies two BAR slots (index, index+1). */
export type BarKind = "io" | "mem32" | "mem64";

/**
 * One BAR. Exactly one of `registers` or `ops` (callback region) or `ram` (RAM-backed region)
 * is given.
 * Sizes are powers of two: I/O 4..256 bytes (PCI 3.0 §6.2.5.1), memory ≥ 16 bytes,
 * `mem32` ≤ 2 GiB, `mem64` ≤ 2^52.
 */
export interface BarSpec {
  kind: BarKind;
  size: number | bigint;
  /** Memory BARs only: the prefetchable bit (bit 3). */
  prefetchable?: boolean;
  /** Name for diagnostics and the lspci dump. */
  name?: string;
  /** Callback region (see RegisterOps). */
  registers?: RegisterOps;
  /** Callback region, original form (see RegionOps). */
  ops?: RegionOps;
  /**
   * RAM-backed region: reads and writes are served from memory with no callback. `true`
   * allocates zeroed memory; a `Uint8Array` of exactly `size` bytes supplies it (e.g. a view
   * of a memfd mapping — then give `fd`/`fdOffset` so a vfio-user server can offer the
   * region for mmap by the client).
   */
  ram?: true | { bytes: Uint8Array; fd?: number; fdOffset?: bigint };
  /** Callback regions only: shadow windows (see ShadowWindow). */
  shadow?: ShadowWindow[];
  /** Callback regions only: ioeventfd sub-regions (see IoEventFdSpec), at most
   *  PCI_MAX_IOEVENTFDS_PER_BAR. */
  ioeventfds?: IoEventFdSpec[];
}

/** Expansion ROM: read-only contents, size rounded up to a power of two ≥ 2 KiB. */
export interface RomSpec {
  bytes: Uint8Array;
  /** Size to decode (≥ bytes.length, power of two); default: smallest that fits. */
  size?: number;
}

/** PCI power management capability (id 0x01): D0/D3hot, PMCSR power state writable. */
export interface PmCapabilitySpec {
  kind: "pm";
  /** Config offset (dword aligned, ≥ 0x40); default: first free space. */
  offset?: number;
}

/** MSI capability (id 0x05), QEMU msi_init semantics. */
export interface MsiCapabilitySpec {
  kind: "msi";
  /** Vectors requested (1, 2, 4, 8, 16 or 32). */
  vectors: number;
  /** 64-bit message address (default true). */
  address64?: boolean;
  /** Per-vector mask and pending bits (default false). */
  perVectorMask?: boolean;
  offset?: number;
}

/**
 * MSI-X capability (id 0x11). The table (16 bytes per vector) and the PBA (one bit per
 * vector) live in memory BARs at the given offsets; the library serves them (QEMU
 * msix_init): accesses there never reach the BAR's own ops. Table and PBA may share a BAR
 * but must not overlap; offsets are 8-byte aligned (the BIR field's low 3 bits).
 */
export interface MsixCapabilitySpec {
  kind: "msix";
  /** 1..2048. */
  vectors: number;
  tableBar: number;
  tableOffset: number;
  pbaBar: number;
  pbaOffset: number;
  offset?: number;
}

/** PCI Express capability (id 0x10), version 2, 0x3c bytes (QEMU pcie_cap_init). */
export interface PcieCapabilitySpec {
  kind: "pcie";
  /** Device/port type: endpoint (0), legacy endpoint (1), root-complex integrated (9). */
  deviceType?: "endpoint" | "legacy-endpoint" | "rc-integrated";
  offset?: number;
}

/** Vendor-specific capability (id 0x09): the byte after `next` is the length, then `body`. */
export interface VendorCapabilitySpec {
  kind: "vendor";
  /** Capability payload after the 3-byte header (id, next, length); ≤ 253 bytes. */
  body: Uint8Array;
  offset?: number;
}

/** Any other capability, laid out by the author: `body` follows the 2-byte header. */
export interface RawCapabilitySpec {
  kind: "raw";
  id: number;
  body: Uint8Array;
  /** Per-byte write mask over `body` (default: read-only). */
  wmask?: Uint8Array;
  /** Per-byte write-1-to-clear mask over `body` (default none). */
  w1cmask?: Uint8Array;
  offset?: number;
}

export type CapabilitySpec =
  | PmCapabilitySpec
  | MsiCapabilitySpec
  | MsixCapabilitySpec
  | PcieCapabilitySpec
  | VendorCapabilitySpec
  | RawCapabilitySpec;

/**
 * An extended capability in the 4 KiB space (offsets ≥ 0x100): a 32-bit header (16-bit id,
 * 4-bit version, 12-bit next pointer) followed by `body`.
 */
export interface ExtendedCapabilitySpec {
  id: number;
  version?: number;
  body: Uint8Array;
  wmask?: Uint8Array;
  w1cmask?: Uint8Array;
  /** Dword aligned, ≥ 0x100; default: first free space (the first one lands at 0x100). */
  offset?: number;
}

/** What a device author declares. */
export interface PciFunctionSpec {
  /** Name for diagnostics (default "pci-function"). */
  name?: string;
  vendorId: number;
  deviceId: number;
  /** Default 0. (QEMU's own devices default to 0x1af4:0x1100.) */
  subsystemVendorId?: number;
  subsystemId?: number;
  revision?: number;
  /** 24-bit class code: base class << 16 | subclass << 8 | programming interface. */
  classCode: number;
  /** 0 = none, 1..4 = INTA#..INTD# (default 0). */
  interruptPin?: 0 | 1 | 2 | 3 | 4;
  /** 256 (conventional) or 4096 (extended). Default: 4096 when a PCIe or extended
   *  capability is declared, 256 otherwise. */
  configSize?: 256 | 4096;
  /** Up to six BARs; the array index is the BAR number; a `mem64` BAR also uses index+1. */
  bars?: (BarSpec | undefined)[];
  rom?: RomSpec;
  capabilities?: CapabilitySpec[];
  extendedCapabilities?: ExtendedCapabilitySpec[];
  /** Device reset (after the library reset config space, BAR mappings and interrupts). */
  reset?(ctx: DeviceContext): void;
  /** Called once by PciFunction.dispose(): stop timers, release resources. */
  dispose?(ctx: DeviceContext): void;
  /**
   * Called after the library applied a config write (masks, BAR remap, MSI/MSI-X state),
   * once per register-contained piece — QEMU devices' config_write after
   * pci_default_write_config.
   */
  configWrite?(offset: number, size: 1 | 2 | 4, value: number, ctx: DeviceContext): void;
  /** May replace the value of a config read (offset/size as in configWrite). */
  configRead?(offset: number, size: 1 | 2 | 4, value: number, ctx: DeviceContext): number;
  /** Device state for migration, opaque to the library. */
  saveState?(ctx: DeviceContext): Uint8Array;
  /** Restores what saveState returned; throw PciError("PCI_STATE_FORMAT") on bad input. */
  restoreState?(state: Uint8Array, ctx: DeviceContext): void;
}

/**
 * What every device factory of this package returns (createEdu, createThroughputDevice,
 * createNvme): the function to serve, plus device-specific extras.
 */
export interface PciDevice {
  readonly fn: PciFunction;
}

/** An MSI / MSI-X message as the function would write it on the bus. */
export interface MsiMessage {
  address: bigint;
  data: number;
}

export type VectorKind = "msi" | "msix";

/**
 * Where interrupts go; provided by the server (#6: eventfd per vector; #8: irqfd for INTx).
 * Calls are synchronous and must not throw.
 */
export interface InterruptSink {
  /** The effective INTx level changed (pin asserted and not disabled by the command
   *  register's INTx-disable bit). Called only on a change. */
  intx(asserted: boolean): void;
  /** An unmasked MSI / MSI-X vector fired. `message` is composed from config space / the
   *  MSI-X table (QEMU msi_get_message / msix_get_message). */
  vector(kind: VectorKind, vector: number, message: MsiMessage): void;
}

/**
 * Who applies MSI/MSI-X enable and mask state.
 * - "device" (default): the function's own config space and MSI-X table decide; masked
 *   vectors set pending bits and fire on unmask. Right when the VMM forwards config and
 *   table accesses verbatim (mpqemu, a local VMM).
 * - "peer": the VMM emulates MSI/MSI-X itself and masks at its end (vfio-user clients such as
 *   QEMU's vfio-user-pci emulate the MSI-X table). The server calls
 *   `setPeerInterrupts(kind, count)` on SET_IRQS; vectors then go to the sink unmasked.
 */
export type InterruptDelivery = "device" | "peer";

/** Device-facing interrupt controls (`PciFunction.irq`). */
export interface PciInterrupts {
  /** Sets the INTx pin's level (level-triggered; QEMU pci_set_irq). No-op without a pin. */
  setIntx(level: boolean): void;
  /** Whether MSI is enabled (config space, or the peer in "peer" delivery). */
  readonly msiEnabled: boolean;
  /** Whether MSI-X is enabled. */
  readonly msixEnabled: boolean;
  /** Fires MSI vector `vector` (QEMU msi_notify): masked → pending bit set. */
  notifyMsi(vector: number): void;
  /** Fires MSI-X vector `vector` (QEMU msix_notify): masked → PBA bit set. */
  notifyMsix(vector: number): void;
  /**
   * Fires `vector` on whichever of MSI-X / MSI is enabled. Returns false when neither is,
   * so the caller can fall back to INTx (which needs level semantics: setIntx).
   */
  notify(vector: number): boolean;
  /** The device-side INTx level (before the INTx-disable bit) — what an mpqemu resample
   *  re-raises while it stays true. */
  readonly intxLevel: boolean;
}

/** Region description for servers (vfio-user DEVICE_GET_REGION_INFO). */
export interface PciRegionInfo {
  /** 0..5 = BARs, 6 = expansion ROM (vfio's region numbering). */
  index: number;
  kind: BarKind | "rom";
  size: bigint;
  prefetchable: boolean;
  readable: boolean;
  writable: boolean;
  /** RAM-backed BARs that a client may mmap: the fd and offset to offer. */
  mmap?: { fd: number; offset: bigint };
  /** Index of the BAR whose upper dword this slot is (64-bit BARs), else undefined. */
  upperHalfOf?: number;
}

/** A live ioeventfd of a BAR, for servers (vfio-user DEVICE_GET_REGION_IO_FDS). */
/** An eventfd as the function uses one: the OS object lives in the host layer (src/host). */
export interface FunctionEventFd {
  readonly fd: number;
  /** Watches the fd; the callback gets the counter read (and reset) on each wake-up. */
  onReadable(callback: ((count: number) => void) | null): void;
  /** Reads and resets the counter without blocking (0 when nothing is pending). */
  read(): number;
  close(): void;
}

/** Where a function's ioeventfds come from (servers pass src/host's hostEventFds). */
export interface EventFdSource {
  create(): FunctionEventFd;
}

export interface PciIoEventFd {
  /** Region index (BAR number). */
  region: number;
  offset: number;
  size: AccessSize;
  datamatch?: bigint;
  /** "io" for I/O BARs (the ioeventfd's PIO flag), else "mem". */
  space: "mem" | "io";
  /** The eventfd, owned by the function: send copies, never close it. */
  fd: number;
}

/** Interrupt counts for servers (vfio-user DEVICE_GET_IRQ_INFO). */
export interface PciInterruptInfo {
  intx: boolean;
  msiVectors: number;
  msixVectors: number;
}

/** BAR index of the expansion ROM in region numbering. */
export const PCI_ROM_REGION = 6;

/** The object servers serve. All methods throw PciError on invalid arguments. */
export interface PciFunction {
  readonly name: string;
  readonly configSize: 256 | 4096;

  /** Config read of 1, 2 or 4 bytes that does not cross a dword boundary (the PCI rule).
   *  Throws PCI_CONFIG_RANGE / PCI_CONFIG_ALIGN. */
  readConfig(offset: number, size: 1 | 2 | 4): number;
  /** Config write; applies wmask / w1cmask, remaps BARs, updates MSI/MSI-X/INTx state. */
  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void;
  /** Config read of any length at any offset (vfio-user config region): split into
   *  dword-contained pieces, each going through readConfig. */
  readConfigBytes(offset: number, dest: Uint8Array): void;
  writeConfigBytes(offset: number, src: Uint8Array): void;
  /** A copy of the raw config bytes (no read hooks), e.g. for the lspci dump. */
  configSnapshot(): Uint8Array;

  /** Regions 0..6 (absent BARs have size 0n). */
  regionInfo(index: number): PciRegionInfo;
  readonly interruptInfo: PciInterruptInfo;

  /** Access by region index + offset (vfio-user REGION_READ/WRITE): `size` bytes, split
   *  and checked exactly as a bus access of that size (QEMU address_space_rw over the BAR).
   *  Throws PCI_REGION_RANGE past the region end, PCI_REGION_INDEX for an absent region,
   *  PCI_ACCESS_INVALID when a piece violates the region's `valid` constraints (a write is
   *  then applied to the other pieces, as in QEMU). */
  readRegion(index: number, offset: number | bigint, size: AccessSize): bigint;
  writeRegion(index: number, offset: number | bigint, size: AccessSize, value: bigint): void;
  /** Any length: split like QEMU's memory_access_size (largest naturally aligned piece the
   *  region accepts). */
  readRegionBytes(index: number, offset: number | bigint, dest: Uint8Array): void;
  writeRegionBytes(index: number, offset: number | bigint, src: Uint8Array): void;

  /**
   * Access by bus address (mpqemu BAR_READ/BAR_WRITE): decoded against the BARs as the guest
   * programmed them and as the command register enables them. Returns undefined (read) /
   * false (write) when no BAR decodes the whole access; throws PCI_ACCESS_INVALID as
   * readRegion does.
   */
  busRead(space: "mem" | "io", address: bigint, size: AccessSize): bigint | undefined;
  busWrite(space: "mem" | "io", address: bigint, size: AccessSize, value: bigint): boolean;
  /** Current decoded bus address of a region, or undefined while unmapped. */
  barAddress(index: number): bigint | undefined;
  /**
   * The memory-core address space of the bus the BARs are mapped into (the function's own
   * bus unless CreatePciFunctionOptions.bus was given): enabled BARs appear at their
   * programmed addresses, as QEMU's pci_update_mappings places them.
   */
  busAddressSpace(space: "mem" | "io"): AddressSpace;

  /**
   * Device-side accessor of shadow window `window` (default 0) of BAR `bar`, to keep for the
   * function's life: offset 0 is the window's first byte, multi-byte values are little-endian,
   * and writing it is all it takes to update what the guest reads (the bytes are the core's
   * linear memory, which guest reads are served from). It stays valid when linear memory
   * grows. Accesses outside the window throw RangeError. Throws PCI_REGION_INDEX when the
   * window does not exist.
   */
  shadowWindow(bar: number, window?: number): ShadowWindowAccess;
  /**
   * A Uint8Array view of the same bytes, valid only until linear memory grows (any call that
   * allocates in the core — creating functions or regions, BAR remaps, bulk accesses, possibly
   * by another function sharing the core — detaches it). Prefer shadowWindow().
   */
  shadow(bar: number, window?: number): Uint8Array;

  /** Function-level reset: config space to its declared state (BARs zero, command 0,
   *  MSI/MSI-X disabled, INTx deasserted), then the spec's reset hook. ioeventfds stay open:
   *  the VMM registered them and keeps using them across a reset, as with a VFIO device. */
  reset(): void;

  /**
   * The ioeventfds of region `index` (declared with BarSpec.ioeventfds; [] for BARs without
   * any, the ROM and absent upper halves of 64-bit BARs). The eventfds are made by `source` (the
   * server's: src/host hostEventFds) on the first call and watched until releaseIoEventFds() or
   * dispose(); later calls return the same fds. Throws PCI_REGION_INDEX for a region that does not exist, PCI_RESOURCE when an
   * eventfd cannot be created (none of the region's fds are left half-made).
   */
  ioEventFds(index: number, source: EventFdSource): readonly PciIoEventFd[];
  /**
   * Closes every ioeventfd, after delivering signals still pending in them; the next
   * ioEventFds() call creates fresh ones. Servers call it when their client goes away, so a
   * departed VMM's copies of the fds no longer reach the device.
   */
  releaseIoEventFds(): void;
  /**
   * Where failures of ioeventfd deliveries go (the device's write threw, or the access was
   * refused): they happen on the event loop with no request to answer. A server reports them
   * like a failed posted write. Without a handler they become process warnings.
   */
  setIoEventFdErrorHandler(handler: ((error: PciError) => void) | null): void;

  readonly irq: PciInterrupts;
  /** Connects (or with null, disconnects) the interrupt sink. A newly attached sink is told
   *  the current INTx level if asserted. */
  attachInterruptSink(sink: InterruptSink | null, delivery?: InterruptDelivery): void;
  /** "peer" delivery only: the VMM enabled `count` vectors of `kind` (0 = disabled). */
  setPeerInterrupts(kind: VectorKind | "intx", count: number): void;

  /** The DMA API the server bound (#5), or null. Devices check before DMA. */
  readonly dma: DmaApi | null;
  attachDma(dma: DmaApi | null): void;

  /** Serialises config space, interrupt state, RAM/shadow contents and the device's own
   *  state (spec.saveState) for migration. */
  saveState(): Uint8Array;
  /** Loads saveState output from a function built from the same spec. Throws
   *  PCI_STATE_FORMAT on a mismatch; the function is unchanged in that case. */
  restoreState(state: Uint8Array): void;

  /** Unmaps and frees the function's regions and tables in the core. Idempotent; region and
   *  bus accesses afterwards fail / decode nothing. A function garbage-collected without it
   *  is released then (spec.dispose included), at a time the collector picks. */
  dispose(): void;
}

/** A shadow window's bytes (PciFunction.shadowWindow): little-endian, bounds-checked. */
export interface ShadowWindowAccess {
  readonly size: number;
  getUint8(offset: number): number;
  getUint16(offset: number): number;
  getUint32(offset: number): number;
  getBigUint64(offset: number): bigint;
  setUint8(offset: number, value: number): void;
  setUint16(offset: number, value: number): void;
  setUint32(offset: number, value: number): void;
  setBigUint64(offset: number, value: bigint): void;
  set(src: ArrayLike<number>, offset?: number): void;
  fill(value: number, start?: number, end?: number): void;
  /** A view of the bytes, valid until linear memory next grows. */
  bytes(): Uint8Array;
}

/** Stable error codes of the PCI layer. */
export type PciErrorCode =
  | "PCI_INVALID_SPEC" // the declaration is inconsistent (message says which field)
  | "PCI_CONFIG_RANGE" // config offset/length outside the config space
  | "PCI_CONFIG_ALIGN" // config access crosses a dword or has a bad size
  | "PCI_REGION_INDEX" // no such region / region absent
  | "PCI_REGION_RANGE" // offset + size past the region end (or wrapping)
  | "PCI_ACCESS_SIZE" // size not 1/2/4/8
  | "PCI_ACCESS_INVALID" // the region's `valid` constraints reject the access
  | "PCI_DEVICE_ERROR" // the device's callback threw (the error is the cause)
  | "PCI_STATE_FORMAT" // saved state does not match this function
  | "PCI_NO_DMA" // device tried DMA with no DMA API attached
  | "PCI_RESOURCE"; // the OS refused a resource (an eventfd); the cause says why
