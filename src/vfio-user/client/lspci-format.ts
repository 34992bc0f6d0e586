// `lspci -vv`-style text for a remote PCI function, from a protocol-independent snapshot: the
// config space bytes plus what the transport knows about regions and interrupts. Pure.
//
// Any front end that can read a function's config space (vfio-user here, mpqemu's proxy)
// builds a FunctionSnapshot and calls formatLspci().

export interface SnapshotRegion {
  index: number;
  /** Region size in bytes (0 = absent). */
  size: bigint;
  readable?: boolean;
  writable?: boolean;
  /** The server offers an fd the client may mmap. */
  mmappable?: boolean;
  /** Mappable sub-ranges when only part of the region may be mapped. */
  sparseAreas?: { offset: bigint; size: bigint }[];
}

export interface SnapshotIrq {
  /** "INTx", "MSI", "MSI-X", "ERR", "REQ" or an index. */
  name: string;
  count: number;
  flags?: string[];
}

export interface FunctionSnapshot {
  /** Where the function lives, e.g. the socket path. */
  location: string;
  /** Config space as read (256 or 4096 bytes; shorter is tolerated). */
  config: Uint8Array;
  /** Regions by index (BARs 0-5, ROM 6, config 7, VGA 8, device-specific above). */
  regions: SnapshotRegion[];
  irqs?: SnapshotIrq[];
  /** Extra "key: value" lines about the transport (protocol version, limits...). */
  notes?: string[];
}

const CLASS_NAMES: Record<number, string> = {
  0x00: "Unclassified device", 0x01: "Mass storage controller", 0x02: "Network controller",
  0x03: "Display controller", 0x04: "Multimedia controller", 0x05: "Memory controller",
  0x06: "Bridge", 0x07: "Communication controller", 0x08: "Generic system peripheral",
  0x09: "Input device controller", 0x0a: "Docking station", 0x0b: "Processor",
  0x0c: "Serial bus controller", 0x0d: "Wireless controller", 0x0e: "Intelligent controller",
  0x0f: "Satellite communications controller", 0x10: "Encryption controller",
  0x11: "Signal processing controller", 0x12: "Processing accelerators", 0xff: "Unassigned class",
};

const CAP_NAMES: Record<number, string> = {
  0x01: "Power Management", 0x02: "AGP", 0x03: "Vital Product Data", 0x05: "MSI", 0x07: "PCI-X",
  0x08: "HyperTransport", 0x09: "Vendor Specific Information", 0x0a: "Debug port",
  0x0d: "Subsystem", 0x10: "Express", 0x11: "MSI-X", 0x12: "SATA HBA", 0x13: "PCI Advanced Features",
};

const EXT_CAP_NAMES: Record<number, string> = {
  0x0001: "Advanced Error Reporting", 0x0002: "Virtual Channel", 0x0003: "Device Serial Number",
  0x0004: "Power Budgeting", 0x000b: "Vendor Specific Information", 0x000d: "Access Control Services",
  0x000e: "Alternative Routing-ID Interpretation", 0x0010: "Single Root I/O Virtualization",
  0x0015: "Resizable BAR", 0x0018: "Latency Tolerance Reporting", 0x001e: "L1 PM Substates",
};

const flag = (name: string, on: boolean) => `${name}${on ? "+" : "-"}`;
const hex = (v: number | bigint, width: number) => v.toString(16).padStart(width, "0");

/** "4K", "1M", "256" — lspci's size notation. */
export function formatSize(size: bigint): string {
  const units: [bigint, string][] = [[1n << 60n, "E"], [1n << 50n, "P"], [1n << 40n, "T"], [1n << 30n, "G"], [1n << 20n, "M"], [1n << 10n, "K"]];
  for (const [unit, suffix] of units) if (size >= unit && size % unit === 0n) return `${size / unit}${suffix}`;
  return size.toString();
}

