import { describe, expect, it } from "vitest";
import { Cmd, MpqemuEncoder, MpqemuParser, type MpqemuMsg, type ParseEvent } from "../../src/mpqemu/wire.js";

// Fixtures are written out by hand from QEMU 7.2's layout (x86_64, little-endian):
// header = int32 cmd, 4 pad bytes, u64 size; payload follows. Independent of the encoder.
const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const zeros = (n: number) => "00".repeat(n);

interface Fixture {
  name: string;
  bytes: Uint8Array;
  fds: number[];
  message: MpqemuMsg;
}

const CFGREAD: Fixture = {
  name: "PCI_CFGREAD addr 0x10 len 4",
  bytes: hex("03000000 00000000 0c00000000000000  10000000 00000000 04000000"),
  fds: [],
  message: { cmd: Cmd.PCI_CFGREAD, addr: 0x10, len: 4 },
};
const CFGWRITE: Fixture = {
  name: "PCI_CFGWRITE addr 4 val 0x107 len 2",
  bytes: hex("02000000 00000000 0c00000000000000  04000000 07010000 02000000"),
  fds: [],
  message: { cmd: Cmd.PCI_CFGWRITE, addr: 4, value: 0x107, len: 2 },
};
const BARREAD: Fixture = {
  name: "BAR_READ mem 0xfebf0000 size 4",
  bytes: hex("05000000 00000000 1800000000000000  0000bffe00000000 0000000000000000 04000000 01 000000"),
  fds: [],
  message: { cmd: Cmd.BAR_READ, addr: 0xfebf0000n, size: 4, memory: true },
};
const BARWRITE: Fixture = {
  name: "BAR_WRITE io 0xc000 size 8",
  bytes: hex("04000000 00000000 1800000000000000  00c0000000000000 8877665544332211 08000000 00 000000"),
  fds: [],
  message: { cmd: Cmd.BAR_WRITE, addr: 0xc000n, value: 0x1122334455667788n, size: 8, memory: false },
};
const IRQFD: Fixture = {
  name: "SET_IRQFD",
  bytes: hex("06000000 00000000 0000000000000000"),
  fds: [41, 42],
  message: { cmd: Cmd.SET_IRQFD, irqfd: 41, resamplefd: 42 },
};
const RESET: Fixture = {
  name: "DEVICE_RESET",
  bytes: hex("07000000 00000000 0000000000000000"),
  fds: [],
  message: { cmd: Cmd.DEVICE_RESET },
};
const SYSMEM: Fixture = {
  name: "SYNC_SYSMEM two regions",
  bytes: hex(
    "00000000 00000000 c000000000000000" +
      // gpas: 0, 0x100000000
      "0000000000000000 0000000001000000" + zeros(6 * 8) +
      // sizes: 0x80000000, 0x10000000
      "0000008000000000 0000001000000000" + zeros(6 * 8) +
      // offsets: 0, 0x80000000
      "0000000000000000 0000008000000000" + zeros(6 * 8),
  ),
  fds: [50, 51],
  message: {
    cmd: Cmd.SYNC_SYSMEM,
    regions: [
      { gpa: 0n, size: 0x80000000n, offset: 0n, fd: 50 },
      { gpa: 0x100000000n, size: 0x10000000n, offset: 0x80000000n, fd: 51 },
    ],
  },
};
const RET8: Fixture = {
  name: "RET 0x100e8086",
  bytes: hex("01000000 00000000 0800000000000000  8680 0e10 00000000"),
  fds: [],
  message: { cmd: Cmd.RET, value: 0x100e8086n },
};
const RET0: Fixture = {
  name: "RET without payload",
  bytes: hex("01000000 00000000 0000000000000000"),
  fds: [],
  message: { cmd: Cmd.RET, value: null },
};
const RETMAX: Fixture = {
  name: "RET all-ones",
  bytes: hex("01000000 00000000 0800000000000000 ffffffffffffffff"),
  fds: [],
  message: { cmd: Cmd.RET, value: 0xffffffffffffffffn },
};

