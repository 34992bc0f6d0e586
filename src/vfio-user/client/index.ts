// vfio-user client (VMM side): `connectVfioUser(path)` and the VfioUserClient class.
export {
  VfioUserClient,
  decodeBarSpaces,
  type VfioUserClientOptions,
  type RequestOptions,
  type WriteOptions,
  type WriteResult,
  type IrqEvent,
  type ClientRegionInfo,
  type MappedArea,
  type RegionMapper,
  type RegionIoFds,
  type ClientIoEventFd,
  type EventFdWriter,
} from "./client.js";
export { connectVfioUser, connectionChannel, enableIrqs, createSharedMemory, writeEventFd, type ConnectClientOptions, type SharedMemory } from "./connect.js";
export type { ClientChannel } from "./channel.js";
export { VfioUserClientError, type VfioUserClientErrorCode, type VfioUserClientErrorFields } from "./errors.js";
export { PostedWritePolicy, type PostedWritePolicyOptions, type PostDecision, type RegionSpace } from "./posted-writes.js";
export { DmaMemoryTable, type DmaMapping as ClientDmaMapping, type DmaAccessResult } from "./dma.js";
export type { DeviceInfo, RegionInfo as VfioUserRegionInfo, SparseMmapArea, IrqInfo, ServerCapabilities, IoEventFdSubRegion, MigrationStateValue } from "./protocol.js";
export type { RegionCap, SparseMmapCap, RegionTypeCap, UnknownRegionCap, IovaRange, IrqSet } from "../wire/messages.js";
// The region and interrupt indices every call above takes (VFIO's PCI numbering).
export { PciRegion, PciIrq, MigrationState as VfioUserMigrationState } from "../wire/constants.js";
