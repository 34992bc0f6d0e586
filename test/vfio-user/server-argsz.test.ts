// argsz checks the server had missed: DMA_UNMAP without a dirty bitmap, MIG_DATA_WRITE and
// DEVICE_FEATURE GET. argsz is the largest reply the client accepts (spec: vfio-user.rst), so a
// request whose argsz cannot hold its reply (or, for MIG_DATA_WRITE, its own data, as for
// MIG_DATA_READ) gets EINVAL, changes nothing, and the connection keeps serving. Requests are
// built byte by byte, independently of the wire module.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { createEdu, EDU_REG, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { Bytes, message } from "./bytes.js";
import { RawClient, type ReceivedFrame } from "./raw-client.js";

let seq = 0;
const socketPath = () => join(tmpdir(), `wasmdev-vfu-argsz-${process.pid}-${++seq}.sock`);
const EINVAL = 22;
const ERROR_FLAG = 0x20;
// Commands and flags as numbers from the spec, not from the wire module.
const DMA_MAP = 2;
const DMA_UNMAP = 3;
const REGION_READ = 9;
const DEVICE_FEATURE = 16;
const MIG_DATA_WRITE = 18;
const UNMAP_ALL = 1 << 1;
const FEATURE_GET = 1 << 16;
const FEATURE_SET = 1 << 17;
const FEATURE_PROBE = 1 << 18;
const MIGRATION = 1;
const MIG_DEVICE_STATE = 2;
const STATE_STOP = 1;
const STATE_RESUMING = 4;

const dmaMap = (id: number, address: bigint, size: bigint) => message(id, DMA_MAP, 0, new Bytes().u32(32).u32(3).u64(0).u64(address).u64(size));
const dmaUnmap = (id: number, argsz: number, flags: number, address: bigint, size: bigint) =>
  message(id, DMA_UNMAP, 0, new Bytes().u32(argsz).u32(flags).u64(address).u64(size));
const feature = (id: number, argsz: number, flags: number, data: Bytes = new Bytes()) => message(id, DEVICE_FEATURE, 0, new Bytes().u32(argsz).u32(flags).raw(data.build()));
const setState = (id: number, state: number) => feature(id, 16, FEATURE_SET | MIG_DEVICE_STATE, new Bytes().u32(state).u32(0xffffffff));
const migWrite = (id: number, argsz: number, data: number[]) => message(id, MIG_DATA_WRITE, 0, new Bytes().u32(argsz).u32(data.length).raw(data));

function expectEinval(f: ReceivedFrame, what: string): void {
  expect(f.flags & ERROR_FLAG, `${what}: expected an error reply`).toBe(ERROR_FLAG);
  expect(f.error, what).toBe(EINVAL);
}
function expectOk(f: ReceivedFrame, what: string): void {
  expect(f.flags & ERROR_FLAG, `${what}: unexpected error ${f.error}`).toBe(0);
}
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("argsz of DMA_UNMAP without a bitmap, MIG_DATA_WRITE and DEVICE_FEATURE GET", () => {
  let server: VfioUserServer;
  let client: RawClient;

  beforeEach(async () => {
    const path = socketPath();
    server = VfioUserServer.listen({ device: createEdu().fn, socketPath: path });
    client = await RawClient.negotiated(path);
  });
  afterEach(async () => {
    client.close();
    await server.close();
  });

  async function stillServes(): Promise<void> {
    const r = await client.request(message(client.id(), REGION_READ, 0, new Bytes().u64(EDU_REG.ID).u32(0).u32(4)));
    expectOk(r, "REGION_READ");
    expect(new DataView(r.body.buffer, r.body.byteOffset).getUint32(16, true)).toBe(EDU_ID_VALUE);
  }

  it("DMA_UNMAP: argsz below the 24-byte reply is EINVAL and unmaps nothing (range and ALL); 24 works", async () => {
    expectOk(await client.request(dmaMap(1, 0x10000n, 0x4000n)), "DMA_MAP");
    for (const [what, bytes] of [
      ["argsz 23", dmaUnmap(2, 23, 0, 0x10000n, 0x4000n)],
      ["argsz 0", dmaUnmap(3, 0, 0, 0x10000n, 0x4000n)],
      ["ALL with argsz 16", dmaUnmap(4, 16, UNMAP_ALL, 0n, 0n)],
    ] as const) {
      expectEinval(await client.request(bytes), what);
      expect(server.current!.dmaRegions().map((r) => [r.iova, r.size]), what).toEqual([[0x10000n, 0x4000n]]);
    }
    await stillServes();
    const r = await client.request(dmaUnmap(5, 24, 0, 0x10000n, 0x4000n));
    expectOk(r, "argsz 24");
    expect(toHex(r.body)).toBe(toHex(new Bytes().u32(24).u32(0).u64(0x10000n).u64(0x4000n).build()));
    expect(server.current!.dmaRegions()).toEqual([]);
  });

  it("MIG_DATA_WRITE: argsz below 8 + size is EINVAL; 8 + size is accepted", async () => {
    expectOk(await client.request(setState(1, STATE_STOP)), "STOP");
    expectOk(await client.request(setState(2, STATE_RESUMING)), "RESUMING");
    const data = Array.from({ length: 64 }, (_, i) => i);
    expectEinval(await client.request(migWrite(3, 8 + 63, data)), "argsz 8 + 63");
    expectEinval(await client.request(migWrite(4, 8, data)), "argsz 8");
    expectEinval(await client.request(migWrite(5, 0, data)), "argsz 0");
    await stillServes();
    expectOk(await client.request(migWrite(6, 8 + 64, data)), "argsz 8 + 64");
    expectOk(await client.request(migWrite(7, 8, [])), "empty write, argsz 8");
  });

  it("DEVICE_FEATURE GET: argsz that cannot hold the 8-byte header plus the feature data is EINVAL; enough gets the data", async () => {
    for (const [name, index] of [["MIGRATION", MIGRATION], ["MIG_DEVICE_STATE", MIG_DEVICE_STATE]] as const) {
      expectEinval(await client.request(feature(client.id(), 8, FEATURE_GET | index)), `${name} GET, argsz 8`);
      expectEinval(await client.request(feature(client.id(), 15, FEATURE_GET | index)), `${name} GET, argsz 15`);
    }
    await stillServes();
    const m = await client.request(feature(client.id(), 16, FEATURE_GET | MIGRATION));
    expectOk(m, "MIGRATION GET, argsz 16");
    // VFIO_MIGRATION_STOP_COPY (bit 0).
    expect(toHex(m.body)).toBe(toHex(new Bytes().u32(16).u32(FEATURE_GET | MIGRATION).u64(1).build()));
    const s = await client.request(feature(client.id(), 16, FEATURE_GET | MIG_DEVICE_STATE));
    expectOk(s, "MIG_DEVICE_STATE GET, argsz 16");
    expect(toHex(s.body.subarray(0, 12))).toBe(toHex(new Bytes().u32(16).u32(FEATURE_GET | MIG_DEVICE_STATE).u32(2).build())); // RUNNING
    // A probe's reply repeats the request: argsz 8 is enough for it.
    const p = await client.request(feature(client.id(), 8, FEATURE_PROBE | FEATURE_GET | MIGRATION));
    expectOk(p, "PROBE GET, argsz 8");
    expect(toHex(p.body)).toBe(toHex(new Bytes().u32(8).u32(FEATURE_PROBE | FEATURE_GET | MIGRATION).build()));
  });
});
