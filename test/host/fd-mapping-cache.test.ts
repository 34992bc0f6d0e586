// The DMA mapper both servers use: a range re-mapped after its region was removed takes over the
// lingering mapping (no mmap, same memory), and nothing weakens what unmapping guarantees:
// escaped views are detached, a read-only fd never yields a writable mapping, a shrunk file is
// not reused, the budget and guard slots come back, close() leaves nothing mapped.
import { afterEach, describe, expect, it, vi } from "vitest";
import { closeSync, openSync, ftruncateSync, unlinkSync } from "node:fs";
import { memfdCreate, defaultMapBudget, mappingGuardStats } from "../../src/transport/shm.js";
import { FdMappingCache, FD_MAPPING_LINGER_MS, FD_MAPPING_MAX_IDLE, createHostDmaContext } from "../../src/host/index.js";

const MiB = 1 << 20;
const live = () => mappingGuardStats().liveMappings;

describe("FdMappingCache", () => {
  const fds: number[] = [];
  const caches: FdMappingCache[] = [];
  const fresh = () => {
    const c = new FdMappingCache();
    caches.push(c);
    return c;
  };
  const memfd = (size = MiB) => {
    const fd = memfdCreate("wasmdev-cache-test", size);
    fds.push(fd);
    return fd;
  };
  afterEach(() => {
    for (const c of caches.splice(0)) c.close();
    for (const fd of fds.splice(0)) closeSync(fd);
    vi.useRealTimers();
  });

  it("re-mapping a range released as reusable takes over its mapping: same memory, no new mapping", () => {
    const cache = fresh();
    const fd = memfd();
    const before = live();
    const a = cache.mapFd(fd, 0n, MiB, true);
    a.bytes[5] = 0x5a;
    expect(live()).toBe(before + 1);
    a.unmap(true);
    expect(live()).toBe(before + 1); // lingering
    expect(cache.idleCount).toBe(1);
    // A second descriptor of the same file (as a peer's next DMA_MAP brings) finds it.
    const again = openSync(`/proc/self/fd/${fd}`, "r+");
    fds.push(again);
    const b = cache.mapFd(again, 0n, MiB, true);
    expect(b.bytes.buffer).toBe(a.bytes.buffer);
    expect(b.bytes[5]).toBe(0x5a);
    expect(live()).toBe(before + 1);
    expect(cache.idleCount).toBe(0);
    b.unmap(true);
    cache.close();
    expect(live()).toBe(before);
    expect(b.bytes.length).toBe(0); // unmapped for real: detached
  });

  it("a release whose views escaped unmaps at once (views detached, budget refunded)", () => {
    const cache = fresh();
    const fd = memfd();
    const before = live();
    const budget = defaultMapBudget.mappedBytes;
    const a = cache.mapFd(fd, 0n, MiB, true);
    a.unmap(false);
    expect(a.bytes.length).toBe(0);
    expect(live()).toBe(before);
    expect(defaultMapBudget.mappedBytes).toBe(budget);
    expect(cache.size).toBe(0);
  });

  it("two live regions of the same range never share a mapping", () => {
    const cache = fresh();
    const fd = memfd();
    const a = cache.mapFd(fd, 0n, MiB, true);
    const b = cache.mapFd(fd, 0n, MiB, true);
    expect(b.bytes.buffer).not.toBe(a.bytes.buffer);
    a.unmap(false);
    expect(a.bytes.length).toBe(0);
    expect(b.bytes.length).toBe(MiB);
    b.unmap(true);
  });

  it("reuses only the same offset, length and writability", () => {
    const cache = fresh();
    const fd = memfd(2 * MiB);
    const a = cache.mapFd(fd, 0n, MiB, true);
    a.unmap(true);
    for (const [offset, length, writable] of [[MiB, MiB, true], [0, MiB / 2, true], [0, MiB, false]] as const) {
      const m = cache.mapFd(fd, BigInt(offset), length, writable);
      expect(m.bytes.buffer).not.toBe(a.bytes.buffer);
      m.unmap(false);
    }
    const same = cache.mapFd(fd, 0n, MiB, true);
    expect(same.bytes.buffer).toBe(a.bytes.buffer);
    same.unmap(true);
  });

  it("a read-only descriptor never takes over a writable mapping (its own mmap is refused)", () => {
    const cache = fresh();
    const fd = memfd();
    cache.mapFd(fd, 0n, MiB, true).unmap(true);
    const ro = openSync(`/proc/self/fd/${fd}`, "r");
    fds.push(ro);
    expect(() => cache.mapFd(ro, 0n, MiB, true)).toThrow(expect.objectContaining({ code: "ERR_SYSCALL" }));
    // Read-only from a read-only descriptor is fine, and is a mapping of its own.
    const r = cache.mapFd(ro, 0n, MiB, false);
    expect(r.bytes.length).toBe(MiB);
    r.unmap(false);
  });

  it("a file that shrank below the range is not reused (the new mapping is refused as out of bounds)", () => {
    const cache = fresh();
    // Memfds get sealed against shrinking at the first mapping; a tmpfs file cannot be sealed.
    const path = `/dev/shm/wasmdev-cache-test-${process.pid}`;
    const fd = openSync(path, "w+");
    fds.push(fd);
    ftruncateSync(fd, MiB);
    try {
      const a = cache.mapFd(fd, 0n, MiB, true);
      a.unmap(true);
      ftruncateSync(fd, MiB / 2);
      expect(() => cache.mapFd(fd, 0n, MiB, true)).toThrow(expect.objectContaining({ code: "ERR_MAP_OUT_OF_BOUNDS" }));
    } finally {
      unlinkSync(path);
    }
  });

  it("an idle mapping goes after the linger time, and at most FD_MAPPING_MAX_IDLE linger", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const cache = fresh();
    const fd = memfd(MiB);
    const before = live();
    const maps = [];
    for (let i = 0; i < FD_MAPPING_MAX_IDLE + 3; i++) maps.push(cache.mapFd(fd, 0n, 4096 * (i + 1), true));
    for (const m of maps) m.unmap(true);
    expect(cache.idleCount).toBe(FD_MAPPING_MAX_IDLE);
    expect(maps[0].bytes.length).toBe(0); // the oldest were unmapped
    expect(live()).toBe(before + FD_MAPPING_MAX_IDLE);
    vi.advanceTimersByTime(2 * FD_MAPPING_LINGER_MS + 1);
    expect(cache.idleCount).toBe(0);
    expect(live()).toBe(before);
  });

  it("through a DMA context: remove + add of the same range reuses the mapping; a device map forbids it; close leaves nothing", () => {
    const fd = memfd();
    const before = live();
    const budget = defaultMapBudget.mappedBytes;
    const { table, dma, close } = createHostDmaContext();
    const region = { iova: 0x1000_0000n, size: BigInt(MiB), perm: 3 as const, backing: { kind: "fd" as const, fd, offset: 0n } };
    table.add(region);
    dma.writeU32(0x1000_0010n, 0xdeadbeef);
    table.remove(region.iova, region.size);
    table.add(region);
    expect(live()).toBe(before + 1);
    expect(dma.readU32(0x1000_0010n)).toBe(0xdeadbeef);
    const m = dma.map(0x1000_0000n, 64, "from-device", () => {});
    table.remove(region.iova, region.size);
    expect(m.views[0].length).toBe(0); // the device's view is detached: not kept for reuse
    expect(live()).toBe(before);
    table.add(region);
    close();
    expect(live()).toBe(before);
    expect(defaultMapBudget.mappedBytes).toBe(budget);
  });
});
