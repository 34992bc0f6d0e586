// Argument parsing for every command: node:util parseArgs with one wording for mistakes, the
// options all commands share (logging), and the value parsers. Pure apart from reading no
// files; unit-tested directly.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { PciRegion } from "../vfio-user/wire/constants.js";

/** A usage mistake: the command prints it with its short usage line and exits with status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

/** Logging options every command takes (see commands/log.ts). */
export const LOG_OPTIONS = {
  quiet: { type: "boolean", short: "q" },
  verbose: { type: "boolean", short: "v", multiple: true },
  trace: { type: "boolean" },
  "log-format": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionSpec;

export const LOG_HELP = `  -q, --quiet        warnings and errors only (serve still prints its "listening on" line)
  -v, -vv            more detail: -v adds debug lines, -vv also traces every message
  --trace            print every vfio-user / mpqemu message decoded, both directions
  --log-format FMT   text (default) or json (one object per line)
  -h, --help         show this help`;

/** What parseCommandLine returns for the option table O (node:util's parseArgs result). */
export type ParsedCommandLine<O extends OptionSpec> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/**
 * Parses `argv` against `options` (strict: unknown options and missing values are usage
 * errors, with the same wording in every command). `--` ends the options.
 */
export function parseCommandLine<O extends OptionSpec>(argv: readonly string[], options: O): ParsedCommandLine<O> {
  try {
    return parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageFromParseArgs(err, options);
  }
}

function usageFromParseArgs(err: unknown, options: OptionSpec): Error {
  const code = (err as { code?: string }).code;
  const message = (err as Error).message ?? String(err);
  const quoted = /'(-[^' ]+)/.exec(message)?.[1];
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return new UsageError(`unknown option '${quoted ?? message}'`);
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const name = quoted?.replace(/^--?/, "");
      const spec = name === undefined ? undefined : (options[name] ?? Object.values(options).find((o) => o.short === name));
      if (spec?.type === "boolean") return new UsageError(`option '${quoted}' takes no value`);
      return new UsageError(`option '${quoted ?? "?"}' needs a value`);
    }
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return new UsageError(`unexpected argument ${quoted ? `'${quoted}'` : message}`);
    default:
      return err instanceof Error ? err : new Error(message);
  }
}

/** An option that must be a non-empty string when given. */
export function nonEmpty(value: string | undefined, option: string, what: string): string | undefined {
  if (value === undefined) return undefined;
  if (value === "") throw new UsageError(`${option} needs ${what}`);
  return value;
}

/** Decimal or 0x-hex unsigned integer up to 2^64-1. */
export function parseU64(text: string, what: string): bigint {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new UsageError(`${what} must be a decimal or 0x-prefixed hex number; got '${text}'`);
  const v = BigInt(text);
  if (v >= 1n << 64n) throw new UsageError(`${what} ${text} does not fit in 64 bits`);
  return v;
}

/** A whole number in [min, max] (decimal or 0x-hex), for counts, fds and times. */
export function parseInteger(text: string, what: string, min: number, max: number): number {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new UsageError(`${what} must be a number; '${text}' is not a number`);
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new UsageError(`${what} must be between ${min} and ${max}; got ${text}`);
  return v;
}

/** --timeout MS of the client commands (1..3 600 000, default 5000). */
export function parseTimeout(text: string | undefined): number {
  return text === undefined ? 5000 : parseInteger(text, "--timeout", 1, 3_600_000);
}

const REGION_NAMES: Record<string, number> = {
  bar0: 0, bar1: 1, bar2: 2, bar3: 3, bar4: 4, bar5: 5,
  rom: PciRegion.ROM, config: PciRegion.CONFIG, vga: PciRegion.VGA,
};

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

export function parseSize(text: string, max: number): number {
  const v = parseU64(text, "SIZE");
  if (v === 0n) throw new UsageError("SIZE must be at least 1");
  if (v > BigInt(max)) throw new UsageError(`SIZE ${text} is above the limit of ${max} bytes`);
  return Number(v);
}

/** "1 byte", "4 bytes". */
export function bytes(n: number | bigint): string {
  return `${n} byte${n === 1 || n === 1n ? "" : "s"}`;
}

/**
 * The bytes to write: for SIZE <= 8 a number that fits (stored little-endian, as the device
 * sees a register write); for larger sizes exactly SIZE bytes of hex ("0011aabb...", optional
 * 0x prefix, ':' or ' ' separators allowed).
 */
export function parseWriteValue(text: string, size: number): Uint8Array {
  if (size <= 8) {
    const v = parseU64(text, "VALUE");
    if (v >= 1n << BigInt(size * 8)) throw new UsageError(`VALUE ${text} does not fit in ${bytes(size)}`);
    const out = new Uint8Array(size);
    let x = v;
    for (let i = 0; i < size; i++, x >>= 8n) out[i] = Number(x & 0xffn);
    return out;
  }
  const digits = text.replace(/^0x/i, "").replace(/[:\s]/g, "");
  if (!/^[0-9a-f]*$/i.test(digits) || digits.length !== size * 2) {
    throw new UsageError(`VALUE for a ${size}-byte write must be ${bytes(size)} of hex (${size * 2} digits); got ${digits.length} characters`);
  }
  return Uint8Array.from({ length: size }, (_, i) => parseInt(digits.slice(i * 2, i * 2 + 2), 16));
}
