// What a child process holds that a peer could have made it keep: for scenarios that check
// nothing leaks once a session ends.
import { readdirSync, readlinkSync } from "node:fs";
import { mappingGuardStats } from "../../src/transport/index.js";

export interface ProcessHoldings {
  /** Open memfds. */
  memfds: number;
  /** Open sockets (listening and connected). */
  sockets: number;
  /** Shared-memory mappings still registered with the transport's SIGBUS guard. */
  mappings: number;
}

export function processHoldings(): ProcessHoldings {
  const links = readdirSync("/proc/self/fd").map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return ""; // the directory's own fd, already closed
    }
  });
  return {
    memfds: links.filter((l) => l.startsWith("/memfd:")).length,
    sockets: links.filter((l) => l.startsWith("socket:")).length,
    mappings: mappingGuardStats().liveMappings,
  };
}
