// Fuzz target: the memory core, wasm engine against the reference model, on fuzzed topologies
// (containers, RAM, ROM, I/O with odd access-size rules, aliases, ROM devices, moves, enable
// and readonly toggles, destroy inside a transaction) and fuzzed access streams. The harness
// is the property test's (test/core/memory/world.ts); here the fuzzer chooses the ops.
//
// Input: [topology op count] then 5 fields per topology op, [access count] then 4 per access.
// Invariant: no exception escapes either engine, and both agree on every topology error, flat
// view, byte, status and device callback.
import { firstDifference, type AccessOp, type TopoOp } from "../../core/memory/world.js";
import { FuzzInput, check } from "../support/input.js";

export function fuzz(data: Uint8Array): void {
  fuzzWith(new FuzzInput(data));
}

/** The target with its choices read from `input` (seeds.ts records random ones). */
export function fuzzWith(input: FuzzInput): void {
  const topo: TopoOp[] = [];
  for (let n = 1 + input.below(28); n > 0; n--) topo.push([input.below(13), input.u32(), input.u32(), input.u32(), input.below(5) - 2]);
  const accesses: AccessOp[] = [];
  for (let n = 1 + input.below(80); n > 0 && input.remaining > 0; n--) accesses.push([input.below(5), input.u32(), input.below(4), input.u16()]);
  const diff = firstDifference(topo, accesses);
  check(diff === null, () => `wasm and reference disagree: ${diff}\ntopology ${JSON.stringify(topo)}\naccesses ${JSON.stringify(accesses)}`);
}
