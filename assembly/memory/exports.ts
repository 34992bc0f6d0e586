// Exports of the memory subsystem (see assembly/index.ts).
export const MEMORY_ABI_VERSION: u32 = 1;
