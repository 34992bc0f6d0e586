// A hostile server that shrinks the file behind regions the client mapped. The client runs in a
// child process (test/vfio-user-client/fixtures/truncated-region-client.ts): before the
// transport's SIGBUS guard, its next access through the mapping killed it. Now that access fails
// with ERR_REGION_TRUNCATED (EFAULT), the region is unmapped and later accesses use the socket.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ftruncateSync, mkdtempSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileSeal, addFileSeals, closeFd, listen, memfdCreate, type Connection } from "../../src/transport/index.js";
import { B, REPLY, msg, readReply, regionAccess, versionPayload } from "./helpers.js";
import { bundleScenario, lastJson, removeScenario, root, runScenario } from "../transport/child.js";

const DEVICE_GET_INFO = 4;
const DEVICE_GET_REGION_INFO = 5;
const REGION_READ = 9;
const REGION_SIZE = 0x4000;

let script = "";
beforeAll(async () => {
  script = await bundleScenario(join(root, "test", "vfio-user-client", "fixtures", "truncated-region-client.ts"), "truncated-region-client");
});
afterAll(() => removeScenario(script));

describe("a server shrinking the file behind mapped regions (client in a child process)", () => {
  it("the access through the mapping fails with ERR_REGION_TRUNCATED (EFAULT), the region is unmapped, the socket serves it after", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vfu-trunc-"));
    const path = join(dir, "s.sock");
    // Two 16 KiB regions at file offsets 0 and 0x4000 of one memfd the client cannot seal.
    const file = memfdCreate("hostile-bar", 2 * REGION_SIZE);
    addFileSeals(file, FileSeal.SEAL);
    const server = listen(path);
    const served: number[] = [];
    server.on("connection", (conn: Connection) => {
      let buf = Buffer.alloc(0);
      conn.onData((chunk, fds) => {
        for (const fd of fds) closeFd(fd);
        buf = Buffer.concat([buf, Buffer.from(chunk)]);
        while (buf.length >= 16 && buf.length >= buf.readUInt32LE(4)) {
          const size = buf.readUInt32LE(4);
          const id = buf.readUInt16LE(0);
          const command = buf.readUInt16LE(2);
          const payload = Buffer.from(buf.subarray(16, size));
          buf = buf.subarray(size);
          served.push(command);
          if (command === 1) {
            conn.send(msg(id, 1, REPLY, versionPayload({ capabilities: { max_msg_fds: 4, max_data_xfer_size: 1 << 16 } })));
          } else if (command === DEVICE_GET_REGION_INFO) {
            const index = payload.readUInt32LE(8);
            // READ | WRITE | MMAP, size, file offset; the fd rides along.
            const info = new B().u32(32).u32(7).u32(index).u32(0).u64(REGION_SIZE).u64(index * REGION_SIZE);
            conn.send(msg(id, command, REPLY, info), [file]);
          } else if (command === DEVICE_GET_INFO) {
            ftruncateSync(file, 0x1000); // both regions now end past the file, except page 0
            conn.send(msg(id, command, REPLY, new B().u32(16).u32(0).u32(2).u32(0)));
          } else if (command === REGION_READ) {
            const r = regionAccess({ msgId: id, command, flags: 0, size, payload });
            conn.send(msg(id, command, REPLY, readReply(r.offset, r.region, Buffer.alloc(r.count, 0x5a))));
          }
        }
      });
    });
    // The client's first read comes from the mapping: the server's data in the file.
    writeSync(file, Buffer.from([0x44, 0x33, 0x22, 0x11]), 0, 4, 0x2000);
    try {
      const outcome = await runScenario(script, [path]);
      expect(outcome.signal, outcome.stderr).toBeNull();
      expect(outcome.code, outcome.stderr).toBe(0);
      expect(lastJson(outcome)).toEqual({
        before: "0x11223344",
        info: "ok",
        readAfter: { code: "ERR_REGION_TRUNCATED", errno: 14 },
        writeAfter: { code: "ERR_REGION_TRUNCATED", errno: 14 },
        areasTruncated: [true, true],
        mappedAfter: [0, 0],
        viaSocket: "0x5a5a5a5a",
        remap: { code: "ERR_MAPPING" },
        liveMappings: 0,
      });
      expect(served.filter((c) => c === REGION_READ)).toHaveLength(1); // only the read after unmapping
    } finally {
      server.close();
      closeFd(file);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
