// Package entry: `import { ... } from "wasmdev"`.
import { native } from "./transport/native.js";

export * from "./core/index.js";
export * from "./host/index.js";
export * from "./transport/index.js";
export * from "./vfio-user/client/index.js";
export * from "./vfio-user/server/index.js";
export * from "./devices/index.js";
export * from "./mpqemu/index.js";
export * from "./log.js";
// The lspci-style config dump of the CLI, for local functions and raw config bytes.
export { formatConfigSpace, describeFunction, formatBarSize, type ConfigDumpOptions, type PciNames } from "./commands/config-space.js";

// Fail at import, saying what to do, rather than at the first socket: everything the package
// serves or drives goes through the native transport.
native();
