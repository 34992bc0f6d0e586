// Sample devices and the lspci-style config dump (issue #4).
export * from "./edu.js";
export * from "./throughput.js";
export * from "./nvme/index.js";
export * from "./lspci.js";
