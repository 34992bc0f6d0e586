// Shadow windows: ranges of a BAR whose reads the memory core serves from bytes in its own
// linear memory (a ROM device in ROMD mode), which the device keeps current. A typed array
// over linear memory detaches when the memory grows, so the device gets a ShadowWindowView:
// it holds the window's address, not a view, and re-derives its view when the memory's
// buffer changed (one identity compare per access).
import type { MemoryRegion } from "../memory/api.js";
import type { ShadowWindowAccess } from "./api.js";

export class ShadowWindowView implements ShadowWindowAccess {
  private buf: ArrayBuffer;
  private u8: Uint8Array;
  private dv: DataView;

  constructor(
    private readonly memory: WebAssembly.Memory,
    /** Byte address of the window in linear memory: RAM regions never move. */
    private readonly ptr: number,
    readonly size: number,
  ) {
    this.buf = memory.buffer;
    this.u8 = new Uint8Array(this.buf, ptr, size);
    this.dv = new DataView(this.buf, ptr, size);
  }

  private fresh(): void {
    this.buf = this.memory.buffer;
    this.u8 = new Uint8Array(this.buf, this.ptr, this.size);
    this.dv = new DataView(this.buf, this.ptr, this.size);
  }

  bytes(): Uint8Array {
    if (this.memory.buffer !== this.buf) this.fresh();
    return this.u8;
  }

  private view(): DataView {
    if (this.memory.buffer !== this.buf) this.fresh();
    return this.dv;
  }

  getUint8(offset: number): number {
    return this.view().getUint8(offset);
  }
  getUint16(offset: number): number {
    return this.view().getUint16(offset, true);
  }
  getUint32(offset: number): number {
    return this.view().getUint32(offset, true);
  }
  getBigUint64(offset: number): bigint {
    return this.view().getBigUint64(offset, true);
  }
  setUint8(offset: number, value: number): void {
    this.view().setUint8(offset, value);
  }
  setUint16(offset: number, value: number): void {
    this.view().setUint16(offset, value, true);
  }
  setUint32(offset: number, value: number): void {
    this.view().setUint32(offset, value, true);
  }
  setBigUint64(offset: number, value: bigint): void {
    this.view().setBigUint64(offset, value, true);
  }
  set(src: ArrayLike<number>, offset = 0): void {
    this.bytes().set(src, offset);
  }
  fill(value: number, start?: number, end?: number): void {
    this.bytes().fill(value, start, end);
  }
}

export interface ShadowState {
  region: MemoryRegion;
  window: ShadowWindowView;
}
