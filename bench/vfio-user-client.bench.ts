// vfio-user client benchmarks (issue #7): what the client library adds on top of the transport.
//
// A responder child process (this same file with --responder) answers REGION_READ with a
// precomputed reply and swallows NO_REPLY writes, doing as little as possible so the figures
// are the client's. In the same run, the baseline is the bare ping-pong over the same transport
// with the very same bytes, sent and matched by hand (no client library):
//   - 4-byte REGION_READ latency (median, p99) vs bare ping-pong of the same request/reply;
//   - posted-write throughput (N NO_REPLY writes then one read that flushes them) vs the same
//     bytes sent raw, one transport send() per write; one row per client path: writeRegion()
//     and writeValue() (a settled promise per write, collected), post() (synchronous, no
//     promise), and writeValue() awaited one by one. The client gathers posts into one buffer
//     itself, so it may beat per-write raw sends;
//   - 4 KiB REGION_READ throughput vs bare ping-pong of the same 4 KiB replies: readRegion()
//     (a fresh buffer per read) and readRegionInto() (one reused buffer).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, listen, type Connection } from "../src/transport/index.js";
import { VfioUserClient } from "../src/vfio-user/client/client.js";
import { connectionChannel } from "../src/vfio-user/client/connect.js";
import { percentiles, report, result, type BenchResult } from "./lib/harness.js";

const REGION_READ = 9;
const REGION_WRITE = 10;

function header(view: DataView, msgId: number, command: number, size: number, flags: number): void {
  view.setUint16(0, msgId, true);
  view.setUint16(2, command, true);
  view.setUint32(4, size, true);
  view.setUint32(8, flags, true);
  view.setUint32(12, 0, true);
}

// ------------------------------------------------------------------------------------------
// Responder (child process)

function responder(path: string): void {
  const server = listen(path);
  server.on("connection", (conn: Connection) => {
    const replies = new Map<number, Uint8Array>();
    const replyFor = (count: number): Uint8Array => {
      let r = replies.get(count);
      if (!r) {
        r = new Uint8Array(32 + count);
        replies.set(count, r);
      }
      return r;
    };
    let pending = new Uint8Array(0);
    conn.onData((chunk) => {
      let data = chunk;
      if (pending.length > 0) {
        data = new Uint8Array(pending.length + chunk.length);
        data.set(pending);
        data.set(chunk, pending.length);
      }
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      let p = 0;
      const out: Uint8Array[] = [];
      while (p + 16 <= data.length) {
        const size = v.getUint32(p + 4, true);
        if (p + size > data.length) break;
        const msgId = v.getUint16(p, true);
        const command = v.getUint16(p + 2, true);
        const flags = v.getUint32(p + 8, true);
        if ((flags & 0x10) === 0) {
          if (command === 1) {
            const json = new TextEncoder().encode('{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}');
            const r = new Uint8Array(16 + 4 + json.length + 1);
            header(new DataView(r.buffer), msgId, 1, r.length, 1);
            r[16] = 0;
            r[18] = 1;
            r.set(json, 20);
            out.push(r);
          } else if (command === REGION_READ) {
            const count = v.getUint32(p + 28, true);
            const r = replyFor(count);
            const rv = new DataView(r.buffer);
            header(rv, msgId, REGION_READ, r.length, 1);
            r.set(data.subarray(p + 16, p + 32), 16); // echo offset, region, count
            out.push(r.slice());
          } else {
            const r = new Uint8Array(16);
            header(new DataView(r.buffer), msgId, command, 16, 1 | 0x20);
            new DataView(r.buffer).setUint32(12, 38, true);
            out.push(r);
          }
        }
        p += size;
      }
      pending = p < data.length ? data.slice(p) : new Uint8Array(0);
      if (out.length === 1) conn.send(out[0]);
      else if (out.length > 1) conn.send(out);
    });
  });
  process.on("SIGTERM", () => {
    server.close();
    process.exit(0);
  });
  process.send?.("ready");
}

// ------------------------------------------------------------------------------------------
// Driver

