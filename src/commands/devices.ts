// The devices `wasmdev serve` can serve, for every protocol: one registry.
import type { PciFunction } from "../core/pci/api.js";
import { createEdu } from "../devices/edu.js";
import { createNvme } from "../devices/nvme/index.js";
import { createThroughputDevice } from "../devices/throughput.js";

export type Protocol = "vfio-user" | "mpqemu";
export const PROTOCOLS: readonly Protocol[] = ["vfio-user", "mpqemu"];

/** Options only some devices take (they say so in `options`). */
export interface DeviceOptions {
  nvme?: { size?: number; lbaSize?: 512 | 4096; disk?: string };
}

export interface DeviceEntry {
  create(options: DeviceOptions): PciFunction;
  protocols: readonly Protocol[];
  /** Guest RAM must be shared with the device process (it DMAs through mappings only). */
  needsSharedRam: boolean;
}

export const DEVICES: Record<string, DeviceEntry> = {
  edu: { create: () => createEdu().fn, protocols: ["vfio-user", "mpqemu"], needsSharedRam: false },
  throughput: { create: () => createThroughputDevice().fn, protocols: ["vfio-user", "mpqemu"], needsSharedRam: false },
  // Brought up and tested over vfio-user only (QEMU 11.1 and a Linux guest).
  nvme: { create: (o) => createNvme({ size: o.nvme?.size, lbaSize: o.nvme?.lbaSize, disk: o.nvme?.disk }).fn, protocols: ["vfio-user"], needsSharedRam: true },
};

/** Names of the devices a protocol serves, for help and errors. */
export function devicesFor(protocol: Protocol): string[] {
  return Object.keys(DEVICES).filter((name) => DEVICES[name].protocols.includes(protocol));
}
