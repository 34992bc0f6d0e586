// Identify data structures and log pages (NVMe base spec 1.4 §5.15.2 figures 247/249,
// §5.14.1) built from the controller's configuration. Pure functions: bytes out.
import { IDENTIFY_SIZE, NVME_VERSION_1_4 } from "./constants.js";

export interface NvmeIdentity {
  vendorId: number;
  subsystemVendorId: number;
  serial: string;
  model: string;
  firmware: string;
  /** Maximum data transfer size, as a power of two of the minimum page size (4 KiB). */
  mdts: number;
  /** Controller ID. */
  cntlid: number;
  /** Async Event Request limit, 0-based. */
  aerl: number;
  /** Abort command limit, 0-based. */
  acl: number;
  /** Error log entries, 0-based. */
  elpe: number;
  /** Namespace size in logical blocks. */
  blocks: bigint;
  /** log2 of the LBA size (9 or 12). */
  lbaShift: number;
  /** 16 bytes identifying the namespace globally (NGUID, also used as its UUID). */
  nguid: Uint8Array;
  /** OACS bit 8: the controller accepts Doorbell Buffer Config (shadow doorbells). */
  doorbellBuffer: boolean;
}

/** Temperatures in kelvins: what the controller reports and its warning/critical thresholds. */
export const NVME_COMPOSITE_TEMPERATURE = 323;
export const NVME_WARNING_TEMPERATURE = 343;
export const NVME_CRITICAL_TEMPERATURE = 373;

const putAscii = (out: Uint8Array, offset: number, length: number, text: string) => {
  for (let i = 0; i < length; i++) out[offset + i] = i < text.length ? text.charCodeAt(i) & 0x7f : 0x20;
};

export function identifyController(id: NvmeIdentity): Uint8Array {
  const out = new Uint8Array(IDENTIFY_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, id.vendorId, true);
  dv.setUint16(2, id.subsystemVendorId, true);
  putAscii(out, 4, 20, id.serial);
  putAscii(out, 24, 40, id.model);
  putAscii(out, 64, 8, id.firmware);
  out[72] = 6; // RAB: recommended arbitration burst
  out[77] = id.mdts;
  dv.setUint16(78, id.cntlid, true);
  dv.setUint32(80, NVME_VERSION_1_4, true);
  out[111] = 1; // CNTRLTYPE: I/O controller
  dv.setUint16(256, id.doorbellBuffer ? 1 << 8 : 0, true); // OACS: Doorbell Buffer Config
  out[258] = id.acl;
  out[259] = id.aerl;
  out[260] = 0x03; // FRMW: one slot, slot 1 read-only
  out[261] = 0x04; // LPA: extended data for Get Log Page (NUMDU, LPO)
  out[262] = id.elpe;
  out[263] = 0; // NPSS: one power state
  dv.setUint16(266, NVME_WARNING_TEMPERATURE, true); // WCTEMP
  dv.setUint16(268, NVME_CRITICAL_TEMPERATURE, true); // CCTEMP
  out[512] = 0x66; // SQES: 64 bytes
  out[513] = 0x44; // CQES: 16 bytes
  dv.setUint32(516, 1, true); // NN
  dv.setUint16(520, (1 << 2) | (1 << 3), true); // ONCS: Dataset Management, Write Zeroes
  out[525] = 0x07; // VWC present; Flush with NSID FFFFFFFFh applies to all namespaces
  const nqn = `nqn.2026-12.dev.wasmdev:nvme:${id.serial}`.slice(0, 255);
  for (let i = 0; i < nqn.length; i++) out[768 + i] = nqn.charCodeAt(i) & 0x7f; // SUBNQN, NUL padded
  // Power state 0: 25 W, entry/exit latencies in microseconds.
  dv.setUint16(2048, 2500, true);
  dv.setUint32(2048 + 4, 16, true);
  dv.setUint32(2048 + 8, 4, true);
  return out;
}

export function identifyNamespace(id: NvmeIdentity): Uint8Array {
  const out = new Uint8Array(IDENTIFY_SIZE);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, id.blocks, true); // NSZE
  dv.setBigUint64(8, id.blocks, true); // NCAP
  dv.setBigUint64(16, id.blocks, true); // NUSE
  out[25] = 0; // NLBAF: one format
  out[26] = 0; // FLBAS: format 0, no metadata
  out[33] = 0x09; // DLFEAT: deallocated blocks read as zeros; Write Zeroes may deallocate
  out.set(id.nguid, 104);
  dv.setUint32(128, id.lbaShift << 16, true); // LBAF0: MS 0, LBADS, RP 0
  return out;
}

