// `wasmdev lspci`: not implemented yet (see the open issues).
export async function run(_argv: string[]): Promise<number> {
  process.stderr.write("wasmdev lspci: not implemented yet\n");
  return 1;
}
