// INTx from our remote through QEMU 7.2's proxy under KVM. The proxy hands the irqfd and the
// resample fd to KVM (hw/remote/proxy.c setup_irqfd -> kvm_irqchip_add_irqfd_notifier_gsi);
// under TCG it never delivers them, so this runs only where QEMU can start with accel=kvm.
//
// What is observed, and how:
// - the line reaching the in-kernel interrupt controllers: HMP `info pic` (with KVM's irqchip
//   it lists the IOAPIC's IRR and both i8259s' irr; this build has no `info ioapic`);
// - level semantics: KVM lowers the line only on the guest's EOI and then signals the resample
//   fd, and our remote re-raises while the device still asserts. A guest is needed for EOIs:
//   a 64 KiB firmware image written by this test (hand-assembled real-mode code) routes the
//   slave PIC's IRQ 11 to a handler that counts into RAM and EOIs. While the device asserts, the
//   count keeps climbing (every EOI -> resample -> re-raise); once the device lowers, it stops.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPciFunction } from "../../src/core/pci/function.js";
import type { PciFunction } from "../../src/core/pci/api.js";
import { MpqemuRemote } from "../../src/mpqemu/remote.js";
import { closeFdQuietly as closeFd, socketpair } from "../../src/transport/fd.js";
import { HmpVm, QEMU, killAllQemu, qemuAvailable } from "./harness.js";

const SLOT = 4;
const LPC_SLOT = 0x1f;
/** ICH9 LPC config: PIRQE route register (q35 wires slot 4's INTA to PIRQE, IOAPIC pin 20). */
const LPC_PIRQE_ROUTE = 0x68;
const PIC_IRQ = 11;
const IO_BAR = 0xc000;
/** Guest RAM word the firmware's interrupt handler increments. */
const COUNTER = 0x600n;
/** Guest RAM word the firmware sets once its PICs are programmed, just before `sti`. */
const READY = 0x604n;
const READY_MAGIC = 0xcafef00d;

/** Why the test cannot run here, or "" when QEMU starts with accel=kvm. */
function kvmSkipReason(): string {
  if (!qemuAvailable()) return "QEMU with x-pci-proxy-dev is not installed";
  const r = spawnSync(QEMU, ["-machine", "q35,accel=kvm", "-nodefaults", "-display", "none", "-m", "16M", "-S", "-monitor", "stdio"], {
    input: "quit\n",
    encoding: "utf8",
    timeout: 20_000,
  });
  if (r.status === 0) return "";
  const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split("\n")[0];
  return `QEMU cannot start with accel=kvm (${why}); under TCG the proxy does not deliver INTx`;
}

/**
 * The firmware: reset vector (f000:fff0) jumps to f000:0000, which sets up a stack, turns the
 * local APIC off (KVM then hands the PIC's output straight to the CPU; at reset its LINT0 is
 * masked, so PIC interrupts would never arrive), points
 * vector 0x73 (slave PIC base 0x70 + IRQ 3 = IRQ 11) at the handler, initialises both PICs,
 * masks everything but the cascade and IRQ 11, makes IRQ 11 level-triggered (ELCR 0x4d1),
 * stores READY_MAGIC at 0x604, then `sti; hlt` forever. The handler: inc dword [0x600], EOI slave then master, iret.
 */
function firmware(): Uint8Array {
  const isr = 0x80;
  // prettier-ignore
  const main = [
    0xfa,                               // cli
    0x31, 0xc0,                         // xor ax, ax
    0x8e, 0xd8,                         // mov ds, ax
    0x8e, 0xd0,                         // mov ss, ax
    0xbc, 0x00, 0x70,                   // mov sp, 0x7000
    0x66, 0xb9, 0x1b, 0, 0, 0,          // mov ecx, IA32_APIC_BASE
    0x0f, 0x32,                         // rdmsr
    0x80, 0xe4, 0xf7,                   // and ah, ~(1 << 3): clear the global enable (bit 11)
    0x0f, 0x30,                         // wrmsr
    0xc7, 0x06, 0xcc, 0x01, isr, 0x00,  // mov word [0x73*4], isr
    0xc7, 0x06, 0xce, 0x01, 0x00, 0xf0, // mov word [0x73*4+2], 0xf000
    0x66, 0xc7, 0x06, 0x00, 0x06, 0, 0, 0, 0, // mov dword [0x600], 0
    0xb0, 0x11, 0xe6, 0x20, 0xe6, 0xa0, // ICW1 (edge/level per ELCR, ICW4 needed) to both
    0xb0, 0x08, 0xe6, 0x21,             // ICW2 master base 0x08
    0xb0, 0x70, 0xe6, 0xa1,             // ICW2 slave base 0x70
    0xb0, 0x04, 0xe6, 0x21,             // ICW3 master: slave on IRQ 2
    0xb0, 0x02, 0xe6, 0xa1,             // ICW3 slave: cascade identity 2
    0xb0, 0x01, 0xe6, 0x21, 0xe6, 0xa1, // ICW4 8086 mode
    0xb0, 0xfb, 0xe6, 0x21,             // master mask: only IRQ 2 open
    0xb0, 0xf7, 0xe6, 0xa1,             // slave mask: only IRQ 11 open
    0xba, 0xd1, 0x04, 0xb0, 0x08, 0xee, // ELCR2 (0x4d1): IRQ 11 level-triggered
    0x66, 0xc7, 0x06, 0x04, 0x06, 0x0d, 0xf0, 0xfe, 0xca, // mov dword [0x604], 0xcafef00d
    0xfb,                               // sti
    0xf4, 0xeb, 0xfd,                   // 1: hlt; jmp 1b
  ];
  // prettier-ignore
  const handler = [
    0x50,                               // push ax
    0x66, 0xff, 0x06, 0x00, 0x06,       // inc dword [0x600]
    0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, // non-specific EOI to slave, then master
    0x58,                               // pop ax
    0xcf,                               // iret
  ];
  if (main.length > isr) throw new Error("firmware: main code overlaps the handler");
  const rom = new Uint8Array(0x10000).fill(0xf4); // hlt everywhere else
  rom.set(main, 0);
  rom.set(handler, isr);
  rom.set([0xea, 0x00, 0x00, 0x00, 0xf0], 0xfff0); // jmp far f000:0000
  return rom;
}

