// An unmodified Linux guest (Debian 13's 6.12 kernel and its in-tree nvme driver) uses the
// project's NVMe controller as its disk through QEMU 11.1's vfio-user-pci: identify, SMART, fio
// writes verified by crc32c, controller resets, driver unbind/bind and a clean shutdown at
// poweroff, the probe after the firmware (SeaBIOS) used the controller; and a QEMU killed
// mid-I/O leaves nothing behind in the server.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNvme, type NvmeController, type NvmeEvent } from "../../src/devices/nvme/index.js";
import { CSTS_SHST_COMPLETE, CSTS_SHST_MASK } from "../../src/devices/nvme/constants.js";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import { bootGuest, result, type GuestResult } from "../support/guest.js";
import { processHoldings } from "../support/process-holdings.js";
import { trixie, trixieSkipReason } from "../support/trixie.js";
import { waitNoSession } from "../vfio-user/raw-client.js";

const SIZE = 256 << 20;
const SERIAL = "WASMDEV-GUEST-1";

/** Waits (bounded, inside the guest) for the namespace's block device after a probe. */
const WAIT_DISK = `wait_disk() { i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -le 400 ] || { echo "@@error no /dev/nvme0n1"; exit 1; }; sleep 0.05; done; }`;
const json = (r: GuestResult, name: string) => JSON.parse(result(r, name));

const d = describe.skipIf(!trixie);
if (trixieSkipReason) it.skip(`Linux guest tests skipped: ${trixieSkipReason}`, () => {});

