// Numbers of the vfio-user protocol (QEMU docs/interop/vfio-user.rst, libvfio-user
// include/vfio-user.h, and the VFIO definitions of <linux/vfio.h> the protocol reuses).
// All multi-byte fields are little-endian: the spec says "host order", and every host this
// project runs on is little-endian.

export const HEADER_SIZE = 16;

/** Protocol version this implementation speaks (libvfio-user's 0.1). */
export const PROTOCOL_MAJOR = 0;
export const PROTOCOL_MINOR = 1;

export const Command = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  /** 14 was VFIO_USER_DIRTY_PAGES (migration v1); retired, answered as an unknown command. */
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;
export type CommandCode = (typeof Command)[keyof typeof Command];

const COMMAND_NAMES = new Map<number, string>(Object.entries(Command).map(([k, v]) => [v, k]));
/** "REGION_READ" for 9; "command 99" for numbers the protocol does not define. */
export function commandName(command: number): string {
  return COMMAND_NAMES.get(command) ?? `command ${command}`;
}
export function isKnownCommand(command: number): boolean {
  return COMMAND_NAMES.has(command);
}

/** Header flags: message type in bits 0-3, no-reply bit 4, error bit 5; bits 6-31 reserved. */
export const HeaderFlag = {
  TYPE_MASK: 0xf,
  TYPE_COMMAND: 0,
  TYPE_REPLY: 1,
  NO_REPLY: 1 << 4,
  ERROR: 1 << 5,
} as const;

/** Capability defaults the spec gives for a peer that leaves them out. */
export const DEFAULT_MAX_MSG_FDS = 1;
export const DEFAULT_MAX_DATA_XFER_SIZE = 1024 * 1024;
export const DEFAULT_PGSIZES = 4096n;
export const DEFAULT_MAX_DMA_MAPS = 65535;
export const DEFAULT_MAX_BITMAP_SIZE = 256 * 1024 * 1024;

/** VFIO PCI region indices (VFIO_PCI_*_REGION_INDEX). */
export const PciRegion = { BAR0: 0, BAR1: 1, BAR2: 2, BAR3: 3, BAR4: 4, BAR5: 5, ROM: 6, CONFIG: 7, VGA: 8, COUNT: 9 } as const;
/** VFIO PCI interrupt indices (VFIO_PCI_*_IRQ_INDEX). */
export const PciIrq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4, COUNT: 5 } as const;

export const DeviceInfoFlag = { RESET: 1 << 0, PCI: 1 << 1 } as const;
export const RegionInfoFlag = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, CAPS: 1 << 3 } as const;
/** Region capability ids (VFIO_REGION_INFO_CAP_*). */
export const RegionCapId = { SPARSE_MMAP: 1, TYPE: 2 } as const;
export const IrqInfoFlag = { EVENTFD: 1 << 0, MASKABLE: 1 << 1, AUTOMASKED: 1 << 2, NORESIZE: 1 << 3 } as const;
export const IrqSetFlag = {
  DATA_NONE: 1 << 0,
  DATA_BOOL: 1 << 1,
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
  DATA_MASK: 0x7,
  ACTION_MASK_ALL: 0x38,
} as const;
export const DmaMapFlag = { READ: 1 << 0, WRITE: 1 << 1 } as const;
/** DMA_UNMAP flags (VFIO_DMA_UNMAP_FLAG_*). */
export const DmaUnmapFlag = { GET_DIRTY_BITMAP: 1 << 0, ALL: 1 << 1 } as const;
/** GET_REGION_IO_FDS sub-region types (VFIO_USER_IO_FD_TYPE_*). */
export const IoFdType = { IOEVENTFD: 0, IOREGIONFD: 1, IOEVENTFD_SHADOW: 2 } as const;
/** ioeventfd flags as KVM_IOEVENTFD defines them. */
export const IoEventFdFlag = { DATAMATCH: 1 << 0, PIO: 1 << 1 } as const;

export const DeviceFeatureFlag = { INDEX_MASK: 0xffff, GET: 1 << 16, SET: 1 << 17, PROBE: 1 << 18 } as const;
/** Feature indices of DEVICE_FEATURE (VFIO_DEVICE_FEATURE_*). */
export const DeviceFeature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
} as const;
/** Flags of the MIGRATION feature (VFIO_MIGRATION_*), a u64 on the wire. */
export const MigrationFlag = { STOP_COPY: 1n << 0n, P2P: 1n << 1n, PRE_COPY: 1n << 2n } as const;
/** Migration v2 device states (enum vfio_device_mig_state). */
export const MigrationState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;

/** Linux errno values (x86_64 and arm64 agree) used in error replies. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  EPROTO: 71,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  ECONNRESET: 104,
} as const;

const ERRNO_NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

// Fixed payload sizes (bytes after the header).
export const VERSION_FIXED_SIZE = 4;
export const DMA_MAP_SIZE = 32;
export const DMA_UNMAP_SIZE = 24;
export const BITMAP_HEADER_SIZE = 16;
export const DEVICE_INFO_SIZE = 16;
export const REGION_INFO_SIZE = 32;
export const REGION_IO_FDS_SIZE = 16;
/** The spec's sub-region entry (offset, size, fd_index, type, flags, padding, datamatch). */
export const SUB_REGION_IO_FD_SIZE = 40;
/**
 * libvfio-user's entry, which is what we send: shadow_mem_fd_index where the spec has padding,
 * shadow_offset, then datamatch. libvfio-user's client reads every entry at this stride, and so
 * does cloud-hypervisor's vfio-user crate; a reader that follows the spec's advice to take the
 * stride from the payload (ours) reads it too.
 */
export const SUB_REGION_IO_FD_SHADOW_SIZE = 48;
export const IRQ_INFO_SIZE = 16;
export const IRQ_SET_SIZE = 20;
export const REGION_ACCESS_SIZE = 16;
export const DMA_ACCESS_SIZE = 16;
export const WRITE_MULTI_COUNT_SIZE = 8;
export const WRITE_MULTI_ENTRY_SIZE = 24;
/** Most data one REGION_WRITE_MULTI entry can carry. */
export const WRITE_MULTI_MAX_DATA = 8;
export const DEVICE_FEATURE_SIZE = 8;
export const MIG_DATA_SIZE = 8;
export const CAP_HEADER_SIZE = 8;
export const SPARSE_MMAP_FIXED_SIZE = 8;
export const SPARSE_MMAP_AREA_SIZE = 16;
