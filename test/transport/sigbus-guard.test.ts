// The SIGBUS guard and shrink seals: a peer that shrinks a file under one of our mappings must
// not kill the process (pages past the new end read as zeros, MappedRegion.truncated is set),
// while a SIGBUS that is not about our mappings still takes its normal course. The scenarios that
// fault run in a child process (test/transport/fixtures/sigbus-scenarios.ts): without the guard
// they would kill the test runner's worker, here they show up as a child killed by SIGBUS.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { closeSync, ftruncateSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  FileSeal, MAX_MAPPINGS, TransportError, MapBudget, addFileSeals, closeFd, fileSeals, fileSize,
  mappingGuardStats, memfdCreate, mmapFd, type MappedRegion,
} from "../../src/transport/index.js";
import { bundleScenario, lastJson, removeScenario, root, runScenario } from "./child.js";

const PAGE = 4096;
let script = "";

beforeAll(async () => {
  script = await bundleScenario(join(root, "test", "transport", "fixtures", "sigbus-scenarios.ts"), "sigbus-transport");
});
afterAll(() => removeScenario(script));

describe("a peer shrinking a mapped file (child process)", () => {
  test("read-write mapping: the process survives, pages past the new end read as zeros, stores land privately, truncated is set", async () => {
    const outcome = await runScenario(script, ["truncate-rw"]);
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    const r = lastJson(outcome);
    expect(r).toMatchObject({
      sealed: false, // the peer forbade seals: only the guard stands between it and a crash
      kept: 0xab,
      pastEnd: 0,
      truncatedAfterRead: true,
      storedBack: 0x5a,
      truncatedAfterUnmap: true,
      fresh: { truncated: false, sealed: true, value: 1 },
      live: 0,
    });
    // Every page past the end was replaced (14 pages), the stored byte is the only non-zero.
    expect(r.recovered).toBe(14);
    expect(r.sum).toBe(0x5a);
  });

  test("read-only mapping at an unaligned offset: one copy across the new end yields the kept bytes then zeros", async () => {
    const outcome = await runScenario(script, ["truncate-ro-copy"]);
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    const r = lastJson(outcome);
    expect(r).toEqual({ sevens: 3 * PAGE - 100, zeros: 5 * PAGE, truncated: true, writerUntouched: false });
  });

  test("worker threads: each thread's fault is repaired on that thread, the slot table is shared", async () => {
    const outcome = await runScenario(script, ["truncate-in-workers"]);
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    const seen = { sum: 3 * (PAGE / 64), truncated: true }; // page 0 kept, the other 7 zeros
    expect(lastJson(outcome)).toEqual({ main: seen, workers: [seen, seen], live: 0 });
  });

  test("a SIGBUS that is not a fault in our mappings (kill -BUS) still kills the process", async () => {
    const outcome = await runScenario(script, ["kill-self"]);
    expect(outcome.signal).toBe("SIGBUS");
    expect(outcome.stdout).not.toContain("survived");
  });

  test("a SIGBUS handler installed before the guard still receives signals that are not ours", async () => {
    const outcome = await runScenario(script, ["kill-self-chained"]);
    expect(outcome.code, outcome.stderr).toBe(7);
    expect(outcome.stdout).toContain('{"listener":true}');
  });
});

describe("shrink seals added at map time", () => {
  test("a memfd gets F_SEAL_SHRINK: the peer cannot shrink it (EPERM), it may still grow", () => {
    const fd = memfdCreate("seal-me", 4 * PAGE);
    expect(fileSeals(fd)).toBe(0);
    const region = mmapFd(fd, 0, 4 * PAGE);
    expect(region.sealed).toBe(true);
    expect(fileSeals(fd) & FileSeal.SHRINK).toBe(FileSeal.SHRINK);
    expect(() => ftruncateSync(fd, PAGE)).toThrow(expect.objectContaining({ code: "EPERM" }));
    ftruncateSync(fd, 8 * PAGE);
    expect(fileSize(fd)).toBe(8 * PAGE);
    region.bytes()[4 * PAGE - 1] = 9;
    expect(region.truncated).toBe(false);
    region.unmap();
    closeFd(fd);
  });

  test("sealShrink: false leaves the file alone", () => {
    const fd = memfdCreate("no-seal", PAGE);
    const region = mmapFd(fd, 0, PAGE, { sealShrink: false });
    expect(region.sealed).toBe(false);
    expect(fileSeals(fd)).toBe(0);
    region.unmap();
    closeFd(fd);
  });

  test("a file already sealed against shrinking (and against more seals) counts as sealed", () => {
    const fd = memfdCreate("pre-sealed", PAGE);
    addFileSeals(fd, FileSeal.SHRINK | FileSeal.GROW | FileSeal.SEAL);
    const region = mmapFd(fd, 0, PAGE);
    expect(region.sealed).toBe(true);
    region.unmap();
    closeFd(fd);
  });

  test("files that cannot take the seal are still mapped, unsealed: F_SEAL_SEAL set, opened read-only, not a memfd", () => {
    const unsealable = memfdCreate("sealed-off", PAGE);
    addFileSeals(unsealable, FileSeal.SEAL);
    const a = mmapFd(unsealable, 0, PAGE);
    expect(a.sealed).toBe(false);
    expect(fileSeals(unsealable)).toBe(FileSeal.SEAL);

    const memfd = memfdCreate("read-only-view", PAGE);
    const readOnly = openSync(`/proc/self/fd/${memfd}`, "r");
    const b = mmapFd(readOnly, 0, PAGE, { writable: false });
    expect(b.sealed).toBe(false); // F_ADD_SEALS needs a writable fd
    expect(fileSeals(memfd)).toBe(0);

    const path = join(tmpdir(), `wasmdev-seal-${process.pid}`);
    writeFileSync(path, new Uint8Array(PAGE));
    const file = openSync(path, "r+");
    const c = mmapFd(file, 0, PAGE);
    expect(c.sealed).toBe(false);
    expect(() => fileSeals(file)).toThrow(expect.objectContaining({ code: "ERR_SYSCALL", errno: "EINVAL" }));

    for (const r of [a, b, c]) r.unmap();
    closeFd(unsealable);
    closeSync(readOnly);
    closeFd(memfd);
    closeSync(file);
    rmSync(path);
  });
});

describe("the guard table's limit", () => {
  test(`at most MAX_MAPPINGS (${MAX_MAPPINGS}) mappings per process: one more is ERR_MAP_LIMIT, unmapping frees a slot`, () => {
    const stats = mappingGuardStats();
    expect(stats.slots).toBe(MAX_MAPPINGS);
    const fd = memfdCreate("many", PAGE);
    const budget = new MapBudget(Number.MAX_SAFE_INTEGER);
    const regions: MappedRegion[] = [];
    try {
      for (let i = stats.liveMappings; i < MAX_MAPPINGS; i++) regions.push(mmapFd(fd, 0, PAGE, { budget }));
      expect(mappingGuardStats().liveMappings).toBe(MAX_MAPPINGS);
      let error: unknown;
      try {
        mmapFd(fd, 0, PAGE, { budget });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(TransportError);
      expect(error).toMatchObject({ code: "ERR_MAP_LIMIT", limit: MAX_MAPPINGS });
      expect(budget.mappedBytes).toBe(regions.length * PAGE); // the refused one was not charged
      regions.pop()!.unmap();
      regions.push(mmapFd(fd, 0, PAGE, { budget }));
    } finally {
      for (const r of regions) r.unmap();
      closeFd(fd);
    }
    expect(mappingGuardStats().liveMappings).toBe(stats.liveMappings);
  });
});