export function formatLspci(s: FunctionSnapshot): string {
  const c = s.config;
  const u8 = (o: number) => (o < c.length ? c[o] : 0);
  const u16 = (o: number) => u8(o) | (u8(o + 1) << 8);
  const u32 = (o: number) => (u16(o) | (u16(o + 2) << 16)) >>> 0;
  const out: string[] = [];

  const vendor = u16(0x00);
  const device = u16(0x02);
  const classCode = (u8(0x0b) << 16) | (u8(0x0a) << 8) | u8(0x09);
  const className = CLASS_NAMES[u8(0x0b)] ?? `Class ${hex(u8(0x0b), 2)}`;
  const progIf = u8(0x09) !== 0 ? ` (prog-if ${hex(u8(0x09), 2)})` : "";
  out.push(`${s.location}: ${className} [${hex(classCode >> 8, 4)}]: Device ${hex(vendor, 4)}:${hex(device, 4)} (rev ${hex(u8(0x08), 2)})${progIf}`);
  const headerType = u8(0x0e) & 0x7f;
  if (headerType === 0) out.push(`\tSubsystem: Device ${hex(u16(0x2c), 4)}:${hex(u16(0x2e), 4)}`);
  else out.push(`\tHeader type ${headerType} (only type 0 is decoded)`);

  const cmd = u16(0x04);
  out.push(
    "\tControl: " +
      [flag("I/O", (cmd & 0x1) !== 0), flag("Mem", (cmd & 0x2) !== 0), flag("BusMaster", (cmd & 0x4) !== 0), flag("SpecCycle", (cmd & 0x8) !== 0),
        flag("MemWINV", (cmd & 0x10) !== 0), flag("VGASnoop", (cmd & 0x20) !== 0), flag("ParErr", (cmd & 0x40) !== 0), flag("Stepping", (cmd & 0x80) !== 0),
        flag("SERR", (cmd & 0x100) !== 0), flag("FastB2B", (cmd & 0x200) !== 0), flag("DisINTx", (cmd & 0x400) !== 0)].join(" "),
  );
  const st = u16(0x06);
  const devsel = ["fast", "medium", "slow", "??"][(st >> 9) & 3];
  out.push(
    "\tStatus: " +
      [flag("Cap", (st & 0x10) !== 0), flag("66MHz", (st & 0x20) !== 0), flag("UDF", (st & 0x40) !== 0), flag("FastB2B", (st & 0x80) !== 0),
        flag("ParErr", (st & 0x100) !== 0), `DEVSEL=${devsel}`, flag(">TAbort", (st & 0x800) !== 0), flag("<TAbort", (st & 0x1000) !== 0),
        flag("<MAbort", (st & 0x2000) !== 0), flag(">SERR", (st & 0x4000) !== 0), flag("<PERR", (st & 0x8000) !== 0), flag("INTx", (st & 0x8) !== 0)].join(" "),
  );
  const pin = u8(0x3d);
  if (pin >= 1 && pin <= 4) out.push(`\tInterrupt: pin ${"ABCD"[pin - 1]} routed to IRQ ${u8(0x3c)}`);

  if (headerType === 0) {
    const regionSize = (i: number) => s.regions.find((r) => r.index === i)?.size ?? 0n;
    for (let i = 0; i < 6; i++) {
      const bar = u32(0x10 + i * 4);
      const size = regionSize(i);
      const io = (bar & 1) !== 0;
      const is64 = !io && ((bar >> 1) & 3) === 2;
      if (size === 0n && bar === 0) {
        if (is64) i++;
        continue;
      }
      let address: bigint;
      let desc: string;
      if (io) {
        address = BigInt((bar & ~0x3) >>> 0);
        desc = `I/O ports at ${address === 0n ? "<unassigned>" : hex(address, 4)}`;
      } else {
        address = BigInt((bar & ~0xf) >>> 0) | (is64 ? BigInt(u32(0x14 + i * 4)) << 32n : 0n);
        const kind = `${is64 ? "64-bit" : "32-bit"}, ${(bar & 0x8) !== 0 ? "prefetchable" : "non-prefetchable"}`;
        desc = `Memory at ${address === 0n ? "<unassigned>" : hex(address, 8)} (${kind})`;
      }
      const cmdOn = io ? (cmd & 1) !== 0 : (cmd & 2) !== 0;
      out.push(`\tRegion ${i}: ${desc}${cmdOn ? "" : " [disabled]"} [size=${formatSize(size)}]${regionAccessNote(s.regions.find((r) => r.index === i))}`);
      if (is64) i++;
    }
    const rom = u32(0x30);
    const romSize = regionSize(6);
    if (romSize !== 0n || rom !== 0) {
      const address = BigInt((rom & ~0x7ff) >>> 0);
      out.push(`\tExpansion ROM at ${address === 0n ? "<unassigned>" : hex(address, 8)} [${(rom & 1) !== 0 ? "enabled" : "disabled"}] [size=${formatSize(romSize)}]`);
    }
  }

  // Capability list (offsets must stay inside the 256-byte space; loops are cut off).
  if ((st & 0x10) !== 0) {
    const seen = new Set<number>();
    for (let at = u8(0x34) & 0xfc; at >= 0x40 && at < 0x100 && !seen.has(at) && seen.size < 48; at = u8(at + 1) & 0xfc) {
      seen.add(at);
      out.push(`\tCapabilities: [${hex(at, 2)}] ${describeCap(u8(at), at, u8, u16, u32)}`);
    }
  }
  if (c.length >= 0x1000) {
    const seen = new Set<number>();
    for (let at = 0x100; at >= 0x100 && at < 0x1000 && !seen.has(at) && seen.size < 128; ) {
      const head = u32(at);
      if (head === 0 || head === 0xffffffff) break;
      seen.add(at);
      const id = head & 0xffff;
      out.push(`\tCapabilities: [${hex(at, 3)} v${(head >>> 16) & 0xf}] ${EXT_CAP_NAMES[id] ?? `Extended Capability ID ${hex(id, 4)}`}`);
      at = (head >>> 20) & 0xffc;
    }
  }

  const other = s.regions.filter((r) => r.index >= 7 && r.size > 0n);
  for (const r of other) {
    const name = r.index === 7 ? "config space" : r.index === 8 ? "VGA" : `device-specific region ${r.index}`;
    out.push(`\tRegion ${r.index} (${name}): [size=${formatSize(r.size)}]${regionAccessNote(r)}`);
  }
  for (const irq of s.irqs ?? []) {
    if (irq.count === 0) continue;
    out.push(`\tInterrupts ${irq.name}: count=${irq.count}${irq.flags && irq.flags.length > 0 ? ` (${irq.flags.join(", ")})` : ""}`);
  }
  for (const note of s.notes ?? []) out.push(`\t${note}`);
  return out.join("\n");
}

