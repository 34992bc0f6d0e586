// The `wasmdev` command line: a thin entry; the commands live in src/commands.
import { main } from "./commands/main.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`wasmdev: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
