// Vendor, device and subsystem names from a pci.ids file (the PCI ID Repository's format, which
// Debian ships in pciutils / hwdata), as lspci shows them.
//
//   vvvv  Vendor name
//   <tab>dddd  Device name
//   <tab><tab>ssss tttt  Subsystem name
//
// Lines starting with '#' are comments; the class section ("C cc ...") and what follows are
// not read (the class names are built into config-space.ts).
import { readFileSync } from "node:fs";
import type { PciNames } from "./config-space.js";

/** Where lspci's pci.ids lives on Debian (pciutils or hwdata) and other distributions. */
export const SYSTEM_PCI_IDS = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"];

interface Vendor {
  name: string;
  devices: Map<number, { name: string; subsystems: Map<number, string> }>;
}

export class PciIds implements PciNames {
  private constructor(private readonly vendors: Map<number, Vendor>) {}

  static parse(text: string): PciIds {
    const vendors = new Map<number, Vendor>();
    let vendor: Vendor | undefined;
    let device: { name: string; subsystems: Map<number, string> } | undefined;
    for (const line of text.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      if (line.startsWith("C ")) break;
      let m: RegExpExecArray | null;
      if ((m = /^([0-9a-f]{4})\s+(.+?)\s*$/i.exec(line))) {
        vendor = { name: m[2], devices: new Map() };
        vendors.set(parseInt(m[1], 16), vendor);
        device = undefined;
      } else if ((m = /^\t([0-9a-f]{4})\s+(.+?)\s*$/i.exec(line)) && vendor) {
        device = { name: m[2], subsystems: new Map() };
        vendor.devices.set(parseInt(m[1], 16), device);
      } else if ((m = /^\t\t([0-9a-f]{4})\s+([0-9a-f]{4})\s+(.+?)\s*$/i.exec(line)) && device) {
        device.subsystems.set(((parseInt(m[1], 16) << 16) | parseInt(m[2], 16)) >>> 0, m[3]);
      }
    }
    return new PciIds(vendors);
  }

  static load(path: string): PciIds {
    return PciIds.parse(readFileSync(path, "utf8"));
  }

  vendor(vendor: number): string | undefined {
    return this.vendors.get(vendor)?.name;
  }

  device(vendor: number, device: number): string | undefined {
    return this.vendors.get(vendor)?.devices.get(device)?.name;
  }

  subsystem(vendor: number, device: number, subVendor: number, subDevice: number): string | undefined {
    return this.vendors.get(vendor)?.devices.get(device)?.subsystems.get(((subVendor << 16) | subDevice) >>> 0);
  }
}

/**
 * The names lspci would use: the file given (-i / WASMDEV_PCI_IDS; an unreadable one is an
 * error), else the first system pci.ids present, else none (numeric ids).
 */
export function loadPciIds(explicit: string | undefined): PciIds | undefined {
  const given = explicit ?? process.env.WASMDEV_PCI_IDS;
  if (given !== undefined && given !== "") return PciIds.load(given);
  for (const path of SYSTEM_PCI_IDS) {
    try {
      return PciIds.load(path);
    } catch {
      // Not installed here; try the next place.
    }
  }
  return undefined;
}
