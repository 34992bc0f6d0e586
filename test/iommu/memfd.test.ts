// DMA into real shared memory: a memfd passed as a DMA region is mmapped through the
// transport; bytes a device writes by DMA are read back by ANOTHER PROCESS from the same
// memfd (and the other way round), and unmapping releases the mapping.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { closeSync, fstatSync } from "node:fs";
import { memfdCreate, defaultMapBudget } from "../../src/transport/shm.js";
import { createHostDmaContext } from "../../src/host/index.js";
import type { DmaMapping } from "../../src/core/dma/api.js";

/** Runs `script` in a child Node process with `fd` as its fd 3; returns its stdout. */
function child(fd: number, script: string): string {
  const r = spawnSync(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "pipe", fd], encoding: "utf8" });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return r.stdout.trim();
}

describe("DMA over a memfd", () => {
  it("a DMA write lands in the memfd where another process reads it back, and vice versa", () => {
    const size = 0x20_0000;
    const fd = memfdCreate("wasmdev-dma-test", size);
    const { table, dma, close } = createHostDmaContext();
    try {
      // Map the second MiB of the file at a guest IOVA (fd offset honoured).
      table.add({ iova: 0x1_0000_0000n, size: 0x10_0000n, perm: 3, backing: { kind: "fd", fd, offset: 0x10_0000n } });
      const payload = Buffer.from("wasmdev DMA into shared memory \u2713", "utf8");
      dma.writeSync(0x1_0000_0ff0n, payload); // crosses a 4 KiB page inside the region
      dma.writeU64(0x1_0008_0000n, 0x1122_3344_5566_7788n);
      const seen = child(fd, `
        const fs = require("fs");
        const b = Buffer.alloc(${payload.length});
        fs.readSync(3, b, 0, b.length, ${0x10_0ff0});
        const w = Buffer.alloc(8);
        fs.readSync(3, w, 0, 8, ${0x18_0000});
        // Now write something for the parent to DMA-read.
        fs.writeSync(3, Buffer.from("from the child"), 0, 14, ${0x10_2000});
        process.stdout.write(b.toString("utf8") + "|" + w.toString("hex"));
      `);
      expect(seen).toBe(`${payload.toString("utf8")}|8877665544332211`);
      const back = new Uint8Array(14);
      dma.readSync(0x1_0000_2000n, back);
      expect(Buffer.from(back).toString("utf8")).toBe("from the child");
    } finally {
      close();
      closeSync(fd);
    }
  });

  it("removing the region unmaps it (budget refunded, live views detached, owned fd closed)", () => {
    const fd = memfdCreate("wasmdev-dma-test2", 0x10000);
    const before = defaultMapBudget.mappedBytes;
    const { table, dma, close } = createHostDmaContext();
    try {
      table.add({ iova: 0x8000n, size: 0x10000n, perm: 3, backing: { kind: "fd", fd, offset: 0n, closeFd: true } });
      expect(defaultMapBudget.mappedBytes).toBe(before + 0x10000);
      let fired: DmaMapping | null = null;
      const m = dma.map(0x9000n, 0x100, "from-device", (x) => (fired = x));
      m.views[0].fill(0x42);
      table.remove(0x8000n, 0x10000n);
      expect(fired).toBe(m);
      expect(m.views[0].length).toBe(0); // detached: a stale view cannot reach unmapped memory
      expect(defaultMapBudget.mappedBytes).toBe(before);
      expect(() => fstatSync(fd)).toThrow(); // closeFd: the table closed it
    } finally {
      close();
    }
  });

  it("rejects a region larger than the file (bounds checked by the transport), nothing leaks", () => {
    const fd = memfdCreate("wasmdev-dma-test3", 0x1000);
    const before = defaultMapBudget.mappedBytes;
    const { table, close } = createHostDmaContext();
    try {
      expect(() => table.add({ iova: 0n, size: 0x2000n, perm: 3, backing: { kind: "fd", fd, offset: 0n } }))
        .toThrow(expect.objectContaining({ code: "DMA_INVALID_ARGUMENT" }));
      // An overlap is refused before anything is mapped.
      table.add({ iova: 0n, size: 0x1000n, perm: 1, backing: { kind: "fd", fd, offset: 0n } });
      expect(() => table.add({ iova: 0n, size: 0x1000n, perm: 3, backing: { kind: "fd", fd, offset: 0n } }))
        .toThrow(expect.objectContaining({ code: "DMA_REGION_EXISTS" }));
      expect(defaultMapBudget.mappedBytes).toBe(before + 0x1000);
      expect(table.regions()).toHaveLength(1);
    } finally {
      close();
      closeSync(fd);
    }
    expect(defaultMapBudget.mappedBytes).toBe(before);
  });
});
