// The part of semver's API the package tests use (semver ships no types of its own).
declare module "semver" {
  interface SemVer {
    version: string;
  }
  function minVersion(range: string): SemVer | null;
  function satisfies(version: string, range: string): boolean;
  const semver: { minVersion: typeof minVersion; satisfies: typeof satisfies };
  export default semver;
}
