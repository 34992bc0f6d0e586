// Test doubles for the "host" imports of assembly/memory.
export function memoryStubs(_ref) {
  return {};
}
