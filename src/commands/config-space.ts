// `lspci -vv`-style text for any PCI configuration space: the decoded header, BARs with types,
// addresses and (when the caller knows them) sizes, the capability chain and the extended
// capability chain. Pure: bytes in, text out. Hostile bytes are fine — broken or looping
// chains and truncated spaces are reported in the text, never thrown.
//
//   formatConfigSpace(config, { address: "00:04.0", barSizes: [1n << 20n] })
//   describeFunction(fn)  // a local PciFunction: its snapshot and region sizes
import type { PciFunction } from "../core/pci/api.js";
import * as R from "../core/pci/regs.js";

export interface ConfigDumpOptions {
  /** Bus address shown at the start of the first line (default "00:00.0"). */
  address?: string;
  /** Sizes of BARs 0..5 and the ROM (index 6), as found by sizing; undefined = unknown. */
  barSizes?: readonly (bigint | number | undefined)[];
  /** Vendor and device names (e.g. a pci.ids file, see pci-ids.ts); without them ids are numeric. */
  names?: PciNames;
}

/** Looks up names by id; undefined where unknown. */
export interface PciNames {
  vendor(vendor: number): string | undefined;
  device(vendor: number, device: number): string | undefined;
  subsystem(vendor: number, device: number, subVendor: number, subDevice: number): string | undefined;
}

/**
 * "Intel Corporation 82540EM Gigabit Ethernet Controller [8086:100e]" with names (lspci -nn),
 * "Device 8086:100e" without.
 */
function deviceText(names: PciNames | undefined, vendor: number, device: number, fullName?: string): string {
  const ids = `${hex(vendor, 4)}:${hex(device, 4)}`;
  const vendorName = names?.vendor(vendor);
  if (vendorName === undefined) return `Device ${ids}`;
  return `${vendorName} ${fullName ?? `Device ${hex(device, 4)}`} [${ids}]`;
}

const CLASS_NAMES: Record<number, string> = {
  0x00: "Unclassified device",
  0x01: "Mass storage controller",
  0x02: "Network controller",
  0x03: "Display controller",
  0x04: "Multimedia controller",
  0x05: "Memory controller",
  0x06: "Bridge",
  0x07: "Communication controller",
  0x08: "Generic system peripheral",
  0x09: "Input device controller",
  0x0a: "Docking station",
  0x0b: "Processor",
  0x0c: "Serial bus controller",
  0x0d: "Wireless controller",
  0x0e: "Intelligent controller",
  0x0f: "Satellite communications controller",
  0x10: "Encryption controller",
  0x11: "Signal processing controller",
  0x12: "Processing accelerators",
  0x13: "Non-Essential Instrumentation",
  0xff: "Unassigned class",
};

const SUBCLASS_NAMES: Record<number, string> = {
  0x0100: "SCSI storage controller",
  0x0101: "IDE interface",
  0x0106: "SATA controller",
  0x0108: "Non-Volatile memory controller",
  0x0200: "Ethernet controller",
  0x0300: "VGA compatible controller",
  0x0403: "Audio device",
  0x0600: "Host bridge",
  0x0601: "ISA bridge",
  0x0604: "PCI bridge",
  0x0700: "Serial controller",
  0x0880: "System peripheral",
  0x0c03: "USB controller",
  0x0c05: "SMBus",
};

const EXT_CAP_NAMES: Record<number, string> = {
  0x01: "Advanced Error Reporting",
  0x02: "Virtual Channel",
  0x03: "Device Serial Number",
  0x04: "Power Budgeting",
  0x0b: "Vendor Specific Information",
  0x0d: "Access Control Services",
  0x0e: "Alternative Routing-ID Interpretation (ARI)",
  0x0f: "Address Translation Service (ATS)",
  0x10: "Single Root I/O Virtualization (SR-IOV)",
  0x15: "Physical Resizable BAR",
  0x18: "Latency Tolerance Reporting",
  0x19: "Secondary PCI Express",
  0x1b: "Process Address Space ID (PASID)",
  0x1e: "L1 PM Substates",
  0x23: "Designated Vendor-Specific",
};

