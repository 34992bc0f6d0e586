// `wasmdev serve` as a separate process for end-to-end tests: the bundled CLI (cli-bundle.ts)
// under this Node, its stderr collected (and always drained: a full pipe would block the
// server's synchronous stderr writes), and a promise for when it accepts connections.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, watch } from "node:fs";
import { dirname } from "node:path";

export interface ServeProcess {
  child: ChildProcess;
  stderr(): string;
  /** Resolves once serve accepts connections; rejects if it exits first. */
  listening: Promise<void>;
  /** SIGTERM, then the exit code (serve removes its socket and exits 0). */
  stop(): Promise<number | null>;
}

/**
 * Starts `serve` on `socketPath` with `args`. Readiness is serve's "listening on" line, which
 * it prints at every log level (-q included) once the socket accepts.
 */
export function startServe(cli: string, socketPath: string, args: string[]): ServeProcess {
  // stdin ignored: serve reads nothing from it.
  const child = spawn(process.execPath, [cli, "serve", "--socket", socketPath, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const listening = new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (d) => {
      err += String(d);
      if (err.includes("listening on")) resolve();
    });
    void exited.then((code) => reject(new Error(`serve exited with ${code} before listening: ${err}`)));
  });
  listening.catch(() => {});
  return {
    child,
    stderr: () => err,
    listening,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}