/** Bare ping-pong: sends `request`, resolves when `replySize` bytes came back. */
class RawPingPong {
  private got = 0;
  private want = 0;
  private done: (() => void) | null = null;
  constructor(private readonly conn: Connection) {
    conn.onData((chunk) => {
      this.got += chunk.length;
      if (this.done && this.got >= this.want) {
        const d = this.done;
        this.done = null;
        d();
      }
    });
  }
  roundTrip(request: Uint8Array, replySize: number): Promise<void> {
    this.got = 0;
    this.want = replySize;
    return new Promise((resolve) => {
      this.done = resolve;
      this.conn.send(request);
    });
  }
  send(bytes: Uint8Array): void {
    this.conn.send(bytes);
  }
}

function readRequest(msgId: number, count: number): Uint8Array {
  const r = new Uint8Array(32);
  const v = new DataView(r.buffer);
  header(v, msgId, REGION_READ, 32, 0);
  v.setUint32(28, count, true);
  return r;
}

/** A posted 4-byte REGION_WRITE, as a view of `backing` at `at` (36 bytes). */
function postedWrite(msgId: number, backing: ArrayBuffer, at: number): Uint8Array {
  const r = new Uint8Array(backing, at, 36);
  const v = new DataView(backing, at, 36);
  header(v, msgId, REGION_WRITE, 36, 0x10);
  v.setUint32(28, 4, true);
  v.setUint32(32, 0xdeadbeef, true);
  return r;
}

async function latencySamples(n: number, op: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < Math.min(2000, n); i++) await op(); // warm-up
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await op();
    samples.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return samples;
}

/**
 * Best operations per second of `a()` and of `b()` (each runs `ops` operations), after a
 * warm-up of each, measured in alternation (a, b, a, b, …) so a burst of load on the shared
 * machine hits the client and its baseline alike.
 */
