// End-to-end over a real socket: interrupts over eventfds, the edu DMA engine through a
// DMA_MAP'ed memfd and through fd-less regions (DMA_READ/DMA_WRITE to the client), dirty-page
// logging, migration between two servers, and resource release on disconnect.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { VfioUserServer } from "../../src/vfio-user/server/index.js";
import {
  Command,
  Errno,
  IrqSetFlag,
  PciIrq,
  DeviceFeature,
  DeviceFeatureFlag,
  MigrationState,
  MigrationFlag,
  DmaMapFlag,
  DmaUnmapFlag,
  MessageWriter,
  WireError,
  decodeRegionReadReply,
  decodeDmaWriteRequest,
  decodeDmaReadRequest,
  decodeDeviceFeature,
  decodeMigDeviceState,
  decodeMigrationFeature,
  decodeDmaLoggingReport,
  decodeMigDataReadReply,
  decodeDmaUnmapReply,
  writeIrqSetRequest,
  writeRegionReadRequest,
  writeRegionWriteRequest,
  writeDmaMapRequest,
  writeDmaUnmapRequest,
  writeDmaWriteReply,
  writeDmaReadReply,
  writeDeviceFeatureRequest,
  writeMigDataReadRequest,
  writeMigDataWriteRequest,
  encodeMigDeviceState,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  writeErrorReply,
} from "../../src/vfio-user/wire/index.js";
import { createEdu, EDU_REG, EDU_DMA_START, EDU_ID_VALUE } from "../../src/devices/edu.js";
import { createThroughputDevice, THROUGHPUT_REG } from "../../src/devices/throughput.js";
import { memfdCreate, mmapFd, type MappedRegion } from "../../src/transport/shm.js";
import { closeFd } from "../../src/transport/fd.js";
import { EventFd } from "../../src/transport/eventfd.js";
import type { PciFunction } from "../../src/core/pci/api.js";
import { createPciFunction } from "../../src/core/pci/function.js";
import { RawClient, sleep, openFdCount, expectFdCount, waitNoSession, type ReceivedFrame } from "./raw-client.js";
import { Bytes, message, toHex } from "./bytes.js";

let seq = 0;
const socketPath = () => join(tmpdir(), `wasmdev-vfu-dma-${process.pid}-${++seq}.sock`);

function ok(f: ReceivedFrame): ReceivedFrame {
  expect(f.flags & 0x20, `unexpected error reply ${f.error}`).toBe(0);
  return f;
}
function err(f: ReceivedFrame, errno: number): void {
  expect(f.flags & 0x20).toBe(0x20);
  expect(f.error).toBe(errno);
}

async function rd(c: RawClient, region: number, offset: number, size: 4 | 8 = 4): Promise<bigint> {
  writeRegionReadRequest(c.w, c.id(), offset, 0, region, size);
  const r = decodeRegionReadReply(ok(await c.request(c.w.take())).body);
  if (r instanceof WireError) throw r;
  const dv = new DataView(r.data.buffer, r.data.byteOffset, size);
  return size === 4 ? BigInt(dv.getUint32(0, true)) : dv.getBigUint64(0, true);
}
async function wr(c: RawClient, region: number, offset: number, value: bigint | number, size: 4 | 8 = 4): Promise<void> {
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  if (size === 4) dv.setUint32(0, Number(value) >>> 0, true);
  else dv.setBigUint64(0, BigInt(value), true);
  writeRegionWriteRequest(c.w, c.id(), offset, 0, region, b);
  ok(await c.request(c.w.take()));
}
async function setIrqs(c: RawClient, index: number, flags: number, start: number, count: number, fds: number[] = [], data?: Uint8Array): Promise<ReceivedFrame> {
  writeIrqSetRequest(c.w, c.id(), { flags, index, start, count, data });
  return c.request(c.w.take(), fds);
}
/** Waits for an eventfd's counter to become non-zero; returns it (0 on timeout). */
async function waitSignal(e: EventFd, ms = 1000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const n = e.read();
    if (n > 0 || Date.now() > deadline) return n;
    await sleep(2);
  }
}
async function eduDma(c: RawClient, src: bigint, dst: bigint, count: number, cmd: number): Promise<void> {
  await wr(c, 0, EDU_REG.DMA_SRC, src, 8);
  await wr(c, 0, EDU_REG.DMA_DST, dst, 8);
  await wr(c, 0, EDU_REG.DMA_CNT, count, 8);
  await wr(c, 0, EDU_REG.DMA_CMD, cmd, 8);
  for (let i = 0; i < 500; i++) {
    if (((await rd(c, 0, EDU_REG.DMA_CMD, 8)) & 1n) === 0n) return;
    await sleep(2);
  }
  throw new Error("edu DMA did not finish");
}
async function feature(c: RawClient, flags: number, data?: Uint8Array, argsz?: number): Promise<ReceivedFrame> {
  writeDeviceFeatureRequest(c.w, c.id(), flags, data, argsz);
  return c.request(c.w.take());
}

