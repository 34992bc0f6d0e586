import {
  pciFunctionCreate,
  pciFunctionFree,
  pciConfigBase,
  pciWmaskBase,
  pciW1cmaskBase,
  pciBarRegister,
  pciConfigWrite,
  pciConfigRead,
  pciBarAddressLo,
  pciBarAddressHi,
  pciBarDecode,
  pciDecodedOffsetLo,
  pciDecodedOffsetHi,
  BAR_FLAG_IO,
  BAR_FLAG_MEM64,
  BAR_FLAG_PREFETCH,
  BAR_FLAG_ROM,
  CFGW_COMMAND,
  CFGW_INTX_DISABLE_CHANGED,
  CFGW_INVALID,
} from "../../../assembly/pci/config";

function addr(fn: usize, slot: i32): u64 {
  return ((<u64>pciBarAddressHi(fn, slot)) << 32) | <u64>pciBarAddressLo(fn, slot);
}
const UNMAPPED: u64 = 0xffffffffffffffff;

describe("pci config space: default masks", () => {
  it("keeps ids read-only and makes the command bits writable", () => {
    const fn = pciFunctionCreate(256);
    store<u32>(pciConfigBase(fn), 0x11e81234);
    pciConfigWrite(fn, 0, 4, 0xdeadbeef);
    expect(pciConfigRead(fn, 0, 4)).toBe(0x11e81234);
    pciConfigWrite(fn, 4, 2, 0xffff);
    // IO | MEM | MASTER | SERR | INTX_DISABLE only
    expect(pciConfigRead(fn, 4, 2)).toBe(0x0507);
    pciFunctionFree(fn);
  });

  it("clears write-1-to-clear status bits and ignores writes to the rest of status", () => {
    const fn = pciFunctionCreate(256);
    store<u16>(pciConfigBase(fn) + 6, 0xf910); // errors + capability list
    pciConfigWrite(fn, 6, 2, 0x2000 | 0x0010); // clear received master abort; cap-list is RO
    expect(pciConfigRead(fn, 6, 2)).toBe(0xd910);
    pciConfigWrite(fn, 6, 2, 0);
    expect(pciConfigRead(fn, 6, 2)).toBe(0xd910);
    pciFunctionFree(fn);
  });

  it("applies author-set wmask/w1cmask byte by byte in the device area", () => {
    const fn = pciFunctionCreate(4096);
    store<u8>(pciWmaskBase(fn) + 0x50, 0x0f);
    store<u8>(pciConfigBase(fn) + 0x51, 0xff);
    store<u8>(pciWmaskBase(fn) + 0x51, 0x00);
    store<u8>(pciW1cmaskBase(fn) + 0x51, 0x81);
    pciConfigWrite(fn, 0x50, 2, 0x01ff);
    expect(pciConfigRead(fn, 0x50, 1)).toBe(0x0f);
    expect(pciConfigRead(fn, 0x51, 1)).toBe(0xfe);
    // extended space is writable by default (QEMU pci_init_wmask)
    pciConfigWrite(fn, 0xffc, 4, 0x12345678);
    expect(pciConfigRead(fn, 0xffc, 4)).toBe(0x12345678);
    pciFunctionFree(fn);
  });

  it("rejects accesses past the end of the config space", () => {
    const fn = pciFunctionCreate(256);
    expect(pciConfigWrite(fn, 0xfe, 4, 0)).toBe(CFGW_INVALID);
    expect(pciConfigRead(fn, 0x100, 1)).toBe(0xffffffff);
    expect(pciConfigRead(fn, 0xfc, 4)).toBe(0);
    expect(pciFunctionCreate(512)).toBe(0);
    pciFunctionFree(fn);
  });
});

describe("pci BAR sizing", () => {
  it("sizes a 32-bit memory BAR", () => {
    const fn = pciFunctionCreate(256);
    expect(pciBarRegister(fn, 0, 0x100000, 0, 0)).toBe(0);
    pciConfigWrite(fn, 0x10, 4, 0xffffffff);
    expect(pciConfigRead(fn, 0x10, 4)).toBe(0xfff00000);
    pciFunctionFree(fn);
  });

  it("sizes a prefetchable 32-bit memory BAR with its type bits", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 1, 0x1000, 0, BAR_FLAG_PREFETCH);
    pciConfigWrite(fn, 0x14, 4, 0xffffffff);
    expect(pciConfigRead(fn, 0x14, 4)).toBe(0xfffff008);
    pciFunctionFree(fn);
  });

  it("sizes an I/O BAR", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 2, 32, 0, BAR_FLAG_IO);
    pciConfigWrite(fn, 0x18, 4, 0xffffffff);
    expect(pciConfigRead(fn, 0x18, 4)).toBe(0xffffffe1);
    pciFunctionFree(fn);
  });

  it("sizes a 64-bit BAR over both dwords, including sizes above 4 GiB", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 0, 0, 2, BAR_FLAG_MEM64 | BAR_FLAG_PREFETCH); // 8 GiB
    pciConfigWrite(fn, 0x10, 4, 0xffffffff);
    pciConfigWrite(fn, 0x14, 4, 0xffffffff);
    expect(pciConfigRead(fn, 0x10, 4)).toBe(0x0000000c);
    expect(pciConfigRead(fn, 0x14, 4)).toBe(0xfffffffe);
    pciFunctionFree(fn);
  });

  it("sizes the expansion ROM with a writable enable bit", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 6, 0x8000, 0, BAR_FLAG_ROM);
    pciConfigWrite(fn, 0x30, 4, 0xffffffff);
    expect(pciConfigRead(fn, 0x30, 4)).toBe(0xffff8001);
    pciConfigWrite(fn, 0x30, 4, 0xfffffffe);
    expect(pciConfigRead(fn, 0x30, 4)).toBe(0xffff8000);
    pciFunctionFree(fn);
  });

  it("rejects invalid declarations", () => {
    const fn = pciFunctionCreate(256);
    expect(pciBarRegister(fn, 0, 0x3000, 0, 0)).toBe(-1); // not a power of two
    expect(pciBarRegister(fn, 0, 8, 0, 0)).toBe(-1); // memory < 16
    expect(pciBarRegister(fn, 5, 0x1000, 0, BAR_FLAG_MEM64)).toBe(-1); // no upper slot
    expect(pciBarRegister(fn, 0, 0x1000, 0, BAR_FLAG_ROM)).toBe(-1); // ROM flag off slot 6
    expect(pciBarRegister(fn, 6, 0x400, 0, BAR_FLAG_ROM)).toBe(-1); // ROM < 2 KiB
    expect(pciBarRegister(fn, 0, 0, 1, 0)).toBe(-1); // 4 GiB in a 32-bit BAR
    expect(pciBarRegister(fn, 0, 4, 0, BAR_FLAG_IO | BAR_FLAG_PREFETCH)).toBe(-1);
    pciFunctionFree(fn);
  });
});

