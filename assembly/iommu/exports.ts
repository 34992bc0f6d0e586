// Exports of the iommu subsystem (see assembly/index.ts).
export const IOMMU_ABI_VERSION: u32 = 1;
