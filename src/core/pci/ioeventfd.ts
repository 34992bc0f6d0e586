// ioeventfds of a function's BARs: the eventfds (made by the server's EventFdSource) and the
// delivery of each wake-up as one write to the device (see IoEventFdSpec in api.ts).
import type { AccessSize, EventFdSource, FunctionEventFd, PciIoEventFd } from "./api.js";
import { PCI_ROM_REGION } from "./api.js";
import type { Bars, BarState } from "./bars.js";
import { PciError } from "./errors.js";

export interface IoEventFdState {
  offset: number;
  size: AccessSize;
  datamatch?: bigint;
  eventfd: FunctionEventFd | null;
}

export class IoEventFds {
  private errorHandler: ((error: PciError) => void) | null = null;
  disposed = false;

  constructor(
    private readonly bars: Bars,
    private readonly name: string,
  ) {}

  get(index: number, source: EventFdSource): readonly PciIoEventFd[] {
    if (!Number.isInteger(index) || index < 0 || index > PCI_ROM_REGION) throw new PciError("PCI_REGION_INDEX", `region ${index} does not exist (0..5 = BARs, 6 = ROM)`, { region: index });
    if (this.disposed) throw new PciError("PCI_REGION_INDEX", `${this.name} was disposed`, { region: index });
    const b = this.bars.slots[index];
    if (!b || b.ioeventfds.length === 0) return [];
    const made: FunctionEventFd[] = [];
    try {
      for (const e of b.ioeventfds) {
        if (e.eventfd) continue;
        const efd = source.create();
        made.push(efd);
        efd.onReadable((count) => this.deliver(b, e, count));
        e.eventfd = efd;
      }
    } catch (err) {
      for (const e of b.ioeventfds) if (e.eventfd && made.includes(e.eventfd)) e.eventfd = null;
      for (const efd of made) efd.close();
      throw new PciError("PCI_RESOURCE", `region ${index}: cannot create its ioeventfds: ${(err as Error).message}`, { region: index, cause: err });
    }
    const space = b.kind === "io" ? "io" : "mem";
    return b.ioeventfds.map((e) => ({ region: index, offset: e.offset, size: e.size, datamatch: e.datamatch, space, fd: e.eventfd!.fd }));
  }

  setErrorHandler(handler: ((error: PciError) => void) | null): void {
    this.errorHandler = handler;
  }

  /** Closes every eventfd; with `deliver`, signals already counted reach the device first. */
  close(deliver: boolean): void {
    for (const b of this.bars.slots) {
      for (const e of b?.ioeventfds ?? []) {
        const efd = e.eventfd;
        if (!efd) continue;
        e.eventfd = null;
        let pending = 0;
        try {
          if (deliver) pending = efd.read();
        } finally {
          efd.close();
        }
        if (pending > 0) this.deliver(b!, e, pending);
      }
    }
  }

  /** One wake-up of an ioeventfd: `count` signals folded into one write (see IoEventFdSpec). */
  private deliver(b: BarState, e: IoEventFdState, count: number): void {
    if (this.disposed) return;
    const max = (1n << BigInt(e.size * 8)) - 1n;
    const rings = BigInt(count);
    const value = e.datamatch ?? (rings > max ? max : rings);
    try {
      this.bars.write(b, e.offset, e.size, value);
    } catch (err) {
      const error = err instanceof PciError ? err : new PciError("PCI_DEVICE_ERROR", `region ${b.index}: ioeventfd write failed`, { region: b.index, offset: e.offset, size: e.size, cause: err });
      const handler = this.errorHandler;
      if (handler) handler(error);
      else {
        const cause = error.cause instanceof Error ? ` (${error.cause.message})` : "";
        process.emitWarning(`${this.name}: ioeventfd write of ${e.size} bytes at region ${b.index} offset 0x${e.offset.toString(16)} failed: ${error.message}${cause}`, { code: error.code });
      }
    }
  }
}
