// Sample devices.
export * from "./edu.js";
export * from "./throughput.js";
export * from "./nvme/index.js";