const PCIE_TYPES: Record<number, string> = {
  0: "Endpoint",
  1: "Legacy Endpoint",
  4: "Root Port (Slot-)",
  5: "Upstream Port",
  6: "Downstream Port (Slot-)",
  7: "PCI-Express to PCI/PCI-X Bridge",
  8: "PCI/PCI-X to PCI-Express Bridge",
  9: "Root Complex Integrated Endpoint",
  10: "Root Complex Event Collector",
};

const hex = (v: number | bigint, width: number) => v.toString(16).padStart(width, "0");
const pm = (name: string, on: unknown) => `${name}${on ? "+" : "-"}`;

/** lspci's size notation: 1M, 4K, 256. */
export function formatBarSize(size: bigint): string {
  for (const [shift, unit] of [[60n, "E"], [50n, "P"], [40n, "T"], [30n, "G"], [20n, "M"], [10n, "K"]] as const) {
    const u = 1n << shift;
    if (size >= u && size % u === 0n) return `${size / u}${unit}`;
  }
  return size.toString();
}

/** Bounds-checked little-endian reads over possibly short config bytes. */
class Cfg {
  constructor(readonly b: Uint8Array) {}
  has(at: number, n: number) {
    return at >= 0 && at + n <= this.b.length;
  }
  u8(at: number) {
    return this.has(at, 1) ? this.b[at] : 0;
  }
  u16(at: number) {
    return this.u8(at) | (this.u8(at + 1) << 8);
  }
  u32(at: number) {
    return (this.u16(at) | (this.u16(at + 2) << 16)) >>> 0;
  }
}