describe("pci BAR decode and remap", () => {
  it("maps a memory BAR only while COMMAND.MEMORY is set, and reports changes", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 0, 0x1000, 0, 0);
    expect(pciConfigWrite(fn, 0x10, 4, 0xfebf0000)).toBe(0); // not enabled yet
    expect(addr(fn, 0)).toBe(UNMAPPED);
    expect(pciConfigWrite(fn, 4, 2, 0x2)).toBe(CFGW_COMMAND | 1);
    expect(addr(fn, 0)).toBe(0xfebf0000);
    expect(pciConfigWrite(fn, 0x10, 4, 0xfebe0000)).toBe(1);
    expect(addr(fn, 0)).toBe(0xfebe0000);
    // rewriting the same value is not a change
    expect(pciConfigWrite(fn, 0x10, 4, 0xfebe0000)).toBe(0);
    expect(pciConfigWrite(fn, 4, 2, 0x1)).toBe(CFGW_COMMAND | 1);
    expect(addr(fn, 0)).toBe(UNMAPPED);
    pciFunctionFree(fn);
  });

  it("maps an I/O BAR with COMMAND.IO and treats address 0 as unmapped", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 1, 16, 0, BAR_FLAG_IO);
    pciConfigWrite(fn, 4, 2, 0x1);
    expect(addr(fn, 1)).toBe(UNMAPPED);
    pciConfigWrite(fn, 0x14, 4, 0xc040);
    expect(addr(fn, 1)).toBe(0xc040);
    pciConfigWrite(fn, 0x14, 4, 0);
    expect(addr(fn, 1)).toBe(UNMAPPED);
    pciFunctionFree(fn);
  });

  it("maps a 64-bit BAR above 4 GiB, handling each half", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 2, 0x4000, 0, BAR_FLAG_MEM64);
    pciConfigWrite(fn, 4, 2, 0x2);
    pciConfigWrite(fn, 0x1c, 4, 0x8);
    expect(addr(fn, 2)).toBe(0x800000000);
    pciConfigWrite(fn, 0x18, 4, 0x0000c000);
    expect(addr(fn, 2)).toBe(0x80000c000);
    expect(pciBarDecode(fn, false, 0x0000c010, 0x8, 4)).toBe(2);
    expect(pciDecodedOffsetLo(fn)).toBe(0x10);
    expect(pciDecodedOffsetHi(fn)).toBe(0);
    expect(pciBarDecode(fn, false, 0x0000fffe, 0x8, 4)).toBe(-1); // straddles the end
    expect(pciBarDecode(fn, true, 0x0000c010, 0x8, 4)).toBe(-1); // wrong space
    pciFunctionFree(fn);
  });

  it("treats a 32-bit BAR reaching 0xffffffff as unmapped (QEMU pci_bar_address)", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 0, 0x1000, 0, 0);
    pciConfigWrite(fn, 4, 2, 0x2);
    pciConfigWrite(fn, 0x10, 4, 0xfffff000);
    expect(addr(fn, 0)).toBe(UNMAPPED);
    pciConfigWrite(fn, 0x10, 4, 0xffffe000);
    expect(addr(fn, 0)).toBe(0xffffe000);
    pciFunctionFree(fn);
  });

  it("maps the ROM only when its enable bit is set", () => {
    const fn = pciFunctionCreate(256);
    pciBarRegister(fn, 6, 0x800, 0, BAR_FLAG_ROM);
    pciConfigWrite(fn, 4, 2, 0x2);
    expect(pciConfigWrite(fn, 0x30, 4, 0xfeb00000)).toBe(0);
    expect(addr(fn, 6)).toBe(UNMAPPED);
    expect(pciConfigWrite(fn, 0x30, 4, 0xfeb00001)).toBe(1 << 6);
    expect(addr(fn, 6)).toBe(0xfeb00000);
    pciFunctionFree(fn);
  });

  it("reports INTx-disable toggles", () => {
    const fn = pciFunctionCreate(256);
    expect(pciConfigWrite(fn, 5, 1, 0x04)).toBe(CFGW_COMMAND | CFGW_INTX_DISABLE_CHANGED);
    expect(pciConfigWrite(fn, 5, 1, 0x04)).toBe(CFGW_COMMAND);
    pciFunctionFree(fn);
  });
});
