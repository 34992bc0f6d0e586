// Host-import test doubles for the as-pect suite, one file per core subsystem.
import { memoryStubs } from "./memory.js";
import { iommuStubs } from "./iommu.js";
import { pciStubs } from "./pci.js";

export function hostStubs(ref) {
  return { ...memoryStubs(ref), ...iommuStubs(ref), ...pciStubs(ref) };
}
