// DMA into memory whose file the peer shrank. In process, with a mapper whose `truncated` flag
// the test raises (every access path must notice it after the access, fail with EFAULT and drop
// the region); then for real, in a child process: a memfd DMA region truncated under the DMA
// context (test/iommu/fixtures/dma-truncation.ts), which without the transport's SIGBUS guard
// kills the process.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { createDmaContext } from "../../src/core/dma/context.js";
import { DmaError } from "../../src/core/dma/errors.js";
import type { DmaMapping, DmaTruncatedRegion, FdMapper } from "../../src/core/dma/api.js";
import { bundleScenario, lastJson, removeScenario, root, runScenario } from "../transport/child.js";

/** A mapper over plain buffers whose `truncated` flag the test sets per fd. */
function fakeMapper() {
  const shrunk = new Set<number>();
  const unmapped: number[] = [];
  const mapFd: FdMapper = (fd, _offset, length) => ({
    bytes: new Uint8Array(length),
    unmap: () => void unmapped.push(fd),
    get truncated() {
      return shrunk.has(fd);
    },
  });
  return { mapFd, shrunk, unmapped };
}

function setup() {
  const fake = fakeMapper();
  const reported: DmaTruncatedRegion[] = [];
  const ctx = createDmaContext({ mapFd: fake.mapFd, onBackingTruncated: (r) => reported.push(r) });
  // Two adjacent fd regions (a transfer across both has two segments) and a memory region.
  ctx.table.add({ iova: 0x10000n, size: 0x2000n, perm: 3, backing: { kind: "fd", fd: 101, offset: 0n } });
  ctx.table.add({ iova: 0x12000n, size: 0x2000n, perm: 3, backing: { kind: "fd", fd: 102, offset: 0x1000n } });
  ctx.table.add({ iova: 0x20000n, size: 0x1000n, perm: 3, backing: { kind: "memory", bytes: new Uint8Array(0x1000) } });
  return { ...ctx, ...fake, reported };
}

const failure = async (fn: () => unknown): Promise<DmaError | undefined> => {
  try {
    await fn();
  } catch (e) {
    return e as DmaError;
  }
  return undefined;
};

type Access = [string, (dma: ReturnType<typeof setup>["dma"], iova: bigint) => unknown];
const accesses: Access[] = [
  ["readSync", (dma, iova) => dma.readSync(iova, new Uint8Array(16))],
  ["writeSync", (dma, iova) => dma.writeSync(iova, new Uint8Array(16).fill(1))],
  ["read", (dma, iova) => dma.read(iova, new Uint8Array(16))],
  ["write", (dma, iova) => dma.write(iova, new Uint8Array(16).fill(1))],
  ["readU32", (dma, iova) => dma.readU32(iova)],
  ["writeU64", (dma, iova) => dma.writeU64(iova, 0x1122334455667788n)],
  ["map", (dma, iova) => dma.map(iova, 16, "bidirectional", () => {})],
];

