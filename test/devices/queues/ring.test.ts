// The shared ring helper against a plain byte array as host memory. Expected values come from
// the rules the helper implements (NVMe 1.4 §4.1, §4.6, §5.7; virtio 1.2 §2.7.10 event
// suppression), worked by hand here, not from the helper.
import { describe, expect, it } from "vitest";
import { CompletionRing, needEvent, ShadowDoorbell, SubmissionRing, type RingMemory } from "../../../src/devices/queues/index.js";

/** Host memory of `size` bytes at IOVA 0; `onWrite` sees every device write after it lands. */
function memory(size = 0x1000, onWrite?: (iova: bigint, len: number) => void) {
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  const check = (iova: bigint, len: number) => {
    if (iova < 0n || iova + BigInt(len) > BigInt(size)) throw new Error(`unmapped 0x${iova.toString(16)}+${len}`);
    return Number(iova);
  };
  const mem: RingMemory = {
    readSync(iova, dest) {
      const at = check(iova, dest.length);
      dest.set(bytes.subarray(at, at + dest.length));
    },
    writeSync(iova, src) {
      bytes.set(src, check(iova, src.length));
      onWrite?.(iova, src.length);
    },
  };
  return { mem, u32: (at: number) => view.getUint32(at, true), setU32: (at: number, v: number) => view.setUint32(at, v, true) };
}

describe("needEvent (the host's EventIdx test)", () => {
  it("rings exactly when the move passes the published index, across the 16-bit wrap", () => {
    // [eventIdx, new, old, rings]
    const cases: [number, number, number, boolean][] = [
      [5, 6, 5, true], // the device has seen 5; entry 5 is new
      [5, 7, 6, false], // already past 5 before this move
      [5, 9, 3, true], // a batch that covers 5
      [5, 5, 3, false], // stops at 5: entry 5 not yet written
      [0xffff, 1, 0xffff, true],
      [0, 1, 0xffff, true],
      [1, 1, 0xffff, false],
      [3, 3, 3, false], // no move never rings
    ];
    for (const [e, n, o, want] of cases) expect(needEvent(e, n, o), `event ${e} new ${n} old ${o}`).toBe(want);
  });
});

describe("SubmissionRing", () => {
  it("counts entries between head and tail and reads up to the wrap in one piece", () => {
    const sq = new SubmissionRing(0x1000n, 8, 64);
    expect(sq.empty).toBe(true);
    expect(sq.ring(6)).toBe(true);
    expect(sq.available).toBe(6);
    expect(sq.contiguous(4)).toBe(4);
    sq.consume(5);
    expect(sq.address(sq.head)).toBe(0x1000n + 5n * 64n);
    expect(sq.ring(2)).toBe(true); // wraps: entries 5, 6, 7, 0, 1
    expect(sq.available).toBe(5);
    expect(sq.contiguous(64)).toBe(3); // 5..7, then the wrap
    sq.consume(3);
    expect(sq.head).toBe(0);
    expect(sq.contiguous(64)).toBe(2);
    sq.consume(2);
    expect(sq.empty).toBe(true);
  });

  it("refuses a tail outside the ring and keeps the old one", () => {
    const sq = new SubmissionRing(0n, 4, 64);
    sq.ring(3);
    expect(sq.ring(4)).toBe(false);
    expect(sq.ring(-1)).toBe(false);
    expect(sq.tail).toBe(3);
    expect(() => new SubmissionRing(0n, 1, 64)).toThrow(RangeError);
  });

  it("takes tails from its shadow doorbell, ignoring values outside the ring", () => {
    const { mem, setU32 } = memory();
    const sq = new SubmissionRing(0n, 16, 64);
    expect(sq.refresh(mem)).toBe(false); // no shadow: nothing to read
    sq.shadow = new ShadowDoorbell(0x100n, 0x200n);
    setU32(0x100, 9);
    expect(sq.refresh(mem)).toBe(true);
    expect(sq.tail).toBe(9);
    setU32(0x100, 16);
    expect(sq.refresh(mem)).toBe(false);
    expect(sq.tail).toBe(9);
  });

  it("publishes EventIdx = tail when drained, and reports a tail the host wrote before seeing it", () => {
    let hostTail = -1;
    const host = memory(0x1000, (iova) => {
      // The host races the device: it writes a new shadow tail just as EventIdx lands.
      if (iova === 0x208n && hostTail >= 0) host.setU32(0x108, hostTail);
    });
    const sq = new SubmissionRing(0n, 32, 64);
    sq.shadow = new ShadowDoorbell(0x108n, 0x208n);
    host.setU32(0x108, 4);
    sq.refresh(host.mem);
    sq.consume(4);
    expect(sq.armSubmission(host.mem)).toBe(false); // quiet host: done, wait for a doorbell
    expect(host.u32(0x208)).toBe(4);
    expect(sq.idle).toBe(true);
    hostTail = 7;
    expect(sq.armSubmission(host.mem)).toBe(true); // keep going: 3 more, and no doorbell coming
    expect(sq.available).toBe(3);
    expect(sq.idle).toBe(false);
  });

  it("is idle once drained and armed, until a doorbell or a new shadow tail", () => {
    const { mem, setU32 } = memory();
    const plain = new SubmissionRing(0n, 4, 64);
    expect(plain.idle).toBe(false); // a new ring has not been looked at
    expect(plain.armSubmission(mem)).toBe(false); // no shadow: every tail will come as a doorbell
    expect(plain.idle).toBe(true);
    plain.ring(plain.tail); // even a doorbell with the same value means "look"
    expect(plain.idle).toBe(false);
    expect(plain.ring(9)).toBe(false);

    const sq = new SubmissionRing(0n, 8, 64);
    sq.shadow = new ShadowDoorbell(0x100n, 0x200n);
    sq.armSubmission(mem);
    expect(sq.idle).toBe(true);
    expect(sq.refresh(mem)).toBe(false); // shadow unchanged: still idle
    expect(sq.idle).toBe(true);
    setU32(0x100, 3);
    expect(sq.refresh(mem)).toBe(true);
    expect(sq.idle).toBe(false);
  });

  it("lets a memory fault through to the caller", () => {
    const { mem } = memory(0x100);
    const sq = new SubmissionRing(0n, 4, 64);
    sq.shadow = new ShadowDoorbell(0x1000n, 0x2000n);
    expect(() => sq.refresh(mem)).toThrow(/unmapped/);
  });
});