function regionAccessNote(r: SnapshotRegion | undefined): string {
  if (!r) return "";
  const parts: string[] = [];
  if (r.readable !== undefined || r.writable !== undefined) parts.push(`${r.readable ? "r" : "-"}${r.writable ? "w" : "-"}`);
  if (r.mmappable) {
    if (r.sparseAreas && r.sparseAreas.length > 0) {
      parts.push("mmap " + r.sparseAreas.map((a) => `[${a.offset.toString(16)}+${formatSize(a.size)}]`).join(" "));
    } else parts.push("mmap");
  }
  return parts.length > 0 ? ` {${parts.join(", ")}}` : "";
}

function describeCap(id: number, at: number, u8: (o: number) => number, u16: (o: number) => number, u32: (o: number) => number): string {
  const name = CAP_NAMES[id] ?? `Capability ID ${hex(id, 2)}`;
  if (id === 0x05) {
    const ctl = u16(at + 2);
    const maxVectors = 1 << ((ctl >> 1) & 7);
    const enabledVectors = 1 << ((ctl >> 4) & 7);
    return `MSI: ${flag("Enable", (ctl & 1) !== 0)} Count=${enabledVectors}/${maxVectors} ${flag("Maskable", (ctl & 0x100) !== 0)} ${flag("64bit", (ctl & 0x80) !== 0)}`;
  }
  if (id === 0x11) {
    const ctl = u16(at + 2);
    const table = u32(at + 4);
    const pba = u32(at + 8);
    return `MSI-X: ${flag("Enable", (ctl & 0x8000) !== 0)} Count=${(ctl & 0x7ff) + 1} ${flag("Masked", (ctl & 0x4000) !== 0)}\n` +
      `\t\tVector table: BAR=${table & 7} offset=${hex((table & ~7) >>> 0, 8)}\n\t\tPBA: BAR=${pba & 7} offset=${hex((pba & ~7) >>> 0, 8)}`;
  }
  if (id === 0x01) {
    const pmc = u16(at + 2);
    const ctl = u16(at + 4);
    return `Power Management version ${pmc & 7}\n\t\tStatus: D${ctl & 3} ${flag("NoSoftRst", (ctl & 8) !== 0)} ${flag("PME-Enable", (ctl & 0x100) !== 0)}`;
  }
  if (id === 0x10) {
    const caps = u16(at + 2);
    const types = ["Endpoint", "Legacy Endpoint", "?", "?", "Root Port", "Upstream Port", "Downstream Port", "PCI-Express to PCI/PCI-X Bridge", "PCI/PCI-X to PCI-Express Bridge", "Root Complex Integrated Endpoint", "Root Complex Event Collector"];
    return `Express (v${caps & 0xf}) ${types[(caps >> 4) & 0xf] ?? "?"}`;
  }
  if (id === 0x09) return `Vendor Specific Information: Len=${hex(u8(at + 2), 2)}`;
  return name;
}
