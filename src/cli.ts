// The `wasmdev` command line. Subcommands live in their own modules and register here.
const USAGE = `usage: wasmdev <command> [options]

commands:
  serve      serve a sample device (see: wasmdev serve --help)
  lspci      show a remote function's configuration space
  region     read or write a remote device region
  help       show this help

Run 'wasmdev <command> --help' for a command's options.`;

type Command = (argv: string[]) => Promise<number>;

// Each command module exports `run(argv): Promise<number>` (the exit code).
const commands: Record<string, () => Promise<Command>> = {
  serve: async () => (await import("./commands/serve.js")).run,
  lspci: async () => (await import("./commands/lspci.js")).run,
  region: async () => (await import("./commands/region.js")).run,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(USAGE + "\n");
    return name ? 0 : 2;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`wasmdev: unknown command '${name}'\n${USAGE}\n`);
    return 2;
  }
  return (await load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`wasmdev: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
