// The wasm ABI has one source of truth, assembly/: the host's typed exports are generated from
// it and every constant the host mirrors is compared with the assembly value here, so a change
// on one side only fails this test instead of shifting arguments or codes at run time.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { checkCoreAbi, coreModule, instantiateCore } from "../../src/core/wasm.js";
import { CORE_ABI_VERSION, CORE_FUNCTION_EXPORTS } from "../../src/core/abi/exports.js";
import * as memoryAbi from "../../src/core/abi/memory.js";
import * as iommuAbi from "../../src/core/abi/iommu.js";
import * as pciAbi from "../../src/core/abi/pci.js";
import { DMA_PERM_READ, DMA_PERM_WRITE, DMA_MAX_REGIONS, DMA_MAX_REGION_SIZE } from "../../src/core/dma/api.js";
import { MemoryCore } from "../../src/core/memory/api.js";
import { iommuImports } from "../../src/core/iommu/iommu.js";
import { EXPORTS_MODULE, readConstants, readHostImports, renderExportsModule } from "../support/abi-source.mjs";

/** Host value next to the assembly value it mirrors (u32 constants compared unsigned). */
function same(host: number | bigint, assembly: number | bigint | undefined): [string, string] {
  const norm = (v: number | bigint | undefined) => (v === undefined ? "(missing)" : typeof v === "bigint" ? v.toString() : (v < 0 ? v >>> 0 : v).toString());
  return [norm(host), norm(assembly)];
}

/** Every numeric export of a host ABI module must exist in `assemblyFile` with the same value. */
function mirrorsByName(hostModule: Record<string, unknown>, assemblyFile: string): string[] {
  const asm = readConstants(assemblyFile);
  const wrong: string[] = [];
  for (const [name, value] of Object.entries(hostModule)) {
    if (typeof value !== "number" && typeof value !== "bigint") continue;
    const [h, a] = same(value, asm.get(name));
    if (h !== a) wrong.push(`${name}: host ${h}, ${assemblyFile} ${a}`);
  }
  return wrong;
}

