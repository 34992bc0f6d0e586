// OS resources a device needs, shared by the vfio-user server and the mpqemu remote: the
// mappings of DMA memory a peer passes as fds, and the eventfds of ioeventfds. src/core
// describes what it needs as interfaces (FdMapper, EventFdSource) and never calls the OS.
import { createDmaContext, type DmaContext } from "../core/dma/context.js";
import type { DmaContextOptions } from "../core/dma/api.js";
import type { IommuCore } from "../core/iommu/iommu.js";
import { FdMappingCache } from "./fd-mapper.js";

export { hostFdMapper, FdMappingCache, FD_MAPPING_LINGER_MS, FD_MAPPING_MAX_IDLE } from "./fd-mapper.js";
export { hostEventFds } from "./eventfds.js";

/**
 * createDmaContext with fd regions mapped by the host unless `mapFd` is given: through an
 * FdMappingCache of its own (a re-map of a range just removed reuses its mapping), which close()
 * empties, so a closed context leaves nothing mapped.
 */
export function createHostDmaContext(options: DmaContextOptions & { core?: IommuCore } = {}): DmaContext {
  if (options.mapFd) return createDmaContext(options);
  const cache = new FdMappingCache();
  const ctx = createDmaContext({ ...options, mapFd: cache.mapFd });
  const close = ctx.close;
  ctx.close = () => {
    try {
      close();
    } finally {
      cache.close();
    }
  };
  return ctx;
}
