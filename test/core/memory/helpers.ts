// Shared helpers for the memory-core tests: every behaviour is checked on both engines.
import { MemoryCore, type IoOps } from "../../../src/core/memory/index.js";

export const ENGINES = ["wasm", "reference"] as const;
export type EngineName = (typeof ENGINES)[number];

export interface Call {
  op: "r" | "w";
  offset: number;
  size: number;
  value?: number | bigint;
}

/** An I/O device that logs every callback; reads return `readValue(offset, size)`. */
export function loggingDevice(
  readValue: (offset: number, size: number) => number | bigint = (o) => 0x10 + o,
  extra: Partial<IoOps> = {},
): { ops: IoOps; calls: Call[]; fmt: () => string[] } {
  const calls: Call[] = [];
  const ops: IoOps = {
    read(offset, size) {
      calls.push({ op: "r", offset, size });
      return readValue(offset, size);
    },
    write(offset, size, value) {
      calls.push({ op: "w", offset, size, value });
    },
    ...extra,
  };
  const fmt = () =>
    calls.map((c) => (c.op === "r" ? `r@${c.offset}/${c.size}` : `w@${c.offset}/${c.size}=0x${c.value!.toString(16)}`));
  return { ops, calls, fmt };
}

export function newCore(engine: EngineName): MemoryCore {
  return MemoryCore.create({ engine });
}

/** "start-last name+offset" lines of an address space's flat view (hex). */
export function flat(as: { flatView(): { start: bigint; last: bigint; region: { name: string } | null; offsetInRegion: bigint; readonly: boolean }[] }): string[] {
  return as
    .flatView()
    .map((r) => `${r.start.toString(16)}-${r.last.toString(16)} ${r.region?.name}+${r.offsetInRegion.toString(16)}${r.readonly ? " ro" : ""}`);
}
