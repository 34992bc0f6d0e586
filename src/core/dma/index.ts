// DMA map table and device-facing DMA API (issue #5).
export * from "./api.js";
export { DmaError } from "./errors.js";
export type { DmaErrorFields } from "./errors.js";
export { DmaMapTable, type RegionRecord as DmaRegionRecord } from "./map-table.js";
export { DmaSpace } from "./space.js";
export type { DmaSpaceOptions } from "./space.js";
export { createDmaContext } from "./context.js";
export type { DmaContext } from "./context.js";
