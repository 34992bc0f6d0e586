// `wasmdev serve` as a separate process for end-to-end tests: the bundled CLI (cli-bundle.ts)
// under this Node, its stderr collected (and always drained: a full pipe would block the
// server's synchronous stderr writes), resolved once it logs that it listens.
import { spawn, type ChildProcess } from "node:child_process";

export interface ServeProcess {
  child: ChildProcess;
  stderr(): string;
  /** Resolves when serve logged "listening on"; rejects if it exits first. */
  listening: Promise<void>;
  /** SIGTERM, then the exit code (serve removes its socket and exits 0). */
  stop(): Promise<number | null>;
}

export function startServe(cli: string, args: string[]): ServeProcess {
  // stdin ignored: serve reads nothing from it, and a pipe nobody closes is one less thing to leak.
  const child = spawn(process.execPath, [cli, "serve", ...args], { stdio: ["ignore", "ignore", "pipe"] });
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
