// Shared-memory mappings for DMA regions backed by a peer's fd (vfio-user DMA_MAP with an fd,
// mpqemu SYNC_SYSMEM). The core's DMA table takes any FdMapper; this is the one both servers
// use, built on the transport's mmap.
import type { FdMapper } from "../core/dma/api.js";
import { mmapFd } from "../transport/shm.js";

/** mmap through the transport: shared, bounds-checked against the file size, charged to the
 *  process mapping budget, memfds sealed against shrinking where they allow it (others are
 *  covered by the SIGBUS guard: `truncated`); unmap detaches the views so stale ones read as
 *  empty. */
export const hostFdMapper: FdMapper = (fd, offset, length, writable) => {
  const region = mmapFd(fd, offset, length, { writable });
  return {
    bytes: region.bytes(),
    unmap: () => region.unmap(),
    get truncated() {
      return region.truncated;
    },
  };
};
