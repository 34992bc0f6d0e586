import { describe, expect, it } from "vitest";
import { PostedWritePolicy } from "../../src/vfio-user/client/posted-writes.js";
import { decodeBarSpaces } from "../../src/vfio-user/client/client.js";
import { B } from "./helpers.js";

function policy(options = {}) {
  const p = new PostedWritePolicy(options);
  p.setRegionSpace(0, "memory");
  p.setRegionSpace(1, "io");
  p.setRegionSpace(2, "memory");
  p.setRegionSpace(7, "config");
  p.setRegionSpace(6, "other");
  return p;
}

describe("posted-write policy", () => {
  it("posts memory-BAR writes while nothing is mapped", () => {
    const p = policy();
    expect(p.decide(0)).toEqual({ posted: true });
    expect(p.decide(2)).toEqual({ posted: true });
  });

  it("never posts I/O BAR, config space, ROM or unknown regions", () => {
    const p = policy({ postRegardlessOfMappings: true });
    expect(p.decide(1)).toEqual({ posted: false, reason: "io-space" });
    expect(p.decide(7)).toEqual({ posted: false, reason: "config-space" });
    expect(p.decide(6)).toEqual({ posted: false, reason: "not-a-memory-bar" });
    expect(p.decide(3)).toEqual({ posted: false, reason: "unknown-region" });
  });

  it("stops posting once any region is mapped (strict default), and resumes after unmap", () => {
    const p = policy();
    p.noteMapped(2);
    expect(p.decide(0)).toEqual({ posted: false, reason: "region-mapped" });
    expect(p.decide(2)).toEqual({ posted: false, reason: "region-mapped" });
    p.noteUnmapped(2);
    expect(p.decide(0)).toEqual({ posted: true });
  });

  it("posts regardless of mappings when asked", () => {
    const p = policy({ postRegardlessOfMappings: true });
    p.noteMapped(2);
    expect(p.decide(0)).toEqual({ posted: true });
  });

  it("can be disabled entirely", () => {
    expect(policy({ postMemoryWrites: false }).decide(0)).toEqual({ posted: false, reason: "disabled" });
  });

  it("decodes BAR spaces from config space, with 64-bit BARs covering two slots", () => {
    // BAR0: 32-bit memory, BAR1: I/O, BAR2+3: 64-bit prefetchable memory, BAR4: I/O, BAR5: memory
    const bars = new B().u32(0xfebf0000).u32(0xc001).u32(0x0000000c).u32(0x1).u32(0xc101).u32(0).build();
    expect([...decodeBarSpaces(bars)]).toEqual([
      [0, "memory"], [1, "io"], [2, "memory"], [3, "memory"], [4, "io"], [5, "memory"],
    ]);
  });
});
