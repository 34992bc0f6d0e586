// A Linux guest (Debian 13's 6.12 kernel under TCG) with the project's edu attached through QEMU
// 11.1's vfio-user-pci: the kernel enumerates 1234:11e8 with its 1 MiB BAR, and a small static
// program built from test/guest/edu-probe.c drives the device from userspace through sysfs
// (resource0 mmapped, config written for bus mastering and MSI): ident, liveness, factorial,
// DMA both ways through a locked page, and an MSI message landing in guest memory; with shared
// guest RAM (the server maps the memfd) and unshared (DMA_READ / DMA_WRITE messages).
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, expect, it } from "vitest";
import { EDU_BAR_SIZE, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { Command } from "../../src/vfio-user/wire/constants.js";
import { bootGuest, result } from "../support/guest.js";
import { describeQemu11, useQemu11Fixture } from "../support/qemu11-fixture.js";

const here = fileURLToPath(new URL(".", import.meta.url));

const SCRIPT = `dev=""
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ]; then dev=$d; fi
done
[ -n "$dev" ] || { echo "@@error no 1234:11e8 in sysfs"; exit 1; }
echo "@@class $(cat $dev/class)"
echo "@@resource0 $(head -n 1 $dev/resource)"
/edu-probe $dev
`;

describeQemu11("a Linux guest on the project's edu over QEMU 11.1 vfio-user-pci", () => {
  const f = useQemu11Fixture({ proxy: true });
  let probe: Buffer;

  beforeAll(() => {
    // Built at test time from the project's source; static, so the initramfs needs no libc.
    const out = join(f.dir, "edu-probe");
    execFileSync("cc", ["-static", "-O2", "-Wall", "-Werror", "-o", out, join(here, "edu-probe.c")], { stdio: "pipe" });
    probe = readFileSync(out);
  });

  // Shared RAM: the server maps the guest's memfd. Unshared: DMA goes as DMA_READ/DMA_WRITE.
  for (const unsharedMemory of [false, true]) {
    it(`${unsharedMemory ? "unshared" : "shared"} guest RAM: finds 1234:11e8 with a 1 MiB BAR and a userspace probe drives ident, liveness, factorial, DMA and MSI`, async () => {
      await f.sessionEnded();
      f.proxy!.messages.length = 0;
      const r = await bootGuest({
        // 256 MiB keeps every guest page below edu's 28-bit DMA mask.
        memory: "256M",
        unsharedMemory,
        devices: [JSON.stringify({ driver: "vfio-user-pci", socket: { path: f.socketPath, type: "unix" } })],
        files: [{ path: "edu-probe", mode: 0o755, data: probe }],
        script: SCRIPT,
        timeoutMs: 90_000,
      });
      expect(r.status, r.console.slice(-3000)).toBe(0);
      expect(result(r, "class")).toBe("0x00ff00");
      const [start, end, flags] = result(r, "resource0").split(/\s+/).map((v) => BigInt(v));
      expect(end! - start! + 1n).toBe(BigInt(EDU_BAR_SIZE));
      expect(flags! & 0x200n).toBe(0x200n); // IORESOURCE_MEM
      expect(result(r, "bar0-size")).toBe(String(EDU_BAR_SIZE));
      expect(Number(result(r, "ident"))).toBe(EDU_ID_VALUE);
      expect(Number(result(r, "liveness"))).toBe(~0x12345678 >>> 0);
      expect(Number(result(r, "factorial"))).toBe(3628800);
      expect(result(r, "dma")).toBe("match");
      expect(Number(result(r, "msi-data"))).toBe(0x4d53);
      expect(Number(result(r, "irq-status"))).toBe(0x8);
      expect(Number(result(r, "irq-status-after-ack"))).toBe(0);
      // How the server reached guest memory: through the memfd mapping, or by messages.
      const dmaMessages = f.proxy!.of(Command.DMA_READ, "server").length + f.proxy!.of(Command.DMA_WRITE, "server").length;
      if (unsharedMemory) expect(dmaMessages).toBeGreaterThanOrEqual(2);
      else expect(dmaMessages).toBe(0);
    }, 120_000);
  }
});
