// Test doubles for the "host" imports of assembly/memory: every I/O region behaves as a
// byte-addressed register file whose byte at offset o reads as (o + region) & 0xff until
// written, and every callback is logged in `memoryStubLog` (as "r|w region offset size").
export const memoryStubLog = [];
const written = new Map(); // `${region}:${offset}` -> byte

function byteAt(region, offset) {
  return written.get(`${region}:${offset}`) ?? ((offset + region) & 0xff);
}

// The core's imports pass key = region << 4 | size (see assembly/memory/dispatch.ts).
function readBytes(ref, key, offset) {
  const region = key >>> 4;
  const size = key & 15;
  memoryStubLog.push(`r ${region} ${offset} ${size}`);
  let lo = 0;
  let hi = 0;
  for (let k = 0; k < size; k++) {
    const b = byteAt(region, offset + k);
    if (k < 4) lo |= b << (k * 8);
    else hi |= b << ((k - 4) * 8);
  }
  if (size === 8) {
    // high half goes to SCRATCH + 8 (see assembly/memory/dispatch.ts)
    const scratch = ref.instance.exports.mem_scratch_ptr ? ref.instance.exports.mem_scratch_ptr() : 0;
    if (scratch) new Uint32Array(ref.instance.exports.memory.buffer, scratch + 8, 1)[0] = hi >>> 0;
  }
  return lo | 0;
}

function writeBytes(key, offset, lo, hi) {
  const region = key >>> 4;
  const size = key & 15;
  memoryStubLog.push(`w ${region} ${offset} ${size}`);
  for (let k = 0; k < size; k++) {
    const b = k < 4 ? (lo >>> (k * 8)) & 0xff : (hi >>> ((k - 4) * 8)) & 0xff;
    written.set(`${region}:${offset + k}`, b);
  }
}

export function memoryStubs(ref) {
  return {
    mem_io_read(key, offset) {
      return readBytes(ref, key, offset >>> 0);
    },
    mem_io_read_wide(key, offLo, offHi) {
      return readBytes(ref, key, (offHi >>> 0) * 4294967296 + (offLo >>> 0));
    },
    mem_io_write(key, offset, value) {
      writeBytes(key, offset >>> 0, value, 0);
    },
    mem_io_write_wide(key, offLo, offHi, lo, hi) {
      writeBytes(key, (offHi >>> 0) * 4294967296 + (offLo >>> 0), lo, hi);
    },
    mem_io_accepts() {
      return 1;
    },
    // For specs that check which callbacks ran (declared there with @external("host", ...)).
    test_mem_log_length() {
      return memoryStubLog.length;
    },
    /** 1 when log entry `i` is "r|w region offset size" (isWrite selects w). */
    test_mem_log_is(i, isWrite, region, offset, size) {
      return memoryStubLog[i] === `${isWrite ? "w" : "r"} ${region} ${offset} ${size}` ? 1 : 0;
    },
  };
}
