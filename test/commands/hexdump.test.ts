// region read's dump against util-linux's `hexdump -C` on the same bytes: repeated lines as
// '*', partial last lines, the closing end offset.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { configHexDump, hexDump } from "../../src/commands/hexdump.js";

const haveHexdump = spawnSync("hexdump", ["-C"], { input: "" }).status === 0;

function cases(): Uint8Array[] {
  const out: Uint8Array[] = [];
  const ramp = Uint8Array.from({ length: 100 }, (_, i) => (i * 7 + 0x20) & 0xff);
  out.push(new Uint8Array(1), new Uint8Array(16), new Uint8Array(17), new Uint8Array(64).fill(0xff), ramp);
  // Runs of equal lines in the middle and at the end, a repeat broken by one byte, a partial tail.
  const mixed = new Uint8Array(16 * 9 + 5).fill(0x41);
  mixed[16 * 3 + 2] = 0x42;
  mixed.fill(0, 16 * 6);
  out.push(mixed, new Uint8Array(16 * 4 + 16).fill(7));
  return out;
}

describe("hexDump", () => {
  // .ci/run installs hexdump; elsewhere the comparison skips without it.
  it.skipIf(!haveHexdump && process.env.CI !== "true")("prints what hexdump -C prints", () => {
    for (const bytes of cases()) {
      const reference = spawnSync("hexdump", ["-C"], { input: bytes, encoding: "utf8" }).stdout;
      expect(hexDump(bytes) + "\n", `${bytes.length} bytes`).toBe(reference);
    }
  });

  it("addresses from the base, widening past 32 bits", () => {
    expect(hexDump(new Uint8Array(48), 0x100n)).toBe("00000100  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n00000130");
    expect(hexDump(Uint8Array.of(0x41), 0xffff_fff0n).split("\n")[1]).toBe("fffffff1");
    expect(hexDump(new Uint8Array(16), 0xffff_fff8n).split("\n").map((l) => l.slice(0, 16))).toEqual(["00000000fffffff8", "0000000100000008"]);
  });

  it("lspci -x lines: 16 bytes each, three-digit offsets past 256", () => {
    const config = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
    expect(configHexDump(config, 64).split("\n")).toHaveLength(4);
    const all = configHexDump(config, 4096).split("\n");
    expect(all).toHaveLength(256);
    expect(all[0]).toBe("000: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f");
    expect(all[255]).toBe("ff0: f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 fa fb fc fd fe ff");
    expect(configHexDump(config.subarray(0, 256), 4096).split("\n")[15]).toBe("f0: f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 fa fb fc fd fe ff");
  });
});
