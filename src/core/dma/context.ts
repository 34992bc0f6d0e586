// createDmaContext: one wasm IOMMU core + DMA map table + device-facing DMA API, wired.
import type { DmaContextOptions, FdMapper } from "./api.js";
import { DmaMapTable } from "./map-table.js";
import { DmaSpace } from "./space.js";
import { IommuCore } from "../iommu/iommu.js";
import { DmaError } from "./errors.js";

/** The mapper of a context built without one: the core maps nothing itself (src/host has the
 *  OS mapper), so an fd region is refused with a reason instead of being mapped. */
const noFdMapper: FdMapper = () => {
  throw new DmaError("DMA_INVALID_ARGUMENT", "this DMA context has no fd mapper: build it with mapFd (hostFdMapper from src/host, or createHostDmaContext)");
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
  const table = new DmaMapTable(core, options.mapFd ?? noFdMapper, options.iotlbSets);
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