/** Best rates (ops/s) of a and b over alternating rounds, and every round's rate (the spread). */
async function pairedRates(rounds: number, ops: number, a: () => Promise<void>, b: () => Promise<void>): Promise<[number, number, Rates]> {
  const rate = async (fn: () => Promise<void>) => {
    const t0 = process.hrtime.bigint();
    await fn();
    return ops / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  await a();
  await b();
  const samples: Rates = { value: [], baseline: [] };
  for (let r = 0; r < rounds; r++) {
    samples.value.push(await rate(a));
    samples.baseline.push(await rate(b));
  }
  return [Math.max(...samples.value), Math.max(...samples.baseline), samples];
}

type Rates = { value: number[]; baseline: number[] };
const scaled = (r: Rates, k: number): Rates => ({ value: r.value.map((v) => v * k), baseline: r.baseline.map((v) => v * k) });

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vfu-client-bench-"));
  const path = join(dir, "responder.sock");
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--responder", path], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`responder exited with ${code}`)));
  });
  const results: BenchResult[] = [];
  try {
    const rawConn = await connect(path);
    const raw = new RawPingPong(rawConn);
    const client = new VfioUserClient(connectionChannel(await connect(path)), { timeoutMs: 60_000 });
    await client.negotiate();
    client.postedWrites.setRegionSpace(0, "memory");

    // 4-byte read latency. Interleave rounds of each so machine noise hits both alike.
    const N = 20_000;
    const req4 = readRequest(1, 4);
    const rawSamples: number[] = [];
    const clientSamples: number[] = [];
    for (let round = 0; round < 4; round++) {
      rawSamples.push(...(await latencySamples(N / 4, () => raw.roundTrip(req4, 36))));
      clientSamples.push(...(await latencySamples(N / 4, () => client.readRegion(0, 0, 4))));
    }
    const rawLat = percentiles(rawSamples);
    const cliLat = percentiles(clientSamples);
    const latencySpread = { samples: { value: clientSamples, baseline: rawSamples } };
    results.push(result("read-latency/4B/median", cliLat.median, "us", rawLat.median, latencySpread));
    results.push(result("read-latency/4B/p99", cliLat.p99, "us", rawLat.p99, latencySpread));

    // Posted-write throughput: W writes then one flushing read. Both sides issue the W writes
    // from one synchronous loop, as a VMM's vCPU loop posting stores would: a posted write
    // needs no wait, and awaiting each one would hand the transport a flush per write that
    // the baseline does not pay. The client's promises are collected and checked at the end.
    const W = 20_000;
    // Views of one buffer: 20 000 separate ArrayBuffers would stay alive through every later
    // row and tax each garbage collection, which only the client's allocating paths trigger.
    const backing = new ArrayBuffer(W * 36);
    const writes = Array.from({ length: W }, (_, i) => postedWrite(i & 0xffff, backing, i * 36));
    const value = Uint8Array.of(0xef, 0xbe, 0xad, 0xde);
    const rawPosts = async () => {
      for (const w of writes) raw.send(w);
      await raw.roundTrip(req4, 36);
    };
    const notPosted = () => new Error("a write was not posted: the benchmark measures the wrong path");
    const [cliPosted, rawPosted, postedRates] = await pairedRates(
      5,
      W,
      async () => {
        const posted: Promise<{ posted: boolean }>[] = new Array(W);
        for (let i = 0; i < W; i++) posted[i] = client.writeRegion(0, 0, value);
        await client.readRegion(0, 0, 4);
        for (const r of await Promise.all(posted)) if (!r.posted) throw notPosted();
      },
      rawPosts,
    );
    results.push(result("posted-write/4B/throughput", cliPosted, "ops/s", rawPosted, { samples: postedRates }));
    const [cliValue, rawValue, valueRates] = await pairedRates(
      5,
      W,
      async () => {
        const posted: Promise<{ posted: boolean }>[] = new Array(W);
        for (let i = 0; i < W; i++) posted[i] = client.writeValue(0, 0, 4, 0xdeadbeef);
        await client.readRegion(0, 0, 4);
        for (const r of await Promise.all(posted)) if (!r.posted) throw notPosted();
      },
      rawPosts,
    );
    results.push(result("posted-write/4B/writeValue/throughput", cliValue, "ops/s", rawValue, { samples: valueRates }));
    const [cliPost, rawPost, postRates] = await pairedRates(
      5,
      W,
      async () => {
        let refused = 0;
        for (let i = 0; i < W; i++) if (!client.post(0, 0, 4, 0xdeadbeef)) refused++;
        await client.readRegion(0, 0, 4);
        if (refused !== 0) throw notPosted();
      },
      rawPosts,
    );
    results.push(result("posted-write/4B/post/throughput", cliPost, "ops/s", rawPost, { samples: postRates }));
    // A caller that awaits each posted write (the natural use of the promise API): same bytes,
    // same raw baseline; the client still gathers the writes into 64 KiB socket writes.
    const [cliAwaited, rawAwaited, awaitedRates] = await pairedRates(
      5,
      W,
      async () => {
        for (let i = 0; i < W; i++) if (!(await client.writeValue(0, 0, 4, 0xdeadbeef)).posted) throw notPosted();
        await client.readRegion(0, 0, 4);
      },
      rawPosts,
    );
    results.push(result("posted-write/4B/awaited/throughput", cliAwaited, "ops/s", rawAwaited, { samples: awaitedRates }));

    // 4 KiB read throughput (sequential round trips).
    const R = 5_000;
    const req4k = readRequest(2, 4096);
    const [cliBw, rawBw, bwRates] = await pairedRates(
      3,
      R,
      async () => {
        for (let i = 0; i < R; i++) await client.readRegion(0, 0, 4096);
      },
      async () => {
        for (let i = 0; i < R; i++) await raw.roundTrip(req4k, 32 + 4096);
      },
    );
    results.push(result("read-throughput/4KiB", (cliBw * 4096) / 1e6, "MB/s", (rawBw * 4096) / 1e6, { samples: scaled(bwRates, 4096 / 1e6) }));
    const into = new Uint8Array(4096);
    const [cliIntoBw, rawIntoBw, intoRates] = await pairedRates(
      3,
      R,
      async () => {
        for (let i = 0; i < R; i++) await client.readRegionInto(0, 0, into);
      },
      async () => {
        for (let i = 0; i < R; i++) await raw.roundTrip(req4k, 32 + 4096);
      },
    );
    results.push(result("read-throughput/4KiB/into", (cliIntoBw * 4096) / 1e6, "MB/s", (rawIntoBw * 4096) / 1e6, { samples: scaled(intoRates, 4096 / 1e6) }));

    client.close();
    rawConn.destroy();
  } finally {
    const exited = new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once("exit", resolve)));
    child.kill("SIGTERM");
    await exited; // leave no responder behind
    rmSync(dir, { recursive: true, force: true });
  }
  report("vfio-user-client", results, {
    title: "vfio-user client: what the client library adds on top of the transport (latency medians/p99, best rates)",
    baseline: "a bare ping-pong over the same transport with the very same bytes, sent and matched by hand (no client library)",
  });
}

if (process.argv[2] === "--responder") responder(process.argv[3]);
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
