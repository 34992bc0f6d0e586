// Types of abi-source.mjs for the TypeScript tests.
export const ROOT: string;
export const EXPORTS_MODULE: string;
export interface AbiParam { name: string; type: string }
export interface AbiExport { name: string; kind: "function" | "global"; params?: AbiParam[]; result?: string; type?: string }
export interface AbiImport { name: string; params: AbiParam[]; result: string }
export function readExports(): AbiExport[];
export function readHostImports(): AbiImport[];
export function readConstants(relativeFile: string): Map<string, number | bigint>;
export function renderExportsModule(): string;
