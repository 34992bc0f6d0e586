// Shared helpers for the PCI function tests.
import { expect } from "vitest";
import { PciError } from "../../src/core/pci/index.js";

/** The `code` of the PciError `f` throws (anything else thrown fails the test), or undefined. */
export function errCode(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PciError);
    return (e as PciError).code;
  }
  return undefined;
}
