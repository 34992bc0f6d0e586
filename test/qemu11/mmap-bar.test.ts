// A BAR the server offers for mmap (the MMAP flag and the region's memfd with
// DEVICE_GET_REGION_INFO): QEMU 11.1 maps it, so guest accesses to it never cross the socket,
// and it turns posted writes off for the whole device (hw/vfio-user/device.c
// vfio_user_get_region_info: a read could otherwise pass a write made through the mapping), so
// writes to the device's other, trapped BAR are answered REGION_WRITEs.
// This test found that QEMU 11.1 refused to realize such a device: our reply to its first,
// struct-sized DEVICE_GET_REGION_INFO kept the CAPS flag with cap_offset 0 (the kernel's habit),
// which hw/vfio-user/device.c vfio_user_device_io_get_region_info rejects with EINVAL.
import { afterAll, expect, it } from "vitest";
import { createThroughputDevice, THROUGHPUT_ID_VALUE, THROUGHPUT_REG } from "../../src/devices/throughput.js";
import { closeFd } from "../../src/transport/fd.js";
import { memfdCreate, mmapFd, type MappedRegion } from "../../src/transport/shm.js";
import { Command, HeaderFlag, RegionInfoFlag } from "../../src/vfio-user/wire/constants.js";
import { QtestQemu } from "../support/qtest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const DATA_SIZE = 64 * 1024;
const DATA_BAR = 0xfe000000;
const REGS_BAR = 0xfd000000;

describeQemu11("QEMU 11.1: a mmappable BAR", () => {
  let fd = -1;
  let mapping: MappedRegion | undefined;
  const f = useQemu11Fixture({
    proxy: true,
    device: () => {
      fd = memfdCreate("qemu11-data-bar", DATA_SIZE);
      mapping = mmapFd(fd, 0, DATA_SIZE, { writable: true });
      return createThroughputDevice({ data: { bytes: mapping.bytes(), fd, fdOffset: 0n } }).fn;
    },
  });
  afterAll(() => {
    if (mapping?.isMapped) mapping.unmap();
    if (fd >= 0) closeFd(fd);
  });

  it("is accessed through QEMU's mapping, and writes to the other BAR are no longer posted", async () => {
    const proxy = f.proxy!;
    const q = QtestQemu.start(f.socketPath);
    try {
      await q.configWrite(0x18, REGS_BAR); // BAR2: registers
      await q.placeBar32(0, DATA_BAR); // BAR0: data, and memory space on
      expect(await q.readl(REGS_BAR + THROUGHPUT_REG.ID)).toBe(THROUGHPUT_ID_VALUE);

      await q.writel(DATA_BAR + 0x100, 0xcafef00d);
      expect(Buffer.from(mapping!.bytes()).readUInt32LE(0x100)).toBe(0xcafef00d); // the server's memory
      Buffer.from(mapping!.bytes().buffer, mapping!.bytes().byteOffset).writeUInt32LE(0x600dd00d, 0x200);
      expect(await q.readl(DATA_BAR + 0x200)).toBe(0x600dd00d);

      for (let i = 1; i <= 20; i++) await q.writel(REGS_BAR + THROUGHPUT_REG.SCRATCH, i);
      expect(await q.readl(REGS_BAR + THROUGHPUT_REG.SCRATCH)).toBe(20);
    } finally {
      await q.quit();
    }
    const isCommand = (m: { flags: number }) => (m.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND;
    // Region info reply: argsz, flags, index, cap_offset (u32 each), size, offset (u64).
    const info0 = proxy.of(Command.DEVICE_GET_REGION_INFO, "server").find((m) => Buffer.from(m.body).readUInt32LE(8) === 0 && m.fds === 1);
    expect(info0).toBeDefined();
    expect(Buffer.from(info0!.body).readUInt32LE(4) & RegionInfoFlag.MMAP).toBe(RegionInfoFlag.MMAP);
    const region = (m: { body: Uint8Array }) => Buffer.from(m.body).readUInt32LE(8);
    const accesses = [...proxy.of(Command.REGION_READ, "client"), ...proxy.of(Command.REGION_WRITE, "client")].filter(isCommand);
    expect(accesses.filter((m) => region(m) === 0)).toEqual([]);
    const regWrites = proxy.of(Command.REGION_WRITE, "client").filter((m) => isCommand(m) && region(m) === 2);
    expect(regWrites.length).toBe(20);
    expect(regWrites.filter((m) => (m.flags & HeaderFlag.NO_REPLY) !== 0)).toEqual([]);
    const answered = new Set(proxy.of(Command.REGION_WRITE, "server").map((m) => m.msgId));
    expect(regWrites.every((m) => answered.has(m.msgId))).toBe(true);
  }, 30_000);
});