d("a Linux guest on the project's NVMe controller over QEMU 11.1 vfio-user-pci", () => {
  let dir: string;
  let server: VfioUserServer;
  let nvme: NvmeController;
  const events: NvmeEvent[] = [];
  let device: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "wasmdev-nvme-guest-"));
    nvme = createNvme({ size: SIZE, lbaSize: 512, serial: SERIAL, onEvent: (e) => events.push(e) });
    const socketPath = join(dir, "nvme.sock");
    server = VfioUserServer.listen({ device: nvme.fn, socketPath });
    device = JSON.stringify({ driver: "vfio-user-pci", socket: { path: socketPath, type: "unix" } });
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("survives a QEMU killed mid-I/O: no memfd, mapping or socket left, and the next guest (below) gets a working controller", async () => {
    const before = processHoldings();
    const r = await bootGuest({
      devices: [device],
      script: `${WAIT_DISK}\nwait_disk\necho "@@fio-running"\nfio --name=busy --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=32 --rw=randrw --bs=16k --time_based --runtime=120 --output=/dev/null\n`,
      onLine: (line, guest) => {
        if (line.startsWith("@@fio-running")) setTimeout(() => guest.kill("SIGKILL"), 300); // let I/O get going
      },
    });
    expect(r.signal).toBe("SIGKILL");
    expect(r.status).toBeNull();
    await waitNoSession(server, 10_000);
    expect(processHoldings()).toEqual(before);
  }, 180_000);

  it("binds, identifies, verifies fio's writes, takes 20 resets and unbind/bind cycles, and shuts the controller down at poweroff", async () => {
    const shutdownsBefore = nvme.stats.shutdowns;
    const eventsBefore = events.length;
    let eventsAtDisk = -1;
    // SeaBIOS's debug port: the firmware's own NVMe driver runs before Linux.
    const firmwareLog = join(dir, "seabios.log");
    const r = await bootGuest({
      devices: [device],
      qemuArgs: ["-chardev", `file,id=fw,path=${firmwareLog}`, "-device", "isa-debugcon,iobase=0x402,chardev=fw"],
      onLine: (line) => {
        if (line.startsWith("@@probe-dmesg")) eventsAtDisk = events.length;
      },
      script: `${WAIT_DISK}
wait_disk
echo "@@probe-dmesg $(dmesg | grep -i nvme | tr '\n' '|')"
echo "@@sectors $(cat /sys/block/nvme0n1/size)"
echo "@@lbs $(cat /sys/block/nvme0n1/queue/logical_block_size)"
echo "@@id-ctrl $(nvme id-ctrl /dev/nvme0 -o json | tr -d '\\n')"
echo "@@id-ns $(nvme id-ns /dev/nvme0n1 -o json | tr -d '\\n')"
echo "@@smart-before $(nvme smart-log /dev/nvme0 -o json | tr -d '\\n')"
verify() { fio --name=verify --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bssplit=4k/40:16k/20:64k/20:128k/20 --size=$1 --offset=$2 --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=json --output=/tmp/fio.json; echo "@@$3 $(tr -d '\\n' < /tmp/fio.json)"; }
verify 64M 0 fio
echo "@@smart-after $(nvme smart-log /dev/nvme0 -o json | tr -d '\\n')"
for i in $(seq 20); do echo 1 > /sys/class/nvme/nvme0/reset_controller; done
echo "@@smart-after-resets $(nvme smart-log /dev/nvme0 -o json | tr -d '\n')"
echo "@@state-after-resets $(cat /sys/class/nvme/nvme0/state)"
verify 8M 96M fio-after-resets
bdf=$(basename $(readlink /sys/class/nvme/nvme0/device))
for i in 1 2 3; do echo $bdf > /sys/bus/pci/drivers/nvme/unbind; echo $bdf > /sys/bus/pci/drivers/nvme/bind; wait_disk; done
echo "@@rebound $(cat /sys/block/nvme0n1/size)"
verify 8M 128M fio-after-rebind
`,
      timeoutMs: 90_000,
    });
    expect(r.status, r.console.slice(-3000)).toBe(0);
    expect(r.exitCode).toBe(0); // poweroff: QEMU exits on its own

    expect(Number(result(r, "sectors")) * 512).toBe(SIZE);
    expect(Number(result(r, "lbs"))).toBe(512);
    const ctrl = json(r, "id-ctrl");
    expect(ctrl.vid).toBe(0x1234);
    expect(String(ctrl.sn).trim()).toBe(SERIAL);
    expect(ctrl.nn).toBe(1);
    const ns = json(r, "id-ns");
    expect(ns.nsze).toBe(SIZE / 512);
    const smartBefore = json(r, "smart-before");
    const smartAfter = json(r, "smart-after");
    expect(smartAfter.host_write_commands).toBeGreaterThan(smartBefore.host_write_commands);
    // Controller resets keep power: they are not unsafe shutdowns (they were counted before).
    expect(json(r, "smart-after-resets").unsafe_shutdowns).toBe(smartBefore.unsafe_shutdowns);

    // The probe: QEMU's device reset at power-on, SeaBIOS enables the controller and registers
    // the namespace as a boot drive (and leaves it enabled), then Linux's driver disables it
    // (nvme_pci_configure_admin_queue) and enables it again, with nothing in dmesg about
    // timeouts, aborts or failed commands.
    expect(events.slice(eventsBefore, eventsAtDisk).map((e) => e.kind)).toEqual(["reset", "enabled", "reset", "enabled"]);
    expect(readFileSync(firmwareLog, "utf8")).toMatch(new RegExp(`^drive 0x[0-9a-f]+: .* s=${SIZE / 512}$`, "m"));
    const probe = result(r, "probe-dmesg");
    expect(probe).toContain("nvme nvme0: pci function");
    expect(probe).not.toMatch(/timeout|abort|reset|fail|error/i);

    for (const name of ["fio", "fio-after-resets", "fio-after-rebind"]) {
      const job = json(r, name).jobs[0];
      expect(job.error, name).toBe(0);
      expect(job.write.io_bytes, name).toBeGreaterThan(0);
      expect(job.read.io_bytes, `${name}: the verify pass read back what was written`).toBe(job.write.io_bytes);
    }
    expect(result(r, "state-after-resets")).toBe("live");
    expect(Number(result(r, "rebound")) * 512).toBe(SIZE);

    // The guest's poweroff ran the driver's shutdown: CC.SHN seen, CSTS.SHST complete.
    const seen = events.slice(eventsBefore).map((e) => e.kind);
    expect(seen).not.toContain("fatal");
    expect(seen.filter((k) => k === "enabled").length).toBeGreaterThanOrEqual(1 + 20 + 3);
    expect(nvme.stats.shutdowns).toBeGreaterThan(shutdownsBefore);
    expect(seen.at(-1)).toBe("shutdown");
    expect(nvme.csts & CSTS_SHST_MASK).toBe(CSTS_SHST_COMPLETE);
  }, 300_000);
});
