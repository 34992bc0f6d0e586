// edu's interrupts delivered through QEMU 11.1's vfio-user-pci under qtest.
//  - INTx: the server signals the trigger eventfd QEMU gave with SET_IRQS; QEMU asserts the
//    pin (qtest intercepts the IOAPIC's inputs: "IRQ raise N") and masks the line until the
//    guest's next BAR access (hw/vfio/pci.c vfio_intx_interrupt / vfio_intx_eoi), then sends
//    SET_IRQS UNMASK. The guest's acknowledge drops the level and QEMU lowers the line.
//  - MSI: once the guest enables the capability, QEMU hands one eventfd per vector (SET_IRQS,
//    MSI index, ACTION_TRIGGER); a signal makes QEMU write the message data to the message
//    address (msi_notify). As libqos does, the address points at guest RAM, where qtest reads it.
import { expect, it } from "vitest";
import { EDU_DMA_IRQ, EDU_DMA_IRQ_ENABLE, EDU_DMA_RUN, EDU_DMA_START, EDU_FACT_IRQ, EDU_REG, EDU_STATUS_IRQFACT } from "../../src/devices/edu.js";
import { Command, HeaderFlag, IrqSetFlag, PciIrq } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const BAR0 = 0xfe000000;
const MSI_TARGET = 0x300000; // guest RAM the MSI message lands in
const MSI_DATA = 0x4041;

describeQemu11("QEMU 11.1: edu interrupts (qtest)", () => {
  const f = useQemu11Fixture({ proxy: true });

  /** SET_IRQS requests from QEMU: index, flags, start, count and how many fds came along. */
  const setIrqs = () =>
    f.proxy!.of(Command.DEVICE_SET_IRQS, "client")
      .filter((m) => (m.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND)
      .map((m) => {
        const b = Buffer.from(m.body); // argsz, flags, index, start, count (u32 each)
        return { flags: b.readUInt32LE(4), index: b.readUInt32LE(8), start: b.readUInt32LE(12), count: b.readUInt32LE(16), fds: m.fds };
      });

  it("INTx: a finished factorial raises the pin, the acknowledge lowers it, and it fires again", async () => {
    await f.sessionEnded();
    f.proxy!.messages.length = 0;
    const q = QtestQemu.start(f.socketPath);
    try {
      await q.interceptIrqs();
      await q.placeBar32(0, BAR0);
      await q.writel(BAR0 + EDU_REG.STATUS, EDU_STATUS_IRQFACT);
      let raised = q.nextIrqRaise();
      await q.writel(BAR0 + EDU_REG.FACTORIAL, 5);
      const line = await raised;
      // q35 routes PCI INTx through PIRQ A-H to IOAPIC inputs 16-23.
      expect(line).toBeGreaterThanOrEqual(16);
      expect(line).toBeLessThanOrEqual(23);
      expect(await q.readl(BAR0 + EDU_REG.IRQ_STATUS)).toBe(EDU_FACT_IRQ);
      expect(await q.readl(BAR0 + EDU_REG.FACTORIAL)).toBe(120);
      const lowered = q.nextIrqLower(line);
      await q.writel(BAR0 + EDU_REG.IRQ_ACK, EDU_FACT_IRQ);
      await lowered;
      // QEMU unmasked INTx after the first one: a second interrupt gets through too.
      raised = q.nextIrqRaise(line);
      await q.writel(BAR0 + EDU_REG.FACTORIAL, 4);
      await raised;
      expect(await q.readl(BAR0 + EDU_REG.FACTORIAL)).toBe(24);
      const loweredAgain = q.nextIrqLower(line);
      await q.writel(BAR0 + EDU_REG.IRQ_ACK, EDU_FACT_IRQ);
      await loweredAgain;
    } finally {
      await q.quit();
    }
    const intx = setIrqs().filter((s) => s.index === PciIrq.INTX);
    expect(intx.some((s) => (s.flags & IrqSetFlag.ACTION_TRIGGER) !== 0 && (s.flags & IrqSetFlag.DATA_EVENTFD) !== 0 && s.fds === 1)).toBe(true);
    expect(intx.some((s) => (s.flags & IrqSetFlag.ACTION_UNMASK) !== 0 && s.fds === 0)).toBe(true);
  }, 30_000);

  it("MSI: with the capability enabled, DMA completion writes the message to its address and the pin stays low", async () => {
    await f.sessionEnded();
    f.proxy!.messages.length = 0;
    const q = QtestQemu.start(f.socketPath);
    try {
      await q.interceptIrqs();
      await q.placeBar32(0, BAR0);
      const msi = (await q.configRead(0x34)) & 0xff;
      await q.configWrite(msi + 4, MSI_TARGET);
      await q.configWrite(msi + 8, 0);
      await q.configWrite(msi + 12, MSI_DATA);
      await q.configWrite(msi, ((await q.configRead(msi)) | 0x00010000) >>> 0); // MSI enable
      await q.memWrite(MSI_TARGET, new Uint8Array(4));

      await q.writeq(BAR0 + EDU_REG.DMA_SRC, BigInt(EDU_DMA_START));
      await q.writeq(BAR0 + EDU_REG.DMA_DST, 0x200000n);
      await q.writeq(BAR0 + EDU_REG.DMA_CNT, 64n);
      await q.writeq(BAR0 + EDU_REG.DMA_CMD, BigInt(EDU_DMA_RUN | 0x2 | EDU_DMA_IRQ_ENABLE));
      // Bounded poll over qtest round trips: the message lands once edu's transfer is done.
      let landed = 0;
      for (let i = 0; i < 10_000 && landed !== MSI_DATA; i++) landed = (await q.memRead(MSI_TARGET, 4)).readUInt32LE(0);
      expect(landed).toBe(MSI_DATA);
      expect(await q.readl(BAR0 + EDU_REG.IRQ_STATUS)).toBe(EDU_DMA_IRQ);
      expect(q.irqEvents.filter((e) => e.startsWith("IRQ raise"))).toEqual([]);
    } finally {
      await q.quit();
    }
    const msiSets = setIrqs().filter((s) => s.index === PciIrq.MSI && (s.flags & IrqSetFlag.ACTION_TRIGGER) !== 0);
    expect(msiSets.some((s) => (s.flags & IrqSetFlag.DATA_EVENTFD) !== 0 && s.start === 0 && s.count === 1 && s.fds === 1)).toBe(true);
  }, 30_000);
});
