// QEMU as the VMM: serves examples/doorbell-device.mjs and attaches QEMU's vfio-user-pci
// (QEMU ≥ 10.1) to it. QEMU runs under `-accel qtest`, which lets this script play the guest:
// it reads config space through ports 0xcf8/0xcfc, places the BARs, uses the RAM BAR, enables
// MSI and rings the doorbell, all through QEMU's own PCI and vfio-user code.
//
//   QEMU=qemu-system-x86_64 node examples/qemu-attach.mjs
//
// QEMU is the command that starts qemu-system-x86_64 (words separated by spaces; default
// qemu-system-x86_64).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { VfioUserServer } from "wasmdev";
import { createDoorbellDevice, REG } from "./doorbell-device.mjs";

const [qemu, ...qemuArgs] = (process.env.QEMU ?? "qemu-system-x86_64").split(" ").filter(Boolean);
const DEVFN = 0x08; // addr=0x1 below: slot 1, function 0
const RAM_BAR = 0xfd000000;
const REGS_BAR = 0xfe000000;
const MSI_TARGET = 0x10000; // guest RAM: QEMU delivers an MSI as a memory write of its data
const MSI_DATA = 0x4d53;

const dir = mkdtempSync(join(tmpdir(), "wasmdev-qemu-"));
const socketPath = join(dir, "doorbell.sock");
const { fn, state } = createDoorbellDevice();
const server = VfioUserServer.listen({ device: fn, socketPath });

const child = spawn(qemu, [
  ...qemuArgs,
  "-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none", "-m", "64M",
  "-qtest", "stdio", "-qtest-log", "/dev/null",
  "-device", JSON.stringify({ driver: "vfio-user-pci", id: "d0", addr: "0x1", socket: { type: "unix", path: socketPath } }),
], { stdio: ["pipe", "pipe", "inherit"] });
const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal)));

// qtest: one command per line, answered by "OK [value]" or "FAIL ...".
const replies = [];
createInterface({ input: child.stdout }).on("line", (line) => replies.shift()?.(line));
const qtest = (command) =>
  new Promise((resolve, reject) => {
    replies.push((line) => (line.startsWith("OK") ? resolve(line.slice(2).trim()) : reject(new Error(`qtest ${command}: ${line}`))));
    child.stdin.write(command + "\n");
  });
const h = (v) => `0x${(v >>> 0).toString(16)}`;
const configRead = async (offset) => {
  await qtest(`outl 0xcf8 ${h(0x80000000 | (DEVFN << 8) | offset)}`);
  return Number(await qtest("inl 0xcfc")) >>> 0;
};
const configWrite = async (offset, value) => {
  await qtest(`outl 0xcf8 ${h(0x80000000 | (DEVFN << 8) | offset)}`);
  await qtest(`outl 0xcfc ${h(value)}`);
};

try {
  const ids = await Promise.race([configRead(0x00), exited.then((c) => Promise.reject(new Error(`QEMU exited (${c})`)))]);
  console.log(`QEMU sees ${(ids & 0xffff).toString(16)}:${(ids >>> 16).toString(16)} at 00:01.0`);

  await configWrite(0x10, RAM_BAR);
  await configWrite(0x18, REGS_BAR);
  await configWrite(0x04, (await configRead(0x04)) | 0x6); // memory decode + bus master
  await qtest(`writel ${h(RAM_BAR + 0x40)} 0xcafef00d`);
  console.log(`RAM BAR through QEMU: ${h(Number(await qtest(`readl ${h(RAM_BAR + 0x40)}`)))}`);

  // Find the MSI capability (id 0x05) in the capability list and point it at guest RAM.
  let cap = (await configRead(0x34)) & 0xfc;
  while (cap && ((await configRead(cap)) & 0xff) !== 0x05) cap = ((await configRead(cap)) >>> 8) & 0xfc;
  if (!cap) throw new Error("no MSI capability");
  await configWrite(cap + 4, MSI_TARGET);
  await configWrite(cap + 8, 0);
  await configWrite(cap + 12, MSI_DATA);
  await configWrite(cap, (await configRead(cap)) | (1 << 16)); // Message Control: MSI enable

  await qtest(`writel ${h(REGS_BAR + REG.DOORBELL)} 0x2a`);
  // QEMU forwards the device's eventfd signal from its main loop: wait for the write to land.
  let msi = 0;
  for (let i = 0; i < 200 && msi !== MSI_DATA; i++) {
    msi = Number(await qtest(`readl ${h(MSI_TARGET)}`));
    if (msi !== MSI_DATA) await delay(10);
  }
  if (msi !== MSI_DATA) throw new Error("the doorbell's MSI did not arrive");
  const rung = Number(await qtest(`readl ${h(REGS_BAR + REG.COUNT)}`));
  console.log(`doorbell rung through QEMU: the device saw ${state.rung} ring(s) of ${h(state.last)}, QEMU reads count ${rung}, MSI data ${h(msi)} delivered`);
} finally {
  // SIGTERM is how QEMU shuts down cleanly under qtest (closing stdin alone does not end it).
  child.kill("SIGTERM");
  await exited;
  await server.close();
  fn.dispose();
  rmSync(dir, { recursive: true, force: true });
}