/** Formats config-space bytes (256 or 4096; shorter is tolerated) lspci -vv style. */
export function formatConfigSpace(config: Uint8Array, options: ConfigDumpOptions = {}): string {
  const c = new Cfg(config);
  const out: string[] = [];
  const address = options.address ?? "00:00.0";
  const sizes = options.barSizes ?? [];
  if (config.length < R.PCI_CONFIG_HEADER_SIZE) {
    out.push(`${address} <config space truncated: ${config.length} bytes, the header needs 64>`);
    return out.join("\n");
  }
  const vendor = c.u16(R.PCI_VENDOR_ID);
  const device = c.u16(R.PCI_DEVICE_ID);
  if (vendor === 0xffff) {
    out.push(`${address} <no device: vendor id ffff>`);
    return out.join("\n");
  }
  const classWord = c.u16(R.PCI_CLASS_DEVICE);
  const progIf = c.u8(R.PCI_CLASS_PROG);
  const rev = c.u8(R.PCI_REVISION_ID);
  const className = SUBCLASS_NAMES[classWord] ?? CLASS_NAMES[classWord >> 8] ?? `Class ${hex(classWord, 4)}`;
  const names = options.names;
  let first = `${address} ${className} [${hex(classWord, 4)}]: ${deviceText(names, vendor, device, names?.device(vendor, device))}`;
  if (rev) first += ` (rev ${hex(rev, 2)})`;
  if (progIf) first += ` (prog-if ${hex(progIf, 2)})`;
  out.push(first);

  const headerType = c.u8(R.PCI_HEADER_TYPE) & 0x7f;
  if (headerType === 0) {
    const sv = c.u16(R.PCI_SUBSYSTEM_VENDOR_ID);
    const sd = c.u16(R.PCI_SUBSYSTEM_ID);
    out.push(`\tSubsystem: ${deviceText(names, sv, sd, names?.subsystem(vendor, device, sv, sd))}`);
  }
  const cmd = c.u16(R.PCI_COMMAND);
  const st = c.u16(R.PCI_STATUS);
  out.push(
    `\tControl: ${pm("I/O", cmd & R.PCI_COMMAND_IO)} ${pm("Mem", cmd & R.PCI_COMMAND_MEMORY)} ${pm("BusMaster", cmd & R.PCI_COMMAND_MASTER)} ` +
      `${pm("SpecCycle", cmd & R.PCI_COMMAND_SPECIAL)} ${pm("MemWINV", cmd & R.PCI_COMMAND_INVALIDATE)} ${pm("VGASnoop", cmd & R.PCI_COMMAND_VGA_PALETTE)} ` +
      `${pm("ParErr", cmd & R.PCI_COMMAND_PARITY)} ${pm("Stepping", cmd & R.PCI_COMMAND_WAIT)} ${pm("SERR", cmd & R.PCI_COMMAND_SERR)} ` +
      `${pm("FastB2B", cmd & R.PCI_COMMAND_FAST_BACK)} ${pm("DisINTx", cmd & R.PCI_COMMAND_INTX_DISABLE)}`,
  );
  const devsel = ["fast", "medium", "slow", "??"][(st & R.PCI_STATUS_DEVSEL_MASK) >> 9];
  out.push(
    `\tStatus: ${pm("Cap", st & R.PCI_STATUS_CAP_LIST)} ${pm("66MHz", st & R.PCI_STATUS_66MHZ)} ${pm("UDF", st & 0x40)} ${pm("FastB2B", st & R.PCI_STATUS_FAST_BACK)} ` +
      `${pm("ParErr", st & R.PCI_STATUS_PARITY)} DEVSEL=${devsel} ${pm(">TAbort", st & R.PCI_STATUS_SIG_TARGET_ABORT)} ${pm("<TAbort", st & R.PCI_STATUS_REC_TARGET_ABORT)} ` +
      `${pm("<MAbort", st & R.PCI_STATUS_REC_MASTER_ABORT)} ${pm(">SERR", st & R.PCI_STATUS_SIG_SYSTEM_ERROR)} ${pm("<PERR", st & R.PCI_STATUS_DETECTED_PARITY)} ${pm("INTx", st & R.PCI_STATUS_INTERRUPT)}`,
  );
  if (cmd & R.PCI_COMMAND_MASTER) {
    let lat = `\tLatency: ${c.u8(R.PCI_LATENCY_TIMER)}`;
    const cls = c.u8(R.PCI_CACHE_LINE_SIZE);
    if (cls) lat += `, Cache Line Size: ${cls * 4} bytes`;
    out.push(lat);
  }
  const pin = c.u8(R.PCI_INTERRUPT_PIN);
  if (pin) out.push(`\tInterrupt: pin ${pin <= 4 ? "?ABCD"[pin] : `?${pin}`} routed to IRQ ${c.u8(R.PCI_INTERRUPT_LINE)}`);

  if (headerType !== 0) {
    out.push(`\tHeader type ${hex(headerType, 2)} is not decoded beyond the common header`);
  } else {
    formatBars(c, cmd, sizes, out);
  }
  if (st & R.PCI_STATUS_CAP_LIST) formatCapabilities(c, out);
  if (config.length > R.PCI_CONFIG_SPACE_SIZE) formatExtendedCapabilities(c, out);
  return out.join("\n");
}

function sizeOf(sizes: readonly (bigint | number | undefined)[], i: number): bigint | undefined {
  const s = sizes[i];
  if (s === undefined) return undefined;
  const v = BigInt(s);
  return v > 0n ? v : undefined;
}

