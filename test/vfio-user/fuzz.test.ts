// Property tests: decoders and the parser never throw on arbitrary bytes, and the server answers
// every reply-wanting message of a random (well-framed, hostile) stream exactly once, in order,
// without dropping the connection.
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
  it("every decoder returns a value or a WireError for arbitrary bytes", () => {
    expect(decoders.length).toBeGreaterThan(20);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        for (const [, decode] of decoders) {
          const r = decode(bytes);
          expect(r).toBeDefined();
        }
      }),
      { numRuns: 2000 },
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
  it("answers every reply-wanting message of a hostile stream exactly once, in order, and keeps serving", async () => {
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
              if (!m.noReply) expected.push(id);
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
            c.close();
            // The next run's client must not find this session still open (it would get EBUSY).
            for (let i = 0; i < 200 && server.current; i++) await new Promise((res) => setTimeout(res, 5));
          }
        }),
        { numRuns: 40 },
      );
    } finally {
      await server.close();
    }
  });
});