const IOVA = 0x100000n;
const RAM = 0x100000;

describe("edu over vfio-user: interrupts, DMA, dirty logging", () => {
  let server: VfioUserServer;
  let path: string;
  let device: PciFunction;
  let client: RawClient;
  let memfd: number;
  let ram: MappedRegion;
  let logs: string[];

  beforeEach(async () => {
    path = socketPath();
    logs = [];
    device = createEdu({ dmaDelayMs: 1 }).fn;
    server = VfioUserServer.listen({ device, socketPath: path, log: (l) => logs.push(l) });
    client = await RawClient.negotiated(path, { maxMsgFds: 8, migration: { pgsize: 4096 } });
    memfd = memfdCreate("guest-ram", RAM);
    ram = mmapFd(memfd, 0, RAM, { writable: true });
  });

  afterEach(async () => {
    client.close();
    await server.close();
    ram.unmap();
    closeFd(memfd);
  });

  async function mapRam(): Promise<void> {
    writeDmaMapRequest(client.w, client.id(), { flags: DmaMapFlag.READ | DmaMapFlag.WRITE, offset: 0n, address: IOVA, size: BigInt(RAM) });
    ok(await client.request(client.w.take(), [memfd]));
  }

  it("INTx: eventfd trigger, automask, re-signal on unmask while still asserted", async () => {
    const e = EventFd.create();
    ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd]));
    await wr(client, 0, EDU_REG.IRQ_RAISE, 1);
    expect(await waitSignal(e)).toBe(1);
    // Automasked: lowering and raising again does not signal until the client unmasks.
    await wr(client, 0, EDU_REG.IRQ_ACK, 1);
    await wr(client, 0, EDU_REG.IRQ_RAISE, 2);
    expect(await waitSignal(e, 30)).toBe(0);
    ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 1));
    expect(await waitSignal(e)).toBe(1);
    // Deasserted at unmask: no signal.
    await wr(client, 0, EDU_REG.IRQ_ACK, 2);
    ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 1));
    expect(await waitSignal(e, 30)).toBe(0);
    // The client can trigger it itself.
    ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 1));
    expect(await waitSignal(e)).toBe(1);
    e.close();
  });

  /**
   * Waits until the server has read `e` (the counter the two sides share is back to 0; the
   * kernel shows it in fdinfo without consuming it), one server round trip per check.
   */
  async function consumedByServer(e: EventFd): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      const info = readFileSync(`/proc/self/fdinfo/${e.fd}`, "utf8");
      if (/eventfd-count:\s*0\b/.test(info)) return;
      await rd(client, 0, EDU_REG.ID);
    }
    throw new Error(`the server never read eventfd ${e.fd}`);
  }

  it("INTx resample: an eventfd given with ACTION_UNMASK is watched (its signal unmasks), never written; one with ACTION_MASK masks", async () => {
    // SET_IRQS payload as bytes (argsz, flags, index, start, count): DATA_EVENTFD 0x4 with
    // ACTION_MASK 0x8 / ACTION_UNMASK 0x10 / ACTION_TRIGGER 0x20, as QEMU sends them under KVM.
    const setIrq = (flags: number, index: number) =>
      message(client.id(), Command.DEVICE_SET_IRQS, 0, new Bytes().u32(20).u32(flags).u32(index).u32(0).u32(1));
    const trigger = EventFd.create();
    const resample = EventFd.create();
    ok(await client.request(setIrq(0x4 | 0x20, PciIrq.INTX), [trigger.fd]));
    ok(await client.request(setIrq(0x4 | 0x10, PciIrq.INTX), [resample.fd]));
    const signalled = (e: EventFd) => new Promise<number>((resolve) => e.onReadable((n) => { e.onReadable(null); resolve(n); }));

    // The device signals the trigger from inside the write's handler, before its reply.
    await wr(client, 0, EDU_REG.IRQ_RAISE, 1);
    expect(trigger.read()).toBe(1);
    // Automasked; still asserted. The server has not written the resample fd.
    expect(resample.read()).toBe(0);
    // The VMM (KVM's resampler on the guest's EOI) signals the resample fd: the server unmasks,
    // sees the line still asserted and signals again.
    const again = signalled(trigger);
    resample.signal();
    expect(await again).toBe(1);
    // Acknowledged, then the resample fd fires: no new interrupt; a later raise signals.
    await wr(client, 0, EDU_REG.IRQ_ACK, 1);
    const third = signalled(trigger);
    resample.signal();
    await wr(client, 0, EDU_REG.IRQ_RAISE, 4);
    expect(await third).toBe(1);
    expect(resample.read()).toBe(0);

    // ACTION_MASK with an eventfd: its signal masks INTx; a raise while masked stays pending
    // until the unmask.
    await wr(client, 0, EDU_REG.IRQ_ACK, 4);
    const masker = EventFd.create();
    ok(await client.request(setIrq(0x4 | 0x8, PciIrq.INTX), [masker.fd]));
    resample.signal(); // clears the automask left by the last raise (the line is low: no signal)
    await consumedByServer(resample);
    masker.signal();
    await consumedByServer(masker);
    await wr(client, 0, EDU_REG.IRQ_RAISE, 8);
    expect(trigger.read()).toBe(0);
    ok(await client.request(setIrq(0x1 | 0x10, PciIrq.INTX), []));
    expect(trigger.read()).toBe(1);
    for (const e of [trigger, resample, masker]) e.close();
  });

  it("MSI: enabling the vector switches edu to MSI; masked interrupts are pending until unmask", async () => {
    const e = EventFd.create();
    ok(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd]));
    expect(device.irq.msiEnabled).toBe(true);
    await wr(client, 0, EDU_REG.IRQ_RAISE, 1);
    expect(await waitSignal(e)).toBe(1);
    ok(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 1, [], Uint8Array.of(1)));
    await wr(client, 0, EDU_REG.IRQ_RAISE, 1);
    expect(await waitSignal(e, 30)).toBe(0);
    ok(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 1));
    expect(await waitSignal(e)).toBe(1);
    // count 0 + DATA_NONE + TRIGGER disables the index: edu falls back to INTx.
    ok(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 0));
    expect(device.irq.msiEnabled).toBe(false);
    e.close();
  });

  it("SET_IRQS validation: index, range, flag combinations, fd count", async () => {
    const e = EventFd.create();
    err(await setIrqs(client, 5, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 1), Errno.EINVAL);
    err(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 2), Errno.EINVAL);
    err(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_NONE | IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 0, 1, [], Uint8Array.of(1)), Errno.EINVAL);
    err(await setIrqs(client, PciIrq.MSI, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER | IrqSetFlag.ACTION_MASK, 0, 1), Errno.EINVAL);
    err(await setIrqs(client, PciIrq.ERR, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, 0, 1), Errno.EINVAL);
    err(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd, e.fd]), Errno.EINVAL);
    // ERR and REQ take a trigger eventfd.
    ok(await setIrqs(client, PciIrq.REQ, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd]));
    server.current!.irqs.requestRelease();
    expect(await waitSignal(e)).toBe(1);
    e.close();
  });

  it("edu DMA through a DMA_MAP'ed memfd, both directions, with the DMA interrupt", async () => {
    await mapRam();
    const e = EventFd.create();
    ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd]));
    const pattern = Uint8Array.from({ length: 256 }, (_, i) => (i * 7 + 3) & 0xff);
    ram.bytes().set(pattern, 0x2000);
    await eduDma(client, IOVA + 0x2000n, BigInt(EDU_DMA_START), 256, 1); // RAM -> edu
    await eduDma(client, BigInt(EDU_DMA_START), IOVA + 0x8000n, 256, 1 | 2 | 4); // edu -> RAM, irq
    expect(Array.from(ram.bytes().subarray(0x8000, 0x8100))).toEqual(Array.from(pattern));
    expect(await waitSignal(e)).toBe(1);
    expect(await rd(client, 0, EDU_REG.IRQ_STATUS)).toBe(0x100n);
    e.close();
  });

  it("DMA_MAP / DMA_UNMAP errors: EEXIST for overlapping or identical ranges, ENOENT for unknown ones", async () => {
    await mapRam();
    const map = (address: bigint, size: bigint, fds: number[] = []) => {
      writeDmaMapRequest(client.w, client.id(), { flags: 3, offset: 0n, address, size });
      return client.request(client.w.take(), fds);
    };
    err(await map(IOVA, BigInt(RAM), [memfd]), Errno.EEXIST);
    err(await map(IOVA + 0x1000n, 0x1000n), Errno.EEXIST);
    err(await map(IOVA - 0x1000n, 0x2000n), Errno.EEXIST);
    ok(await map(IOVA + BigInt(RAM), 0x1000n)); // adjacent, no fd
    err(await map(0x10n, 0x1000n), Errno.EINVAL); // unaligned
    err(await map(0xffff_ffff_ffff_f000n, 0x2000n), Errno.EINVAL); // wraps
    writeDmaMapRequest(client.w, client.id(), { flags: 0, offset: 0n, address: 0x4000_0000n, size: 0x1000n });
    err(await client.request(client.w.take()), Errno.EINVAL); // no permissions
    // a memfd too small for the mapping
    const small = memfdCreate("small", 4096);
    err(await map(0x8000_0000n, 0x10000n, [small]), Errno.EINVAL);
    closeFd(small);
    const unmap = (address: bigint, size: bigint) => {
      writeDmaUnmapRequest(client.w, client.id(), { flags: 0, address, size });
      return client.request(client.w.take());
    };
    err(await unmap(0x7000_0000n, 0x1000n), Errno.ENOENT);
    err(await unmap(IOVA, 0x1000n), Errno.ENOENT); // partial
    const r = ok(await unmap(IOVA, BigInt(RAM)));
    expect(decodeDmaUnmapReply(r.body)).toMatchObject({ address: IOVA, size: BigInt(RAM) });
    expect(server.current!.dmaRegions().length).toBe(1);
    writeDmaUnmapRequest(client.w, client.id(), { flags: DmaUnmapFlag.ALL, address: 0n, size: 0n });
    ok(await client.request(client.w.take()));
    expect(server.current!.dmaRegions().length).toBe(0);
  });

  it("DMA to fd-less regions goes through DMA_READ / DMA_WRITE requests to the client", async () => {
    const base = 0x20_0000n;
    const memory = new Uint8Array(0x10000);
    for (let i = 0; i < 128; i++) memory[0x400 + i] = 0xa0 ^ i;
    const seen: number[] = [];
    client.onServerRequest = (f) => {
      seen.push(f.command);
      if (f.command === Command.DMA_WRITE) {
        const req = decodeDmaWriteRequest(f.body);
        if (req instanceof WireError) throw req;
        memory.set(req.data, Number(req.address - base));
        writeDmaWriteReply(client.w, f.msgId, req.address, req.count);
      } else {
        const req = decodeDmaReadRequest(f.body);
        if (req instanceof WireError) throw req;
        const at = Number(req.address - base);
        writeDmaReadReply(client.w, f.msgId, req.address, memory.subarray(at, at + req.count));
      }
      client.send(client.w.take());
    };
    writeDmaMapRequest(client.w, client.id(), { flags: 3, offset: 0n, address: base, size: BigInt(memory.length) });
    ok(await client.request(client.w.take()));
    await eduDma(client, base + 0x400n, BigInt(EDU_DMA_START), 128, 1);
    await eduDma(client, BigInt(EDU_DMA_START), base + 0x8000n, 128, 1 | 2);
    expect(seen).toEqual([Command.DMA_READ, Command.DMA_WRITE]);
    expect(Array.from(memory.subarray(0x8000, 0x8080))).toEqual(Array.from(memory.subarray(0x400, 0x480)));

    // An error reply from the client fails the device's DMA (edu logs and completes).
    client.onServerRequest = (f) => {
      writeErrorReply(client.w, f.msgId, f.command, Errno.EFAULT);
      client.send(client.w.take());
    };
    memory.fill(0, 0x9000, 0x9080);
    await eduDma(client, BigInt(EDU_DMA_START), base + 0x9000n, 128, 1 | 2);
    expect(memory.subarray(0x9000, 0x9080).every((b) => b === 0)).toBe(true);
  });

  it("accepts every DMA_WRITE reply shape peers send (16-byte, the spec's 12-byte, QEMU's header-only) and rejects a mismatched one", async () => {
    // Own server: edu's guest-error hook is the observable for a failed DMA.
    const guestErrors: string[] = [];
    const p2 = socketPath();
    const s2 = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1, onGuestError: (m) => guestErrors.push(m) }).fn, socketPath: p2, log: () => undefined });
    const c2 = await RawClient.negotiated(p2, { maxMsgFds: 8 });
    const base = 0x20_0000n;
    try {
      writeDmaMapRequest(c2.w, c2.id(), { flags: 3, offset: 0n, address: base, size: 0x10000n });
      ok(await c2.request(c2.w.take()));
      const shapes: [string, (id: number, address: bigint, count: number) => Uint8Array][] = [
        ["u64 count (libvfio-user)", (id, a, n) => message(id, Command.DMA_WRITE, 1, new Bytes().u64(a).u64(n))],
        ["u32 count (spec table)", (id, a, n) => message(id, Command.DMA_WRITE, 1, new Bytes().u64(a).u32(n))],
        ["header only (QEMU)", (id) => message(id, Command.DMA_WRITE, 1)],
        ["count that does not match", (id, a, n) => message(id, Command.DMA_WRITE, 1, new Bytes().u64(a).u64(n - 1))],
      ];
      for (const [name, reply] of shapes) {
        c2.onServerRequest = (f) => {
          const req = decodeDmaWriteRequest(f.body);
          if (req instanceof WireError) throw req;
          c2.send(reply(f.msgId, req.address, req.count));
        };
        guestErrors.length = 0;
        await eduDma(c2, BigInt(EDU_DMA_START), base + 0x1000n, 64, 1 | 2);
        if (name.startsWith("count")) expect(guestErrors.join("\n"), name).toMatch(/DMA failed/);
        else expect(guestErrors, name).toEqual([]);
      }
    } finally {
      c2.close();
      await s2.close();
    }
  });

  it("dirty-page logging: DMA_LOGGING_START / REPORT (clears) / STOP, and the dirty bitmap on DMA_UNMAP", async () => {
    await mapRam();
    const reportReq = (iova: bigint, length: bigint, page: bigint) =>
      feature(client, DeviceFeatureFlag.GET | DeviceFeature.DMA_LOGGING_REPORT, encodeDmaLoggingReport(iova, length, page), 8 + 24 + 64);
    err(await reportReq(IOVA, 0x10000n, 4096n), Errno.EINVAL); // not started
    ok(await feature(client, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_START, encodeDmaLoggingControl(4096n, [])));
    err(await feature(client, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_START, encodeDmaLoggingControl(4096n, [])), Errno.EBUSY);
    await eduDma(client, BigInt(EDU_DMA_START), IOVA + 0x3000n + 0xf80n, 0x100, 1 | 2); // straddles pages 3 and 4
    const bits = async () => {
      const f = decodeDeviceFeature(ok(await reportReq(IOVA, 0x10000n, 4096n)).body);
      if (f instanceof WireError) throw f;
      const r = decodeDmaLoggingReport(f.data);
      if (r instanceof WireError) throw r;
      return Array.from(r.bitmap);
    };
    expect(await bits()).toEqual([0x18, 0, 0, 0, 0, 0, 0, 0]);
    expect(await bits()).toEqual([0, 0, 0, 0, 0, 0, 0, 0]); // reading cleared it
    // libvfio-user's client leaves the bitmap out of argsz; the reply's argsz adds it.
    const small = ok(await feature(client, DeviceFeatureFlag.GET | DeviceFeature.DMA_LOGGING_REPORT, encodeDmaLoggingReport(IOVA, 0x10000n, 4096n), 8 + 24));
    expect(toHex(small.body)).toBe(toHex(new Bytes().u32(8 + 24 + 8).u32(DeviceFeatureFlag.GET | 8).u64(IOVA).u64(0x10000).u64(4096).u64(0).build()));
    err(await feature(client, DeviceFeatureFlag.GET | DeviceFeature.DMA_LOGGING_REPORT, encodeDmaLoggingReport(IOVA, 0x10000n, 4096n), 8 + 23), Errno.EINVAL);

    await eduDma(client, BigInt(EDU_DMA_START), IOVA + 0x5000n, 16, 1 | 2);
    writeDmaUnmapRequest(client.w, client.id(), { flags: 0, address: IOVA, size: BigInt(RAM), bitmap: { pgsize: 4096n, size: 32n } });
    const u = decodeDmaUnmapReply(ok(await client.request(client.w.take())).body);
    if (u instanceof WireError) throw u;
    expect(u.bitmap?.size).toBe(32n);
    expect(u.bitmap?.data[0]).toBe(0x20);
    expect(Array.from(u.bitmap!.data.subarray(1)).every((b) => b === 0)).toBe(true);
    ok(await feature(client, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_STOP));
    err(await feature(client, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_STOP), Errno.EINVAL);
  });

  it("DEVICE_FEATURE probing and unsupported features", async () => {
    ok(await feature(client, DeviceFeatureFlag.PROBE | DeviceFeatureFlag.GET | DeviceFeature.MIGRATION));
    err(await feature(client, DeviceFeatureFlag.PROBE | DeviceFeatureFlag.SET | DeviceFeature.MIGRATION), Errno.EOPNOTSUPP);
    // Spec: SET and PROBE replies repeat the request payload, argsz included.
    const probeFlags = DeviceFeatureFlag.PROBE | DeviceFeatureFlag.GET | DeviceFeature.MIGRATION;
    const probe = ok(await feature(client, probeFlags, Uint8Array.of(1, 2, 3, 4), 40));
    expect(toHex(probe.body)).toBe(toHex(new Bytes().u32(40).u32(probeFlags).raw([1, 2, 3, 4]).build()));
    const setFlags = DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE;
    const set = ok(await feature(client, setFlags, encodeMigDeviceState(MigrationState.RUNNING), 64));
    expect(toHex(set.body)).toBe(toHex(new Bytes().u32(64).u32(setFlags).u32(MigrationState.RUNNING).u32(0xffff_ffff).build()));
    err(await feature(client, DeviceFeatureFlag.GET | 3), Errno.EOPNOTSUPP);
    err(await feature(client, DeviceFeatureFlag.GET | DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE), Errno.EINVAL);
    const m = decodeDeviceFeature(ok(await feature(client, DeviceFeatureFlag.GET | DeviceFeature.MIGRATION, undefined, 8 + 8)).body);
    if (m instanceof WireError) throw m;
    expect(decodeMigrationFeature(m.data)).toEqual({ flags: MigrationFlag.STOP_COPY });
  });

  it("a client disconnect releases its DMA mappings and irq fds; the next client is accepted", async () => {
    client.close();
    await waitNoSession(server);
    const baseline = openFdCount();
    client = await RawClient.negotiated(path);
    await mapRam();
    const fds = [EventFd.create(), EventFd.create()];
    ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [fds[0].fd]));
    ok(await setIrqs(client, PciIrq.ERR, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [fds[1].fd]));
    expect(server.current!.dmaRegions().length).toBe(1);
    for (const e of fds) e.close();
    client.close();
    // Our own client socket is gone too, so the count returns exactly to the baseline.
    expect(await expectFdCount(baseline)).toBe(baseline);
    await waitNoSession(server);
    client = await RawClient.negotiated(path);
    expect(server.current!.dmaRegions().length).toBe(0);
    expect(await rd(client, 0, EDU_REG.ID)).toBe(BigInt(EDU_ID_VALUE));
  });
});

