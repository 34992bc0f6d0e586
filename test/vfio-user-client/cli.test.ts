// `wasmdev region` and `wasmdev lspci` end to end through the real transport against the
// scripted fake device, plus the pure argument parsing and formatting helpers.
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../../src/commands/main.js";
import { parseCommandLine, parseRegion, parseWriteValue, UsageError } from "../../src/commands/args.js";
import { formatValue, hexDump } from "../../src/commands/hexdump.js";
import { formatBarSize as formatSize } from "../../src/commands/config-space.js";
import { ScriptedServer, fakeDevice } from "./helpers.js";

const region = (argv: string[]) => main(["region", ...argv]);
const lspci = (argv: string[]) => main(["lspci", "-n", ...argv]);

let server: ScriptedServer | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await server?.stop();
  server = undefined;
});

async function capture(fn: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => ((out += String(chunk)), true));
  vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => ((err += String(chunk)), true));
  try {
    const code = await fn();
    return { code, out, err };
  } finally {
    vi.restoreAllMocks();
  }
}

describe("wasmdev region", () => {
  it("reads a value as 0x-hex, writes, and reads back; larger reads print a hex dump", async () => {
    const dev = fakeDevice();
    server = await new ScriptedServer(dev.script).start();
    expect(await capture(() => region(["read", "--socket", server!.path, "bar0", "0x10", "4"]))).toEqual({ code: 0, out: "0x13121110\n", err: "" });
    expect((await capture(() => region(["write", "--socket", server!.path, "bar0", "0x20", "2", "0xbeef"]))).code).toBe(0);
    expect(dev.memory[0].readUInt16LE(0x20)).toBe(0xbeef);
    expect((await capture(() => region(["read", `--socket=${server!.path}`, "0", "0x20", "1"]))).out).toBe("0xef\n");
    const dump = await capture(() => region(["read", "--socket", server!.path, "config", "0", "20"]));
    expect(dump.out).toBe(
      "00000000  34 12 e8 11 02 00 10 00  10 00 ff 00 00 00 00 00  |4...............|\n" +
        "00000010  00 00 a0 fe                                       |....|\n" +
        "00000014\n",
    );
  });

  it("device errors exit 1 with the errno, usage errors exit 2 with the usage", async () => {
    const dev = fakeDevice();
    server = await new ScriptedServer(dev.script).start();
    const past = await capture(() => region(["read", "--socket", server!.path, "bar1", "0xfe", "4"]));
    expect(past.code).toBe(1);
    expect(past.err).toMatch(/read of 4 bytes at BAR1 offset 0xfe failed: .*past the end of region 1/);
    const usage = await capture(() => region(["read", "--socket", server!.path, "bar0", "0"]));
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/read takes 3 arguments/);
    expect((await capture(() => region(["write", "--socket", server!.path, "bar0", "0", "1", "0x100"]))).err).toMatch(/does not fit in 1 byte/);
    expect((await capture(() => region(["peek", "--socket", "x"]))).code).toBe(2);
    expect((await capture(() => region(["read", "bar0", "0", "4"]))).err).toMatch(/--socket PATH is required/);
    const nobody = await capture(() => region(["read", "--socket", server!.dir + "/absent.sock", "bar0", "0", "4"]));
    expect(nobody.code).toBe(1);
    expect(nobody.err).toMatch(/cannot connect to vfio-user server at .*absent.sock: ENOENT/);
  });

  it("--help prints the usage and exits 0", async () => {
    const r = await capture(() => region(["--help"]));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/usage: wasmdev region read/);
  });
});

describe("wasmdev lspci", () => {
  it("prints the decoded header, BARs with sizes and types, capabilities, regions and interrupts", async () => {
    const dev = fakeDevice();
    server = await new ScriptedServer(dev.script).start();
    const r = await capture(() => lspci(["--socket", server!.path]));
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const lines = r.out.split("\n");
    expect(lines[0]).toBe(`${server.path} Unclassified device [00ff]: Device 1234:11e8 (rev 10)`);
    expect(lines).toContain("\tSubsystem: Device 1af4:1100");
    expect(lines).toContain("\tControl: I/O- Mem+ BusMaster- SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- FastB2B- DisINTx-");
    expect(lines).toContain("\tInterrupt: pin A routed to IRQ 11");
    expect(lines).toContain("\tRegion 0: Memory at fea00000 (32-bit, non-prefetchable) [size=1M]");
    expect(lines).toContain("\tRegion 1: I/O ports at c000 [disabled] [size=256]");
    expect(lines).toContain("\tvfio-user region 0 (BAR0): [size=1M] {rw}");
    expect(lines).toContain("\tvfio-user region 7 (config space): [size=256] {rw}");
    expect(lines).toContain("\tCapabilities: [40] MSI: Enable- Count=1/1 Maskable- 64bit+");
    expect(lines).toContain("\tInterrupts INTx: count=1 (eventfd, maskable)");
    expect(lines.some((l) => /vfio-user: version 0\.1, max_data_xfer_size=1048576/.test(l))).toBe(true);
  });

  it("fails cleanly with exit 1 when nothing listens and 2 on bad usage", async () => {
    expect((await capture(() => lspci(["--socket", "/nonexistent/x.sock"]))).code).toBe(1);
    const bad = await capture(() => lspci(["--sockt", "x"]));
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/unknown option '--sockt'/);
    expect((await capture(() => lspci(["-h"]))).out).toMatch(/lspci -vv/);
  });
});

describe("CLI helpers", () => {
  it("parses flags, positionals and regions", () => {
    const options = { socket: { type: "string" }, timeout: { type: "string" } } as const;
    expect(parseCommandLine(["--socket", "a", "x", "--timeout=5", "--", "--y"], options).positionals).toEqual(["x", "--y"]);
    expect(() => parseCommandLine(["--socket"], options)).toThrow(UsageError);
    expect([parseRegion("BAR5"), parseRegion("config"), parseRegion("0x9")]).toEqual([5, 7, 9]);
    expect(() => parseRegion("bar9")).toThrow(/REGION must be/);
  });

  it("encodes write values little-endian and checks their width", () => {
    expect([...parseWriteValue("0x11223344", 4)]).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect([...parseWriteValue("00:11:22:33:44:55:66:77:88", 9)]).toEqual([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    expect(() => parseWriteValue("0x1ff", 1)).toThrow(/does not fit/);
    expect(() => parseWriteValue("0011", 9)).toThrow(/9 bytes of hex/);
  });

  it("formats values, dumps and sizes", () => {
    expect(formatValue(Uint8Array.of(0x0a, 0, 0, 0))).toBe("0x0000000a");
    expect(hexDump(Uint8Array.of(0x41, 0x42), 0x1_0000_0000n)).toBe("0000000100000000  41 42                                             |AB|\n0000000100000002");
    expect([formatSize(1n << 20n), formatSize(4096n), formatSize(256n), formatSize(3n << 30n)]).toEqual(["1M", "4K", "256", "3G"]);
  });
});
