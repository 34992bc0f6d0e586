// QEMU 7.2's proxy (x-pci-proxy-dev in a q35 VM with memfd-backed RAM, CPU stopped) drives our
// remote; everything is observed through QEMU's HMP monitor, i.e. through QEMU's own config
// and MMIO paths.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPciFunction } from "../../src/core/pci/function.js";
import type { PciFunction } from "../../src/core/pci/api.js";
import { createEdu, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { MpqemuRemote } from "../../src/mpqemu/remote.js";
import { closeFdQuietly as closeFd, socketpair } from "../../src/transport/fd.js";
import { HmpVm, killAllQemu, qemuAvailable } from "./harness.js";

const haveQemu = qemuAvailable();
const SLOT = 4;

/** A small function with an I/O BAR (HMP can write ports, not MMIO) and a memory BAR. */
function ioTestFunction() {
  let scratch = 0;
  let writes = 0;
  const fn = createPciFunction({
    name: "io-test",
    vendorId: 0x1b36,
    deviceId: 0x7e57,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    revision: 3,
    classCode: 0x00ff00,
    interruptPin: 1,
    bars: [
      {
        kind: "io",
        size: 32,
        ops: {
          // 0x0 scratch (RW), 0x4 inverted scratch (RO), 0x8 write count (RO); any size 1-4.
          read: (off, size) => {
            const regs = new DataView(new ArrayBuffer(32));
            regs.setUint32(0, scratch, true);
            regs.setUint32(4, ~scratch >>> 0, true);
            regs.setUint32(8, writes, true);
            let v = 0;
            for (let i = size - 1; i >= 0; i--) v = v * 256 + regs.getUint8(off + i);
            return v;
          },
          write: (off, size, value) => {
            writes++;
            for (let i = 0; i < size; i++) {
              if (off + i < 4) {
                const shift = (off + i) * 8;
                scratch = ((scratch & ~(0xff << shift)) | (((Number(value) >>> (i * 8)) & 0xff) << shift)) >>> 0;
              }
            }
          },
          valid: { min: 1, max: 4 },
          impl: { min: 1, max: 4 },
        },
      },
      undefined,
      { kind: "mem32", size: 4096, ram: true },
    ],
  });
  return fn;
}

interface Rig {
  vm: HmpVm;
  remote: MpqemuRemote;
  fn: PciFunction;
  logs: string[];
}

async function startRig(fn: PciFunction): Promise<Rig> {
  const [ours, theirs] = socketpair();
  const logs: string[] = [];
  const remote = new MpqemuRemote({ fd: ours, fn, log: (l) => logs.push(l) }).start();
  let vm: HmpVm;
  try {
    vm = await HmpVm.start({ args: ["-device", `x-pci-proxy-dev,id=d0,fd=3,addr=0x${SLOT.toString(16)}`], extraFds: [theirs], ramMiB: 64 });
  } finally {
    closeFd(theirs);
  }
  return { vm, remote, fn, logs };
}

async function stopRig(rig: Rig | undefined) {
  if (!rig) return;
  await rig.vm.quit();
  const end = await rig.remote.ended;
  expect(end.reason).toBe("hangup"); // the VMM went away: clean exit
}

describe.skipIf(!haveQemu)("QEMU's proxy against our remote", () => {
  afterAll(async () => {
    await killAllQemu();
  });

  describe("edu", () => {
    let rig: Rig;
    beforeAll(async () => {
      rig = await startRig(createEdu().fn);
    }, 60_000);
    afterAll(async () => stopRig(rig));

    it("QEMU reads our ids, class and subsystem through 0xcf8/0xcfc", async () => {
      const { vm } = rig;
      expect(await vm.cfgRead(SLOT, 0x00)).toBe(0x11e81234);
      expect((await vm.cfgRead(SLOT, 0x08)) >>> 8).toBe(0x00ff00);
      expect(await vm.cfgRead(SLOT, 0x08, 1)).toBe(0x10); // revision
      expect(await vm.cfgRead(SLOT, 0x3d, 1)).toBe(1); // INTA
      expect(await vm.cfgRead(SLOT, 0x2c)).toBe(rig.fn.readConfig(0x2c, 4));
    });

    it("QEMU sizes the BAR and the address it programs reaches our BAR decoder", async () => {
      const { vm, fn } = rig;
      const resendsBefore = rig.remote.stats.sysmemResends;
      expect(await vm.barSize(SLOT, 0)).toBe(1 << 20);
      // QEMU's proxy registered a 1 MiB BAR from our answers during realize.
      expect(await vm.cmd("info pci")).toMatch(/BAR0: 32 bit memory at 0x[0-9a-f]+ \[0x000ffffe\]/);
      await vm.cfgWrite(SLOT, 0x10, 4, 0xfe000000);
      await vm.cfgWrite(SLOT, 0x04, 2, 0x0006);
      expect(await vm.cfgRead(SLOT, 0x10)).toBe(0xfe000000);
      expect(fn.barAddress(0)).toBe(0xfe000000n);
      // Mapping the BAR changed QEMU's memory topology, so its proxy resent the RAM layout;
      // the remote recognised it as unchanged and kept its mapping.
      expect(rig.remote.stats.sysmemResends).toBeGreaterThan(resendsBefore);
      expect(await vm.cmd("info pci")).toMatch(/BAR0: 32 bit memory at 0xfe000000 \[0xfe0fffff\]/);
    });

    it("MMIO reads through QEMU reach the device: id, liveness, status", async () => {
      const { vm } = rig;
      const [id, liveness, fact] = await vm.readWords(0xfe000000n, 3);
      expect(id, `remote log: ${rig.logs.join("; ")}; QEMU stderr: ${vm.stderr}`).toBe(EDU_ID_VALUE);
      expect(liveness).toBe(0); // QEMU's edu stores the inverse of what is written; 0 at reset
      expect(fact).toBe(0);
      expect((await vm.readWords(0xfe000020n, 1))[0]).toBe(0); // status idle
      // xp /N is N separate 4-byte BAR_READs, all answered.
      const many = await vm.readWords(0xfe000000n, 64);
      expect(many[0]).toBe(EDU_ID_VALUE);
      expect(many).toHaveLength(64);
    });

    it("SYNC_SYSMEM: the remote sees the VM's RAM; bytes it writes show up in QEMU's guest memory", async () => {
      const { vm, fn, remote } = rig;
      expect(remote.sysmem.length).toBeGreaterThan(0);
      expect(remote.sysmem.some((r) => r.gpa <= 0x10000n && r.gpa + r.size >= 0x11000n)).toBe(true);
      fn.dma!.writeSync(0x10000n, Uint8Array.of(0xef, 0xbe, 0xad, 0xde, 0x78, 0x56, 0x34, 0x12));
      expect(await vm.readWords(0x10000n, 2)).toEqual([0xdeadbeef, 0x12345678]);
      // RAM above 1 MiB too (q35 splits low RAM around the legacy VGA/BIOS hole).
      fn.dma!.writeU32(0x200000n, 0xcafef00d);
      expect((await vm.readWords(0x200000n, 1))[0]).toBe(0xcafef00d);
    });

    it("a failed access answers all-ones and the remote keeps serving (QEMU's remote would exit)", async () => {
      const { vm, logs } = rig;
      const before = logs.length;
      // edu rejects 1-byte accesses on the bus; `xp /1bx` issues exactly one.
      const out = await vm.cmd("xp /1bx 0xfe000000");
      expect(out).toMatch(/0xff/);
      expect(logs.length).toBeGreaterThan(before);
      expect(logs.at(-1)).toMatch(/answered all-ones/);
      // 1-byte config read at 0xff: inside config space, served.
      expect(await vm.cfgRead(SLOT, 0xff, 1)).toBe(0);
      expect((await vm.readWords(0xfe000000n, 1))[0]).toBe(EDU_ID_VALUE);
    });
  });

  describe("I/O BAR device", () => {
    let rig: Rig;
    beforeAll(async () => {
      rig = await startRig(ioTestFunction());
    }, 60_000);
    afterAll(async () => stopRig(rig));

    it("ids and both BAR sizes as QEMU sizes them", async () => {
      const { vm } = rig;
      expect(await vm.cfgRead(SLOT, 0x00)).toBe(0x7e571b36);
      expect(await vm.cfgRead(SLOT, 0x2c)).toBe(0x11001af4);
      expect(await vm.barSize(SLOT, 0)).toBe(32);
      expect(await vm.barSize(SLOT, 1)).toBe(0);
      expect(await vm.barSize(SLOT, 2)).toBe(4096);
    });

    it("port writes and reads through QEMU's proxy, at 1, 2 and 4 bytes", async () => {
      const { vm, fn } = rig;
      await vm.cfgWrite(SLOT, 0x10, 4, 0xc040);
      await vm.cfgWrite(SLOT, 0x18, 4, 0xfe100000);
      await vm.cfgWrite(SLOT, 0x04, 2, 0x0007);
      expect(fn.barAddress(0)).toBe(0xc040n);
      expect(fn.barAddress(2)).toBe(0xfe100000n);
      await vm.outPort(0xc040, 4, 0x12345678);
      expect(await vm.inPort(0xc040, 4)).toBe(0x12345678);
      expect(await vm.inPort(0xc044, 4)).toBe(~0x12345678 >>> 0);
      expect(await vm.inPort(0xc041, 1)).toBe(0x56);
      expect(await vm.inPort(0xc042, 2)).toBe(0x1234);
      expect(await vm.inPort(0xc048, 4)).toBe(1);
      await vm.outPort(0xc041, 1, 0xaa);
      expect(await vm.inPort(0xc048, 4)).toBe(2);
      expect(await vm.inPort(0xc040, 4)).toBe(0x1234aa78);
      await vm.outPort(0xc042, 2, 0xbeef);
      expect(await vm.inPort(0xc040, 4)).toBe(0xbeefaa78);
      // RAM-backed memory BAR: served by the core without device code.
      fn.writeRegion(2, 0x10, 4, 0x600dcafen);
      expect((await vm.readWords(0xfe100010n, 1))[0]).toBe(0x600dcafe);
    });

    it("disabling I/O decode in the command register makes the port float (no BAR decodes it)", async () => {
      const { vm } = rig;
      await vm.cfgWrite(SLOT, 0x04, 2, 0x0006);
      expect(await vm.inPort(0xc040, 4)).toBe(0xffffffff);
      await vm.cfgWrite(SLOT, 0x04, 2, 0x0007);
      expect(await vm.inPort(0xc048, 4)).toBe(3);
    });
  });
});
