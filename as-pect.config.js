// as-pect runs the core's unit tests (test/assembly/**/*.spec.ts) against a debug build.
// The core imports host functions from the "host" module; each subsystem supplies test
// doubles for its own imports in test/assembly/stubs/<subsystem>.js.
import { hostStubs } from "./test/assembly/stubs/index.js";

export default {
  entries: ["test/assembly/**/*.spec.ts"],
  include: ["test/assembly/**/*.include.ts"],
  disclude: [/node_modules/],
  flags: {},
  async instantiate(memory, createImports, instantiate, binary) {
    const ref = { instance: null };
    const imports = createImports({ env: { memory }, host: hostStubs(ref) });
    // The loader resolves to { exports, instance, module }; stubs read ref.instance.exports
    // when the core calls them, which is only after this has resolved.
    const result = await instantiate(binary, imports);
    ref.instance = result;
    return result;
  },
  outputBinary: false,
};
