// Message tracing: the tracer against bytes built independently (every split offset), and the
// logger option of the server and the client on a real connection.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MessageTracer } from "../../src/vfio-user/wire/trace.js";
import type { Logger, TraceEvent } from "../../src/log.js";
import { VfioUserServer } from "../../src/vfio-user/server/server.js";
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import { createEdu } from "../../src/devices/edu.js";
import { Bytes, concat, message } from "./bytes.js";

const dir = mkdtempSync(join(tmpdir(), "wasmdev-trace-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// REGION_READ (9) request: offset u64, region u32, count u32; its reply carries the data too.
const readRequest = message(7, 9, 0, new Bytes().u64(0x10).u32(2).u32(4));
const readReply = message(7, 9, 1, new Bytes().u64(0x10).u32(2).u32(4).u32(0xdeadbeef));
// A posted REGION_WRITE (10, NO_REPLY = 0x10), an EIO (5) error reply (ERROR = 0x20), a header-only DEVICE_RESET (13).
const postedWrite = message(8, 10, 0x10, new Bytes().u64(0x1_0000_0000n).u32(0).u32(2).u16(0xbeef));
const errorReply = message(9, 9, 0x21, new Uint8Array(0), 5);
const reset = message(10, 13, 0);
const stream = concat(readRequest, readReply, postedWrite, errorReply, reset);

const expected: TraceEvent[] = [
  { protocol: "vfio-user", direction: "in", command: "REGION_READ", type: "command", id: 7, size: 32, fds: 0, fields: { region: 2, offset: "0x10", count: 4 } },
  { protocol: "vfio-user", direction: "in", command: "REGION_READ", type: "reply", id: 7, size: 36, fds: 0, fields: { region: 2, offset: "0x10", count: 4 } },
  { protocol: "vfio-user", direction: "in", command: "REGION_WRITE", type: "command", id: 8, size: 34, fds: 0, flags: ["no-reply"], fields: { region: 0, offset: "0x100000000", count: 2 } },
  { protocol: "vfio-user", direction: "in", command: "REGION_READ", type: "reply", id: 9, size: 16, fds: 0, flags: ["error"], errno: 5, errnoName: "EIO" },
  { protocol: "vfio-user", direction: "in", command: "DEVICE_RESET", type: "command", id: 10, size: 16, fds: 0 },
];

describe("MessageTracer", () => {
  it("reports each message once, whatever the chunking", () => {
    for (let a = 0; a <= stream.length; a++) {
      for (const b of [a, Math.min(stream.length, a + 1), Math.min(stream.length, a + 17)]) {
        const events: TraceEvent[] = [];
        const t = new MessageTracer("in", (e) => events.push(e));
        t.feed(stream.subarray(0, a), 0);
        t.feed(stream.subarray(a, b), 0);
        t.feed(stream.subarray(b), 0);
        expect(events, `split at ${a}, ${b}`).toEqual(expected);
      }
    }
  });

  it("counts fds with the message they came with and stops at a size below the header", () => {
    const events: TraceEvent[] = [];
    const t = new MessageTracer("out", (e) => events.push(e));
    t.feed(reset, 2);
    t.feed(new Bytes().u16(1).u16(1).u32(8).u32(0).u32(0).build(), 0);
    t.feed(reset, 0);
    expect(events.map((e) => [e.command, e.fds, e.flags])).toEqual([["DEVICE_RESET", 2, undefined], ["VERSION", 0, ["unframeable"]]]);
  });
});

describe("the logger option", () => {
  it("server and client trace both directions; the server logs connections at info", async () => {
    const lines: string[] = [];
    const traced: string[] = [];
    const logger = (who: string): Logger => ({
      error: (m) => lines.push(`${who} error ${m}`),
      warn: (m) => lines.push(`${who} warn ${m}`),
      info: (m) => lines.push(`${who} info ${m}`),
      debug: (m) => lines.push(`${who} debug ${m}`),
      trace: (e) => traced.push(`${who} ${e.direction} ${e.command} ${e.type}`),
    });
    const { fn } = createEdu();
    const socketPath = join(dir, "logger.sock");
    const server = VfioUserServer.listen({ device: fn, socketPath, logger: logger("server") });
    const client = await connectVfioUser(socketPath, { logger: logger("client"), probe: false });
    expect(await client.readValue(0, 0, 4)).toBe(0x010000edn);
    client.close();
    await server.close();
    fn.dispose();
    for (const side of [["client", "out", "in"], ["server", "in", "out"]]) {
      const [who, sent, answered] = side;
      expect(traced).toContain(`${who} ${sent} VERSION command`);
      expect(traced).toContain(`${who} ${answered} VERSION reply`);
      expect(traced).toContain(`${who} ${sent} REGION_READ command`);
      expect(traced).toContain(`${who} ${answered} REGION_READ reply`);
    }
    expect(lines).toContain("server info client 1 connected");
  });
});