function formatBars(c: Cfg, cmd: number, sizes: readonly (bigint | number | undefined)[], out: string[]): void {
  for (let i = 0; i < 6; i++) {
    const reg = R.PCI_BASE_ADDRESS_0 + 4 * i;
    const raw = c.u32(reg);
    const size = sizeOf(sizes, i);
    if (raw === 0 && size === undefined) continue;
    const sizeText = size !== undefined ? ` [size=${formatBarSize(size)}]` : "";
    if (raw & R.PCI_BASE_ADDRESS_SPACE_IO) {
      const base = raw & ~3;
      const disabled = !(cmd & R.PCI_COMMAND_IO);
      out.push(`\tRegion ${i}: I/O ports at ${base ? hex(base >>> 0, 4) : "<unassigned>"}${disabled ? " [disabled]" : ""}${sizeText}`);
      continue;
    }
    const type = (raw >> 1) & 3;
    const prefetch = (raw & R.PCI_BASE_ADDRESS_MEM_PREFETCH) !== 0;
    let base = BigInt(raw & ~0xf) & 0xffffffffn;
    let bits = "32-bit";
    if (type === 2) {
      bits = "64-bit";
      if (i === 5) {
        out.push(`\tRegion ${i}: <invalid 64-bit BAR in the last slot>`);
        continue;
      }
      base |= BigInt(c.u32(reg + 4)) << 32n;
    } else if (type === 1) bits = "low-1M";
    else if (type === 3) bits = "type 3";
    const disabled = !(cmd & R.PCI_COMMAND_MEMORY);
    out.push(
      `\tRegion ${i}: Memory at ${base ? hex(base, 8) : "<unassigned>"} (${bits}, ${prefetch ? "prefetchable" : "non-prefetchable"})${disabled ? " [disabled]" : ""}${sizeText}`,
    );
    if (type === 2) i++; // the upper half is not a BAR of its own
  }
  const rom = c.u32(R.PCI_ROM_ADDRESS);
  const romSize = sizeOf(sizes, 6);
  if (rom !== 0 || romSize !== undefined) {
    const base = (rom & ~0x7ff) >>> 0;
    const disabled = !(rom & R.PCI_ROM_ADDRESS_ENABLE) || !(cmd & R.PCI_COMMAND_MEMORY);
    out.push(`\tExpansion ROM at ${base ? hex(base, 8) : "<unassigned>"}${disabled ? " [disabled]" : ""}${romSize !== undefined ? ` [size=${formatBarSize(romSize)}]` : ""}`);
  }
}