describe("interrupt fds a hostile client controls", () => {
  let server: VfioUserServer;
  let client: RawClient;
  beforeEach(async () => {
    const path = socketPath();
    server = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1, factorialDelayMs: 1 }).fn, socketPath: path });
    client = await RawClient.negotiated(path, { maxMsgFds: 8 });
  });
  afterEach(async () => {
    client.close();
    await server.close();
  });

  /** Fills the client's copy of an eventfd to the kernel's maximum: the server's next signal gets EAGAIN. */
  function saturate(e: EventFd): void {
    const max = Buffer.alloc(8);
    max.writeBigUInt64LE(0xffff_ffff_ffff_fffen);
    writeSync(e.fd, max);
  }

  it("a trigger eventfd whose counter the client filled: the register write that raises the interrupt still succeeds, and interrupts flow once the client drains it", async () => {
    const e = EventFd.create();
    try {
      ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd]));
      saturate(e);
      await wr(client, 0, EDU_REG.IRQ_RAISE, 1); // asserts INTx: the server's signal finds no room
      // The client handles "its" interrupt as a VMM does: drain, deassert at the device, unmask.
      expect(e.read()).toBeGreaterThan(0);
      await wr(client, 0, EDU_REG.IRQ_ACK, 1);
      ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 1));
      await wr(client, 0, EDU_REG.IRQ_RAISE, 1);
      expect(await waitSignal(e)).toBe(1);
    } finally {
      e.close();
    }
  });

  it("an interrupt raised from a device timer into an unsignallable eventfd does not take the server down", async () => {
    const e = EventFd.create();
    try {
      ok(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [e.fd]));
      saturate(e);
      await wr(client, 0, EDU_REG.STATUS, 0x80); // raise an interrupt when the factorial ends
      await wr(client, 0, EDU_REG.FACTORIAL, 5); // finishes in a timer, outside any request
      for (let i = 0; i < 200 && (await rd(client, 0, EDU_REG.STATUS)) & 1n; i++) await sleep(2);
      expect(await rd(client, 0, EDU_REG.FACTORIAL)).toBe(120n);
      expect(await rd(client, 0, EDU_REG.IRQ_STATUS)).toBe(1n); // the factorial interrupt was raised
      expect(await rd(client, 0, EDU_REG.ID)).toBe(BigInt(EDU_ID_VALUE));
    } finally {
      e.close();
    }
  });

  it("SET_IRQS with an fd that is not an eventfd: EINVAL, nothing assigned, the fd closed", async () => {
    const notEventFd = openSync("/dev/null", "r");
    try {
      await rd(client, 0, EDU_REG.ID);
      const baseline = openFdCount();
      err(await setIrqs(client, PciIrq.INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, [notEventFd]), Errno.EINVAL);
      expect(server.current!.irqs.hasTrigger(PciIrq.INTX, 0)).toBe(false);
      expect(await expectFdCount(baseline)).toBe(baseline);
      await wr(client, 0, EDU_REG.IRQ_RAISE, 1);
      expect(await rd(client, 0, EDU_REG.ID)).toBe(BigInt(EDU_ID_VALUE));
    } finally {
      closeSync(notEventFd);
    }
  });
});

