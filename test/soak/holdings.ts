// What a long-running server process holds, for soak tests: open fds, the transport's live
// shared-memory mappings, lines of /proc/self/maps, and memory after a full garbage collection.
import { readdirSync, readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { mappingGuardStats } from "../../src/transport/index.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

export interface Holdings {
  fds: number;
  /** Shared-memory mappings registered with the transport's SIGBUS guard. */
  mappings: number;
  /** Lines of /proc/self/maps that map a memfd (guest RAM a client gave). */
  memfdMaps: number;
  /** All lines of /proc/self/maps (V8 and malloc add and drop their own as they grow). */
  mapsLines: number;
  heapUsed: number;
  rss: number;
}

export function holdings(): Holdings {
  gc();
  gc();
  const mem = process.memoryUsage();
  const maps = readFileSync("/proc/self/maps", "utf8").trim().split("\n");
  return {
    fds: readdirSync("/proc/self/fd").length,
    mappings: mappingGuardStats().liveMappings,
    memfdMaps: maps.filter((l) => l.includes("/memfd:")).length,
    mapsLines: maps.length,
    heapUsed: mem.heapUsed,
    rss: mem.rss,
  };
}

const MiB = 1024 * 1024;
export function describeHoldings(label: string, cycles: number, ms: number, a: Holdings, b: Holdings): string {
  return `${label}: ${cycles} cycles in ${(ms / 1000).toFixed(1)} s; fds ${a.fds} -> ${b.fds}, transport mappings ${a.mappings} -> ${b.mappings}, memfd maps ${a.memfdMaps} -> ${b.memfdMaps}, /proc/self/maps lines ${a.mapsLines} -> ${b.mapsLines}, heap ${(a.heapUsed / MiB).toFixed(1)} -> ${(b.heapUsed / MiB).toFixed(1)} MiB, RSS ${(a.rss / MiB).toFixed(1)} -> ${(b.rss / MiB).toFixed(1)} MiB`;
}
