// The one interface every concern of a PCI function implements (MSI, MSI-X, power
// management, INTx, BARs): the function applies a config write in the core, then tells each
// part; a reset and a migration walk the same list.
import { PciError } from "./errors.js";
import { put32, u32 } from "./config.js";

export interface FunctionCapability {
  /** After the core applied a config write of `size` bytes at `offset` (any offset: each
   *  part checks whether the write concerns it). */
  configWrite?(offset: number, size: number): void;
  /** Function-level reset, after config space went back to its declared state. */
  reset?(): void;
  /** Appends this part's migration sections. */
  save?(out: StateWriter): void;
  /** Reads and checks this part's sections (throwing PCI_STATE_FORMAT on a mismatch) and
   *  returns what applies them: nothing changes until every part parsed its sections. */
  restore?(input: StateReader): () => void;
}

/** Migration sections: each a u32 length followed by its bytes. */
export class StateWriter {
  readonly parts: Uint8Array[] = [];

  raw(bytes: Uint8Array): void {
    this.parts.push(bytes);
  }

  /** A length-prefixed copy of `bytes`. */
  blob(bytes: Uint8Array): void {
    const len = new Uint8Array(4);
    put32(len, 0, bytes.length);
    this.parts.push(len, bytes.slice());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

export class StateReader {
  constructor(
    private readonly state: Uint8Array,
    public at: number,
    private readonly name: string,
  ) {}

  fail(why: string): never {
    throw new PciError("PCI_STATE_FORMAT", `${this.name}: saved state does not fit this function: ${why}`);
  }

  /** The next length-prefixed section; with `expect`, its length must be exactly that. */
  take(expect?: number): Uint8Array {
    const state = this.state;
    if (this.at + 4 > state.length) this.fail("truncated");
    const len = u32(state, this.at);
    this.at += 4;
    if (this.at + len > state.length) this.fail("truncated");
    if (expect !== undefined && len !== expect) this.fail(`a section is ${len} bytes, expected ${expect}`);
    const bytes = state.subarray(this.at, this.at + len);
    this.at += len;
    return bytes;
  }

  get done(): boolean {
    return this.at === this.state.length;
  }
}
