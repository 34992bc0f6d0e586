import { describe, test, expect } from "vitest";
import { readFileSync } from "node:fs";
import { memfdCreate, mmapFd, fileSize, closeFd, MapBudget, defaultMapBudget, TransportError } from "../../src/transport/index.js";

/** Mappings of memfds named `name` in this process (V8's own mappings come and go). */
function mapsOf(name: string): number {
  return readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => l.includes(`/memfd:${name} `)).length;
}

describe("memfd + mmap", () => {
  test("two mappings of one memfd share memory, at page-aligned and unaligned offsets", () => {
    const fd = memfdCreate("shared", 3 * 4096);
    expect(fileSize(fd)).toBe(3 * 4096);
    const whole = mmapFd(fd, 0, 3 * 4096);
    const middle = mmapFd(fd, 4096 + 10, 100);
    expect(middle.length).toBe(100);
    expect(middle.buffer.byteLength).toBe(100);
    middle.bytes()[0] = 0xab;
    middle.bytes()[99] = 0xcd;
    expect(whole.bytes()[4096 + 10]).toBe(0xab);
    expect(whole.bytes()[4096 + 109]).toBe(0xcd);
    whole.unmap();
    middle.unmap();
    closeFd(fd);
  });

  test("bounds are checked against the file size, with number and bigint offsets", () => {
    const fd = memfdCreate("bounds", 8192);
    const outOfBounds = (offset: number | bigint, length: number) => {
      try {
        mmapFd(fd, offset, length);
      } catch (e) {
        return (e as TransportError).code;
      }
      return "mapped";
    };
    expect(outOfBounds(0, 8193)).toBe("ERR_MAP_OUT_OF_BOUNDS");
    expect(outOfBounds(8192, 1)).toBe("ERR_MAP_OUT_OF_BOUNDS");
    expect(outOfBounds(4096n, 4097)).toBe("ERR_MAP_OUT_OF_BOUNDS");
    expect(outOfBounds(2n ** 64n - 1n, 1)).toBe("ERR_MAP_OUT_OF_BOUNDS");
    expect(outOfBounds(0, 0)).toBe("ERR_INVALID_ARGUMENT");
    expect(outOfBounds(-1, 10)).toBe("ERR_INVALID_ARGUMENT");
    const last = mmapFd(fd, 8191n, 1);
    last.bytes()[0] = 1;
    last.unmap();
    closeFd(fd);
  });

  test("the budget (maxMappedBytes) is enforced before mapping and refunded by unmap", () => {
    const fd = memfdCreate("budget", 64 * 1024);
    const budget = new MapBudget(40 * 1024);
    const a = mmapFd(fd, 0, 32 * 1024, { budget });
    expect(budget.mappedBytes).toBe(32 * 1024);
    const before = mapsOf("budget");
    let error: TransportError | undefined;
    try {
      mmapFd(fd, 0, 16 * 1024, { budget });
    } catch (e) {
      error = e as TransportError;
    }
    expect(error?.code).toBe("ERR_MAP_LIMIT");
    expect(error?.limit).toBe(40 * 1024);
    expect(error?.actual).toBe(48 * 1024);
    expect(mapsOf("budget")).toBe(before);
    a.unmap();
    expect(budget.mappedBytes).toBe(0);
    const b = mmapFd(fd, 0, 40 * 1024, { budget });
    b.unmap();
    expect(defaultMapBudget.mappedBytes).toBe(0);
    closeFd(fd);
  });

  test("unmap detaches the buffer: old views read empty, a second unmap fails, no mapping leaks", () => {
    const fd = memfdCreate("detach", 4096);
    for (let i = 0; i < 2000; i++) mmapFd(fd, 0, 4096).unmap();
    expect(mapsOf("detach")).toBe(0);
    const held = mmapFd(fd, 0, 4096);
    expect(mapsOf("detach")).toBe(1); // the filter does see our mappings
    held.unmap();
    const region = mmapFd(fd, 0, 4096);
    const view = region.bytes();
    view[0] = 9;
    region.unmap();
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(region.isMapped).toBe(false);
    expect(() => region.buffer).toThrow(expect.objectContaining({ code: "ERR_UNMAPPED" }));
    expect(() => region.unmap()).toThrow(expect.objectContaining({ code: "ERR_UNMAPPED" }));
    closeFd(fd);
  });

  test("read-only mappings see writes made through other mappings", () => {
    const fd = memfdCreate("ro", 4096);
    const rw = mmapFd(fd, 0, 4096);
    const ro = mmapFd(fd, 0, 4096, { writable: false });
    rw.bytes()[7] = 42;
    expect(ro.bytes()[7]).toBe(42);
    expect(ro.writable).toBe(false);
    rw.unmap();
    ro.unmap();
    closeFd(fd);
  });

  test("one mapping above Node's largest ArrayBuffer is refused with a clear error", () => {
    const size = 5 * 1024 * 1024 * 1024; // sparse: costs no memory
    const fd = memfdCreate("huge", size);
    expect(() => mmapFd(fd, 0, size)).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
    const tail = mmapFd(fd, size - 4096, 4096);
    tail.bytes()[4095] = 1;
    tail.unmap();
    closeFd(fd);
  });

  test("mapping a closed fd fails with the errno", () => {
    const fd = memfdCreate("closed", 4096);
    closeFd(fd);
    expect(() => mmapFd(fd, 0, 4096)).toThrow(expect.objectContaining({ code: "ERR_SYSCALL", errno: "EBADF" }));
  });
});
