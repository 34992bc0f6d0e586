// createDmaContext: one wasm IOMMU core + DMA map table + device-facing DMA API, wired.
import type { DmaContextOptions, FdMapper } from "./api.js";
import { DmaMapTable } from "./map-table.js";
import { DmaSpace } from "./space.js";
import { IommuCore } from "../iommu/iommu.js";
import { mmapFd } from "../../transport/shm.js";

/** mmap through the transport (#3): shared, bounds-checked against the file size, charged to
 *  the process mapping budget, memfds sealed against shrinking where they allow it (others are
 *  covered by the SIGBUS guard: `truncated`); unmap detaches the views so stale ones read as
 *  empty. */
export const transportFdMapper: FdMapper = (fd, offset, length, writable) => {
  const region = mmapFd(fd, offset, length, { writable });
  return {
    bytes: region.bytes(),
    unmap: () => region.unmap(),
    get truncated() {
      return region.truncated;
    },
  };
};

export interface DmaContext {
  core: IommuCore;
  table: DmaMapTable;
  dma: DmaSpace;
  /** Revokes live maps, removes every region (unmapping them) and detaches. */
  close(): void;
}

export function createDmaContext(options: DmaContextOptions & { core?: IommuCore } = {}): DmaContext {
  const core = options.core ?? new IommuCore();
  const table = new DmaMapTable(core, options.mapFd ?? transportFdMapper, options.iotlbSets);
  table.onBackingTruncated = options.onBackingTruncated ?? null;
  const dma = new DmaSpace({ table, hook: options.hook });
  return {
    core,
    table,
    dma,
    close() {
      try {
        dma.close();
      } finally {
        table.clear();
      }
    },
  };
}
