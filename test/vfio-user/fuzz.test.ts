// Property tests: every decoder answers arbitrary bytes with a message or a WireError (a real
// errno, its input untouched, the same answer twice), the parser frames arbitrary chunks with
// every fd handed out or closed once, and the server answers every reply-wanting message of a
// random (well-framed, hostile) stream exactly once, in order, without dropping the connection.
// The coverage-guided targets in test/fuzz/ go further (whole sessions, split-invariance).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as wire from "../../src/vfio-user/wire/index.js";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { createEdu, EDU_REG, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { Bytes, message, concat } from "./bytes.js";
import { RawClient } from "./raw-client.js";

const decoders: [string, (b: Uint8Array) => unknown][] = Object.entries(wire)
  .filter(([name, f]) => name.startsWith("decode") && typeof f === "function")
  .map(([name, f]) => [name, f as (b: Uint8Array) => unknown]);

describe("wire robustness", () => {
  it("every decoder answers arbitrary bytes with a decoded message or a WireError carrying a real errno, leaves the bytes alone, and is deterministic", () => {
    expect(decoders.length).toBeGreaterThan(20);
    const errnos = new Set<number>(Object.values(wire.Errno));
    const codes = new Set(["WIRE_BAD_LENGTH", "WIRE_BAD_FIELD", "WIRE_BAD_VERSION_JSON", "WIRE_TRUNCATED"]);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const before = bytes.slice();
        for (const [name, decode] of decoders) {
          const r = decode(bytes);
          // The receive buffer is the socket layer's: a decoder must not write into it.
          expect(Buffer.from(bytes).equals(Buffer.from(before)), `${name} changed its input`).toBe(true);
          if (r instanceof wire.WireError) {
            expect(errnos.has(r.errno), `${name}: errno ${r.errno} (${r.code}) is not one a reply can carry`).toBe(true);
            expect(codes.has(r.code), `${name}: a payload decoder reported the framing error ${r.code}`).toBe(true);
            expect(r.message.length).toBeGreaterThan(0);
          } else {
            expect(typeof r === "object" && r !== null, `${name} returned ${String(r)}`).toBe(true);
          }
          // The same bytes decode the same way (no state carried between calls).
          expect(decode(before)).toEqual(r);
        }
      }),
      { numRuns: 1000, examples: [[new Uint8Array(0)], [new Uint8Array(200)]] },
    );
  });

  it("the parser turns arbitrary bytes in arbitrary chunks into frames and errors without throwing; every fd is handed out or closed once", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(600), { maxLength: 6 }), (bytes, cuts) => {
        const closed: number[] = [];
        const given: number[] = [];
        const parser = new wire.MessageParser({ maxMessageSize: 256, closeFd: (fd) => closed.push(fd) });
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        let at = 0;
        let nextFd = 1000;
        for (const p of [...points, bytes.length]) {
          const fds = [nextFd++];
          parser.parse(bytes.subarray(at, p), fds, (ev) => {
            if (ev.kind === "frame") {
              expect(ev.size).toBeGreaterThanOrEqual(16);
              expect(ev.body.length).toBe(ev.size - 16);
              given.push(...ev.fds);
            } else expect(ev.error).toBeInstanceOf(wire.WireError);
          });
          at = p;
        }
        parser.end();
        const all = [...given, ...closed].sort((a, b) => a - b);
        expect(all).toEqual(Array.from({ length: nextFd - 1000 }, (_, i) => 1000 + i));
      }),
      { numRuns: 1000 },
    );
  });
});

describe("server robustness", () => {
  it("answers every reply-wanting request of a hostile stream exactly once, in order, and keeps serving", async () => {
    const path = join(tmpdir(), `wasmdev-vfu-fuzz-${process.pid}.sock`);
    const server = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 0 }).fn, socketPath: path, maxDataXferSize: 4096 });
    // Commands 2..20 (VERSION is negotiated first; a bad major would close the connection),
    // both message types, with and without NO_REPLY, short random payloads or plausible ones.
    const plausible = fc.oneof(
      fc.record({ region: fc.constantFrom(0, 7, 6, 9), offset: fc.constantFrom(0, 4, 8, 0x20, 0x80, 0xfc, 0xfffff, 2 ** 40), count: fc.constantFrom(0, 1, 2, 4, 8, 4096, 5000) }).map(
        ({ region, offset, count }) => new Bytes().u64(offset).u32(region).u32(count).build(),
      ),
      fc.uint8Array({ maxLength: 48 }),
    );
    const msg = fc.record({
      command: fc.integer({ min: 2, max: 20 }),
      type: fc.constantFrom(0, 0, 0, 1, 3),
      noReply: fc.boolean(),
      body: plausible,
      withData: fc.uint8Array({ maxLength: 8 }),
    });
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(msg, { minLength: 1, maxLength: 40 }), async (msgs) => {
          const c = await RawClient.negotiated(path);
          c.onServerRequest = () => {}; // the device may start DMA toward us; ignore it
          try {
            const expected: number[] = [];
            const stream: Uint8Array[] = [];
            msgs.forEach((m, i) => {
              const id = 1000 + i;
              const flags = m.type | (m.noReply ? 0x10 : 0);
              const body = m.command === wire.Command.REGION_WRITE ? concat(m.body, m.withData) : m.body;
              stream.push(message(id, m.command, flags, body));
              // A stray reply (type 1) is dropped unanswered; an unknown type gets an error reply.
              if (!m.noReply && m.type !== 1) expected.push(id);
            });
            c.send(concat(...stream));
            const got: number[] = [];
            for (let i = 0; i < expected.length; i++) got.push((await c.next(3000)).msgId);
            expect(got).toEqual(expected);
            // Still serving, with the device intact. (A posted failure may be reported first.)
            let r = await c.request(message(1, wire.Command.REGION_READ, 0, new Bytes().u64(EDU_REG.ID).u32(0).u32(4)));
            if (r.flags & 0x20) r = await c.request(message(2, wire.Command.REGION_READ, 0, new Bytes().u64(EDU_REG.ID).u32(0).u32(4)));
            expect(r.flags & 0x20).toBe(0);
            expect(new DataView(r.body.buffer, r.body.byteOffset).getUint32(16, true)).toBe(EDU_ID_VALUE);
          } finally {
            // The next run's client must not find this session still open (it would get EBUSY):
            // the session drops itself in its 'close' handler, registered before this one.
            const session = server.current;
            const gone = session && !session.isClosed ? new Promise<void>((res) => session.connection.once("close", () => res())) : Promise.resolve();
            c.close();
            await gone;
            expect(server.current).toBe(null);
          }
        }),
        { numRuns: 40 },
      );
    } finally {
      await server.close();
    }
  });
});
