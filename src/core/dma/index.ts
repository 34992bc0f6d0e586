// DMA map table and device-facing DMA API (issue #5).
export * from "./api.js";
export { DmaError } from "./errors.js";
export type { DmaErrorFields } from "./errors.js";
