// `npm ci` on the oldest supported Node prints no engine warnings: every package the lockfile
// installs accepts the minimum of our own `engines.node` (the dev tools included: a newer
// node-gyp, for one, wants Node 22).
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import semver from "semver";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"));

describe("engines", () => {
  it("the lockfile's packages all accept the oldest Node we support", () => {
    const oldest = semver.minVersion(manifest.engines.node)!.version;
    expect(semver.satisfies(process.version, manifest.engines.node)).toBe(true);
    const refusing = Object.entries(lock.packages as Record<string, { engines?: { node?: string } }>)
      .filter(([, p]) => typeof p.engines?.node === "string" && !semver.satisfies(oldest, p.engines.node))
      .map(([path, p]) => `${path} wants node ${p.engines!.node}`);
    expect(refusing).toEqual([]);
    expect(lock.packages[""].engines).toEqual(manifest.engines);
  });
});