describe("DMA requests toward a client with a tiny max_data_xfer_size", () => {
  it("a device DMA that would need more requests in flight than the server allows fails at once; the server keeps serving", async () => {
    // A device whose BAR0 register starts a DMA read of `length` bytes at IOVA 0.
    let length = 0;
    let outcome: string | undefined;
    const fn: PciFunction = createPciFunction({
      vendorId: 0x1234,
      deviceId: 0x5678,
      classCode: 0xff0000,
      bars: [{
        kind: "mem32",
        size: 4096,
        ops: {
          read: () => 0,
          write: (_offset, _size, value) => {
            length = Number(value);
            fn.dma!.read(0n, new Uint8Array(length)).then(
              () => (outcome = "done"),
              (e: Error) => (outcome = e.message),
            );
          },
          valid: { min: 4, max: 4 },
        },
      }],
    });
    const path = socketPath();
    const server = VfioUserServer.listen({ device: fn, socketPath: path, dmaRequestTimeoutMs: 60_000 });
    const c = await RawClient.negotiated(path, { maxMsgFds: 1, maxDataXferSize: 1 });
    let requests = 0;
    c.onServerRequest = () => requests++; // never answered
    try {
      writeDmaMapRequest(c.w, c.id(), { flags: 3, offset: 0n, address: 0n, size: 0x20000n });
      ok(await c.request(c.w.take()));
      // 70 000 one-byte DMA_READs would outnumber the 65 536 message ids.
      await wr(c, 0, 0, 70_000);
      for (let i = 0; i < 100 && outcome === undefined; i++) await sleep(5);
      expect(outcome).toMatch(/requests in flight/);
      expect(requests).toBe(0);
      expect(await rd(c, 7, 0)).toBe(0x56781234n);
    } finally {
      c.close();
      await server.close();
    }
  });
});

