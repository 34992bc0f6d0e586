// Capability list construction from declarations: places each capability (explicit offset
// or first free dword-aligned space, as QEMU's pci_add_capability / pcie_add_capability
// place them), writes its initial bytes and its write / write-1-to-clear masks, and links
// the chain in declaration order.
import type { CapabilitySpec, ExtendedCapabilitySpec } from "./api.js";
import { PciError } from "./errors.js";
import * as R from "./regs.js";

export interface MsiLayout {
  offset: number;
  /** Vectors capable (power of two ≤ 32). */
  vectors: number;
  address64: boolean;
  perVectorMask: boolean;
  dataOffset: number;
  maskOffset: number;
  pendingOffset: number;
  size: number;
}

export interface MsixLayout {
  offset: number;
  vectors: number;
  tableBar: number;
  tableOffset: number;
  pbaBar: number;
  pbaOffset: number;
  /** Bytes: 16 per vector / one bit per vector rounded to 8 bytes (QEMU msix_init). */
  tableSize: number;
  pbaSize: number;
}

export interface CapabilityLayout {
  /** Standard capabilities in chain order. */
  list: { id: number; offset: number; size: number }[];
  /** Extended capabilities in chain order. */
  extended: { id: number; offset: number; size: number }[];
  msi?: MsiLayout;
  msix?: MsixLayout;
  pm?: number;
  pcie?: number;
}

/** What the capability code needs to know about the BARs (to validate MSI-X placement). */
export interface BarFacts {
  present: boolean;
  io: boolean;
  size: number;
}

function capSize(c: CapabilitySpec): number {
  switch (c.kind) {
    case "pm":
      return R.PCI_PM_SIZEOF;
    case "msi": {
      const a64 = c.address64 ?? true;
      const mask = c.perVectorMask ?? false;
      // QEMU msi_cap_sizeof: 0x0a / 0x0e, or 0x14 / 0x18 with mask+pending bits.
      return mask ? (a64 ? 0x18 : 0x14) : a64 ? 0x0e : 0x0a;
    }
    case "msix":
      return R.PCI_MSIX_SIZEOF;
    case "pcie":
      return R.PCI_EXP_VER2_SIZEOF;
    case "vendor":
      return 3 + c.body.length;
    case "raw":
      return 2 + c.body.length;
  }
}

function capId(c: CapabilitySpec): number {
  switch (c.kind) {
    case "pm":
      return R.PCI_CAP_ID_PM;
    case "msi":
      return R.PCI_CAP_ID_MSI;
    case "msix":
      return R.PCI_CAP_ID_MSIX;
    case "pcie":
      return R.PCI_CAP_ID_EXP;
    case "vendor":
      return R.PCI_CAP_ID_VNDR;
    case "raw":
      return c.id;
  }
}

const align4 = (n: number) => (n + 3) & ~3;

function place(used: Uint8Array, lo: number, hi: number, size: number, want: number | undefined, field: string): number {
  const span = align4(size);
  const fits = (at: number) => {
    if (at < lo || at + size > hi) return false;
    for (let i = at; i < Math.min(at + span, hi); i++) if (used[i]) return false;
    return true;
  };
  if (want !== undefined) {
    if (!Number.isInteger(want) || want & 3) throw new PciError("PCI_INVALID_SPEC", `${field}: capability offset 0x${want.toString(16)} is not dword aligned`, { field });
    if (!fits(want)) throw new PciError("PCI_INVALID_SPEC", `${field}: capability at 0x${want.toString(16)} (${size} bytes) overlaps another capability or leaves [0x${lo.toString(16)}, 0x${hi.toString(16)})`, { field });
    used.fill(1, want, Math.min(want + span, hi));
    return want;
  }
  for (let at = lo; at + size <= hi; at += 4) {
    if (fits(at)) {
      used.fill(1, at, Math.min(at + span, hi));
      return at;
    }
  }
  throw new PciError("PCI_INVALID_SPEC", `${field}: no room for a ${size}-byte capability in config space`, { field });
}

