// Migration v2 state machine of one device (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE) and the data
// stream of MIG_DATA_READ / MIG_DATA_WRITE. The device state is what PciFunction.saveState()
// produces (config space, interrupt state, RAM and the model's own state) and restoreState()
// loads.
//
// Supported states: RUNNING, STOP, STOP_COPY, RESUMING (and ERROR, entered on a failed load).
// PRE_COPY and the P2P states are not offered (the MIGRATION feature reports STOP_COPY only).
// Arcs follow the spec: direct ones are RUNNING<->STOP, STOP->STOP_COPY, STOP_COPY->STOP,
// STOP->RESUMING, RESUMING->STOP; every other pair goes through STOP (the shortest path with no
// saving state in the middle).
import type { PciFunction } from "../../core/pci/api.js";
import { Errno, MigrationState } from "../wire/constants.js";
import { concatBytes } from "../wire/writer.js";
import { badRequest, VfioUserServerError } from "./errors.js";

const NAMES = ["ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P"];
export function migrationStateName(s: number): string {
  return NAMES[s] ?? `state ${s}`;
}

export class MigrationFsm {
  private current: number = MigrationState.RUNNING;
  /** Saved state being read out in STOP_COPY, and the read position. */
  private saved: Uint8Array | null = null;
  private readPos = 0;
  /** Chunks received in RESUMING. */
  private incoming: Uint8Array[] = [];
  private incomingBytes = 0;

  constructor(
    private readonly fn: PciFunction,
    /** Largest device state accepted in RESUMING. */
    readonly maxStateBytes = 64 * 1024 * 1024,
  ) {}

  get state(): number {
    return this.current;
  }

  /** Device operation is stopped (no guest-visible change should happen). */
  get stopped(): boolean {
    return this.current !== MigrationState.RUNNING;
  }

  /** Moves to `target` along the spec's arcs. Throws EINVAL for unsupported states/arcs. */
  setState(target: number): void {
    if (this.current === MigrationState.ERROR) {
      throw badRequest(Errno.EINVAL, "device is in the migration ERROR state; DEVICE_RESET recovers it");
    }
    if (target !== MigrationState.RUNNING && target !== MigrationState.STOP && target !== MigrationState.STOP_COPY && target !== MigrationState.RESUMING) {
      throw badRequest(Errno.EINVAL, `migration state ${migrationStateName(target)} is not supported`);
    }
    if (target === this.current) return;
    // Leave the current state for STOP unless that is where we are.
    if (this.current !== MigrationState.STOP) this.arc(this.current, MigrationState.STOP);
    if (target !== MigrationState.STOP) this.arc(MigrationState.STOP, target);
  }

  private arc(from: number, to: number): void {
    if (from === MigrationState.STOP_COPY && to === MigrationState.STOP) {
      this.saved = null; // ends the data transfer session
    } else if (from === MigrationState.RESUMING && to === MigrationState.STOP) {
      const state = concatBytes(this.incoming);
      this.incoming = [];
      this.incomingBytes = 0;
      try {
        this.fn.restoreState(state);
      } catch (cause) {
        this.current = MigrationState.ERROR;
        throw new VfioUserServerError("VFIO_USER_DEVICE_ERROR", `the device rejected the migration data (${(cause as Error)?.message ?? cause}); state is now ERROR`, {
          errno: Errno.EINVAL,
          cause,
        });
      }
    } else if (from === MigrationState.STOP && to === MigrationState.STOP_COPY) {
      this.saved = this.fn.saveState();
      this.readPos = 0;
    } else if (from === MigrationState.STOP && to === MigrationState.RESUMING) {
      this.incoming = [];
      this.incomingBytes = 0;
    }
    this.current = to;
  }

  /** MIG_DATA_READ: up to `size` bytes of the saved state; fewer means the end. */
  read(size: number): Uint8Array {
    if (this.current !== MigrationState.STOP_COPY || !this.saved) {
      throw badRequest(Errno.EINVAL, `MIG_DATA_READ is only valid in STOP_COPY (state is ${migrationStateName(this.current)})`);
    }
    const out = this.saved.subarray(this.readPos, Math.min(this.saved.length, this.readPos + size));
    this.readPos += out.length;
    return out;
  }

  /** MIG_DATA_WRITE: appends to the state being loaded. */
  write(data: Uint8Array): void {
    if (this.current !== MigrationState.RESUMING) {
      throw badRequest(Errno.EINVAL, `MIG_DATA_WRITE is only valid in RESUMING (state is ${migrationStateName(this.current)})`);
    }
    if (this.incomingBytes + data.length > this.maxStateBytes) {
      throw badRequest(Errno.EFBIG, `migration data exceeds the ${this.maxStateBytes}-byte limit`);
    }
    this.incoming.push(data.slice());
    this.incomingBytes += data.length;
  }

  /** Back to RUNNING with no transfer in progress (DEVICE_RESET, client disconnect). */
  reset(): void {
    this.current = MigrationState.RUNNING;
    this.saved = null;
    this.incoming = [];
    this.incomingBytes = 0;
  }
}
