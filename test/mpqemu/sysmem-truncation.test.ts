// A VMM that shrinks a guest RAM memfd it shared with SYNC_SYSMEM. Our remote runs in a child
// process (test/mpqemu/fixtures/truncation-remote.ts) driven by a scripted proxy here: before
// the transport's SIGBUS guard, the device's DMA past the new end of the file killed it. Now
// the BAR access that needed the DMA answers all-ones, the remote logs it and drops that RAM,
// keeps serving, and maps the next SYNC_SYSMEM.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ftruncateSync, readSync } from "node:fs";
import { join } from "node:path";
import { ALL_ONES, Cmd, MpqemuEncoder, MpqemuParser, type Encoded, type MpqemuMsg } from "../../src/mpqemu/wire.js";
import { RawSocket } from "../../src/transport/raw-socket.js";
import { closeFdQuietly as closeFd, socketpair } from "../../src/transport/fd.js";
import { FileSeal, addFileSeals, fileSeals, memfdCreate } from "../../src/transport/index.js";
import { bundleScenario, lastJson, removeScenario, root, startScenario } from "../transport/child.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BAR = 0xfe00_0000n;
const GPA = 0x10_0000n;
const RAM = 0x1_0000;

/** The proxy's side, scripted: one request at a time, waiting for its RET. */
class ScriptedProxy {
  private readonly sock: RawSocket;
  private readonly parser = new MpqemuParser<MpqemuMsg>("proxy", closeFd);
  readonly enc = new MpqemuEncoder();
  constructor(fd: number) {
    this.sock = new RawSocket(fd);
  }
  send(e: Encoded): void {
    expect(this.sock.send(e.bytes, e.fds)).toBe(e.bytes.length);
  }
  async call(e: Encoded, timeoutMs = 10_000): Promise<bigint | null> {
    this.send(e);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = this.sock.recv();
      if (r.n === 0) throw new Error("the remote hung up");
      if (r.n > 0) {
        const got: MpqemuMsg[] = [];
        this.parser.push(r.data, r.fds, (ev) => ev.ok && got.push(ev.message));
        if (got.length > 0) {
          expect(got).toHaveLength(1);
          expect(got[0].cmd).toBe(Cmd.RET);
          return (got[0] as { value: bigint | null }).value;
        }
      } else {
        await sleep(1);
      }
    }
    throw new Error("no reply from the remote");
  }
  close(): void {
    this.sock.close();
  }
}

let script = "";
beforeAll(async () => {
  script = await bundleScenario(join(root, "test", "mpqemu", "fixtures", "truncation-remote.ts"), "truncation-remote");
});
afterAll(() => removeScenario(script));

describe("SYNC_SYSMEM RAM shrunk by the VMM (remote in a child process)", () => {
  it("DMA-dependent BAR accesses answer all-ones, the remote logs it, keeps serving and maps the next SYNC_SYSMEM; nothing leaks", async () => {
    const [ours, theirs] = socketpair();
    const remote = startScenario(script, [], [theirs]);
    closeFd(theirs);
    const proxy = new ScriptedProxy(ours);
    const hostile = memfdCreate("hostile-ram", RAM);
    addFileSeals(hostile, FileSeal.SEAL); // the remote cannot seal it against shrinking
    const good = memfdCreate("good-ram", RAM);
    try {
      await remote.waitFor("serving");
      proxy.send(proxy.enc.syncSysmem([{ gpa: GPA, size: BigInt(RAM), offset: 0n, fd: hostile }]));
      expect(await proxy.call(proxy.enc.configWrite(0x10, Number(BAR), 4))).toBe(0n);
      expect(await proxy.call(proxy.enc.configWrite(0x04, 0x2, 2))).toBe(0n); // memory space on
      const setAddress = (a: bigint) => proxy.call(proxy.enc.barWrite(BAR, a, 8, true));
      const store = (v: bigint) => proxy.call(proxy.enc.barWrite(BAR + 8n, v, 4, true));
      const load = () => proxy.call(proxy.enc.barRead(BAR + 8n, 4, true));

      expect(await setAddress(GPA + 0x8000n)).toBe(0n);
      expect(await store(0x12345678n)).toBe(0n);
      expect(await load()).toBe(0x12345678n);

      ftruncateSync(hostile, 0x1000); // the DMA address is now past the end of the file
      expect(await load()).toBe(ALL_ONES);
      await remote.waitFor("guest RAM at 0x100000+0x10000 was shrunk under its mapping by the VMM");
      expect(await store(1n)).toBe(ALL_ONES); // the RAM is gone now: still all-ones
      expect(await proxy.call(proxy.enc.configRead(0, 4))).toBe(0xdead1234n); // still serving

      // The VMM's next layout is mapped and reached by DMA.
      proxy.send(proxy.enc.syncSysmem([{ gpa: GPA, size: BigInt(RAM), offset: 0n, fd: good }]));
      expect(await setAddress(GPA + 0x20n)).toBe(0n);
      // This memfd allows seals: the remote sealed it against shrinking when it mapped it.
      expect(fileSeals(good) & FileSeal.SHRINK).toBe(FileSeal.SHRINK);
      expect(() => ftruncateSync(good, 0)).toThrow(expect.objectContaining({ code: "EPERM" }));
      expect(await store(0xcafef00dn)).toBe(0n);
      const seen = Buffer.alloc(4);
      readSync(good, seen, 0, 4, 0x20);
      expect(seen.readUInt32LE(0)).toBe(0xcafef00d);
    } finally {
      proxy.close(); // hang up: the remote ends cleanly
      closeFd(hostile);
      closeFd(good);
    }
    const outcome = await remote.exited;
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    expect(lastJson(outcome)).toMatchObject({ end: "hangup", memfds: 0, mappings: 0, stats: { sysmemSwaps: 2, failedAccesses: 2 } });
  });
});