/** Namespace identification descriptor list (CNS 03h, figure 250): NGUID, UUID, CSI. */
export function namespaceDescriptors(id: NvmeIdentity): Uint8Array {
  const out = new Uint8Array(IDENTIFY_SIZE);
  let at = 0;
  const put = (type: number, bytes: Uint8Array) => {
    out[at] = type;
    out[at + 1] = bytes.length;
    out.set(bytes, at + 4);
    at += 4 + bytes.length;
  };
  put(2, id.nguid);
  put(3, id.nguid);
  put(4, new Uint8Array([0])); // CSI: NVM command set
  return out;
}

/** Active namespace list (CNS 02h): the NSIDs above `after`, ascending. */
export function activeNamespaces(after: number, count: number): Uint8Array {
  const out = new Uint8Array(IDENTIFY_SIZE);
  const dv = new DataView(out.buffer);
  let at = 0;
  for (let nsid = after + 1; nsid <= count; nsid++, at += 4) dv.setUint32(at, nsid, true);
  return out;
}

export interface SmartCounters {
  criticalWarning: number;
  temperature: number;
  /** Bytes read/written by hosts. */
  bytesRead: bigint;
  bytesWritten: bigint;
  readCommands: bigint;
  writeCommands: bigint;
  powerCycles: bigint;
  powerOnSeconds: number;
  unsafeShutdowns: bigint;
  errorLogEntries: bigint;
}

const put128 = (dv: DataView, offset: number, value: bigint) => {
  dv.setBigUint64(offset, value & 0xffffffffffffffffn, true);
  dv.setBigUint64(offset + 8, value >> 64n, true);
};

/** SMART / Health Information log (LID 02h, figure 207). Data units are 1000 × 512 bytes,
 *  rounded up. */
export function smartLog(c: SmartCounters): Uint8Array {
  const out = new Uint8Array(512);
  const dv = new DataView(out.buffer);
  out[0] = c.criticalWarning;
  dv.setUint16(1, c.temperature, true);
  out[3] = 100; // available spare %
  out[4] = 10; // available spare threshold %
  out[5] = 0; // percentage used
  const units = (bytes: bigint) => (bytes + 512_000n - 1n) / 512_000n;
  put128(dv, 32, units(c.bytesRead));
  put128(dv, 48, units(c.bytesWritten));
  put128(dv, 64, c.readCommands);
  put128(dv, 80, c.writeCommands);
  put128(dv, 112, c.powerCycles);
  put128(dv, 128, BigInt(Math.floor(c.powerOnSeconds / 3600)));
  put128(dv, 144, c.unsafeShutdowns);
  put128(dv, 176, c.errorLogEntries);
  return out;
}

/** Firmware Slot Information log (LID 03h, figure 208): slot 1 active. */
export function firmwareSlotLog(firmware: string): Uint8Array {
  const out = new Uint8Array(512);
  out[0] = 1;
  putAscii(out, 8, 8, firmware);
  return out;
}

export interface ErrorLogEntry {
  count: bigint;
  sqid: number;
  cid: number;
  status: number;
  parameter: number;
  lba: bigint;
  nsid: number;
}

/** Error Information log (LID 01h, figure 205): newest entry first, 64 bytes each. */
export function errorLog(entries: readonly ErrorLogEntry[], capacity: number): Uint8Array {
  const out = new Uint8Array(64 * capacity);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < Math.min(entries.length, capacity); i++) {
    const e = entries[entries.length - 1 - i];
    const at = i * 64;
    dv.setBigUint64(at, e.count, true);
    dv.setUint16(at + 8, e.sqid, true);
    dv.setUint16(at + 10, e.cid, true);
    dv.setUint16(at + 12, e.status << 1, true);
    dv.setUint16(at + 14, e.parameter, true);
    dv.setBigUint64(at + 16, e.lba, true);
    dv.setUint32(at + 24, e.nsid, true);
  }
  return out;
}
