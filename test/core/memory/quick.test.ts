import { describe, expect, it } from "vitest";
import { MemoryCore } from "../../../src/core/memory/index.js";
for (const engine of ["wasm", "reference"] as const) {
describe(engine, () => {
  it("basic", () => {
    const mem = MemoryCore.create({ engine });
    const sys = mem.container("sys", 1n << 64n);
    const ram = mem.ram("ram", 0x10000);
    const log: string[] = [];
    const io = mem.io("io", 0x100, { read: (o, s) => { log.push(`r${o}/${s}`); return 0x11223344; }, write: (o, s, v) => { log.push(`w${o}/${s}=${v}`); } });
    mem.transaction(() => { sys.addSubregion(0, ram); sys.addSubregion(0x1000, io, 1); });
    const as = mem.addressSpace("m", sys);
    console.log(as.flatView().map(r => `${r.start.toString(16)}-${r.last.toString(16)} ${r.region?.name} +${r.offsetInRegion}`));
    as.write(0x10, 4, 0xdeadbeef);
    expect(as.read(0x10, 4)).toBe(0xdeadbeef);
    expect(as.read64(0x10)).toBe(0xdeadbeefn);
    expect(as.read(0x1004, 4)).toBe(0x11223344);
    as.write(0x1008, 8, 0x0102030405060708n);
    console.log(log);
    expect(() => as.read(0x20000, 4)).toThrow(/DECODE|nothing/);
    const b = as.readBytes(0xffc, 8);
    console.log(b);
  });
});
}
