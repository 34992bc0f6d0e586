// Coverage-guided fuzzing in CI: each target runs for a short bounded time under jazzer.js in
// the Debian 13 root (see run.mjs for the route), starting from its seed corpus. A crash (an
// invariant broken, an exception escaping, a hang past the engine's timeout) fails the test
// and leaves the input in build/fuzz/crashes/<target>/ for a regression fixture.
// `npm run fuzz` runs the same targets for longer (FUZZ_SECONDS).
import { describe, expect, it, beforeAll } from "vitest";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { trixieSkipReason, trixieRootPath } from "../support/trixie.js";
// @ts-expect-error: plain ESM script without types
import { TARGETS, bundle, fuzzTarget } from "./run.mjs";

const SECONDS = Number(process.env.FUZZ_CI_SECONDS ?? 12);
const engine = join(import.meta.dirname, "node_modules", "@jazzer.js", "core", "package.json");
const skip =
  trixieSkipReason ??
  (!existsSync(join(trixieRootPath, "usr", "bin", "node")) ? `no Node in ${trixieRootPath}` : undefined) ??
  (!existsSync(engine) ? "jazzer.js is not installed (npm ci --prefix test/fuzz)" : undefined) ??
  (process.getuid?.() !== 0 ? "the root needs chroot (run as root)" : undefined);
if (skip && process.env.CI === "true") throw new Error(`CI=true but fuzzing cannot run: ${skip}`);

describe.skipIf(skip !== undefined)(`fuzz targets, ${SECONDS} s each`, () => {
  beforeAll(() => bundle(Object.keys(TARGETS)), 60_000);
  for (const name of Object.keys(TARGETS)) {
    it(name, async () => {
      const r = await fuzzTarget(name, SECONDS, { quiet: true });
      const tail = r.log.split("\n").filter((l: string) => !l.startsWith("#")).slice(-30).join("\n");
      expect(r.crashes, `crash inputs (copy them to test/fuzz/regressions/${name}/):\n${tail}`).toEqual([]);
      expect(r.exitCode, tail).toBe(0);
      // It fuzzed: the engine ran inputs and saw coverage.
      expect(r.executions).toBeGreaterThan(50);
      expect(r.coverage).toBeGreaterThan(0);
      console.log(`${name}: ${r.executions} executions in ${SECONDS} s, coverage ${r.coverage} edges, ${r.features} features`);
    }, (SECONDS + 40) * 1000);
  }
});
