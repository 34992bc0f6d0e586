import { MEMORY_ABI_VERSION } from "../../assembly/memory/exports";

describe("core build", () => {
  it("exposes the memory subsystem ABI version", () => {
    expect(MEMORY_ABI_VERSION).toBe(1);
  });
});
