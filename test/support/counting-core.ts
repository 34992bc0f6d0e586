// A core instance that counts wasm -> host calls: for tests that prove an access stays in wasm.
import { MemoryCore } from "../../src/core/memory/index.js";
import { instantiateCore, type CoreRef, type HostImportFactory } from "../../src/core/wasm.js";

/** A core whose memory-subsystem host imports each count, by import name, how often wasm
 *  calls them. Clear `crossings` after set-up to count only what follows. */
export function countingCore(): { core: CoreRef; crossings: Record<string, number> } {
  const crossings: Record<string, number> = {};
  const counted: HostImportFactory = (ref) =>
    Object.fromEntries(
      Object.entries(MemoryCore.hostImports(ref)).map(([name, fn]) => [
        name,
        (...args: unknown[]) => {
          crossings[name] = (crossings[name] ?? 0) + 1;
          return (fn as (...a: unknown[]) => unknown)(...args);
        },
      ]),
    );
  return { core: instantiateCore([counted]), crossings };
}