function formatCapabilities(c: Cfg, out: string[]): void {
  const seen = new Set<number>();
  let where = c.u8(R.PCI_CAPABILITY_LIST) & ~3;
  while (where) {
    if (where < R.PCI_CONFIG_HEADER_SIZE || !c.has(where, 2)) {
      out.push(`\tCapabilities: [${hex(where, 2)}] <chain broken>`);
      return;
    }
    if (seen.has(where)) {
      out.push(`\tCapabilities: [${hex(where, 2)}] <chain looped>`);
      return;
    }
    seen.add(where);
    const id = c.u8(where);
    const next = c.u8(where + 1) & ~3;
    const head = `\tCapabilities: [${hex(where, 2)}] `;
    switch (id) {
      case R.PCI_CAP_ID_PM: {
        const pmc = c.u16(where + R.PCI_PM_PMC);
        const pmcsr = c.u16(where + R.PCI_PM_CTRL);
        const aux = [0, 55, 100, 160, 220, 270, 320, 375][(pmc >> 6) & 7];
        const pme = (pmc >> 11) & 0x1f;
        out.push(`${head}Power Management version ${pmc & 7}`);
        out.push(
          `\t\tFlags: ${pm("PMEClk", pmc & 0x8)} ${pm("DSI", pmc & 0x20)} ${pm("D1", pmc & 0x200)} ${pm("D2", pmc & 0x400)} AuxCurrent=${aux}mA ` +
            `PME(${pm("D0", pme & 1)},${pm("D1", pme & 2)},${pm("D2", pme & 4)},${pm("D3hot", pme & 8)},${pm("D3cold", pme & 16)})`,
        );
        out.push(
          `\t\tStatus: D${pmcsr & 3} ${pm("NoSoftRst", pmcsr & R.PCI_PM_CTRL_NO_SOFT_RESET)} ${pm("PME-Enable", pmcsr & 0x100)} DSel=${(pmcsr >> 9) & 0xf} DScale=${(pmcsr >> 13) & 3} ${pm("PME", pmcsr & 0x8000)}`,
        );
        break;
      }
      case R.PCI_CAP_ID_MSI: {
        const flags = c.u16(where + R.PCI_MSI_FLAGS);
        const is64 = (flags & R.PCI_MSI_FLAGS_64BIT) !== 0;
        const maskable = (flags & R.PCI_MSI_FLAGS_MASKBIT) !== 0;
        out.push(
          `${head}MSI: ${pm("Enable", flags & R.PCI_MSI_FLAGS_ENABLE)} Count=${1 << ((flags & R.PCI_MSI_FLAGS_QSIZE) >> 4)}/${1 << ((flags & R.PCI_MSI_FLAGS_QMASK) >> 1)} ${pm("Maskable", maskable)} ${pm("64bit", is64)}`,
        );
        const lo = c.u32(where + R.PCI_MSI_ADDRESS_LO);
        if (is64) {
          const hi = c.u32(where + R.PCI_MSI_ADDRESS_HI);
          out.push(`\t\tAddress: ${hex(hi, 8)}${hex(lo, 8)}  Data: ${hex(c.u16(where + 12), 4)}`);
        } else {
          out.push(`\t\tAddress: ${hex(lo, 8)}  Data: ${hex(c.u16(where + 8), 4)}`);
        }
        if (maskable) {
          const m = where + (is64 ? 0x10 : 0x0c);
          out.push(`\t\tMasking: ${hex(c.u32(m), 8)}  Pending: ${hex(c.u32(m + 4), 8)}`);
        }
        break;
      }
      case R.PCI_CAP_ID_MSIX: {
        const flags = c.u16(where + R.PCI_MSIX_FLAGS);
        const table = c.u32(where + R.PCI_MSIX_TABLE);
        const pba = c.u32(where + R.PCI_MSIX_PBA);
        out.push(`${head}MSI-X: ${pm("Enable", flags & R.PCI_MSIX_FLAGS_ENABLE)} Count=${(flags & R.PCI_MSIX_FLAGS_QSIZE) + 1} ${pm("Masked", flags & R.PCI_MSIX_FLAGS_MASKALL)}`);
        out.push(`\t\tVector table: BAR=${table & 7} offset=${hex((table & ~7) >>> 0, 8)}`);
        out.push(`\t\tPBA: BAR=${pba & 7} offset=${hex((pba & ~7) >>> 0, 8)}`);
        break;
      }
      case R.PCI_CAP_ID_EXP:
        formatPcie(c, where, head, out);
        break;
      case R.PCI_CAP_ID_VNDR:
        out.push(`${head}Vendor Specific Information: Len=${hex(c.u8(where + 2), 2)} <?>`);
        break;
      case R.PCI_CAP_ID_SSVID:
        out.push(`${head}Subsystem: Device ${hex(c.u16(where + 4), 4)}:${hex(c.u16(where + 6), 4)}`);
        break;
      default: {
        const names: Record<number, string> = { 2: "AGP", 3: "Vital Product Data", 7: "PCI-X", 8: "HyperTransport", 0x0a: "Debug port", 0x12: "SATA HBA", 0x13: "PCI Advanced Features" };
        out.push(`${head}${names[id] ?? `#${hex(id, 2)}`}${names[id] ? " <?>" : ` [${hex(c.u16(where + 2), 4)}]`}`);
      }
    }
    where = next;
  }
}

function formatPcie(c: Cfg, where: number, head: string, out: string[]): void {
  const flags = c.u16(where + R.PCI_EXP_FLAGS);
  const type = (flags >> 4) & 0xf;
  out.push(`${head}Express (v${flags & 0xf}) ${PCIE_TYPES[type] ?? `Unknown type ${type}`}, MSI ${hex((flags >> 9) & 0x1f, 2)}`);
  if (!c.has(where, 0x14)) {
    out.push("\t\t<truncated>");
    return;
  }
  const devcap = c.u32(where + R.PCI_EXP_DEVCAP);
  const devctl = c.u16(where + R.PCI_EXP_DEVCTL);
  const devsta = c.u16(where + R.PCI_EXP_DEVSTA);
  out.push(`\t\tDevCap:\tMaxPayload ${128 << (devcap & 7)} bytes, PhantFunc ${(devcap >> 3) & 3}, ${pm("ExtTag", devcap & 0x20)} ${pm("RBE", devcap & R.PCI_EXP_DEVCAP_RBER)} ${pm("FLReset", devcap & 0x10000000)}`);
  out.push(`\t\tDevCtl:\t${pm("CorrErr", devctl & 1)} ${pm("NonFatalErr", devctl & 2)} ${pm("FatalErr", devctl & 4)} ${pm("UnsupReq", devctl & 8)}`);
  out.push(`\t\t\t${pm("RlxdOrd", devctl & 0x10)} ${pm("ExtTag", devctl & 0x100)} ${pm("NoSnoop", devctl & 0x800)}`);
  out.push(`\t\t\tMaxPayload ${128 << ((devctl >> 5) & 7)} bytes, MaxReadReq ${128 << ((devctl >> 12) & 7)} bytes`);
  out.push(`\t\tDevSta:\t${pm("CorrErr", devsta & 1)} ${pm("NonFatalErr", devsta & 2)} ${pm("FatalErr", devsta & 4)} ${pm("UnsupReq", devsta & 8)} ${pm("AuxPwr", devsta & 0x10)} ${pm("TransPend", devsta & 0x20)}`);
  if (type === R.PCI_EXP_TYPE_RC_END) return;
  const speed = (s: number) => ["unknown", "2.5GT/s", "5GT/s", "8GT/s", "16GT/s", "32GT/s", "64GT/s"][s] ?? "unknown";
  const lnkcap = c.u32(where + R.PCI_EXP_LNKCAP);
  const lnksta = c.u16(where + R.PCI_EXP_LNKSTA);
  const aspm = ["not supported", "L0s", "L1", "L0s L1"][(lnkcap >> 10) & 3];
  out.push(`\t\tLnkCap:\tPort #${lnkcap >>> 24}, Speed ${speed(lnkcap & 0xf)}, Width x${(lnkcap >> 4) & 0x3f}, ASPM ${aspm}`);
  out.push(`\t\tLnkSta:\tSpeed ${speed(lnksta & 0xf)}, Width x${(lnksta >> 4) & 0x3f}`);
}

function formatExtendedCapabilities(c: Cfg, out: string[]): void {
  const seen = new Set<number>();
  let where = R.PCI_CONFIG_SPACE_SIZE;
  while (where) {
    if (where < R.PCI_CONFIG_SPACE_SIZE || !c.has(where, 4)) {
      out.push(`\tCapabilities: [${hex(where, 3)}] <chain broken>`);
      return;
    }
    const header = c.u32(where);
    if (header === 0 || header === 0xffffffff) {
      if (where !== R.PCI_CONFIG_SPACE_SIZE) out.push(`\tCapabilities: [${hex(where, 3)}] <chain broken>`);
      return;
    }
    if (seen.has(where)) {
      out.push(`\tCapabilities: [${hex(where, 3)}] <chain looped>`);
      return;
    }
    seen.add(where);
    const id = header & 0xffff;
    const ver = (header >>> 16) & 0xf;
    const head = `\tCapabilities: [${hex(where, 3)} v${ver}] `;
    if (id === R.PCI_EXT_CAP_ID_DSN) {
      const bytes: string[] = [];
      for (let i = 7; i >= 0; i--) bytes.push(hex(c.u8(where + 4 + i), 2));
      out.push(`${head}Device Serial Number ${bytes.join("-")}`);
    } else if (id === R.PCI_EXT_CAP_ID_VNDR) {
      const vh = c.u32(where + 4);
      out.push(`${head}Vendor Specific Information: ID=${hex(vh & 0xffff, 4)} Rev=${(vh >>> 16) & 0xf} Len=${hex(vh >>> 20, 3)} <?>`);
    } else {
      out.push(`${head}${EXT_CAP_NAMES[id] ?? `Extended Capability ID ${hex(id, 4)}`}`);
    }
    where = (header >>> 20) & ~3;
  }
}

/** The dump of a local function: its config snapshot and its region sizes. */
export function describeFunction(fn: PciFunction, address?: string): string {
  const sizes: bigint[] = [];
  for (let i = 0; i <= 6; i++) sizes.push(fn.regionInfo(i).size);
  return formatConfigSpace(fn.configSnapshot(), { address, barSizes: sizes });
}
