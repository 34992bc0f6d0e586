import { describe, test, expect } from "vitest";
import { ReceiveBuffer, SendBuffer, TransportError, memfdCreate, closeFd } from "../../src/transport/index.js";
import { frame, lengthPrefixedFramer, isOpen, type Framed } from "./helpers.js";

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

describe("SendBuffer", () => {
  test("writes little-endian fields matching independently written bytes", () => {
    const sb = new SendBuffer(16);
    sb.u8(0x01).u16(0x0302).u32(0x07060504).u64(0x0f0e0d0c0b0a0908n).i32(-2).zeros(3).bytesFrom(new Uint8Array([0xaa, 0xbb]));
    expect(hex(sb.bytesView())).toBe("01" + "0203" + "04050607" + "08090a0b0c0d0e0f" + "feffffff" + "000000" + "aabb");
  });

  test("grows while keeping earlier bytes, patches fields, and reset() reuses the storage", () => {
    const sb = new SendBuffer(16);
    sb.u32(0);
    for (let i = 0; i < 1000; i++) sb.u8(i & 0xff);
    sb.u32At(0, sb.length);
    const bytes = sb.bytesView();
    expect(bytes.length).toBe(1004);
    expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true)).toBe(1004);
    expect(bytes[4 + 999]).toBe(999 & 0xff);
    const storage = sb.bytes;
    sb.reset().u16(0xbeef);
    expect(sb.bytes).toBe(storage);
    expect(hex(sb.bytesView())).toBe("efbe");
  });
});

describe("ReceiveBuffer", () => {
  const stream = [frame([1, 2, 3]), frame([]), frame(Array.from({ length: 300 }, (_, i) => i & 0xff)), frame([9])];
  const all = Uint8Array.from(stream.flatMap((m) => [...m]));

  test("reassembles frames fed split at every offset (two and three pieces)", () => {
    for (let cut1 = 0; cut1 <= all.length; cut1++) {
      for (const cut2 of [cut1, Math.min(all.length, cut1 + 1), Math.min(all.length, cut1 + 7)]) {
        const rb = new ReceiveBuffer({ initialCapacity: 64 });
        const got: Framed[] = [];
        const framer = lengthPrefixedFramer((m) => got.push(m));
        for (const piece of [all.subarray(0, cut1), all.subarray(cut1, cut2), all.subarray(cut2)]) {
          if (piece.length === 0) continue;
          rb.append(piece);
          framer(rb);
        }
        expect(got.map((m) => hex(m.payload))).toEqual(stream.map((m) => hex(m.subarray(4))));
        expect(rb.available).toBe(0);
      }
    }
  });

  test("need() rejects a declared size above maxMessageSize before allocating", () => {
    const rb = new ReceiveBuffer({ maxMessageSize: 1024, initialCapacity: 64 });
    rb.append(frame([1]).subarray(0, 4));
    const before = rb.bytes;
    let error: unknown;
    try {
      rb.need(1025);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TransportError);
    expect((error as TransportError).code).toBe("ERR_MESSAGE_TOO_LARGE");
    expect((error as TransportError).limit).toBe(1024);
    expect((error as TransportError).actual).toBe(1025);
    expect(rb.bytes).toBe(before);
    expect(rb.need(1024)).toBe(false);
    expect(rb.bytes.length).toBeGreaterThanOrEqual(1024);
  });

  test("append() beyond the limit fails and closes the fds that came with the bytes", () => {
    const rb = new ReceiveBuffer({ maxMessageSize: 128, initialCapacity: 64 });
    const fd = memfdCreate("append-overflow", 0);
    rb.append(new Uint8Array(100));
    expect(() => rb.append(new Uint8Array(100), [fd])).toThrow(expect.objectContaining({ code: "ERR_MESSAGE_TOO_LARGE" }));
    expect(isOpen(fd)).toBe(false);
  });

  test("fds go to the message holding the last byte of the read they came with", () => {
    // Read 1: all of A (no fds) and all of B, with fdB; read 2: C's first 2 bytes with fdC;
    // read 3: rest of C and all of D (no fds).
    const [a, b, c, d] = [frame([0xa]), frame([0xb, 0xb]), frame([0xc, 0xc, 0xc]), frame([0xd])];
    const fdB = memfdCreate("b", 0);
    const fdC = memfdCreate("c", 0);
    const rb = new ReceiveBuffer();
    const got: Framed[] = [];
    const framer = lengthPrefixedFramer((m) => got.push(m));
    rb.append(Uint8Array.from([...a, ...b]), [fdB]);
    framer(rb);
    rb.append(c.subarray(0, 2), [fdC]);
    framer(rb);
    rb.append(Uint8Array.from([...c.subarray(2), ...d]));
    framer(rb);
    expect(got.map((m) => [m.payload[0], m.fds])).toEqual([[0xa, []], [0xb, [fdB]], [0xc, [fdC]], [0xd, []]]);
    closeFd(fdB);
    closeFd(fdC);
  });

  test("consume() closes fds the framer did not take; clear() closes the rest", () => {
    const taken = memfdCreate("kept", 0);
    const dropped = memfdCreate("dropped", 0);
    const pending = memfdCreate("pending", 0);
    const rb = new ReceiveBuffer();
    rb.append(frame([1]), [dropped]);
    rb.consume(5);
    expect(isOpen(dropped)).toBe(false);
    rb.append(frame([2]), [taken]);
    expect(rb.takeFds(5)).toEqual([taken]);
    rb.consume(5);
    expect(isOpen(taken)).toBe(true);
    rb.append(frame([3]).subarray(0, 2), [pending]);
    expect(rb.pendingFdCount).toBe(1);
    rb.clear();
    expect(isOpen(pending)).toBe(false);
    expect(rb.available).toBe(0);
    closeFd(taken);
  });

  test("a partial message stays put while the buffer compacts and grows", () => {
    const rb = new ReceiveBuffer({ initialCapacity: 64, maxMessageSize: 4096 });
    const big = frame(Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff));
    const got: Framed[] = [];
    const framer = lengthPrefixedFramer((m) => got.push(m));
    rb.append(frame([5]));
    framer(rb);
    for (let at = 0; at < big.length; at += 33) {
      rb.append(big.subarray(at, at + 33));
      framer(rb);
    }
    expect(got.length).toBe(2);
    expect(hex(got[1].payload)).toBe(hex(big.subarray(4)));
    expect(rb.position).toBe(5 + big.length);
  });
});
