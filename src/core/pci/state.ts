// Migration state of a function: a header (magic, version, config size, INTx level), the
// config bytes, then each part's sections in a fixed order (MSI-X table and PBA, BAR RAM and
// shadow windows) and the device's own state last. Restoring parses and checks everything
// before changing anything.
import type { FunctionCapability } from "./capability.js";
import { StateReader, StateWriter } from "./capability.js";
import { put32, u32 } from "./config.js";

const STATE_MAGIC = 0x49435044; // "DPCI" little-endian
const STATE_VERSION = 1;

/** Read-only identity (offset, length) that must match: ids, revision, class, header type,
 *  subsystem, pin, the capability pointer. */
const IDENTITY = [[0, 4], [8, 4], [0x0e, 1], [0x2c, 4], [0x34, 1], [0x3d, 1]] as const;

export interface StateParts {
  name: string;
  configSize: number;
  /** The config bytes (live view). */
  config(): Uint8Array;
  intxLevel(): boolean;
  /** Capabilities' headers (id at offset) in config space, checked on restore. */
  capabilities: readonly { id: number; offset: number }[];
  /** Parts with sections, in state order. */
  sections: readonly Required<Pick<FunctionCapability, "save" | "restore">>[];
  /** After config space and every section was applied. */
  restored(intx: boolean): void;
  device?: { save?(): Uint8Array; restore?(state: Uint8Array): void };
}

export function saveState(p: StateParts): Uint8Array {
  const out = new StateWriter();
  const header = new Uint8Array(16);
  put32(header, 0, STATE_MAGIC);
  put32(header, 4, STATE_VERSION);
  put32(header, 8, p.configSize);
  put32(header, 12, p.intxLevel() ? 1 : 0);
  out.raw(header);
  out.raw(p.config().slice(0, p.configSize));
  for (const s of p.sections) s.save(out);
  out.blob(p.device?.save?.() ?? new Uint8Array(0));
  return out.finish();
}

export function restoreState(p: StateParts, state: Uint8Array): void {
  const input = new StateReader(state, 16, p.name);
  if (!(state instanceof Uint8Array) || state.length < 16) input.fail("too short");
  if (u32(state, 0) !== STATE_MAGIC || u32(state, 4) !== STATE_VERSION) input.fail("bad magic or version");
  if (u32(state, 8) !== p.configSize) input.fail("config space size differs");
  const intx = u32(state, 12) === 1;
  if (state.length < 16 + p.configSize) input.fail("truncated config space");
  const config = state.subarray(16, 16 + p.configSize);
  input.at = 16 + p.configSize;
  const apply = p.sections.map((s) => s.restore(input));
  const device = input.take();
  if (!input.done) input.fail("trailing bytes");
  const cur = p.config();
  for (const [o, n] of IDENTITY) for (let i = o; i < o + n; i++) if (cur[i] !== config[i]) input.fail(`read-only register at 0x${i.toString(16)} differs`);
  for (const c of p.capabilities) if (config[c.offset] !== c.id) input.fail(`capability at 0x${c.offset.toString(16)} differs`);
  if (p.device?.restore) p.device.restore(device);
  else if (device.length) input.fail("device state present but the device cannot restore it");
  p.config().set(config);
  for (const a of apply) a();
  p.restored(intx);
}
