// The pci.ids reader: vendors, devices, subsystems (ids of either half up to ffff), comments,
// and nothing from the class section.
import { describe, expect, it } from "vitest";
import { PciIds } from "../../src/commands/pci-ids.js";

const text = [
  "# comment",
  "8086  Intel Corporation",
  "\t100e  82540EM Gigabit Ethernet Controller",
  "\t\tffff 8000  A subsystem with high ids",
  "\t\t8086 001e  PRO/1000 MT Desktop Adapter",
  "#\tcommented device",
  "ffff  Illegal Vendor ID",
  "C 02  Network controller",
  "\t00  Ethernet controller",
  "",
].join("\n");

describe("PciIds", () => {
  const ids = PciIds.parse(text);
  it("finds vendor, device and subsystem names", () => {
    expect(ids.vendor(0x8086)).toBe("Intel Corporation");
    expect(ids.device(0x8086, 0x100e)).toBe("82540EM Gigabit Ethernet Controller");
    expect(ids.subsystem(0x8086, 0x100e, 0x8086, 0x001e)).toBe("PRO/1000 MT Desktop Adapter");
    expect(ids.subsystem(0x8086, 0x100e, 0xffff, 0x8000)).toBe("A subsystem with high ids");
  });

  it("answers undefined for what it does not list, and stops at the class section", () => {
    expect(ids.vendor(0x1234)).toBeUndefined();
    expect(ids.device(0x8086, 0x1234)).toBeUndefined();
    expect(ids.device(0xffff, 0x0000)).toBeUndefined();
    expect(ids.vendor(0x0002)).toBeUndefined(); // "C 02" is a class, not vendor 0002
  });
});