describe("CompletionRing", () => {
  it("flips the phase tag on every wrap and keeps one slot free", () => {
    const { mem } = memory();
    const cq = new CompletionRing(0x800n, 4, 16);
    const seen: [bigint, number][] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) {
        expect(cq.full(mem)).toBe(false);
        seen.push([cq.slot(), cq.phase]);
        cq.advance();
      }
      expect(cq.full(mem)).toBe(true); // 3 of 4 slots: full
      expect(cq.pending).toBe(true);
      cq.ring(cq.tail); // the host consumed everything
      expect(cq.pending).toBe(false);
    }
    // Slots 0,1,2 | 3,0,1 | 2,3,0 with phase 1 until the first wrap past slot 3, then 0, then 1.
    const want: [number, number][] = [[0, 1], [1, 1], [2, 1], [3, 1], [0, 0], [1, 0], [2, 0], [3, 0], [0, 1]];
    expect(seen).toEqual(want.map(([s, p]) => [0x800n + BigInt(s * 16), p]));
  });

  it("when full, re-reads the shadow head, then publishes EventIdx = head to be told when a slot frees", () => {
    const { mem, u32, setU32 } = memory();
    const cq = new CompletionRing(0n, 4, 16);
    cq.shadow = new ShadowDoorbell(0x10cn, 0x20cn);
    setU32(0x20c, 0xdead);
    for (let i = 0; i < 3; i++) cq.advance();
    expect(cq.full(mem)).toBe(true);
    expect(u32(0x20c)).toBe(0);
    setU32(0x10c, 2); // the host consumed two, wrote the shadow and did not ring
    expect(cq.full(mem)).toBe(false);
    expect(cq.head).toBe(2);
    expect(cq.ring(4)).toBe(false);
    expect(cq.head).toBe(2);
  });

  it("is not full when the host moved the head just before it saw the published EventIdx", () => {
    const host = memory(0x1000, (iova) => {
      if (iova === 0x20cn) host.setU32(0x10c, 1); // the host consumed one as EventIdx landed
    });
    const cq = new CompletionRing(0n, 4, 16);
    cq.shadow = new ShadowDoorbell(0x10cn, 0x20cn);
    for (let i = 0; i < 3; i++) cq.advance();
    expect(cq.full(host.mem)).toBe(false);
    expect(cq.head).toBe(1);
  });

  it("does not touch memory when it is not full", () => {
    const { mem } = memory(0x10);
    const cq = new CompletionRing(0n, 4, 16);
    cq.shadow = new ShadowDoorbell(0x1000n, 0x2000n); // unmapped: any access would throw
    expect(cq.full(mem)).toBe(false);
  });
});
