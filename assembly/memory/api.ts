// AssemblyScript-level API of the memory core, for the other core subsystems (assembly/pci,
// assembly/iommu). Everything takes native u64 addresses; the wasm exports in exports.ts are
// the same functions with (hi, lo) halves for the host.
//
//   Topology (each call is its own transaction unless inside memTransactionBegin/Commit):
//     memRegionNew(kind, size): i32               id > 0, or -TOPO_* (KIND_* in status.ts;
//                                                 KIND_ROM_DEVICE = RAM + callbacks, ROMD on)
//     memRegionSetIo(id, flags, vmin, vmax, imin, imax, guardSlot): i32
//     memRegionSetAlias(id, target, offset): i32
//     memRegionAddSubregion(parent, child, addr, priority): i32
//     memRegionDelSubregion(parent, child): i32
//     memRegionSetAddress(id, addr): i32          (QEMU memory_region_set_address)
//     memRegionSetEnabled(id, on): i32
//     memRegionSetReadonly(id, on): i32
//     memRegionSetRomd(id, on): i32              (QEMU memory_region_rom_device_set_romd)
//     memRegionFree(id): i32                     (deferred to the outermost commit inside one)
//     memTransactionBegin(); memTransactionCommit(): i32
//     memAddressSpaceNew(root): i32               id > 0 (render of root at address 0)
//   Access (MemTx bits; read values via memLastValue()):
//     memRead(as, addr, size): u32                size 1..8, little-endian
//     memWrite(as, addr, size, value): u32
//     memAccessBuffer(as, addr, ptr, len, isWrite): u32   any length, bytes at ptr
//   A BAR move is: memTransactionBegin(); memRegionSetAddress(bar, newAddr);
//   memRegionSetEnabled(bar, true); memTransactionCommit().
export {
  regionNew as memRegionNew,
  regionNewLast as memRegionNewLast,
  regionSetIo as memRegionSetIo,
  regionSetAlias as memRegionSetAlias,
  regionAddSubregion as memRegionAddSubregion,
  regionDelSubregion as memRegionDelSubregion,
  regionSetAddress as memRegionSetAddress,
  regionSetEnabled as memRegionSetEnabled,
  regionSetReadonly as memRegionSetReadonly,
  regionSetAliasOffset as memRegionSetAliasOffset,
  regionSetRomd as memRegionSetRomd,
  regionFree as memRegionFree,
  regionRam as memRegionRam,
  transactionBegin as memTransactionBegin,
  transactionCommit as memTransactionCommit,
} from "./regions";
export { asNew as memAddressSpaceNew, asFree as memAddressSpaceFree } from "./flatview";
export { asRead as memRead, asWrite as memWrite, asAccessBuffer as memAccessBuffer } from "./dispatch";
import { lastValue } from "./dispatch";
export function memLastValue(): u64 {
  return lastValue;
}
export * from "./status";
