// Argument parsing and output formatting shared by `wasmdev lspci` and `wasmdev region`.
// Pure functions (no I/O) so they are unit-tested directly.
import { PciRegion } from "./protocol.js";

/** A usage mistake: the command prints it with the usage text and exits with status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export interface ParsedArgs {
  flags: Map<string, string | true>;
  positional: string[];
}

/**
 * Splits argv into `--flag value` / `--flag=value` / `--switch` and positionals. `valued` lists
 * the flags that take a value; anything else starting with `--` must be in `switches`.
 * A lone `--` ends flag parsing.
 */
export function parseArgs(argv: readonly string[], valued: readonly string[], switches: readonly string[]): ParsedArgs {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-h") {
      flags.set("help", true);
      continue;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      if (valued.includes(name)) {
        const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
        if (value === undefined || value === "") throw new UsageError(`--${name} needs a value`);
        flags.set(name, value);
      } else if (switches.includes(name)) {
        if (eq >= 0) throw new UsageError(`--${name} takes no value`);
        flags.set(name, true);
      } else throw new UsageError(`unknown option --${name}`);
      continue;
    }
    positional.push(arg);
  }
  return { flags, positional };
}

const REGION_NAMES: Record<string, number> = {
  bar0: 0, bar1: 1, bar2: 2, bar3: 3, bar4: 4, bar5: 5,
  rom: PciRegion.ROM, config: PciRegion.CONFIG, vga: PciRegion.VGA,
};


/** --socket PATH (required) and --timeout MS (1..3 600 000, default 5000) of the client commands. */
export function connectionArgs(args: ParsedArgs): { socketPath: string; timeoutMs: number } {
  const socket = args.flags.get("socket");
  if (typeof socket !== "string") throw new UsageError("--socket PATH is required");
  let timeoutMs = 5000;
  const timeout = args.flags.get("timeout");
  if (typeof timeout === "string") {
    timeoutMs = Number(parseU64(timeout, "--timeout"));
    if (timeoutMs < 1 || timeoutMs > 3_600_000) throw new UsageError("--timeout must be between 1 and 3600000 ms");
  }
  return { socketPath: socket, timeoutMs };
}
/** "bar2", "config", "rom", "vga" or a region index. */
export function parseRegion(text: string): number {
  const named = REGION_NAMES[text.toLowerCase()];
  if (named !== undefined) return named;
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new UsageError(`REGION must be an index or one of ${Object.keys(REGION_NAMES).join(", ")}; got '${text}'`);
  const n = Number(text);
  if (n > 0xffffffff) throw new UsageError(`REGION ${text} is out of range`);
  return n;
}

export function regionName(index: number): string {
  if (index <= PciRegion.BAR5) return `BAR${index}`;
  if (index === PciRegion.ROM) return "ROM";
  if (index === PciRegion.CONFIG) return "config";
  if (index === PciRegion.VGA) return "VGA";
  return `region ${index}`;
}

/** Decimal or 0x-hex unsigned integer up to 2^64-1. */
export function parseU64(text: string, what: string): bigint {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new UsageError(`${what} must be a decimal or 0x-prefixed hex number; got '${text}'`);
  const v = BigInt(text);
  if (v >= 1n << 64n) throw new UsageError(`${what} ${text} does not fit in 64 bits`);
  return v;
}

export function parseSize(text: string, max: number): number {
  const v = parseU64(text, "SIZE");
  if (v === 0n) throw new UsageError("SIZE must be at least 1");
  if (v > BigInt(max)) throw new UsageError(`SIZE ${text} is above the limit of ${max} bytes`);
  return Number(v);
}

/**
 * The bytes to write: for SIZE <= 8 a number that fits (stored little-endian, as the device
 * sees a register write); for larger sizes exactly SIZE bytes of hex ("0011aabb...", optional
 * 0x prefix, ':' or ' ' separators allowed).
 */
export function parseWriteValue(text: string, size: number): Uint8Array {
  if (size <= 8) {
    const v = parseU64(text, "VALUE");
    if (v >= 1n << BigInt(size * 8)) throw new UsageError(`VALUE ${text} does not fit in ${size} byte${size === 1 ? "" : "s"}`);
    const out = new Uint8Array(size);
    let x = v;
    for (let i = 0; i < size; i++, x >>= 8n) out[i] = Number(x & 0xffn);
    return out;
  }
  const digits = text.replace(/^0x/i, "").replace(/[:\s]/g, "");
  if (!/^[0-9a-f]*$/i.test(digits) || digits.length !== size * 2) {
    throw new UsageError(`VALUE for a ${size}-byte write must be ${size} bytes of hex (${size * 2} digits); got ${digits.length} characters`);
  }
  return Uint8Array.from({ length: size }, (_, i) => parseInt(digits.slice(i * 2, i * 2 + 2), 16));
}

/** Little-endian bytes (1..8) as a zero-padded 0x-hex number. */
export function formatValue(bytes: Uint8Array): string {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return "0x" + v.toString(16).padStart(bytes.length * 2, "0");
}

/** `hexdump -C` style lines, addressed from `base`. */
export function hexDump(bytes: Uint8Array, base: bigint = 0n): string {
  const lines: string[] = [];
  const width = base + BigInt(bytes.length) > 0xffff_ffffn ? 16 : 8;
  for (let at = 0; at < bytes.length; at += 16) {
    const row = bytes.subarray(at, at + 16);
    const hexes: string[] = [];
    for (let i = 0; i < 16; i++) {
      hexes.push(i < row.length ? row[i].toString(16).padStart(2, "0") : "  ");
      if (i === 7) hexes.push("");
    }
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${(base + BigInt(at)).toString(16).padStart(width, "0")}  ${hexes.join(" ")}  |${ascii}|`);
  }
  return lines.join("\n");
}
