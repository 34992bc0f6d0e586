// `lspci -vv`-style text for a remote PCI function, from a protocol-independent snapshot: the
// config space bytes plus what the transport knows about regions and interrupts. Pure.
//
// Both protocols of `wasmdev lspci` (vfio-user and mpqemu) build a FunctionSnapshot and call
// formatLspci(), the one formatter.
import { formatConfigSpace, formatBarSize as formatSize, type PciNames } from "./config-space.js";
import { configHexDump } from "./hexdump.js";

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
  /** ioeventfd sub-regions (vfio-user DEVICE_GET_REGION_IO_FDS; VfioUserClient.getRegionIoFds). */
  ioEventFds?: { offset: bigint; size: number; datamatch?: bigint; pio?: boolean }[];
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
  /** vfio-user regions by index (BARs 0-5, ROM 6, config 7, VGA 8, device-specific above). */
  regions: SnapshotRegion[];
  /** BAR sizes (0-5, ROM 6) when the protocol has no regions (mpqemu); else taken from `regions`. */
  barSizes?: (bigint | undefined)[];
  irqs?: SnapshotIrq[];
  /** Extra "key: value" lines about the transport (protocol version, limits...). */
  notes?: string[];
}

/**
 * The config space decoded by the project's lspci dump (config-space.ts: header, BARs with
 * the sizes the transport reports, capability chains), then what only the transport knows:
 * access rights and mmap areas per region, the non-BAR regions, interrupt types and counts.
 */
export interface LspciOptions {
  /** Vendor and device names (pci.ids); numeric without. */
  names?: PciNames;
  /** Bytes of config space to add as an `lspci -x` hex dump (0: none). */
  hexBytes?: number;
}

export function formatLspci(s: FunctionSnapshot, options: LspciOptions = {}): string {
  const barSizes = s.barSizes ?? Array.from({ length: 7 }, (_, i) => s.regions.find((r) => r.index === i)?.size);
  const out = [formatConfigSpace(s.config, { address: s.location, barSizes, names: options.names })];
  for (const r of s.regions) {
    if (r.size === 0n) continue;
    const name = r.index <= 5 ? `BAR${r.index}` : r.index === 6 ? "ROM" : r.index === 7 ? "config space" : r.index === 8 ? "VGA" : `device-specific region ${r.index}`;
    out.push(`\tvfio-user region ${r.index} (${name}): [size=${formatSize(r.size)}]${regionAccessNote(r)}`);
    for (const e of r.ioEventFds ?? []) {
      const width = e.size === 0 ? "any width" : `${e.size} byte${e.size === 1 ? "" : "s"}`;
      const match = e.datamatch !== undefined ? `, datamatch=0x${e.datamatch.toString(16)}` : "";
      out.push(`\t\tioeventfd at 0x${e.offset.toString(16)} (${width}${match}${e.pio ? ", port I/O" : ""})`);
    }
  }
  for (const irq of s.irqs ?? []) {
    if (irq.count === 0) continue;
    out.push(`\tInterrupts ${irq.name}: count=${irq.count}${irq.flags && irq.flags.length > 0 ? ` (${irq.flags.join(", ")})` : ""}`);
  }
  for (const note of s.notes ?? []) out.push(`\t${note}`);
  if (options.hexBytes) out.push(configHexDump(s.config, options.hexBytes));
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
