// Test doubles for the "host" imports of assembly/iommu.
export function iommuStubs(_ref) {
  return {};
}
