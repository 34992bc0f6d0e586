// Namespace backings: vectored reads and writes of a file (batches of IOV_MAX buffers, a short
// read past a file shrunk under the backing) against the same bytes moved one buffer at a time.
import { mkdtempSync, readFileSync, rmSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createFileBacking, createRamBacking } from "../../../src/devices/nvme/index.js";

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});
const tempFile = () => {
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-nvme-backing-"));
  dirs.push(dir);
  return join(dir, "disk.img");
};
/** `n` buffers of `size` bytes, buffer i filled with (seed + i) & 0xff. */
const buffers = (n: number, size: number, seed: number) => Array.from({ length: n }, (_, i) => new Uint8Array(size).fill((seed + i) & 0xff));

describe("nvme backings: readv / writev", () => {
  it("a file takes more buffers than one pwritev/preadv allows (1024) and keeps their order", () => {
    const path = tempFile();
    const b = createFileBacking(path, 1 << 20);
    const src = buffers(1500, 512, 7);
    b.writev(4096, src);
    const file = readFileSync(path);
    for (let i = 0; i < src.length; i++) expect(file[4096 + i * 512 + 511], `buffer ${i}`).toBe((7 + i) & 0xff);
    const dst = buffers(1500, 512, 0).map((x) => x.fill(0xee));
    b.readv(4096, dst);
    expect(Buffer.concat(dst).equals(Buffer.concat(src))).toBe(true);
    b.close();
  });

  it("a file shrunk under the backing reads zeros past its end, in every buffer after the short read", () => {
    const path = tempFile();
    const b = createFileBacking(path, 64 << 10);
    b.writev(0, buffers(16, 4096, 1));
    truncateSync(path, 10_000); // ends inside the third buffer
    const dst = buffers(6, 4096, 0).map((x) => x.fill(0xee));
    b.readv(0, dst);
    expect(dst[0]).toEqual(new Uint8Array(4096).fill(1));
    expect(dst[1]).toEqual(new Uint8Array(4096).fill(2));
    expect(dst[2].subarray(0, 10_000 - 8192)).toEqual(new Uint8Array(10_000 - 8192).fill(3));
    expect(dst[2].subarray(10_000 - 8192)).toEqual(new Uint8Array(4096 - (10_000 - 8192)));
    for (const d of dst.slice(3)) expect(d).toEqual(new Uint8Array(4096));
    b.close();
  });

  it("RAM does the same one buffer at a time", () => {
    const b = createRamBacking(1 << 16);
    const src = buffers(3, 100, 9);
    b.writev(50, src);
    expect(Array.from(b.bytes!.subarray(49, 52))).toEqual([0, 9, 9]);
    expect(b.bytes![50 + 299]).toBe(11);
    const dst = buffers(3, 100, 0);
    b.readv(50, dst);
    expect(dst).toEqual(src);
  });
});
