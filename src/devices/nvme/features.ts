// Controller features (NVMe base spec 1.4 §5.21.1): their current values, Get Features with
// its select field, and Set Features. Pure over a Features record; what a change means for the
// rest of the controller (a flush, a temperature event) comes back as `effect`.
import { FEATURE, STATUS } from "./constants.js";
import { NVME_WARNING_TEMPERATURE } from "./identify.js";

/** Status + DW0 of a command that completes now. */
export interface CommandResult {
  status: number;
  result: number;
}

export const ok = (result = 0): CommandResult => ({ status: STATUS.SUCCESS, result });
export const fail = (status: number): CommandResult => ({ status, result: 0 });

export interface Features {
  arbitration: number;
  powerState: number;
  temperatureOver: number;
  temperatureUnder: number;
  errorRecovery: number;
  writeCache: number;
  /** Interrupt Coalescing DW11: TIME (bits 15:8, 100 µs units) and THR (bits 7:0, 0's based). */
  interruptCoalescing: number;
  /** Interrupt Vector Configuration: the Coalescing Disable bit of each vector. */
  vectorConfig: Uint8Array;
  writeAtomicity: number;
  asyncEventConfig: number;
}

/** What the controller is sized for: I/O queue pairs and MSI-X vectors. */
export interface FeatureLimits {
  ioQueues: number;
  vectors: number;
}

export function defaultFeatures(limits: FeatureLimits): Features {
  return {
    arbitration: 0,
    powerState: 0,
    temperatureOver: NVME_WARNING_TEMPERATURE,
    temperatureUnder: 0,
    errorRecovery: 0,
    writeCache: 1,
    interruptCoalescing: 0,
    vectorConfig: new Uint8Array(limits.vectors),
    writeAtomicity: 0,
    asyncEventConfig: 0,
  };
}

/** Features whose value Set Features changes (Get Features SEL 3: "changeable", bit 2). */
const CHANGEABLE = new Set<number>([
  FEATURE.ARBITRATION,
  FEATURE.POWER_MANAGEMENT,
  FEATURE.TEMPERATURE_THRESHOLD,
  FEATURE.ERROR_RECOVERY,
  FEATURE.VOLATILE_WRITE_CACHE,
  FEATURE.NUMBER_OF_QUEUES,
  FEATURE.INTERRUPT_COALESCING,
  FEATURE.INTERRUPT_VECTOR_CONFIG,
  FEATURE.WRITE_ATOMICITY,
  FEATURE.ASYNC_EVENT_CONFIG,
]);

const queueCount = (limits: FeatureLimits) => (limits.ioQueues - 1) | ((limits.ioQueues - 1) << 16);

function featureValue(fid: number, dw11: number, f: Features, limits: FeatureLimits): CommandResult {
  switch (fid) {
    case FEATURE.ARBITRATION:
      return ok(f.arbitration);
    case FEATURE.POWER_MANAGEMENT:
      return ok(f.powerState);
    case FEATURE.TEMPERATURE_THRESHOLD: {
      const sel = (dw11 >>> 16) & 0xf;
      const th = (dw11 >>> 20) & 0x3;
      if (th > 1) return fail(STATUS.INVALID_FIELD);
      if (sel !== 0) return ok(th === 0 ? 0xffff : 0); // sensors that do not exist
      return ok(th === 0 ? f.temperatureOver : f.temperatureUnder);
    }
    case FEATURE.ERROR_RECOVERY:
      return ok(f.errorRecovery);
    case FEATURE.VOLATILE_WRITE_CACHE:
      return ok(f.writeCache);
    case FEATURE.NUMBER_OF_QUEUES:
      return ok(queueCount(limits));
    case FEATURE.INTERRUPT_COALESCING:
      return ok(f.interruptCoalescing);
    case FEATURE.INTERRUPT_VECTOR_CONFIG: {
      const iv = dw11 & 0xffff;
      if (iv >= limits.vectors) return fail(STATUS.INVALID_FIELD);
      return ok(iv | (f.vectorConfig[iv] << 16));
    }
    case FEATURE.WRITE_ATOMICITY:
      return ok(f.writeAtomicity);
    case FEATURE.ASYNC_EVENT_CONFIG:
      return ok(f.asyncEventConfig);
    default:
      return fail(STATUS.INVALID_FIELD);
  }
}