describe("DMA through a mapping whose file shrank (in process)", () => {
  for (const [name, access] of accesses) {
    it(`${name}: EFAULT (DMA_BACKING_TRUNCATED), the region is removed and reported, the others keep working`, async () => {
      const t = setup();
      await access(t.dma, 0x10100n); // fine before
      t.shrunk.add(101);
      const e = await failure(() => access(t.dma, 0x10100n));
      expect(e).toBeInstanceOf(DmaError);
      expect(e).toMatchObject({ code: "DMA_BACKING_TRUNCATED", errno: 14, iova: 0x10100n });
      expect(t.reported).toEqual([{ iova: 0x10000n, size: 0x2000n, fd: 101, offset: 0n }]);
      expect(t.unmapped).toEqual([101]);
      expect(t.table.regions().map((r) => r.iova)).toEqual([0x12000n, 0x20000n]);
      // The range is gone now: an ordinary unmapped fault, nothing mapped again.
      expect(await failure(() => access(t.dma, 0x10100n))).toMatchObject({ code: "DMA_UNMAPPED", errno: 14 });
      await access(t.dma, 0x12100n);
      await access(t.dma, 0x20100n);
      expect(t.reported).toHaveLength(1);
      t.close();
      expect(t.unmapped).toEqual([101, 102]);
    });
  }

  it("a transfer across two regions fails when the second one shrank; the first stays", async () => {
    const t = setup();
    t.shrunk.add(102);
    for (const op of [
      () => t.dma.readSync(0x11ff0n, new Uint8Array(0x20)),
      () => t.dma.writeSync(0x11ff0n, new Uint8Array(0x20)),
    ]) {
      if (!t.table.regions().some((r) => r.iova === 0x12000n)) {
        t.table.add({ iova: 0x12000n, size: 0x2000n, perm: 3, backing: { kind: "fd", fd: 102, offset: 0x1000n } });
      }
      expect(await failure(op)).toMatchObject({ code: "DMA_BACKING_TRUNCATED", errno: 14 });
      expect(t.table.regions().map((r) => r.iova)).toEqual([0x10000n, 0x20000n]);
    }
    expect(t.reported.map((r) => r.fd)).toEqual([102, 102]);
    t.close();
  });

  it("live maps over a region found shrunk are invalidated; maps elsewhere stay live", () => {
    const t = setup();
    const invalidated: DmaMapping[] = [];
    const over = t.dma.map(0x10000n, 0x100, "to-device", (m) => invalidated.push(m));
    const elsewhere = t.dma.map(0x12000n, 0x100, "to-device", (m) => invalidated.push(m));
    t.shrunk.add(101);
    expect(() => t.dma.readU8(0x11000n)).toThrow(expect.objectContaining({ code: "DMA_BACKING_TRUNCATED" }));
    expect(invalidated).toEqual([over]);
    expect(over.live).toBe(false);
    expect(elsewhere.live).toBe(true);
    elsewhere.release();
    t.close();
  });

  it("an error thrown by onBackingTruncated is the cause, the region is still removed", () => {
    const fake = fakeMapper();
    const ctx = createDmaContext({ mapFd: fake.mapFd, onBackingTruncated: () => { throw new Error("logger broke"); } });
    ctx.table.add({ iova: 0n, size: 0x1000n, perm: 3, backing: { kind: "fd", fd: 7, offset: 0n } });
    fake.shrunk.add(7);
    let e: DmaError | undefined;
    try {
      ctx.dma.writeU8(0n, 1);
    } catch (err) {
      e = err as DmaError;
    }
    expect(e).toMatchObject({ code: "DMA_BACKING_TRUNCATED" });
    expect((e!.cause as Error).message).toBe("logger broke");
    expect(ctx.table.regions()).toEqual([]);
    ctx.close();
  });
});

describe("DMA into a memfd truncated by its owner (child process)", () => {
  let script = "";
  beforeAll(async () => {
    script = await bundleScenario(join(root, "test", "iommu", "fixtures", "dma-truncation.ts"), "dma-truncation");
  });
  afterAll(() => removeScenario(script));

  it("the process survives; reads and writes past the new end fail with EFAULT, the region is dropped, fds and mappings are released, a new region works", async () => {
    const outcome = await runScenario(script);
    expect(outcome.signal, outcome.stderr).toBeNull();
    expect(outcome.code, outcome.stderr).toBe(0);
    expect(lastJson(outcome)).toEqual({
      sealed: false,
      beforeTruncation: "ok",
      insideFile: 0x11,
      readPastEnd: { code: "DMA_BACKING_TRUNCATED", errno: 14 },
      reported: [{ iova: "0x100000", size: "0x10000" }],
      fdClosed: true,
      invalidated: 1,
      regionsAfter: [],
      readAgain: { code: "DMA_UNMAPPED", errno: 14 },
      writePastEnd: { code: "DMA_BACKING_TRUNCATED", errno: 14 },
      newRegion: "0x5a",
      liveMappingsLeft: 0,
    });
  });
});
