// Config space of one function: the bytes, write mask and write-1-to-clear mask live in the
// core's linear memory (assembly/pci/config.ts owns the masking); this side keeps views of
// them that follow linear-memory growth, and the little-endian byte helpers every
// capability module uses.
import type { CoreRef } from "../wasm.js";
import { CONFIG_OFF, WMASK_OFF, W1CMASK_OFF } from "../abi/pci.js";

export function u16(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}
export function u32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}
export function put16(b: Uint8Array, at: number, v: number) {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
}
export function put32(b: Uint8Array, at: number, v: number) {
  put16(b, at, v & 0xffff);
  put16(b, at + 2, v >>> 16);
}

/** Largest dword-contained piece at `at` of at most `len` bytes, naturally aligned. */
export function pieceOf(at: number, len: number): 1 | 2 | 4 {
  if ((at & 3) === 0 && len >= 4) return 4;
  if ((at & 1) === 0 && len >= 2) return 2;
  return 1;
}

/** Views of a function block's config, wmask and w1cmask arrays (4 KiB each). */
export class ConfigSpace {
  private buffer: ArrayBuffer | undefined;
  private cfgView!: Uint8Array;
  private wmaskView!: Uint8Array;
  private w1cView!: Uint8Array;

  constructor(
    private readonly core: CoreRef,
    private readonly fnPtr: number,
  ) {
    this.refresh();
  }

  private refresh(): void {
    const buf = this.core.memory.buffer;
    if (buf === this.buffer) return;
    this.buffer = buf;
    this.cfgView = new Uint8Array(buf, this.fnPtr + CONFIG_OFF, 4096);
    this.wmaskView = new Uint8Array(buf, this.fnPtr + WMASK_OFF, 4096);
    this.w1cView = new Uint8Array(buf, this.fnPtr + W1CMASK_OFF, 4096);
  }

  /** The config bytes (a fresh view when linear memory grew since the last call). */
  bytes(): Uint8Array {
    if (this.core.memory.buffer !== this.buffer) this.refresh();
    return this.cfgView;
  }

  wmask(): Uint8Array {
    this.refresh();
    return this.wmaskView;
  }

  w1cmask(): Uint8Array {
    this.refresh();
    return this.w1cView;
  }

  u16(at: number): number {
    return u16(this.bytes(), at);
  }
  u32(at: number): number {
    return u32(this.bytes(), at);
  }
}
