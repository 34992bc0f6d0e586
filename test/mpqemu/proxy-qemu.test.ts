// Our proxy drives QEMU 7.2's own remote (-machine x-remote) hosting real QEMU devices; the
// expected values come from QEMU itself: the same devices in a native q35 VM, read through HMP.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MpqemuProxy, type ProbeInfo } from "../../src/mpqemu/proxy.js";
import { HmpVm, killAllQemu, parseInfoPci, qemuAvailable, qemuRemoteCommand } from "./harness.js";

const haveQemu = qemuAvailable();

// Native placement: device slot -> (device, BAR addresses we program through CF8/CFC).
const NATIVE = [
  { dev: 4, name: "e1000" },
  { dev: 5, name: "lsi53c895a" },
  { dev: 6, name: "pci-testdev" },
] as const;

describe.skipIf(!haveQemu)("our proxy against QEMU's remote", () => {
  let vm: HmpVm;
  let infoPci: ReturnType<typeof parseInfoPci>;
  const proxies: MpqemuProxy[] = [];

  async function startProxy(device: string, extra: Partial<Parameters<typeof MpqemuProxy.start>[0]> = {}) {
    const p = await MpqemuProxy.start({ command: qemuRemoteCommand(device), stderr: "pipe", ...extra });
    proxies.push(p);
    return p;
  }

  /** Programs BAR `bar` of native device `dev` and enables decoding. */
  async function nativeMap(dev: number, bars: Record<number, number>) {
    for (const [bar, addr] of Object.entries(bars)) await vm.cfgWrite(dev, 0x10 + 4 * Number(bar), 4, addr);
    await vm.cfgWrite(dev, 0x04, 2, 0x7);
  }

  beforeAll(async () => {
    vm = await HmpVm.start({ args: NATIVE.map((d) => `-device ${d.name},addr=0x${d.dev.toString(16)}`).join(" ").split(" "), memfd: false });
    infoPci = parseInfoPci(await vm.cmd("info pci"));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await vm?.quit();
    await killAllQemu();
  });

  async function expectIdentityMatches(info: ProbeInfo, dev: number) {
    const native = infoPci.get(dev)!;
    expect(info.vendorId).toBe(native.vendorId);
    expect(info.deviceId).toBe(native.deviceId);
    expect(info.subsystemVendorId).toBe(native.subsystemVendorId);
    expect(info.subsystemId).toBe(native.subsystemId);
    expect(info.classCode).toBe((await vm.cfgRead(dev, 0x08)) >>> 8);
    expect(info.revision).toBe((await vm.cfgRead(dev, 0x08)) & 0xff);
    expect(info.interruptPin).toBe(await vm.cfgRead(dev, 0x3d, 1));
    // Every BAR QEMU reports, with the same size (the ROM BAR is not proxied).
    const nativeBars = [...native.bars].filter(([n]) => n < 6).map(([n, b]) => ({ index: n, size: BigInt(b.size), io: b.kind === "I/O" }));
    expect(info.bars.map((b) => ({ index: b.index, size: b.size, io: b.kind === "io" }))).toEqual(nativeBars);
  }

  it("e1000: ids, class, BAR sizes and registers match QEMU's own e1000", async () => {
    const proxy = await startProxy("e1000");
    const info = await proxy.probe();
    expect(info.vendorId).toBe(0x8086);
    expect(info.deviceId).toBe(0x100e);
    await expectIdentityMatches(info, 4);
    const bars = await proxy.programBars(info);
    // Registers 0x00..0x3c and the receive address (MAC 52:54:00:12:34:56) of BAR0.
    await nativeMap(4, { 0: 0xfe000000, 1: 0xd000 });
    const native = await vm.readWords(0xfe000000n, 16);
    const ours: number[] = [];
    for (let off = 0; off < 64; off += 4) ours.push(Number(await proxy.barRead(0, off, 4)));
    expect(ours).toEqual(native);
    expect(Number(await proxy.barRead(0, 0x5400, 4))).toBe((await vm.readWords(0xfe005400n, 1))[0]);
    expect(await proxy.barRead(0, 0x5400, 4)).toBe(0x12005452n);
    expect(await proxy.barRead(0, 0x5404, 2)).toBe(0x5634n);
    expect(await proxy.barRead(0, 0x5400, 1)).toBe(0x52n);
    // Config space as the programmed BAR addresses and command register left it.
    expect(((await proxy.configRead(0x10, 4)) & ~0xf) >>> 0).toBe(Number(bars[0].address));
    expect((await proxy.configRead(0x04, 2)) & 0x7).toBe(0x7);
  });

  it("writes through the proxy are read back, at every access size the device accepts", async () => {
    const e1000 = await startProxy("e1000");
    await e1000.programBars(await e1000.probe());
    // RDBAL (0x2800): a plain storage register; e1000 registers take 4-byte accesses only
    // (QEMU widens a 2-byte read to the whole register and returns its low half).
    await e1000.barWrite(0, 0x2800, 4, 0x12345670);
    expect(await e1000.barRead(0, 0x2800, 4)).toBe(0x12345670n);
    expect(await e1000.barRead(0, 0x2800, 2)).toBe(0x5670n);
    // lsi53c895a's script RAM (BAR2) takes 1, 2, 4 and 8-byte accesses.
    const lsi = await startProxy("lsi53c895a");
    await lsi.programBars(await lsi.probe());
    await lsi.barWrite(2, 0x200, 8, 0xaabbccdd_11223344n);
    expect(await lsi.barRead(2, 0x200, 8)).toBe(0xaabbccdd_11223344n);
    expect(await lsi.barRead(2, 0x204, 4)).toBe(0xaabbccddn);
    expect(await lsi.barRead(2, 0x202, 2)).toBe(0x1122n);
    await lsi.barWrite(2, 0x201, 1, 0xee);
    expect(await lsi.barRead(2, 0x200, 4)).toBe(0x1122ee44n);
  });

  it("e1000: INTx through the irqfd, re-raised after EOI while asserted (level semantics)", async () => {
    const proxy = await startProxy("e1000");
    await proxy.programBars(await proxy.probe());
    expect(proxy.intx).toBe(false);
    await proxy.barWrite(0, 0xd0, 4, 0x1); // IMS: TXDW
    await proxy.barWrite(0, 0xc8, 4, 0x1); // ICS: set TXDW -> interrupt
    // INTx arrives asynchronously (QEMU's remote signals the irqfd, our event loop polls it).
    // The bound is the proxy's liveness timeout: a remote that cannot react within it counts
    // as lost anyway; a remote that dies fails the wait at once with the lost-contact error.
    await proxy.waitIntx(3000);
    expect(proxy.intx).toBe(true);
    proxy.eoi(); // still asserted in the device: the remote re-raises on resample
    expect(proxy.intx).toBe(false);
    await proxy.waitIntx(3000);
    expect(await proxy.barRead(0, 0xc0, 4)).toBe(0x1n); // ICR read clears the cause
    proxy.eoi();
    await new Promise((r) => setTimeout(r, 200));
    expect(proxy.intx).toBe(false);
  });

  it("lsi53c895a: ids, BAR sizes, registers and script RAM match QEMU's own", async () => {
    const proxy = await startProxy("lsi53c895a");
    const info = await proxy.probe();
    await expectIdentityMatches(info, 5);
    await proxy.programBars(info);
    await nativeMap(5, { 0: 0xd100, 1: 0xfe100000, 2: 0xfe102000 });
    const native = await vm.readWords(0xfe100000n, 8);
    const ours: number[] = [];
    for (let off = 0; off < 32; off += 4) ours.push(Number(await proxy.barRead(1, off, 4)));
    expect(ours).toEqual(native);
    // Script RAM (BAR2) is plain memory in the remote.
    await proxy.barWrite(2, 0x100, 4, 0xcafef00d);
    expect(await proxy.barRead(2, 0x100, 4)).toBe(0xcafef00dn);
    expect(await proxy.barRead(2, 0x102, 1)).toBe(0xfen);
  });

  it("pci-testdev: ids, BAR sizes and both BARs' contents match QEMU's own", async () => {
    const proxy = await startProxy("pci-testdev");
    const info = await proxy.probe();
    await expectIdentityMatches(info, 6);
    await proxy.programBars(info);
    await nativeMap(6, { 0: 0xfe200000, 1: 0xd200 });
    const native = await vm.readWords(0xfe200000n, 16);
    const ours: number[] = [];
    for (let off = 0; off < 64; off += 4) ours.push(Number(await proxy.barRead(0, off, 4)));
    expect(ours).toEqual(native);
    const io = info.bars.find((b) => b.kind === "io")!;
    for (let off = 0; off < 16; off += 4) {
      expect(Number(await proxy.barRead(io.index, off, 4))).toBe(await vm.inPort(0xd200 + off, 4));
    }
  });

  it("reset reaches the device (e1000 registers return to their reset values)", async () => {
    const logs: string[] = [];
    const proxy = await startProxy("e1000", { log: (l) => logs.push(l) });
    // start() saw QEMU's start-up machine reset clear its cache-line-size mark.
    expect(logs).toEqual([]);
    expect(await proxy.configRead(0x0c, 1)).toBe(0);
    await proxy.programBars(await proxy.probe());
    await proxy.barWrite(0, 0x2800, 4, 0x12345670);
    expect(await proxy.barRead(0, 0x2800, 4)).toBe(0x12345670n);
    await proxy.configWrite(0x0c, 1, 0x10);
    await proxy.reset();
    // QEMU's DEVICE_RESET runs the device's reset, not a bus reset: BARs and the rest of
    // config space stay (which is why start() can tell the start-up reset by the mark).
    expect(await proxy.barRead(0, 0x2800, 4)).toBe(0n);
    expect(await proxy.barRead(0, 0x5400, 4)).toBe(0x12005452n);
    expect(await proxy.configRead(0x0c, 1)).toBe(0x10);
  });

  it("a hung remote becomes a 'lost contact' error, not a hang", async () => {
    const proxy = await startProxy("pci-testdev", { timeoutMs: 300, heartbeatMs: 100 });
    const lost = new Promise<Error>((resolve) => proxy.once("lost", resolve));
    proxy.child!.kill("SIGSTOP");
    const pending = proxy.configRead(0, 4);
    await expect(pending).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT", message: expect.stringMatching(/lost contact with device/) });
    expect((await lost).message).toMatch(/no reply to PCI_CFGREAD within 300 ms/);
    await expect(proxy.configRead(0, 2)).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT" });
    proxy.child!.kill("SIGCONT");
  });

  it("QEMU's remote answers all-ones to an access no BAR decodes, then exits: reported as lost contact", async () => {
    const proxy = await startProxy("pci-testdev");
    await proxy.programBars(await proxy.probe());
    const lost = new Promise<Error>((r) => proxy.once("lost", r));
    expect(await proxy.busRead("mem", 0xdead0000n, 4)).toBe(0xffffffffn);
    expect((await lost).message).toMatch(/lost contact with device/);
    await expect(proxy.configRead(0, 4)).rejects.toMatchObject({ code: "MPQEMU_LOST_CONTACT" });
    // Everything QEMU wrote to stderr has been delivered once the pipe closed.
    const stderr = proxy.child!.stderr!;
    if (!stderr.closed) await new Promise((r) => stderr.once("close", r));
    expect(proxy.stderrTail).toMatch(/Bad address dead0000 for mem read/);
  });

  it("an idle remote that dies is noticed by the heartbeat", async () => {
    const proxy = await startProxy("pci-testdev", { timeoutMs: 500, heartbeatMs: 50 });
    const lost = new Promise<Error>((resolve) => proxy.once("lost", resolve));
    proxy.child!.kill("SIGKILL");
    expect((await lost).message).toMatch(/lost contact with device/);
  });

  it("a remote that never answers fails start() instead of hanging", async () => {
    // `sleep` keeps the socket open without ever replying.
    await expect(MpqemuProxy.start({ command: ["sh", "-c", "exec sleep 30", "{fd}"], startTimeoutMs: 300, heartbeatMs: 0 })).rejects.toMatchObject({
      code: "MPQEMU_LOST_CONTACT",
      message: expect.stringMatching(/no reply to PCI_CFGWRITE within 300 ms/), // the start-up mark, first in line
    });
  });
});