describe("wasm ABI", () => {
  it("src/core/abi/exports.ts is what the generator renders from assembly/ (run `node test/support/abi-source.mjs --write`)", () => {
    expect(readFileSync(EXPORTS_MODULE, "utf8")).toBe(renderExportsModule());
  });

  it("build/core.wasm exports exactly the typed exports, with the same parameter counts, and imports exactly the typed host imports", () => {
    const mod = coreModule();
    const exported = WebAssembly.Module.exports(mod).map((e) => e.name).sort();
    expect(exported).toEqual(Object.keys(CORE_FUNCTION_EXPORTS).sort());
    const ref = instantiateCore([MemoryCore.hostImports, iommuImports]);
    for (const [name, arity] of Object.entries(CORE_FUNCTION_EXPORTS)) {
      if (arity >= 0) expect([name, (ref.exports as unknown as Record<string, () => void>)[name].length]).toEqual([name, arity]);
    }
    const imported = WebAssembly.Module.imports(mod).filter((i) => i.module === "host").map((i: { name: string }) => i.name).sort();
    expect(imported).toEqual(readHostImports().map((i: { name: string }) => i.name).sort());
    expect(Number(ref.exports.CORE_ABI_VERSION.value)).toBe(CORE_ABI_VERSION);
  });

  it("the host's import factories provide every host import with the parameter count the core passes", () => {
    const ref = instantiateCore([MemoryCore.hostImports, iommuImports]);
    const provided = { ...MemoryCore.hostImports(ref), ...iommuImports(ref) } as Record<string, (...a: never[]) => unknown>;
    for (const imp of readHostImports()) {
      expect([imp.name, provided[imp.name]?.length]).toEqual([imp.name, imp.params.length]);
    }
  });

  it("IOMMU and PCI constants equal their assembly definitions", () => {
    expect(mirrorsByName(iommuAbi, "iommu/domain.ts")).toEqual([]);
    expect(mirrorsByName(pciAbi, "pci/config.ts")).toEqual([]);
    const domain = readConstants("iommu/domain.ts");
    expect([DMA_PERM_READ, DMA_PERM_WRITE, DMA_MAX_REGIONS, DMA_MAX_REGION_SIZE]).toEqual([domain.get("PERM_READ"), domain.get("PERM_WRITE"), domain.get("MAX_REGIONS"), domain.get("MAX_REGION_SIZE")]);
  });

  it("memory constants equal their assembly definitions", () => {
    const status = readConstants("memory/status.ts");
    const wrong: string[] = [];
    const check = (what: string, host: number | bigint, asmName: string, adjust = (v: number | bigint) => v) => {
      const v = status.get(asmName);
      const [h, a] = same(host, v === undefined ? undefined : adjust(v));
      if (h !== a) wrong.push(`${what}: host ${h}, assembly ${asmName} ${a}`);
    };
    for (const [k, v] of Object.entries(memoryAbi.MemTx)) check(`MemTx.${k}`, v, `MEMTX_${k}`);
    for (const [k, v] of Object.entries(memoryAbi.TopologyStatus)) {
      check(`TopologyStatus.${k}`, v, `TOPO_${k}`);
      if (v !== 0) expect(memoryAbi.TOPOLOGY_CODES[v]).toBe(k);
    }
    for (const [k, v] of Object.entries(memoryAbi.RegionKind)) check(`RegionKind.${k}`, v, `KIND_${k}`);
    const ioNames: Record<string, string> = { VALID_UNALIGNED: "IO_VALID_UNALIGNED", IMPL_UNALIGNED: "IO_IMPL_UNALIGNED", BIG_ENDIAN: "IO_BIG_ENDIAN", ACCEPTS: "IO_ACCEPTS", NO_REENTRANCY_GUARD: "IO_NO_GUARD" };
    for (const [k, v] of Object.entries(memoryAbi.IoFlag)) check(`IoFlag.${k}`, v, ioNames[k] ?? `IO_${k}`);
    check("MAX_RAM_REGION_SIZE", memoryAbi.MAX_RAM_REGION_SIZE, "MAX_RAM_REGION_SIZE");
    check("MAX_IO_REGION_SIZE", memoryAbi.MAX_IO_REGION_SIZE, "MAX_IO_REGION_LAST", (v) => Number(v) + 1);
    check("MAX_REGIONS", memoryAbi.MAX_REGIONS, "MAX_REGIONS");
    check("MAX_ADDRESS_SPACES", memoryAbi.MAX_ADDRESS_SPACES, "MAX_ADDRESS_SPACES");
    const dispatch = readConstants("memory/dispatch.ts");
    if (memoryAbi.TRACE_WORDS * 4 !== dispatch.get("TRACE_RECORD")) wrong.push(`TRACE_WORDS ${memoryAbi.TRACE_WORDS} × 4 != TRACE_RECORD ${dispatch.get("TRACE_RECORD")}`);
    expect(wrong).toEqual([]);
  });

  it("the constant reader evaluates the expression forms assembly/ uses", () => {
    // Guards the reader itself: a misread would make the comparisons above vacuous.
    expect(readConstants("memory/status.ts").get("MAX_IO_REGION_LAST")).toBe((1n << 53n) - 1n);
    expect(readConstants("iommu/domain.ts").get("MAX_REGION_MASK")).toBe((1n << 40n) - 1n);
    expect(readConstants("iommu/domain.ts").get("MAX_SLOT")).toBe(0xffffff);
    expect(readConstants("pci/config.ts").get("CFGW_INVALID")).toBe(2 ** 31);
  });

  it("a core built for another ABI version, or missing an export, is refused with the rebuild command", () => {
    // A hand-assembled module exporting only CORE_ABI_VERSION = `version` (an i32 global).
    const stale = (version: number) => {
      const name = [...Buffer.from("CORE_ABI_VERSION")];
      const bytes = Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 6, 6, 1, 0x7f, 0, 0x41, version, 0x0b, 7, 20, 1, 16, ...name, 3, 0]);
      const mod = new WebAssembly.Module(bytes);
      return () => checkCoreAbi(mod, new WebAssembly.Instance(mod).exports, "old.wasm");
    };
    expect(stale(2)).toThrow(/old\.wasm has core ABI version 2, this host needs 3: rebuild it with `npm run build:wasm`/);
    expect(stale(CORE_ABI_VERSION)).toThrow(/old\.wasm lacks the export memory: rebuild/);
  });
});
