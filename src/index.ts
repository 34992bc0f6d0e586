// Package entry: `import { ... } from "wasmdev"`.
export * from "./core/index.js";
export * from "./host/index.js";
export * from "./transport/index.js";
export * from "./vfio-user/client/index.js";
export * from "./vfio-user/server/index.js";
export * from "./devices/index.js";
export * from "./mpqemu/index.js";
