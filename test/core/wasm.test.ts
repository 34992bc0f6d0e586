import { describe, expect, it } from "vitest";
import { instantiateCore } from "../../src/core/wasm.js";

describe("core instantiation", () => {
  it("loads build/core.wasm and exposes its memory", () => {
    const core = instantiateCore();
    expect(core.memory).toBeInstanceOf(WebAssembly.Memory);
    expect(core.exports.MEMORY_ABI_VERSION.value).toBe(1);
  });
});