const REQUESTS = [SYSMEM, IRQFD, CFGREAD, CFGWRITE, BARREAD, BARWRITE, RESET];
const REPLIES = [RET8, RET0, RETMAX];

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

/**
 * Cuts a stream the way a Linux AF_UNIX recvmsg does: at the caller's offsets, and also right
 * after every message that carried fds (the kernel stops a read after an SCM_RIGHTS batch).
 * fds ride on the chunk that holds the first byte of their message.
 */
function kernelChunks(fixtures: Fixture[], cuts: number[]): { data: Uint8Array; fds: number[] }[] {
  const stream = concat(fixtures.map((f) => f.bytes));
  const starts: number[] = [];
  const forced = new Set<number>(cuts);
  let at = 0;
  for (const f of fixtures) {
    starts.push(at);
    at += f.bytes.length;
    if (f.fds.length) forced.add(at);
  }
  const bounds = [...forced].filter((c) => c > 0 && c < stream.length).sort((a, b) => a - b);
  const out: { data: Uint8Array; fds: number[] }[] = [];
  let prev = 0;
  for (const end of [...bounds, stream.length]) {
    const fds: number[] = [];
    fixtures.forEach((f, i) => {
      if (starts[i] >= prev && starts[i] < end) fds.push(...f.fds);
    });
    out.push({ data: stream.subarray(prev, end), fds });
    prev = end;
  }
  return out;
}

function parseAll(role: "remote" | "proxy", chunks: { data: Uint8Array; fds: number[] }[]) {
  const closed: number[] = [];
  const parser = new MpqemuParser(role, (fd) => closed.push(fd));
  const events: ParseEvent<MpqemuMsg>[] = [];
  for (const c of chunks) parser.push(c.data, c.fds, (ev) => events.push(ev));
  return { events, closed, parser };
}

const messages = (events: ParseEvent<MpqemuMsg>[]) => events.map((e) => (e.ok ? e.message : e.error.code));

describe("mpqemu wire: encoder matches hand-built bytes", () => {
  const enc = new MpqemuEncoder();
  it.each([
    [CFGREAD, () => enc.configRead(0x10, 4)],
    [CFGWRITE, () => enc.configWrite(4, 0x107, 2)],
    [BARREAD, () => enc.barRead(0xfebf0000n, 4, true)],
    [BARWRITE, () => enc.barWrite(0xc000n, 0x1122334455667788n, 8, false)],
    [IRQFD, () => enc.setIrqfd(41, 42)],
    [RESET, () => enc.deviceReset()],
    [SYSMEM, () => enc.syncSysmem((SYSMEM.message as any).regions)],
    [RET8, () => enc.ret(0x100e8086n)],
    [RET0, () => enc.ret(null)],
    [RETMAX, () => enc.ret(-1n)],
  ] as const)("%s", (fixture, encode) => {
    const out = encode();
    expect(Buffer.from(out.bytes).toString("hex")).toBe(Buffer.from(fixture.bytes).toString("hex"));
    expect(out.fds).toEqual(fixture.fds);
  });

  it("reuses one buffer and clears padding left by a longer message", () => {
    enc.syncSysmem((SYSMEM.message as any).regions);
    const out = enc.barRead(0xfebf0000n, 4, true);
    expect(Buffer.from(out.bytes).toString("hex")).toBe(Buffer.from(BARREAD.bytes).toString("hex"));
  });

  it("refuses a SYNC_SYSMEM with no regions or more than 8", () => {
    expect(() => enc.syncSysmem([])).toThrow(expect.objectContaining({ code: "MPQEMU_BAD_ARGUMENT" }));
    const r = { gpa: 0n, size: 4096n, offset: 0n, fd: 3 };
    expect(() => enc.syncSysmem(Array(9).fill(r))).toThrow(/1 to 8 regions/);
  });
});

