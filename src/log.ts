// The logger the servers, clients and the CLI share. A leaf module (no imports) so every layer
// may use it.
//
//   VfioUserServer.listen({ device, socketPath, logger })
//   connectVfioUser(path, { logger })
//   new MpqemuRemote({ fd, fn, logger })
//
// Levels are methods; tracing is the optional `trace` field: a component checks it once (when a
// connection starts) and only then installs its tracing path, so with tracing off the message
// path carries no extra work.

export type LogFields = Record<string, string | number | boolean | undefined>;

/** One decoded protocol message, in either direction. */
export interface TraceEvent {
  protocol: "vfio-user" | "mpqemu";
  /** "in": received by this process; "out": sent by it. */
  direction: "in" | "out";
  /** Command name (REGION_READ, BAR_WRITE, RET, ...). */
  command: string;
  /** vfio-user: command or reply; mpqemu: request or RET. */
  type: "command" | "reply";
  /** vfio-user message id (mpqemu has none). */
  id?: number;
  /** Bytes on the wire, header included. */
  size: number;
  /** File descriptors that came or went with the message. */
  fds: number;
  /** Header flags worth naming: "no-reply", "error". */
  flags?: string[];
  /** Error replies: the errno and its name. */
  errno?: number;
  errnoName?: string;
  /** Decoded fields that identify the access (region, offset, count; addr, len, value). */
  fields?: Record<string, string | number>;
}

export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** Set only when every decoded message should be reported. */
  readonly trace?: (event: TraceEvent) => void;
}

const nothing = () => {};

/** A logger that drops everything. */
export const silentLogger: Logger = { error: nothing, warn: nothing, info: nothing, debug: nothing };

/**
 * The logger for an options bag that takes either a Logger or the older one-line callback
 * (which then receives warnings and errors, and info lines prefixed by nothing: as before).
 */
export function asLogger(log: Logger | ((line: string) => void) | undefined): Logger {
  if (log === undefined) return silentLogger;
  if (typeof log !== "function") return log;
  return { error: log, warn: log, info: log, debug: nothing };
}
