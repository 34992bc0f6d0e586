// Shared helpers of the transport tests: fd accounting through /proc/self/fd and a tiny
// length-prefixed framer ([u32 LE total length][payload]) used as a stand-in protocol.
import { readdirSync, fstatSync } from "node:fs";
import type { ReceiveBuffer } from "../../src/transport/index.js";

export function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

export function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** Bytes of a framed message: u32 LE total length (header included), then the payload. */
export function frame(payload: number[] | Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  const total = out.length;
  out[0] = total & 0xff;
  out[1] = (total >>> 8) & 0xff;
  out[2] = (total >>> 16) & 0xff;
  out[3] = total >>> 24;
  out.set(payload, 4);
  return out;
}

export interface Framed {
  payload: Uint8Array;
  fds: number[];
}

/** A framer in the style the protocols use: need(), takeFds(), consume(). */
export function lengthPrefixedFramer(onMessage: (m: Framed) => void): (rb: ReceiveBuffer) => void {
  return (rb) => {
    while (rb.available >= 4) {
      const total = rb.u32(0);
      if (!rb.need(total)) return;
      const fds = rb.takeFds(total);
      onMessage({ payload: rb.subarray(4, total - 4).slice(), fds });
      rb.consume(total);
    }
  };
}

export function until(predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (predicate()) resolve();
      else if (Date.now() > deadline) reject(new Error("condition not reached in time"));
      else setTimeout(tick, 1);
    };
    tick();
  });
}