describe("migration v2 between two servers", () => {
  it("saves edu state from one server (STOP_COPY + MIG_DATA_READ) and loads it into another (RESUMING + MIG_DATA_WRITE)", async () => {
    const pathA = socketPath();
    const pathB = socketPath();
    const a = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1 }).fn, socketPath: pathA, maxDataXferSize: 1024 });
    const b = VfioUserServer.listen({ device: createEdu({ dmaDelayMs: 1 }).fn, socketPath: pathB });
    const ca = await RawClient.negotiated(pathA);
    const cb = await RawClient.negotiated(pathB);
    try {
      await wr(ca, 0, EDU_REG.LIVENESS, 0x1234);
      await wr(ca, 0, EDU_REG.STATUS, 0x80);
      await wr(ca, 0, EDU_REG.DMA_SRC, 0xabcdefn, 8);
      await wr(ca, 7, 0x04, 0x0006); // command register: memory + bus master
      const setState = async (c: RawClient, s: number) => {
        const r = decodeDeviceFeature(ok(await feature(c, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(s))).body);
        if (r instanceof WireError) throw r;
        return decodeMigDeviceState(r.data);
      };
      writeMigDataReadRequest(ca.w, ca.id(), 512);
      err(await ca.request(ca.w.take()), Errno.EINVAL); // not in STOP_COPY
      expect(await setState(ca, MigrationState.STOP_COPY)).toEqual({ deviceState: MigrationState.STOP_COPY, dataFd: -1 });
      writeMigDataReadRequest(ca.w, ca.id(), 4096);
      err(await ca.request(ca.w.take()), Errno.E2BIG); // above max_data_xfer_size
      const chunks: Uint8Array[] = [];
      for (;;) {
        writeMigDataReadRequest(ca.w, ca.id(), 1000);
        const r = decodeMigDataReadReply(ok(await ca.request(ca.w.take())).body);
        if (r instanceof WireError) throw r;
        chunks.push(r.data);
        if (r.size < 1000) break;
      }
      expect(chunks.length).toBeGreaterThan(2);
      await setState(ca, MigrationState.RUNNING);

      expect(await setState(cb, MigrationState.RESUMING)).toMatchObject({ deviceState: MigrationState.RESUMING });
      for (const ch of chunks) {
        writeMigDataWriteRequest(cb.w, cb.id(), ch);
        ok(await cb.request(cb.w.take()));
      }
      expect(await setState(cb, MigrationState.RUNNING)).toMatchObject({ deviceState: MigrationState.RUNNING });
      expect(await rd(cb, 0, EDU_REG.LIVENESS)).toBe(BigInt(~0x1234 >>> 0));
      expect(await rd(cb, 0, EDU_REG.STATUS)).toBe(0x80n);
      expect(await rd(cb, 0, EDU_REG.DMA_SRC, 8)).toBe(0xabcdefn);
      expect((await rd(cb, 7, 0x04)) & 0xffffn).toBe(0x0006n);

      // Garbage data: the load fails with EINVAL, the state becomes ERROR, reset recovers.
      await setState(cb, MigrationState.RESUMING);
      writeMigDataWriteRequest(cb.w, cb.id(), Uint8Array.of(1, 2, 3));
      ok(await cb.request(cb.w.take()));
      err(await feature(cb, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(MigrationState.RUNNING)), Errno.EINVAL);
      const g = decodeDeviceFeature(ok(await feature(cb, DeviceFeatureFlag.GET | DeviceFeature.MIG_DEVICE_STATE, undefined, 8 + 8)).body);
      expect(decodeMigDeviceState((g as { data: Uint8Array }).data)).toMatchObject({ deviceState: MigrationState.ERROR });
      err(await feature(cb, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(MigrationState.STOP)), Errno.EINVAL);
      ok(await cb.request(new Uint8Array([1, 0, Command.DEVICE_RESET, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])));
      expect(await setState(cb, MigrationState.STOP)).toMatchObject({ deviceState: MigrationState.STOP });
      err(await feature(cb, DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE, encodeMigDeviceState(MigrationState.PRE_COPY)), Errno.EINVAL);
    } finally {
      ca.close();
      cb.close();
      await a.close();
      await b.close();
    }
  });
});