/** Get Features (§5.9): SEL 0 current, 1 default, 2 saved (nothing is saveable: the
 *  defaults), 3 supported capabilities. */
export function getFeature(dw10: number, dw11: number, current: Features, limits: FeatureLimits): CommandResult {
  const fid = dw10 & 0xff;
  const sel = (dw10 >>> 8) & 0x7;
  switch (sel) {
    case 0:
      return featureValue(fid, dw11, current, limits);
    case 1:
    case 2:
      return featureValue(fid, dw11, defaultFeatures(limits), limits);
    case 3: {
      const probe = featureValue(fid, dw11, current, limits);
      if (probe.status) return probe;
      return ok(CHANGEABLE.has(fid) ? 0x4 : 0); // nothing saveable or namespace specific
    }
    default:
      return fail(STATUS.INVALID_FIELD);
  }
}

/** What a successful Set Features asks of the controller besides storing the value. */
export type FeatureEffect = "none" | "temperature" | "write-cache-off" | "coalescing";

/** Set Features (§5.21): stores the value into `f` and says what else must happen. */
export function setFeature(dw10: number, dw11: number, f: Features, limits: FeatureLimits): CommandResult & { effect: FeatureEffect } {
  const done = (r: CommandResult, effect: FeatureEffect = "none") => ({ ...r, effect });
  const fid = dw10 & 0xff;
  if (dw10 >>> 31) return done(fail(STATUS.FEATURE_NOT_SAVEABLE));
  switch (fid) {
    case FEATURE.ARBITRATION:
      f.arbitration = dw11 & 0xffffff07;
      return done(ok());
    case FEATURE.POWER_MANAGEMENT:
      if ((dw11 & 0x1f) !== 0) return done(fail(STATUS.INVALID_FIELD)); // one power state (NPSS 0)
      f.powerState = dw11 & 0xff;
      return done(ok());
    case FEATURE.TEMPERATURE_THRESHOLD: {
      const sel = (dw11 >>> 16) & 0xf;
      const th = (dw11 >>> 20) & 0x3;
      if (th > 1) return done(fail(STATUS.INVALID_FIELD));
      if (sel !== 0 && sel !== 0xf) return done(ok()); // sensors that do not exist ignore it
      if (th === 0) f.temperatureOver = dw11 & 0xffff;
      else f.temperatureUnder = dw11 & 0xffff;
      return done(ok(), "temperature");
    }
    case FEATURE.ERROR_RECOVERY:
      f.errorRecovery = dw11 & 0x1ffff;
      return done(ok());
    case FEATURE.VOLATILE_WRITE_CACHE:
      f.writeCache = dw11 & 1;
      return done(ok(), f.writeCache ? "none" : "write-cache-off");
    case FEATURE.NUMBER_OF_QUEUES: {
      const nsqr = dw11 & 0xffff;
      const ncqr = dw11 >>> 16;
      if (nsqr === 0xffff || ncqr === 0xffff) return done(fail(STATUS.INVALID_FIELD));
      // The controller allocates its full count whatever was asked (the host uses the smaller
      // of the two), as QEMU does.
      return done(ok(queueCount(limits)));
    }
    case FEATURE.INTERRUPT_COALESCING:
      f.interruptCoalescing = dw11 & 0xffff;
      return done(ok(), "coalescing");
    case FEATURE.INTERRUPT_VECTOR_CONFIG: {
      const iv = dw11 & 0xffff;
      if (iv >= limits.vectors) return done(fail(STATUS.INVALID_FIELD));
      f.vectorConfig[iv] = (dw11 >>> 16) & 1;
      return done(ok(), "coalescing");
    }
    case FEATURE.WRITE_ATOMICITY:
      f.writeAtomicity = dw11 & 1;
      return done(ok());
    case FEATURE.ASYNC_EVENT_CONFIG:
      f.asyncEventConfig = dw11 & 0x1ff;
      return done(ok(), "temperature");
    default:
      return done(fail(STATUS.INVALID_FIELD));
  }
}
