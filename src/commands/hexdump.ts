// Text forms of device bytes: `region read` values and dumps, `lspci -x` config dumps. Pure.

/** Little-endian bytes (1..8) as a zero-padded 0x-hex number. */
export function formatValue(bytes: Uint8Array): string {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return "0x" + v.toString(16).padStart(bytes.length * 2, "0");
}

function sameRow(bytes: Uint8Array, a: number, b: number): boolean {
  if (b + 16 > bytes.length) return false;
  for (let i = 0; i < 16; i++) if (bytes[a + i] !== bytes[b + i]) return false;
  return true;
}

/**
 * `hexdump -C` style lines addressed from `base`: a full line repeating the one before it is
 * shown once as `*`, and the last line is the end address (as hexdump prints it).
 */
export function hexDump(bytes: Uint8Array, base: bigint = 0n): string {
  const lines: string[] = [];
  const end = base + BigInt(bytes.length);
  const width = end > 0xffff_ffffn ? 16 : 8;
  let starred = false;
  for (let at = 0; at < bytes.length; at += 16) {
    if (at > 0 && sameRow(bytes, at - 16, at)) {
      if (!starred) lines.push("*");
      starred = true;
      continue;
    }
    starred = false;
    const row = bytes.subarray(at, at + 16);
    const hexes: string[] = [];
    for (let i = 0; i < 16; i++) {
      hexes.push(i < row.length ? row[i].toString(16).padStart(2, "0") : "  ");
      if (i === 7) hexes.push("");
    }
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${(base + BigInt(at)).toString(16).padStart(width, "0")}  ${hexes.join(" ")}  |${ascii}|`);
  }
  lines.push(end.toString(16).padStart(width, "0"));
  return lines.join("\n");
}

/** lspci -x style: "00: 86 80 0e 10 ..." lines of 16 bytes (3-digit offsets past 256). */
export function configHexDump(config: Uint8Array, length: number): string {
  const n = Math.min(length, config.length);
  const width = n > 0x100 ? 3 : 2;
  const lines: string[] = [];
  for (let at = 0; at < n; at += 16) {
    lines.push(`${at.toString(16).padStart(width, "0")}: ${Array.from(config.subarray(at, Math.min(at + 16, n)), (b) => b.toString(16).padStart(2, "0")).join(" ")}`);
  }
  return lines.join("\n");
}
