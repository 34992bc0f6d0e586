// Test doubles for the "host" imports of assembly/pci.
export function pciStubs(_ref) {
  return {};
}