describe("mpqemu wire: parser", () => {
  it("decodes every request, whole and split at every offset", () => {
    const total = concat(REQUESTS.map((f) => f.bytes)).length;
    const expected = REQUESTS.map((f) => f.message);
    for (let cut = 0; cut <= total; cut++) {
      const { events, closed, parser } = parseAll("remote", kernelChunks(REQUESTS, [cut]));
      expect(messages(events), `cut at ${cut}`).toEqual(expected);
      expect(closed).toEqual([]);
      expect(parser.buffered).toBe(0);
    }
  });

  it("decodes every request fed one byte at a time", () => {
    const total = concat(REQUESTS.map((f) => f.bytes)).length;
    const cuts = Array.from({ length: total }, (_, i) => i);
    const { events } = parseAll("remote", kernelChunks(REQUESTS, cuts));
    expect(messages(events)).toEqual(REQUESTS.map((f) => f.message));
  });

  it("decodes every reply split at every offset (proxy side)", () => {
    const total = concat(REPLIES.map((f) => f.bytes)).length;
    for (let cut = 0; cut <= total; cut++) {
      const { events } = parseAll("proxy", kernelChunks(REPLIES, [cut, cut + 7]));
      expect(messages(events), `cut at ${cut}`).toEqual(REPLIES.map((f) => f.message));
    }
  });

  it("gives fds that arrived alone (no data) to the next message", () => {
    const closed: number[] = [];
    const parser = new MpqemuParser("remote", (fd) => closed.push(fd));
    const events: ParseEvent<MpqemuMsg>[] = [];
    parser.push(new Uint8Array(0), [41, 42], (e) => events.push(e));
    parser.push(IRQFD.bytes, [], (e) => events.push(e));
    expect(messages(events)).toEqual([IRQFD.message]);
  });

  it("attaches fds to the last message starting in a chunk that completes earlier ones", () => {
    // CFGREAD's tail + a whole SET_IRQFD in one read, fds with it: they belong to SET_IRQFD.
    const stream = concat([CFGREAD.bytes, IRQFD.bytes]);
    const { events, closed } = parseAll("remote", [
      { data: stream.subarray(0, 5), fds: [] },
      { data: stream.subarray(5), fds: [41, 42] },
    ]);
    expect(messages(events)).toEqual([CFGREAD.message, IRQFD.message]);
    expect(closed).toEqual([]);
  });

  describe("rejections close fds and keep the stream framed", () => {
    const enc = new MpqemuEncoder();
    const raw = (cmd: number, payloadHex: string, fds: number[] = [], declared?: number) => {
      const e = enc.raw(cmd, hex(payloadHex), declared, fds);
      return { name: `raw ${cmd}`, bytes: e.bytes, fds, message: null as any } as Fixture;
    };
    const cases: [string, Fixture, string][] = [
      ["unknown command", raw(9, zeros(8), [5]), "MPQEMU_UNKNOWN_COMMAND"],
      ["negative command", raw(-1, ""), "MPQEMU_UNKNOWN_COMMAND"],
      ["config read with 8-byte payload", raw(Cmd.PCI_CFGREAD, zeros(8)), "MPQEMU_BAD_SIZE"],
      ["BAR read carrying an fd", raw(Cmd.BAR_READ, zeros(24), [6]), "MPQEMU_BAD_FDS"],
      ["SET_IRQFD with one fd", raw(Cmd.SET_IRQFD, "", [7]), "MPQEMU_BAD_FDS"],
      ["SET_IRQFD with a payload", raw(Cmd.SET_IRQFD, zeros(8), [7, 8]), "MPQEMU_BAD_SIZE"],
      ["SYNC_SYSMEM without fds", raw(Cmd.SYNC_SYSMEM, zeros(192)), "MPQEMU_BAD_FDS"],
      ["SYNC_SYSMEM with 9 fds", raw(Cmd.SYNC_SYSMEM, zeros(192), [1, 2, 3, 4, 5, 6, 7, 8, 9]), "MPQEMU_BAD_FDS"],
      ["SYNC_SYSMEM region of size 0", raw(Cmd.SYNC_SYSMEM, zeros(192), [10]), "MPQEMU_BAD_FIELD"],
      [
        "SYNC_SYSMEM region wrapping past 2^64",
        raw(Cmd.SYNC_SYSMEM, "00f0ffffffffffff" + zeros(56) + "0000010000000000" + zeros(56) + zeros(64), [11]),
        "MPQEMU_BAD_FIELD",
      ],
      ["RET sent to a remote", raw(Cmd.RET, zeros(8)), "MPQEMU_UNEXPECTED_COMMAND"],
      ["DEVICE_RESET with an fd", raw(Cmd.DEVICE_RESET, "", [12]), "MPQEMU_BAD_FDS"],
      ["oversized payload (300 bytes)", raw(Cmd.BAR_READ, zeros(300), [13]), "MPQEMU_OVERSIZED"],
    ];
    it.each(cases)("%s", (_name, bad, code) => {
      const seq = [bad, CFGREAD];
      const total = concat(seq.map((f) => f.bytes)).length;
      for (let cut = 0; cut <= total; cut++) {
        const { events, closed } = parseAll("remote", kernelChunks(seq, [cut]));
        expect(events.length, `cut ${cut}`).toBe(2);
        const [first, second] = events;
        expect(first.ok).toBe(false);
        if (!first.ok) {
          expect(first.error.code).toBe(code);
          expect(first.fatal).toBe(false);
          expect(first.error.message).toMatch(/mpqemu: /);
        }
        expect(second).toEqual({ ok: true, message: CFGREAD.message });
        expect(closed.sort((a, b) => a - b)).toEqual([...bad.fds].sort((a, b) => a - b));
      }
    });

    it("a request arriving at a proxy and a short RET are rejected", () => {
      const { events } = parseAll("proxy", [
        { data: CFGREAD.bytes, fds: [] },
        { data: hex("01000000 00000000 0400000000000000 01020304"), fds: [] },
        { data: RET8.bytes, fds: [] },
      ]);
      expect(messages(events)).toEqual(["MPQEMU_UNEXPECTED_COMMAND", "MPQEMU_BAD_SIZE", RET8.message]);
    });

    it("a payload too large to skip breaks the stream: fatal error, later fds closed", () => {
      const closed: number[] = [];
      const parser = new MpqemuParser("remote", (fd) => closed.push(fd));
      const events: ParseEvent<MpqemuMsg>[] = [];
      parser.push(hex("05000000 00000000 0000000001000000"), [20], (e) => events.push(e));
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ ok: false, fatal: true, cmd: 5 });
      expect(!events[0].ok && events[0].error.code).toBe("MPQEMU_FRAMING");
      parser.push(CFGREAD.bytes, [21], (e) => events.push(e));
      expect(events).toHaveLength(1);
      expect(closed).toEqual([20, 21]);
    });
  });

  it("end() inside a message reports truncation and closes its fds", () => {
    for (let cut = 1; cut < SYSMEM.bytes.length; cut++) {
      const closed: number[] = [];
      const parser = new MpqemuParser("remote", (fd) => closed.push(fd));
      parser.push(SYSMEM.bytes.subarray(0, cut), SYSMEM.fds, () => {
        throw new Error("no message expected");
      });
      const err = parser.end();
      expect(err?.code, `cut ${cut}`).toBe("MPQEMU_TRUNCATED");
      expect(closed).toEqual(SYSMEM.fds);
    }
  });

  it("end() at a message boundary is clean", () => {
    const parser = new MpqemuParser("remote", () => {});
    parser.push(CFGREAD.bytes, [], () => {});
    expect(parser.end()).toBeNull();
  });
});
