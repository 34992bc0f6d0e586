// Reads a fuzzer's byte string as a sequence of choices. Past the end every read returns 0
// (or an empty array), so any input, however short, is a complete script.
export class FuzzInput {
  private at = 0;
  constructor(readonly data: Uint8Array) {}

  get remaining(): number {
    return this.data.length - this.at;
  }

  u8(): number {
    return this.at < this.data.length ? this.data[this.at++] : 0;
  }
  u16(): number {
    return this.u8() | (this.u8() << 8);
  }
  u32(): number {
    return (this.u16() | (this.u16() << 16)) >>> 0;
  }
  u64(): bigint {
    const lo = BigInt(this.u32());
    return (BigInt(this.u32()) << 32n) | lo;
  }
  bool(): boolean {
    return (this.u8() & 1) === 1;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 256 ? this.u8() % n : this.u32() % n;
  }
  pick<T>(choices: readonly T[]): T {
    return choices[this.below(choices.length)];
  }
  /** Up to `n` bytes (fewer when the input runs out). */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(Math.max(0, Math.min(n, this.remaining)));
    for (let i = 0; i < out.length; i++) out[i] = this.u8();
    return out;
  }
  /** Everything not read yet. */
  rest(): Uint8Array {
    return this.bytes(this.remaining);
  }
}

/**
 * Choices drawn from a seeded generator and recorded: replaying `recorded()` through a plain
 * FuzzInput makes the same choices. How seeds.ts writes valid scripts for the script targets.
 */
export class RecordingInput extends FuzzInput {
  private readonly record: number[] = [];
  private state: number;
  constructor(seed: number, private readonly budget: number) {
    super(new Uint8Array(0));
    this.state = seed >>> 0 || 1;
  }
  override get remaining(): number {
    return this.budget - this.record.length;
  }
  override u8(): number {
    if (this.record.length >= this.budget) return 0;
    // xorshift32
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    const b = this.state & 0xff;
    this.record.push(b);
    return b;
  }
  recorded(): Uint8Array {
    return Uint8Array.from(this.record);
  }
}

/** Cuts `stream` at up to `count` points read from `input`; returns the chunks in order. */
export function splitAt(stream: Uint8Array, input: FuzzInput, count: number): Uint8Array[] {
  const cuts = new Set<number>();
  for (let i = 0; i < count; i++) cuts.add(input.below(stream.length + 1));
  const points = [...cuts].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, stream.length]) {
    if (p > from) chunks.push(stream.subarray(from, p));
    from = p;
  }
  return chunks;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A broken invariant: what the fuzz engine reports as a crash, with the input's story. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvariantError";
  }
}

export function check(ok: unknown, message: string | (() => string)): asserts ok {
  if (!ok) throw new InvariantError(typeof message === "string" ? message : message());
}