/** A function whose I/O BAR's register 0 is the INTx level (HMP can write ports, not MMIO). */
function intxFunction(): PciFunction {
  const fn: PciFunction = createPciFunction({
    name: "intx-test",
    vendorId: 0x1b36,
    deviceId: 0x7e58,
    classCode: 0x00ff00,
    interruptPin: 1,
    bars: [
      {
        kind: "io",
        size: 16,
        ops: {
          read: (off) => (off === 0 && fn.irq.intxLevel ? 1 : 0),
          write: (off, _size, value) => {
            if (off === 0) fn.irq.setIntx((Number(value) & 1) === 1);
          },
          valid: { min: 1, max: 4 },
          impl: { min: 1, max: 4 },
        },
      },
    ],
  });
  return fn;
}

/** `info pic` under KVM: IOAPIC IRR pins and the slave i8259's irr byte. */
function parsePic(text: string): { ioapicIrr: number[]; slaveIrr: number } {
  const irr = /^\s*IRR\s+(.*)$/m.exec(text);
  if (!irr) throw new Error(`info pic: no IOAPIC IRR line in ${JSON.stringify(text)}`);
  const ioapicIrr = irr[1].includes("none") ? [] : irr[1].trim().split(/\s+/).map(Number);
  // KVM's i8259 pair prints slave (pic1) first; its irr bit 3 is IRQ 11.
  const slave = /pic1: irr=([0-9a-f]+)/.exec(text);
  if (!slave) throw new Error(`info pic: no slave i8259 line in ${JSON.stringify(text)}`);
  return { ioapicIrr, slaveIrr: parseInt(slave[1], 16) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const skipReason = kvmSkipReason();

describe("INTx from our remote through QEMU's proxy under KVM (irqfd + resample)", () => {
  if (skipReason) {
    it.skip(`skipped: ${skipReason}`, () => {});
    return;
  }

  let vm: HmpVm;
  let remote: MpqemuRemote;
  let fn: PciFunction;
  let dir: string;
  const logs: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "wasmdev-intx-"));
    const bios = join(dir, "intx-fw.bin");
    writeFileSync(bios, firmware());
    fn = intxFunction();
    const [ours, theirs] = socketpair();
    remote = new MpqemuRemote({ fd: ours, fn, log: (l) => logs.push(l) }).start();
    try {
      vm = await HmpVm.start({ accel: "kvm", ramMiB: 32, args: ["-bios", bios, "-device", `x-pci-proxy-dev,id=d0,fd=3,addr=0x${SLOT.toString(16)}`], extraFds: [theirs] });
    } finally {
      closeFd(theirs);
    }
  }, 60_000);

  afterAll(async () => {
    if (vm) await vm.quit();
    if (remote) expect((await remote.ended).reason).toBe("hangup");
    await killAllQemu();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the device's INTx reaches KVM's IOAPIC through the irqfd (CPU stopped)", async () => {
    expect(await vm.cfgRead(SLOT, 0x00)).toBe(0x7e581b36);
    await vm.cfgWrite(SLOT, 0x10, 4, IO_BAR);
    await vm.cfgWrite(SLOT, 0x04, 2, 0x0001); // I/O decode
    expect(parsePic(await vm.cmd("info pic")).ioapicIrr).not.toContain(20);
    await vm.outPort(IO_BAR, 4, 1);
    expect(fn.irq.intxLevel).toBe(true);
    // The irqfd write lands asynchronously in KVM: poll briefly.
    let pic = parsePic(await vm.cmd("info pic"));
    for (let i = 0; i < 50 && !pic.ioapicIrr.includes(20); i++) {
      await sleep(10);
      pic = parsePic(await vm.cmd("info pic"));
    }
    expect(pic.ioapicIrr, `remote log: ${logs.join("; ")}`).toContain(20); // PIRQE -> GSI 20
    // Without a guest EOI nothing lowers a resampling irqfd's line: it stays pending in KVM
    // even after the device drops it (that is the resample design; the EOI tells the device
    // side to re-evaluate).
    await vm.outPort(IO_BAR, 4, 0);
    await sleep(50);
    expect(parsePic(await vm.cmd("info pic")).ioapicIrr).toContain(20);
  });

  it("routed to PIC IRQ 11, the proxy re-installs the irqfd on the new GSI", async () => {
    // PIRQE -> IRQ 11 in the ICH9 LPC; QEMU's proxy follows the routing change
    // (pci_device_set_intx_routing_notifier) and moves the irqfd to GSI 11.
    await vm.cfgWrite(LPC_SLOT, LPC_PIRQE_ROUTE, 1, PIC_IRQ);
    expect(await vm.cfgRead(LPC_SLOT, LPC_PIRQE_ROUTE, 1)).toBe(PIC_IRQ);
    await vm.outPort(IO_BAR, 4, 1);
    let pic = parsePic(await vm.cmd("info pic"));
    for (let i = 0; i < 50 && !(pic.slaveIrr & 0x08); i++) {
      await sleep(10);
      pic = parsePic(await vm.cmd("info pic"));
    }
    expect(pic.slaveIrr & 0x08).toBe(0x08);
    expect(pic.ioapicIrr).toContain(PIC_IRQ);
  });

  it("level semantics: each EOI re-raises while the device asserts; lowering stops the interrupts", async () => {
    const count = async () => (await vm.readWords(COUNTER, 1))[0];
    expect(fn.irq.intxLevel).toBe(true);
    await vm.cmd("cont");
    let ready = 0;
    for (let i = 0; i < 200 && ready !== READY_MAGIC; i++) {
      await sleep(10);
      ready = (await vm.readWords(READY, 1))[0];
    }
    expect(ready, "the firmware never reached its idle loop").toBe(READY_MAGIC);
    // The firmware's PIC initialisation (ICW1) dropped the request latched while the CPU was
    // stopped, and KVM still holds the resampling line high (no EOI yet), so the pending
    // edge is gone: the device lowers and raises again to signal the irqfd anew.
    await vm.outPort(IO_BAR, 4, 0);
    await vm.outPort(IO_BAR, 4, 1);
    // Still asserted: every handler EOI fires the resample fd and our remote raises again.
    let n = await count();
    for (let i = 0; i < 200 && n < 20; i++) {
      await sleep(10);
      n = await count();
    }
    expect(n, `remote log: ${logs.join("; ")}; QEMU stderr: ${vm.stderr}`).toBeGreaterThanOrEqual(20);

    // The device lowers the line: after at most one interrupt already in flight, no more.
    await vm.outPort(IO_BAR, 4, 0);
    expect(fn.irq.intxLevel).toBe(false);
    await sleep(100);
    const settled = await count();
    await sleep(300);
    expect(await count()).toBe(settled);
    const pic = parsePic(await vm.cmd("info pic"));
    expect(pic.slaveIrr & 0x08).toBe(0);
    expect(pic.ioapicIrr).not.toContain(PIC_IRQ);

    // Raising again after the drop delivers again (the irqfd is still live).
    await vm.outPort(IO_BAR, 4, 1);
    let again = await count();
    for (let i = 0; i < 200 && again < settled + 5; i++) {
      await sleep(10);
      again = await count();
    }
    expect(again).toBeGreaterThanOrEqual(settled + 5);
    await vm.outPort(IO_BAR, 4, 0);
  });

  it("INTx disable (command bit 10) masks the pin: no re-raise while set, delivery resumes when cleared", async () => {
    // The function masks its pin, so no resample re-raises it even though the device asserts.
    await vm.cfgWrite(SLOT, 0x04, 2, 0x0401);
    await vm.outPort(IO_BAR, 4, 1);
    expect(fn.irq.intxLevel).toBe(true);
    await sleep(100);
    const before = (await vm.readWords(COUNTER, 1))[0];
    await sleep(200);
    expect((await vm.readWords(COUNTER, 1))[0]).toBe(before);
    await vm.cfgWrite(SLOT, 0x04, 2, 0x0001);
    let after = before;
    for (let i = 0; i < 200 && after < before + 5; i++) {
      await sleep(10);
      after = (await vm.readWords(COUNTER, 1))[0];
    }
    expect(after).toBeGreaterThanOrEqual(before + 5);
    await vm.outPort(IO_BAR, 4, 0);
  });
});
