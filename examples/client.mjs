// A vfio-user client: connects to a device, prints its config header and regions, and reads
// the first registers of a BAR. Against examples/doorbell-device.mjs it also writes the RAM
// BAR, enables MSI, rings the doorbell and waits for the interrupt.
//
//   node examples/client.mjs [SOCKET] [BAR]          (default ./doorbell.sock, BAR 0)
import { connectVfioUser, enableIrqs, PciRegion, PciIrq } from "wasmdev";
import { setTimeout as delay } from "node:timers/promises";

const [socketPath = "doorbell.sock", barArg = "0"] = process.argv.slice(2);
const hex = (v, digits) => v.toString(16).padStart(digits, "0");

const client = await connectVfioUser(socketPath);
try {
  const config = await client.readRegion(PciRegion.CONFIG, 0, 64);
  const cfg = new DataView(config.buffer, config.byteOffset, config.length);
  const vendor = cfg.getUint16(0x00, true);
  const device = cfg.getUint16(0x02, true);
  const classCode = cfg.getUint32(0x08, true) >>> 8;
  console.log(`device ${hex(vendor, 4)}:${hex(device, 4)} class ${hex(classCode, 6)}`);

  const { regions } = await client.probe();
  for (const r of regions.slice(PciRegion.BAR0, PciRegion.BAR5 + 1)) {
    if (r.size === 0n) continue;
    const access = `${r.readable ? "r" : "-"}${r.writable ? "w" : "-"}${r.mmappable ? "m" : "-"}`;
    console.log(`BAR ${r.index}: ${r.size} bytes ${access}`);
  }

  // The first registers as a driver reads them: 4-byte loads (a device may answer other
  // sizes differently; QEMU's edu returns all-ones for 8-byte reads of its low registers).
  const bar = Number(barArg);
  const words = [];
  for (let offset = 0; offset < Math.min(16, Number(regions[bar].size)); offset += 4) {
    words.push(hex(await client.readValue(bar, offset, 4), 8));
  }
  console.log(`BAR ${bar} @0: ${words.join(" ")}`);

  if (vendor === 0x1234 && device === 0xbe11) {
    // The doorbell example: RAM in BAR 0, the doorbell at BAR 2 + 0x04, its count at + 0x08.
    await client.writeRegion(0, 0x100, new TextEncoder().encode("hello, device"));
    console.log(`BAR 0 @0x100: ${new TextDecoder().decode(await client.readRegion(0, 0x100, 13))}`);

    const disableMsi = await enableIrqs(client, PciIrq.MSI, 1);
    const irq = new Promise((resolve) => client.once("irq", resolve));
    await client.writeValue(2, 0x04, 4, 42);
    const event = await Promise.race([irq, delay(5000).then(() => null)]);
    if (event === null) throw new Error("no MSI within 5 s of ringing the doorbell");
    const rung = await client.readValue(2, 0x08, 4);
    console.log(`MSI vector ${event.vector} after the doorbell; rung ${rung} time(s)`);
    await disableMsi();
  }
} finally {
  client.close();
}
