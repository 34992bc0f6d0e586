import { describe, expect, it } from "vitest";
import { MessageReader, type FrameEvent } from "../../src/vfio-user/client/reader.js";
import { msg, B, REPLY } from "./helpers.js";

type Out = { kind: string; msgId?: number; payload?: number[]; fds?: number[] };

function collect(max = 1024) {
  const out: Out[] = [];
  const closed: number[] = [];
  const reader = new MessageReader(max, (e: FrameEvent) => {
    if (e.kind === "message") out.push({ kind: e.kind, msgId: e.header.msgId, payload: [...e.payload], fds: e.fds });
    else if (e.kind === "oversized") out.push({ kind: e.kind, msgId: e.header.msgId });
    else out.push({ kind: e.kind });
  }, (fd) => closed.push(fd));
  return { reader, out, closed };
}

const a = msg(1, 9, REPLY, new B().u32(0xaabbccdd));
const b = msg(2, 9, REPLY, new B().bytes([1, 2, 3]));
const c = msg(3, 4, REPLY);
const stream = Buffer.concat([a, b, c]);
const expected = [
  { kind: "message", msgId: 1, payload: [0xdd, 0xcc, 0xbb, 0xaa], fds: [] },
  { kind: "message", msgId: 2, payload: [1, 2, 3], fds: [] },
  { kind: "message", msgId: 3, payload: [], fds: [] },
];

describe("MessageReader", () => {
  it("frames a stream split at every offset (two pieces)", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const { reader, out } = collect();
      reader.push(stream.subarray(0, cut));
      reader.push(stream.subarray(cut));
      expect(out, `cut at ${cut}`).toEqual(expected);
    }
  });

  it("frames a stream fed one byte at a time", () => {
    const { reader, out } = collect();
    for (const byte of stream) reader.push(Uint8Array.of(byte));
    expect(out).toEqual(expected);
    expect(reader.pendingBytes).toBe(0);
  });

  it("gives a read's fds to the last message that starts in it (kernel ends a read after the fd segment)", () => {
    const { reader, out } = collect();
    reader.push(Buffer.concat([a, b]), [7]);
    expect(out.map((o) => o.fds)).toEqual([[], [7]]);
  });

  it("gives fds to the message in progress when the read starts none, and to a partial one that completes later", () => {
    const { reader, out } = collect();
    reader.push(b.subarray(0, 5), [4]);
    reader.push(b.subarray(5));
    reader.push(c.subarray(0, 18 > c.length ? c.length - 1 : 10));
    reader.push(c.subarray(18 > c.length ? c.length - 1 : 10), []);
    expect(out.map((o) => [o.msgId, o.fds])).toEqual([[2, [4]], [3, []]]);
  });

  it("skips an oversized message without buffering it and stays in sync, closing its fds", () => {
    const big = msg(9, 9, REPLY, Buffer.alloc(4000, 0xee));
    const all = Buffer.concat([a, big, b]);
    for (const step of [1, 7, 100, all.length]) {
      const { reader, out, closed } = collect(256);
      for (let i = 0; i < all.length; i += step) reader.push(all.subarray(i, i + step), i === a.length - (a.length % step) ? [] : []);
      expect(out, `step ${step}`).toEqual([expected[0], { kind: "oversized", msgId: 9 }, expected[1]]);
      expect(reader.pendingBytes).toBeLessThan(256);
      expect(closed).toEqual([]);
    }
    const { reader, closed } = collect(256);
    reader.push(big.subarray(0, 100), [11]);
    reader.push(big.subarray(100, 200), []);
    expect(closed).toEqual([11]);
    reader.push(big.subarray(200), []);
  });

  it("reports a size below the header as fatal, closes fds and ignores further input", () => {
    const { reader, out, closed } = collect();
    const broken = msg(5, 9, REPLY, Buffer.alloc(0), 0, 8);
    reader.push(Buffer.concat([a, broken, b]), [3]);
    expect(out.map((o) => o.kind)).toEqual(["message", "fatal"]);
    reader.push(b, [6]);
    expect(out.length).toBe(2);
    expect(closed.sort()).toEqual([3, 6]);
  });

  it("reset closes fds held for a partial message", () => {
    const { reader, closed } = collect();
    reader.push(b.subarray(0, 10), [21, 22]);
    reader.reset();
    expect(closed).toEqual([21, 22]);
  });
});
