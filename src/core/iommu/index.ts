// IOMMU translation with an IOTLB cache (issue #5): host binding of assembly/iommu.
export { IommuCore, IommuDomain, iommuImports } from "./iommu.js";
export type { IommuTlbEntry, IommuMissHandler, IommuEvent, IommuCounters } from "./iommu.js";
export { ReferenceIotlb } from "./reference.js";
