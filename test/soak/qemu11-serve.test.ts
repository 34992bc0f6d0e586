// Soak against the real peer and the real binary: one long-lived `wasmdev serve` process
// (dist/cli.js, the file the package's bin runs) serving edu to QEMU 11.1 after QEMU 11.1,
// each one started under -accel qtest, made to use the device (config space, BAR sizing,
// registers, a factorial with its INTx interrupt, DMA both ways through guest RAM), then
// stopped. Even cycles give QEMU shared guest RAM (DMA_MAP carries a memfd the server maps),
// odd ones plain RAM (DMA by DMA_READ / DMA_WRITE messages).
//
// The server is another process, so what it holds is read from /proc/PID: open fds, memfd
// mappings and all mappings in its maps file, and VmRSS. After a warm-up, fds and memfd
// mappings must be exactly as before and RSS may grow by a small bound only (no GC can be
// forced from outside; V8 and malloc keep some pages). SOAK_QEMU_CYCLES scales the run.
import { existsSync, readdirSync, readFileSync, rmSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  EDU_DMA_RUN, EDU_DMA_START, EDU_DMA_TO_RAM, EDU_FACT_IRQ, EDU_ID_VALUE, EDU_REG, EDU_STATUS_IRQFACT,
} from "../../src/devices/edu.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11 } from "../support/qemu11-fixture.js";
import { startServe, type ServeProcess } from "../support/serve-process.js";

const CYCLES = Number(process.env.SOAK_QEMU_CYCLES ?? 50);
const WARMUP = 4;
/** RSS growth allowed over the whole run; one leaked 64 MiB guest RAM mapping would exceed it once touched. */
const RSS_SLACK = 24 * 1024 * 1024;
const BAR0 = 0xfe000000;
const SRC = 0x100000;
const DST = 0x200000;
const LENGTH = 256;
const MiB = 1024 * 1024;

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const cli = join(root, "dist", "cli.js");

interface ServerHoldings {
  fds: number;
  memfdMaps: number;
  mapsLines: number;
  rss: number;
}

function serverHoldings(pid: number): ServerHoldings {
  const maps = readFileSync(`/proc/${pid}/maps`, "utf8").trim().split("\n");
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  return {
    fds: readdirSync(`/proc/${pid}/fd`).length,
    memfdMaps: maps.filter((l) => l.includes("/memfd:")).length,
    mapsLines: maps.length,
    rss: rssKb * 1024,
  };
}

/** Resolves once serve's stderr matches `pattern` (it may already have). */
function untilLogged(serve: ServeProcess, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!pattern.test(serve.stderr())) return;
      serve.child.stderr!.off("data", check);
      serve.child.off("exit", onExit);
      resolve();
    };
    const onExit = () => reject(new Error(`serve exited while waiting for ${pattern}: ${serve.stderr()}`));
    serve.child.stderr!.on("data", check);
    serve.child.once("exit", onExit);
    check();
  });
}

async function edu(q: QtestQemu, cycle: number): Promise<void> {
  expect(await q.configRead(0x00), q.stderr).toBe(0x11e81234);
  await q.interceptIrqs();
  await q.placeBar32(0, BAR0);
  expect(await q.readl(BAR0 + EDU_REG.ID)).toBe(EDU_ID_VALUE);
  await q.writel(BAR0 + EDU_REG.LIVENESS, cycle);
  expect(await q.readl(BAR0 + EDU_REG.LIVENESS)).toBe(~cycle >>> 0);
  // A factorial with its interrupt: the trigger eventfd QEMU gave must still work.
  await q.writel(BAR0 + EDU_REG.STATUS, EDU_STATUS_IRQFACT);
  const raised = q.nextIrqRaise();
  await q.writel(BAR0 + EDU_REG.FACTORIAL, 1 + (cycle % 12));
  const line = await raised;
  let f = 1;
  for (let i = 2; i <= 1 + (cycle % 12); i++) f *= i;
  expect(await q.readl(BAR0 + EDU_REG.FACTORIAL)).toBe(f);
  const lowered = q.nextIrqLower(line);
  await q.writel(BAR0 + EDU_REG.IRQ_ACK, EDU_FACT_IRQ);
  await lowered;
  // Guest RAM -> edu's buffer -> elsewhere in guest RAM, a pattern of this cycle's own.
  const pattern = Uint8Array.from({ length: LENGTH }, (_, i) => (i * 13 + cycle) & 0xff);
  await q.memWrite(SRC, pattern);
  const dma = async (src: number, dst: number, cmd: number) => {
    await q.writeq(BAR0 + EDU_REG.DMA_SRC, BigInt(src));
    await q.writeq(BAR0 + EDU_REG.DMA_DST, BigInt(dst));
    await q.writeq(BAR0 + EDU_REG.DMA_CNT, BigInt(LENGTH));
    await q.writeq(BAR0 + EDU_REG.DMA_CMD, BigInt(cmd));
    // Bounded poll over qtest round trips: the run bit clears when the transfer is done.
    for (let i = 0; i < 100_000; i++) if (((await q.readl(BAR0 + EDU_REG.DMA_CMD)) & EDU_DMA_RUN) === 0) return;
    throw new Error("edu DMA did not finish");
  };
  await dma(SRC, EDU_DMA_START, EDU_DMA_RUN);
  await dma(EDU_DMA_START, DST, EDU_DMA_RUN | EDU_DMA_TO_RAM);
  expect(Buffer.from(await q.memRead(DST, LENGTH)).equals(Buffer.from(pattern)), `cycle ${cycle}: DMA round trip`).toBe(true);
}