function setU16(b: Uint8Array, at: number, v: number) {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
}
function setU32(b: Uint8Array, at: number, v: number) {
  setU16(b, at, v & 0xffff);
  setU16(b, at + 2, (v >>> 16) & 0xffff);
}

/**
 * Lays out `caps` and `ext` into config / wmask / w1cmask (full-size views of one function's
 * block). Capability bytes are read-only unless a field is writable by the PCI spec.
 */
export function layoutCapabilities(
  caps: readonly CapabilitySpec[],
  ext: readonly ExtendedCapabilitySpec[],
  configSize: number,
  bars: readonly BarFacts[],
  cfg: Uint8Array,
  wmask: Uint8Array,
  w1c: Uint8Array,
): CapabilityLayout {
  const layout: CapabilityLayout = { list: [], extended: [] };
  const used = new Uint8Array(configSize);
  const seen = new Set<string>();
  // Explicit offsets first so automatic placement flows around them.
  const order = caps.map((c, i) => i).sort((a, b) => Number(caps[a].offset === undefined) - Number(caps[b].offset === undefined));
  const offsets: number[] = new Array(caps.length);
  for (const i of order) {
    const c = caps[i];
    const field = `capabilities[${i}]`;
    if (c.kind !== "raw" && c.kind !== "vendor") {
      if (seen.has(c.kind)) throw new PciError("PCI_INVALID_SPEC", `${field}: only one ${c.kind} capability is allowed`, { field });
      seen.add(c.kind);
    }
    offsets[i] = place(used, R.PCI_CONFIG_HEADER_SIZE, R.PCI_CONFIG_SPACE_SIZE, capSize(c), c.offset, field);
  }
  for (let i = 0; i < caps.length; i++) {
    const c = caps[i];
    const at = offsets[i];
    const size = capSize(c);
    const field = `capabilities[${i}]`;
    cfg.fill(0, at, at + size);
    wmask.fill(0, at, at + size);
    w1c.fill(0, at, at + size);
    cfg[at] = capId(c);
    switch (c.kind) {
      case "pm":
        // Version 3, D0 and D3hot only; PMCSR power state writable; no soft reset on D3→D0.
        setU16(cfg, at + R.PCI_PM_PMC, 0x0003);
        setU16(cfg, at + R.PCI_PM_CTRL, R.PCI_PM_CTRL_NO_SOFT_RESET);
        setU16(wmask, at + R.PCI_PM_CTRL, R.PCI_PM_CTRL_STATE_MASK);
        layout.pm = at;
        break;
      case "msi": {
        const n = c.vectors;
        if (![1, 2, 4, 8, 16, 32].includes(n)) throw new PciError("PCI_INVALID_SPEC", `${field}.vectors: MSI supports 1, 2, 4, 8, 16 or 32 vectors, not ${n}`, { field: `${field}.vectors` });
        const a64 = c.address64 ?? true;
        const pvm = c.perVectorMask ?? false;
        const log2 = Math.log2(n);
        // QEMU msi_init: MMC in bits 1..3, 64-bit and per-vector-mask flags read-only;
        // enable and MME writable.
        setU16(cfg, at + R.PCI_MSI_FLAGS, (log2 << 1) | (a64 ? R.PCI_MSI_FLAGS_64BIT : 0) | (pvm ? R.PCI_MSI_FLAGS_MASKBIT : 0));
        setU16(wmask, at + R.PCI_MSI_FLAGS, R.PCI_MSI_FLAGS_QSIZE | R.PCI_MSI_FLAGS_ENABLE);
        setU32(wmask, at + R.PCI_MSI_ADDRESS_LO, 0xfffffffc);
        if (a64) setU32(wmask, at + R.PCI_MSI_ADDRESS_HI, 0xffffffff);
        const dataOffset = a64 ? 0x0c : 0x08;
        setU16(wmask, at + dataOffset, 0xffff);
        const maskOffset = a64 ? 0x10 : 0x0c;
        if (pvm) setU32(wmask, at + maskOffset, n === 32 ? 0xffffffff : (1 << n) - 1);
        layout.msi = { offset: at, vectors: n, address64: a64, perVectorMask: pvm, dataOffset, maskOffset, pendingOffset: maskOffset + 4, size };
        break;
      }
      case "msix": {
        const n = c.vectors;
        if (!Number.isInteger(n) || n < 1 || n > R.PCI_MSIX_MAX_VECTORS) throw new PciError("PCI_INVALID_SPEC", `${field}.vectors: MSI-X supports 1..2048 vectors, not ${n}`, { field: `${field}.vectors` });
        const tableSize = n * R.PCI_MSIX_ENTRY_SIZE;
        const pbaSize = Math.ceil(n / 64) * 8;
        const check = (bar: number, off: number, len: number, what: string) => {
          const b = bars[bar];
          if (!Number.isInteger(bar) || bar < 0 || bar > 5 || !b || !b.present || b.io)
            throw new PciError("PCI_INVALID_SPEC", `${field}.${what}Bar: BAR ${bar} is not a memory BAR of this function`, { field: `${field}.${what}Bar` });
          if (!Number.isInteger(off) || off & 7 || off < 0 || off + len > b.size)
            throw new PciError("PCI_INVALID_SPEC", `${field}.${what}Offset: 0x${off.toString(16)} (+${len} bytes) must be 8-byte aligned and inside BAR ${bar} (${b.size} bytes)`, { field: `${field}.${what}Offset` });
        };
        check(c.tableBar, c.tableOffset, tableSize, "table");
        check(c.pbaBar, c.pbaOffset, pbaSize, "pba");
        if (c.tableBar === c.pbaBar && c.tableOffset < c.pbaOffset + pbaSize && c.pbaOffset < c.tableOffset + tableSize)
          throw new PciError("PCI_INVALID_SPEC", `${field}: the MSI-X table and PBA overlap`, { field });
        setU16(cfg, at + R.PCI_MSIX_FLAGS, n - 1);
        setU32(cfg, at + R.PCI_MSIX_TABLE, c.tableOffset | c.tableBar);
        setU32(cfg, at + R.PCI_MSIX_PBA, c.pbaOffset | c.pbaBar);
        setU16(wmask, at + R.PCI_MSIX_FLAGS, R.PCI_MSIX_FLAGS_MASKALL | R.PCI_MSIX_FLAGS_ENABLE);
        layout.msix = { offset: at, vectors: n, tableBar: c.tableBar, tableOffset: c.tableOffset, pbaBar: c.pbaBar, pbaOffset: c.pbaOffset, tableSize, pbaSize };
        break;
      }
      case "pcie": {
        const type = c.deviceType === "legacy-endpoint" ? R.PCI_EXP_TYPE_LEG_END : c.deviceType === "rc-integrated" ? R.PCI_EXP_TYPE_RC_END : R.PCI_EXP_TYPE_ENDPOINT;
        // QEMU pcie_cap_init: version 2; role-based error reporting; error reporting enables
        // writable, error-detected status bits W1C; link x1 at 2.5 GT/s with L0s.
        setU16(cfg, at + R.PCI_EXP_FLAGS, 2 | (type << 4));
        setU32(cfg, at + R.PCI_EXP_DEVCAP, R.PCI_EXP_DEVCAP_RBER);
        setU16(wmask, at + R.PCI_EXP_DEVCTL, R.PCI_EXP_DEVCTL_ERR_ENABLES);
        setU16(w1c, at + R.PCI_EXP_DEVSTA, R.PCI_EXP_DEVSTA_ERR_DETECTED);
        if (type !== R.PCI_EXP_TYPE_RC_END) {
          setU32(cfg, at + R.PCI_EXP_LNKCAP, 0x400 | (1 << 4) | 1);
          setU16(cfg, at + R.PCI_EXP_LNKSTA, (1 << 4) | 1);
          setU32(cfg, at + R.PCI_EXP_LNKCAP2, 1 << 1); // supported speeds: 2.5 GT/s
        }
        layout.pcie = at;
        break;
      }
      case "vendor":
        if (c.body.length > 253) throw new PciError("PCI_INVALID_SPEC", `${field}.body: a vendor capability holds at most 253 bytes`, { field: `${field}.body` });
        cfg[at + 2] = size;
        cfg.set(c.body, at + 3);
        break;
      case "raw":
        if (!Number.isInteger(c.id) || c.id < 1 || c.id > 0xff) throw new PciError("PCI_INVALID_SPEC", `${field}.id must be 1..255`, { field: `${field}.id` });
        cfg.set(c.body, at + 2);
        if (c.wmask) wmask.set(c.wmask.subarray(0, c.body.length), at + 2);
        if (c.w1cmask) w1c.set(c.w1cmask.subarray(0, c.body.length), at + 2);
        break;
    }
    layout.list.push({ id: capId(c), offset: at, size });
  }
  // Chain in declaration order.
  for (let i = 0; i < layout.list.length; i++) cfg[layout.list[i].offset + 1] = i + 1 < layout.list.length ? layout.list[i + 1].offset : 0;
  if (layout.list.length > 0) {
    cfg[R.PCI_CAPABILITY_LIST] = layout.list[0].offset;
    cfg[R.PCI_STATUS] |= R.PCI_STATUS_CAP_LIST;
  }

  if (ext.length > 0 && configSize < R.PCIE_CONFIG_SPACE_SIZE)
    throw new PciError("PCI_INVALID_SPEC", "extendedCapabilities need configSize 4096", { field: "extendedCapabilities" });
  const extUsed = new Uint8Array(configSize);
  const extOffsets: number[] = [];
  const extOrder = ext.map((_, i) => i).sort((a, b) => Number(ext[a].offset === undefined) - Number(ext[b].offset === undefined));
  for (const i of extOrder) {
    const e = ext[i];
    const field = `extendedCapabilities[${i}]`;
    if (!Number.isInteger(e.id) || e.id < 0 || e.id > 0xffff) throw new PciError("PCI_INVALID_SPEC", `${field}.id must be 0..0xffff`, { field: `${field}.id` });
    extOffsets[i] = place(extUsed, R.PCI_CONFIG_SPACE_SIZE, configSize, 4 + e.body.length, e.offset, field);
  }
  for (let i = 0; i < ext.length; i++) {
    const e = ext[i];
    const at = extOffsets[i];
    const size = 4 + e.body.length;
    cfg.fill(0, at, at + size);
    wmask.fill(0, at, at + size);
    w1c.fill(0, at, at + size);
    cfg.set(e.body, at + 4);
    if (e.wmask) wmask.set(e.wmask.subarray(0, e.body.length), at + 4);
    if (e.w1cmask) w1c.set(e.w1cmask.subarray(0, e.body.length), at + 4);
    layout.extended.push({ id: e.id, offset: at, size });
  }
  if (layout.extended.length > 0 && layout.extended[0].offset !== R.PCI_CONFIG_SPACE_SIZE) {
    // The chain must start at 0x100; move the first-declared capability there if free.
    throw new PciError("PCI_INVALID_SPEC", "extendedCapabilities[0] must sit at 0x100 (the head of the extended chain)", { field: "extendedCapabilities[0].offset" });
  }
  for (let i = 0; i < layout.extended.length; i++) {
    const e = layout.extended[i];
    const next = i + 1 < layout.extended.length ? layout.extended[i + 1].offset : 0;
    setU32(cfg, e.offset, (e.id & 0xffff) | (((ext[i].version ?? 1) & 0xf) << 16) | (next << 20));
  }
  if (configSize === R.PCIE_CONFIG_SPACE_SIZE && layout.extended.length === 0) {
    // No extended capabilities: keep the 0x100 header zero and read-only so the chain stays
    // empty whatever a guest writes there.
    wmask.fill(0, R.PCI_CONFIG_SPACE_SIZE, R.PCI_CONFIG_SPACE_SIZE + 4);
  }
  return layout;
}
