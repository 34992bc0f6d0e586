// Package entry: `import { ... } from "wasmdev"`.
export * from "./core/index.js";
export * from "./transport/index.js";
