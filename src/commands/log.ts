// The command line's logger: levels from -q/-v/-vv, message tracing from --trace (or -vv),
// text or JSON lines on stderr. The library components receive it as their `logger`.
import type { LogFields, Logger, TraceEvent } from "../log.js";
import { UsageError } from "./args.js";

export type LogFormat = "text" | "json";

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3 } as const;
type Level = keyof typeof LEVELS;

export interface CliLogOptions {
  /** "wasmdev serve", shown in text lines and as `source` in JSON. */
  source: string;
  quiet?: boolean;
  /** Number of -v. */
  verbose?: number;
  trace?: boolean;
  format?: LogFormat;
  /** Text lines start with the time (default true: a server's log; commands that finish quickly leave it out). */
  timestamps?: boolean;
  write?: (text: string) => void;
}

/** The logging options as parsed by parseCommandLine (LOG_OPTIONS). */
export function cliLogOptions(source: string, values: { quiet?: boolean; verbose?: boolean[]; trace?: boolean; "log-format"?: string }): CliLogOptions {
  const format = values["log-format"] ?? "text";
  if (format !== "text" && format !== "json") throw new UsageError(`--log-format must be text or json; got '${format}'`);
  const verbose = values.verbose?.length ?? 0;
  if (values.quiet && verbose > 0) throw new UsageError("-q and -v contradict each other");
  return { source, quiet: values.quiet, verbose, trace: values.trace, format };
}

/** The library's Logger plus the one line a command prints at every level. */
export interface CliLogger extends Logger {
  /** Shown even with -q: a server's "listening on" line, which launchers wait for. */
  notice(message: string, fields?: LogFields): void;
}

export function createCliLogger(options: CliLogOptions): CliLogger {
  const write = options.write ?? ((text: string) => process.stderr.write(text));
  const max: number = options.quiet ? LEVELS.warn : (options.verbose ?? 0) > 0 ? LEVELS.debug : LEVELS.info;
  const json = options.format === "json";
  const stamp = options.timestamps === false ? () => "" : () => new Date().toISOString() + " ";
  const line = (level: Level, message: string, fields?: LogFields, always = false) => {
    if (LEVELS[level] > max && !always) return;
    const time = new Date().toISOString();
    if (json) {
      write(JSON.stringify({ time, level, source: options.source, msg: message, ...fields }) + "\n");
      return;
    }
    const tag = level === "info" ? "" : level === "warn" ? "warning: " : `${level}: `;
    const extra = fields ? Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) => ` ${k}=${v}`).join("") : "";
    write(`${stamp()}${options.source}: ${tag}${message}${extra}\n`);
  };
  const logger: { -readonly [K in keyof CliLogger]: CliLogger[K] } = {
    notice: (m, f) => line("info", m, f, true),
    error: (m, f) => line("error", m, f),
    warn: (m, f) => line("warn", m, f),
    info: (m, f) => line("info", m, f),
    debug: (m, f) => line("debug", m, f),
  };
  if (options.trace || (options.verbose ?? 0) >= 2) {
    logger.trace = json
      ? (e) => write(JSON.stringify({ time: new Date().toISOString(), level: "trace", source: options.source, ...e }) + "\n")
      : (e) => write(`${stamp()}${options.source}: trace: ${formatTrace(e)}\n`);
  }
  return logger;
}

/** One line per message: `vfio-user <- REGION_READ command id=5 size=32 region=0 offset=0x10 count=4`. */
export function formatTrace(e: TraceEvent): string {
  const parts = [e.protocol, e.direction === "in" ? "<-" : "->", e.command, e.type];
  if (e.id !== undefined) parts.push(`id=${e.id}`);
  parts.push(`size=${e.size}`);
  if (e.fds > 0) parts.push(`fds=${e.fds}`);
  if (e.flags) parts.push(`flags=${e.flags.join(",")}`);
  if (e.errno !== undefined) parts.push(`errno=${e.errnoName ?? e.errno}`);
  for (const [k, v] of Object.entries(e.fields ?? {})) parts.push(`${k}=${v}`);
  return parts.join(" ");
}
