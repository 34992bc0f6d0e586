// Fuzz target: the NVMe controller's command processing (src/devices/nvme) against guest
// memory, through the test driver (test/devices/nvme/driver.ts): admin and I/O submission
// entries with fuzzed fields, PRP1/PRP2 aimed at valid pages, PRP lists whose entries are
// fuzzed, unaligned and out-of-memory addresses, stray doorbells and register writes.
//
// Invariants on every input: no exception escapes the controller (register accesses and the
// command pass it runs on the event loop); whatever state the script left, a controller reset
// (CC.EN 1 -> 0 -> 1) brings it back, and an Identify Controller then completes successfully
// with the right vendor ID; guest memory outside the pages the driver allocated is untouched
// (the guest memory has a guard tail the host never gives out).
import { NvmeHost, PAGE } from "../../devices/nvme/driver.js";
import { FuzzInput, check } from "../support/input.js";

const MEMORY = 512 * 1024;
/** The last pages of guest memory: mapped for DMA but never named by the driver. */
const GUARD = 64 * 1024;
const IO_OPCODES = [0x00, 0x01, 0x02, 0x08, 0x09, 0x04, 0x05, 0x0c, 0x7f];
const ADMIN_OPCODES = [0x06, 0x02, 0x09, 0x0a, 0x0c, 0x01, 0x05, 0x00, 0x04, 0x08, 0x7c, 0x10, 0x80];

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

export function fuzz(data: Uint8Array): Promise<void> {
  return fuzzWith(new FuzzInput(data));
}

/** The target with its choices read from `input` (seeds.ts records random ones). */
export async function fuzzWith(input: FuzzInput): Promise<void> {
  const msix = input.bool();
  const host = new NvmeHost({ memory: MEMORY, size: 1 << 20, ioQueues: 4, msix });
  try {
    host.enable(input.pick([32, 2, 16]));
    const withIo = input.bool();
    if (withIo) await host.createIoQueuePair(1, input.pick([16, 4, 2]), msix ? 1 : 0);
    const pages: bigint[] = [];
    for (let i = 0; i < 6; i++) pages.push(host.alloc());
    // Guard tail: filled with a pattern that no command may change (no PRP points there).
    host.mem.fill(0x5a, MEMORY - GUARD);
    const prp = (): bigint => {
      switch (input.below(8)) {
        case 0: return 0n;
        case 1: return input.pick(pages) + BigInt(input.below(8) * 512);
        case 2: return input.pick(pages) + BigInt(input.u16() & 0xfff);
        case 3: return BigInt(MEMORY) + BigInt(input.u16()) * PAGE_BIG; // past guest memory
        case 4: return input.u64();
        default: return input.pick(pages);
      }
    };
    for (let n = input.below(24); n > 0 && input.remaining > 0; n--) {
      const op = input.below(6);
      if (op <= 2) {
        const io = op === 2 && withIo;
        const prp1 = prp();
        const prp2 = prp();
        // A PRP list page: entries aimed anywhere, for transfers longer than two pages.
        if (input.bool()) {
          const list = input.pick(pages);
          for (let i = 0; i < 8; i++) host.view.setBigUint64(Number(list) + i * 8, input.bool() ? input.pick(pages) : prp(), true);
        }
        const cdw = Array.from({ length: 6 }, () => (input.bool() ? input.u32() : input.below(16)));
        host.submit(io ? 1 : 0, {
          opcode: input.pick(io ? IO_OPCODES : ADMIN_OPCODES),
          nsid: input.pick([1, 1, 0, 2, 0xffffffff]),
          flags: input.pick([0, 0, 0x40, 0x80, 0xc0, 0x01]),
          prp1,
          prp2,
          cdw,
        });
      } else if (op === 3) {
        host.rw(0x1000 + 4 * input.below(12), input.u16() & (input.bool() ? 0xffff : 0x3f));
      } else if (op === 4) {
        host.rw(input.pick([0x0c, 0x10, 0x14, 0x20, 0x24, 0x38, 0x3c, 0x50]), input.u32());
      } else {
        await turn();
      }
    }
    for (let i = 0; i < 4; i++) await turn();
    for (let at = MEMORY - GUARD; at < MEMORY; at++) check(host.mem[at] === 0x5a, () => `guest memory at 0x${at.toString(16)}, outside every page the driver gave, was written`);

    // Recovery: reset, enable, identify.
    host.disable();
    for (let i = 0; i < 4 && (host.rr(0x1c) & 1) !== 0; i++) await turn();
    check((host.rr(0x1c) & 1) === 0, `CSTS.RDY still set after CC.EN was cleared (CSTS 0x${host.rr(0x1c).toString(16)})`);
    const csts = host.enable(32);
    check((csts & 1) === 1 && (csts & 2) === 0, `controller not ready after re-enable (CSTS 0x${csts.toString(16)})`);
    const { cqe, data: id } = await host.identify(1);
    check(cqe.status === 0, `Identify Controller after reset failed with status 0x${cqe.status.toString(16)}`);
    check((id[0] | (id[1] << 8)) === 0x1234, "Identify Controller after reset has the wrong vendor ID");
  } finally {
    host.close();
  }
}

const PAGE_BIG = BigInt(PAGE);
