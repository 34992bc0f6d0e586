// Running a TypeScript scenario in a child Node process: for tests whose failure mode is the
// death of the process (a SIGBUS that escapes the addon's guard would kill the test runner's
// worker with everything in it). The scenario is bundled with esbuild below build/, so the
// transport finds build/native/ by walking up from it as it does from the source tree.
import { build } from "esbuild";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Bundles `entry` (a .ts file) to build/test-children/<name>-<pid>.mjs; returns that path.
 * WASMDEV_SCENARIO_ROOT=<dir> puts the bundles under <dir>/build/ instead, so they load the
 * addon and core from <dir>/build/: how to check that these tests fail with an addon built
 * without the SIGBUS guard.
 */
export async function bundleScenario(entry: string, name: string): Promise<string> {
  const dir = join(process.env.WASMDEV_SCENARIO_ROOT ?? root, "build", "test-children");
  mkdirSync(dir, { recursive: true });
  const outfile = join(dir, `${name}-${process.pid}.mjs`);
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "warning",
  });
  return outfile;
}

export function removeScenario(path: string): void {
  rmSync(path, { force: true });
}

export interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningChild {
  child: ChildProcess;
  /** Output so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout (or stderr) contains `text`; rejects if the child exits first. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  exited: Promise<ChildOutcome>;
}

/** Starts `node script ...args`, collecting its output; `fds` become the child's fds 3, 4... */
export function startScenario(script: string, args: string[] = [], fds: number[] = []): RunningChild {
  const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe", ...fds] });
  let out = "";
  let err = "";
  const watchers: (() => void)[] = [];
  child.stdout!.on("data", (d) => {
    out += d.toString();
    for (const w of [...watchers]) w();
  });
  child.stderr!.on("data", (d) => {
    err += d.toString();
    for (const w of [...watchers]) w();
  });
  const exited = new Promise<ChildOutcome>((resolve) =>
    child.once("exit", (code, signal) => {
      // Let the pipes drain before reporting.
      setImmediate(() => resolve({ code, signal, stdout: out, stderr: err }));
    }),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(text, timeoutMs = 20_000) {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${text}" from the child within ${timeoutMs} ms; stdout: ${out} stderr: ${err}`)), timeoutMs);
        const check = () => {
          if (out.includes(text) || err.includes(text)) {
            clearTimeout(timer);
            watchers.splice(watchers.indexOf(check), 1);
            resolve();
          }
        };
        watchers.push(check);
        exited.then((o) => {
          clearTimeout(timer);
          if (!out.includes(text) && !err.includes(text)) {
            reject(new Error(`the child exited (code ${o.code}, signal ${o.signal}) before "${text}"; stdout: ${o.stdout} stderr: ${o.stderr}`));
          }
        });
        check();
      });
    },
  };
}

/** Runs `node script ...args` to completion. */
export function runScenario(script: string, args: string[] = []): Promise<ChildOutcome> {
  return startScenario(script, args).exited;
}

/** The last line of stdout parsed as JSON (scenarios print their findings that way). */
export function lastJson<T = Record<string, unknown>>(outcome: ChildOutcome): T {
  const lines = outcome.stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as T;
}