describeQemu11("soak: QEMU 11.1 against one `wasmdev serve` process", () => {
  let dir: string;
  let serve: ServeProcess;
  let socketPath: string;

  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build (npm ci does it)`);
    dir = mkdtempSync(join(tmpdir(), "wasmdev-soak-qemu11-"));
    socketPath = join(dir, "edu.sock");
    serve = startServe(cli, socketPath, []);
    await serve.listening;
  });
  afterAll(async () => {
    await serve?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`${CYCLES} QEMU start / attach / use / quit cycles: each QEMU drives the device, and the server's fds, mappings and RSS end as they began`, async () => {
    const pid = serve.child.pid!;
    let clients = 0;
    // What the server held while a QEMU was attached: shows the end-state check can see a leak.
    const during = { fds: 0, memfdMaps: 0 };
    const cycle = async (i: number) => {
      const q = QtestQemu.start(socketPath, { sharedMemory: i % 2 === 0 });
      try {
        await edu(q, i);
        const h = serverHoldings(pid);
        during.fds = Math.max(during.fds, h.fds);
        during.memfdMaps = Math.max(during.memfdMaps, h.memfdMaps);
      } finally {
        await q.quit();
      }
      clients++;
      // The server refuses a newcomer until it has seen this client go.
      await untilLogged(serve, new RegExp(`client ${clients} disconnected\\b`));
    };
    for (let i = 0; i < WARMUP; i++) await cycle(i);
    const before = serverHoldings(pid);
    const t0 = performance.now();
    for (let i = 0; i < CYCLES; i++) await cycle(WARMUP + i);
    const seconds = (performance.now() - t0) / 1000;
    const after = serverHoldings(pid);
    console.log(
      `QEMU 11.1 cycles against serve (pid ${pid}): ${CYCLES} in ${seconds.toFixed(1)} s (${((seconds / CYCLES) * 1000).toFixed(0)} ms each); ` +
        `fds ${before.fds} -> ${after.fds}, memfd maps ${before.memfdMaps} -> ${after.memfdMaps}, maps lines ${before.mapsLines} -> ${after.mapsLines}, ` +
        `RSS ${(before.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB; while attached up to ${during.fds} fds, ${during.memfdMaps} memfd maps`,
    );
    expect(during.fds).toBeGreaterThan(before.fds);
    expect(during.memfdMaps).toBeGreaterThan(0);
    // Every QEMU got a session of its own (none was refused as busy) and left cleanly.
    // (an error ends the line with ": why" instead of the close's kind in parentheses).
    expect(serve.stderr()).not.toMatch(/refused a second client/);
    const ends = serve.stderr().match(/client \d+ disconnected.*/g) ?? [];
    expect(ends.filter((l) => !/disconnected \(/.test(l))).toEqual([]);
    expect(ends.length).toBe(WARMUP + CYCLES);
    expect(after.fds).toBe(before.fds);
    expect(after.memfdMaps).toBe(before.memfdMaps);
    expect(after.rss - before.rss).toBeLessThan(RSS_SLACK);
    expect(await serve.stop()).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
  }, 240_000);
});
