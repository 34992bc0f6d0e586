// NVMe register offsets, opcodes, status codes and field positions (NVMe base spec 1.4:
// §3.1 controller registers, §4.2/4.6 SQE/CQE, §5 admin commands, §6 NVM commands).
// Status values are the 15-bit Status Field (DNR << 14 | SCT << 8 | SC) that lands in
// CQE DW3 bits 31:17.

export const NVME_REG = {
  CAP: 0x00,
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
  AQA: 0x24,
  ASQ: 0x28,
  ACQ: 0x30,
  CMBLOC: 0x38,
  CMBSZ: 0x3c,
  DOORBELLS: 0x1000,
} as const;

export const NVME_VERSION_1_4 = 0x00010400;

// CC fields (§3.1.5)
export const CC_EN = 1 << 0;
export const ccCss = (cc: number) => (cc >>> 4) & 0x7;
export const ccMps = (cc: number) => (cc >>> 7) & 0xf;
export const ccAms = (cc: number) => (cc >>> 11) & 0x7;
export const ccShn = (cc: number) => (cc >>> 14) & 0x3;
export const ccIosqes = (cc: number) => (cc >>> 16) & 0xf;
export const ccIocqes = (cc: number) => (cc >>> 20) & 0xf;

// CSTS fields (§3.1.6)
export const CSTS_RDY = 1 << 0;
export const CSTS_CFS = 1 << 1;
export const CSTS_SHST_MASK = 3 << 2;
export const CSTS_SHST_OCCURRING = 1 << 2;
export const CSTS_SHST_COMPLETE = 2 << 2;

// Admin opcodes (§5, figure 139)
export const ADMIN = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT_REQUEST: 0x0c,
  DOORBELL_BUFFER_CONFIG: 0x7c,
} as const;

// NVM command set opcodes (§6, figure 346)
export const IO = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_ZEROES: 0x08,
  DATASET_MANAGEMENT: 0x09,
} as const;

// Identify CNS values (§5.15.1)
export const CNS = {
  NAMESPACE: 0x00,
  CONTROLLER: 0x01,
  ACTIVE_NS_LIST: 0x02,
  NS_DESCRIPTORS: 0x03,
  CSI_NAMESPACE: 0x05,
  CSI_CONTROLLER: 0x06,
  CSI_ACTIVE_NS_LIST: 0x07,
} as const;

// Feature identifiers (§5.21.1)
export const FEATURE = {
  ARBITRATION: 0x01,
  POWER_MANAGEMENT: 0x02,
  TEMPERATURE_THRESHOLD: 0x04,
  ERROR_RECOVERY: 0x05,
  VOLATILE_WRITE_CACHE: 0x06,
  NUMBER_OF_QUEUES: 0x07,
  INTERRUPT_COALESCING: 0x08,
  INTERRUPT_VECTOR_CONFIG: 0x09,
  WRITE_ATOMICITY: 0x0a,
  ASYNC_EVENT_CONFIG: 0x0b,
} as const;

// Log page identifiers (§5.14.1)
export const LOG = {
  ERROR: 0x01,
  SMART: 0x02,
  FIRMWARE_SLOT: 0x03,
} as const;

// Asynchronous event types and information (§5.2)
export const AER_TYPE_ERROR = 0;
export const AER_TYPE_SMART = 1;
export const AER_INFO_ERR_INVALID_DB_REGISTER = 0x00;
export const AER_INFO_ERR_INVALID_DB_VALUE = 0x01;
export const AER_INFO_SMART_TEMPERATURE = 0x01;

const DNR = 1 << 14;
const generic = (sc: number, dnr = true) => (dnr ? DNR : 0) | sc;
const specific = (sc: number, dnr = true) => (dnr ? DNR : 0) | (1 << 8) | sc;

/** Status Field values (§4.6.1.2). */
export const STATUS = {
  SUCCESS: 0,
  INVALID_OPCODE: generic(0x01),
  INVALID_FIELD: generic(0x02),
  DATA_TRANSFER_ERROR: generic(0x04, false),
  INTERNAL_ERROR: generic(0x06, false),
  ABORTED_SQ_DELETION: generic(0x08, false),
  INVALID_NAMESPACE: generic(0x0b),
  PRP_OFFSET_INVALID: generic(0x13),
  LBA_OUT_OF_RANGE: generic(0x80),
  COMPLETION_QUEUE_INVALID: specific(0x00),
  INVALID_QUEUE_IDENTIFIER: specific(0x01),
  INVALID_QUEUE_SIZE: specific(0x02),
  AER_LIMIT_EXCEEDED: specific(0x05),
  INVALID_INTERRUPT_VECTOR: specific(0x08),
  INVALID_LOG_PAGE: specific(0x09),
  INVALID_QUEUE_DELETION: specific(0x0c),
  FEATURE_NOT_SAVEABLE: specific(0x0d),
} as const;

export const SQE_SIZE = 64;
export const CQE_SIZE = 16;
export const IDENTIFY_SIZE = 4096;
