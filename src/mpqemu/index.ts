// QEMU multi-process protocol (issue #8): the device side (MpqemuRemote, `wasmdev serve
// --protocol mpqemu`), the VMM side (MpqemuProxy, `wasmdev lspci --mpqemu`), and the pure wire
// module they share.
export { MpqemuError, type MpqemuErrorCode, type MpqemuErrorFields } from "./errors.js";
export {
  Cmd as MpqemuCmd,
  MpqemuEncoder,
  MpqemuParser,
  expectsReply as mpqemuExpectsReply,
  HEADER_SIZE as MPQEMU_HEADER_SIZE,
  MAX_PAYLOAD as MPQEMU_MAX_PAYLOAD,
  MAX_FDS as MPQEMU_MAX_FDS,
  type MpqemuMsg,
  type RequestMsg as MpqemuRequest,
  type RetMsg as MpqemuRet,
  type SysmemRegion,
  type SyncSysmemMsg as MpqemuSyncSysmemMsg,
  type ConfigWriteMsg as MpqemuConfigWriteMsg,
  type ConfigReadMsg as MpqemuConfigReadMsg,
  type BarWriteMsg as MpqemuBarWriteMsg,
  type BarReadMsg as MpqemuBarReadMsg,
  type SetIrqfdMsg as MpqemuSetIrqfdMsg,
  type DeviceResetMsg as MpqemuDeviceResetMsg,
  type ParseEvent as MpqemuParseEvent,
  type ParserRole as MpqemuParserRole,
  type Encoded as MpqemuEncoded,
} from "./wire.js";
export { MpqemuProxy, type MpqemuProxyOptions, type ProbeInfo, type ProbedBar, type BarAssignment } from "./proxy.js";
export { MpqemuRemote, type MpqemuRemoteOptions, type RemoteEnd, type RemoteStats } from "./remote.js";
