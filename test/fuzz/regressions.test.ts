// Replays every committed fuzz input through its target on the normal code path (this
// process's Node, no fuzz engine): the seed corpora (test/fuzz/corpus/<target>/) and every
// input that once broke an invariant (test/fuzz/regressions/<target>/, one file per defect
// found, named after it). A target throws when an invariant breaks, so each file is a test
// that fails if its defect comes back.
import { describe, expect, it } from "vitest";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fuzz as vfioUserParser } from "./targets/vfio-user-parser.js";
import { fuzz as mpqemuParser } from "./targets/mpqemu-parser.js";
import { fuzz as vfioUserSession, stats as sessionStats } from "./targets/vfio-user-session.js";
import { fuzz as mpqemuRemote, stats as remoteStats } from "./targets/mpqemu-remote.js";
import { fuzz as memoryCore } from "./targets/memory-core.js";
import { fuzz as nvme } from "./targets/nvme.js";

const targets: Record<string, (data: Uint8Array) => void | Promise<void>> = {
  "vfio-user-parser": vfioUserParser,
  "mpqemu-parser": mpqemuParser,
  "vfio-user-session": vfioUserSession,
  "mpqemu-remote": mpqemuRemote,
  "memory-core": memoryCore,
  nvme,
};

const here = import.meta.dirname;
const files = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);

for (const [name, target] of Object.entries(targets)) {
  describe(name, () => {
    const regressions = files(join(here, "regressions", name));
    for (const f of regressions) {
      it(`regression ${f}`, async () => {
        await target(readFileSync(join(here, "regressions", name, f)));
      });
    }
    const seeds = files(join(here, "corpus", name));
    it(`all ${seeds.length} seeds keep the invariants`, async () => {
      if (seeds.length === 0) throw new Error(`no seeds in test/fuzz/corpus/${name} (node test/fuzz/run.mjs --seeds)`);
      for (const f of seeds) await target(readFileSync(join(here, "corpus", name, f)));
      // The seeds reach the paths the invariants are about (a leak on them would show).
      if (name === "vfio-user-session") {
        expect(sessionStats.fdMaps, "seeds that map a client's memfd").toBeGreaterThan(0);
        expect(sessionStats.dmaRequests, "seeds that make the device DMA by message").toBeGreaterThan(0);
        expect(sessionStats.stillServing, "seeds after which the session still serves").toBeGreaterThan(0);
        expect(sessionStats.errorReplies).toBeGreaterThan(0);
      }
      if (name === "mpqemu-remote") {
        expect(remoteStats.fdMaps, "seeds that map guest RAM").toBeGreaterThan(0);
        expect(remoteStats.stillServing).toBeGreaterThan(0);
        expect(remoteStats.rets).toBeGreaterThan(0);
      }
    });
  });
}
