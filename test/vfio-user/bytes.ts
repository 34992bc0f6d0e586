// A tiny little-endian byte builder for test fixtures, deliberately independent of the wire
// module's MessageWriter so serializer output is checked against bytes built another way.
export class Bytes {
  private out: number[] = [];
  u8(v: number): this {
    this.out.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    for (let i = 0; i < 2; i++) this.out.push(Math.floor(v / 256 ** i) % 256);
    return this;
  }
  u32(v: number): this {
    for (let i = 0; i < 4; i++) this.out.push(Math.floor(v / 256 ** i) % 256);
    return this;
  }
  u64(v: bigint | number): this {
    let x = BigInt(v);
    for (let i = 0; i < 8; i++) {
      this.out.push(Number(x & 0xffn));
      x >>= 8n;
    }
    return this;
  }
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.out.push(bytes[i]);
    return this;
  }
  ascii(s: string): this {
    for (const ch of s) this.out.push(ch.charCodeAt(0));
    return this;
  }
  zeros(n: number): this {
    for (let i = 0; i < n; i++) this.out.push(0);
    return this;
  }
  get length(): number {
    return this.out.length;
  }
  build(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/** A whole message: 16-byte header (size computed) + payload. */
export function message(msgId: number, command: number, flags: number, payload: Bytes | Uint8Array = new Uint8Array(0), error = 0): Uint8Array {
  const body = payload instanceof Bytes ? payload.build() : payload;
  return new Bytes().u16(msgId).u16(command).u32(16 + body.length).u32(flags).u32(error).raw(body).build();
}

export function hex(s: string): Uint8Array {
  const clean = s.replace(/[\s_]/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}
