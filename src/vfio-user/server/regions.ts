// Which parts of a RAM-backed BAR a client may mmap: the whole BAR except the pages holding an
// MSI-X table or PBA, which must stay trapped so the library sees every access (QEMU's vfio-pci
// likewise refuses to mmap the MSI-X table pages, vfio_pci_fixup_msix_region).
import type { PciFunction } from "../../core/pci/api.js";
import type { SparseMmapArea } from "../wire/messages.js";

const PAGE = 4096;
const PCI_CAP_ID_MSIX = 0x11;

/** Byte ranges [start, end) of BAR `index` used by the MSI-X table and PBA. */
export function msixRanges(fn: PciFunction, index: number): [number, number][] {
  const cfg = fn.configSnapshot();
  const out: [number, number][] = [];
  if ((cfg[0x06] & 0x10) === 0) return out; // no capability list
  let ptr = cfg[0x34] & 0xfc;
  for (let guard = 0; ptr >= 0x40 && guard < 48; guard++) {
    if (cfg[ptr] === PCI_CAP_ID_MSIX) {
      const vectors = ((cfg[ptr + 2] | (cfg[ptr + 3] << 8)) & 0x7ff) + 1;
      const table = (cfg[ptr + 4] | (cfg[ptr + 5] << 8) | (cfg[ptr + 6] << 16) | (cfg[ptr + 7] << 24)) >>> 0;
      const pba = (cfg[ptr + 8] | (cfg[ptr + 9] << 8) | (cfg[ptr + 10] << 16) | (cfg[ptr + 11] << 24)) >>> 0;
      const tableOffset = (table & ~7) >>> 0;
      const pbaOffset = (pba & ~7) >>> 0;
      if ((table & 7) === index) out.push([tableOffset, tableOffset + vectors * 16]);
      if ((pba & 7) === index) out.push([pbaOffset, pbaOffset + Math.ceil(vectors / 64) * 8]);
    }
    ptr = cfg[ptr + 1] & 0xfc;
  }
  return out;
}

/** Sparse-mmap areas of BAR `index` of `size` bytes: everything but the MSI-X pages. */
export function mmapAreas(fn: PciFunction, index: number, size: bigint): SparseMmapArea[] {
  const holes = msixRanges(fn, index)
    .map(([s, e]) => [Math.floor(s / PAGE) * PAGE, Math.ceil(e / PAGE) * PAGE] as [number, number])
    .sort((a, b) => a[0] - b[0]);
  const areas: SparseMmapArea[] = [];
  let at = 0n;
  for (const [s, e] of holes) {
    if (BigInt(s) > at) areas.push({ offset: at, size: BigInt(s) - at });
    if (BigInt(e) > at) at = BigInt(e);
  }
  if (at < size) areas.push({ offset: at, size: size - at });
  return areas;
}
