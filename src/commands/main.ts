// `wasmdev <command>`: dispatch, --version, --help, and how every command reports a usage
// error (the message, the command's usage line, and where the full help is).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "./args.js";

export const USAGE = `usage: wasmdev <command> [options]

commands:
  serve      serve a sample device over vfio-user or mpqemu (see: wasmdev serve --help)
  lspci      show a remote function's configuration space
  region     read or write a remote device region
  help       show this help

options:
  --version  print the version
  -h, --help show this help

Run 'wasmdev <command> --help' for a command's options.`;

/** What a command module exports. */
export interface CommandModule {
  /** The first usage line(s), shown with a usage error. */
  SYNOPSIS: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  serve: () => import("./serve.js"),
  lspci: () => import("./lspci.js"),
  region: () => import("./region.js"),
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--version" || name === "-V") {
    process.stdout.write(`wasmdev ${version()}\n`);
    return 0;
  }
  if (name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  if (name === undefined) return usageError("wasmdev", "usage: wasmdev <command> [options]", new UsageError("missing command"));
  const load = COMMANDS[name];
  if (!load) {
    const what = name.startsWith("-") ? `unknown option '${name}'` : `unknown command '${name}'`;
    return usageError("wasmdev", "usage: wasmdev <command> [options]", new UsageError(what));
  }
  const command = await load();
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) return usageError(`wasmdev ${name}`, command.SYNOPSIS, err);
    throw err;
  }
}

/** A usage mistake: one line saying what, the short usage, where the help is; status 2. */
export function usageError(source: string, synopsis: string, err: UsageError): number {
  process.stderr.write(`${source}: ${err.message}\n${synopsis}\nTry '${source} --help' for more information.\n`);
  return 2;
}

/** The version in the package.json next to this file's package (dist/, or a test bundle under build/). */
export function version(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "wasmdev" && pkg.version) return pkg.version;
    } catch {
      // Not here; look one level up.
    }
  }
  return "unknown";
}