describe("MSI-X over eventfds (throughput device)", () => {
  it("a doorbell fires MSI-X vector 0 once the client enabled it; masking holds it pending", async () => {
    const tp = createThroughputDevice({ dataSize: 4096 });
    const path = socketPath();
    const server = VfioUserServer.listen({ device: tp.fn, socketPath: path });
    const c = await RawClient.negotiated(path);
    const v0 = EventFd.create();
    const v1 = EventFd.create();
    try {
      ok(await setIrqs(c, PciIrq.MSIX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 2, [v0.fd, v1.fd]));
      expect(tp.fn.irq.msixEnabled).toBe(true);
      await wr(c, 2, THROUGHPUT_REG.CONTROL, 1);
      await wr(c, 2, THROUGHPUT_REG.DOORBELL, 42);
      expect(await waitSignal(v0)).toBe(1);
      expect(v1.read()).toBe(0);
      ok(await setIrqs(c, PciIrq.MSIX, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 2, [], Uint8Array.of(1, 0)));
      await wr(c, 2, THROUGHPUT_REG.DOORBELL, 43);
      expect(await waitSignal(v0, 30)).toBe(0);
      ok(await setIrqs(c, PciIrq.MSIX, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_UNMASK, 0, 2, [], Uint8Array.of(1, 1)));
      expect(await waitSignal(v0)).toBe(1);
      // Deassigning vector 0's eventfd (DATA_EVENTFD with no fds) leaves vector 1 enabled.
      ok(await setIrqs(c, PciIrq.MSIX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1));
      expect(server.current!.irqs.hasTrigger(PciIrq.MSIX, 0)).toBe(false);
      expect(server.current!.irqs.hasTrigger(PciIrq.MSIX, 1)).toBe(true);
    } finally {
      v0.close();
      v1.close();
      c.close();
      await server.close();
    }
  });
});
