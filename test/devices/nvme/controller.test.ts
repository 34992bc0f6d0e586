// The NVMe controller driven by a scripted host (test/devices/nvme/driver.ts): register and
// PCI identity, admin bring-up, every status the controller returns, I/O with each PRP shape,
// queue wrap, interrupts, reset and shutdown, shadow doorbells. Expected values come from the
// NVMe base spec 1.4 tables.
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createManualClock } from "../../../src/core/clock.js";
import { createFileBacking, type NvmeBacking } from "../../../src/devices/nvme/index.js";
import { NvmeHost, PAGE, SF, until } from "./driver.js";

const hosts: NvmeHost[] = [];
const host = (options: ConstructorParameters<typeof NvmeHost>[0] = {}) => {
  const h = new NvmeHost(options);
  hosts.push(h);
  return h;
};
afterEach(() => {
  while (hosts.length) hosts.pop()!.close();
});

const READ = 0x02;
const WRITE = 0x01;
const rw = (slba: number, blocks: number) => [slba, 0, blocks - 1];

describe("nvme: PCI function and registers", () => {
  it("is an NVM Express controller with a 64-bit BAR0, PM, MSI-X and PCIe capabilities", () => {
    const h = host({ msix: false });
    const fn = h.fn;
    expect(fn.readConfig(0x08, 4) >>> 8).toBe(0x010802);
    expect(fn.readConfig(0x10, 4) & 0x7).toBe(0x4); // memory, 64-bit
    fn.writeConfig(0x10, 4, 0xffffffff);
    fn.writeConfig(0x14, 4, 0xffffffff);
    expect(fn.readConfig(0x10, 4) >>> 0).toBe(0xffffc004); // 16 KiB
    expect(fn.readConfig(0x3d, 1)).toBe(1); // INTA#
    expect(h.capability(0x01)).not.toBe(0);
    expect(h.capability(0x10)).not.toBe(0);
    const msix = h.capability(0x11);
    expect((fn.readConfig(msix + 2, 2) & 0x7ff) + 1).toBe(17); // admin + 16 I/O queues
    expect(fn.readConfig(msix + 4, 4)).toBe(0x2000); // table in BAR0 at 0x2000
    expect(fn.readConfig(msix + 8, 4)).toBe(0x3000); // PBA in BAR0 at 0x3000
  });

  it("reports CAP (MQES, CQR, TO, DSTRD 0, CSS NVM, MPSMIN 0) and VS 1.4", () => {
    const h = host();
    const cap = h.rr64(0x00);
    expect(Number(cap & 0xffffn)).toBe(1023);
    expect(Number((cap >> 16n) & 1n)).toBe(1);
    expect(Number((cap >> 24n) & 0xffn)).toBeGreaterThan(0);
    expect(Number((cap >> 32n) & 0xfn)).toBe(0);
    expect(Number((cap >> 37n) & 0xffn)).toBe(1);
    expect(Number((cap >> 48n) & 0xfn)).toBe(0);
    expect(h.rr(0x08)).toBe(0x00010400);
    expect(h.rr(0x1c)).toBe(0);
  });

  it("enables with CC.EN and a valid admin queue; refuses a misaligned ASQ with CSTS.CFS", () => {
    const h = host();
    expect(h.enable() & 3).toBe(1);
    expect(h.disable() & 1).toBe(0);
    h.rw(0x24, 0x001f001f);
    h.rw64(0x28, 0x10800n);
    h.rw64(0x30, 0x20000n);
    expect(h.rr64(0x28)).toBe(0x10000n); // ASQ's low 12 bits are reserved
    h.rw64(0x28, 0x10000n);
    h.rw(0x14, 1 | (7 << 4)); // CSS 7: not NVM
    expect(h.rr(0x1c) & 3).toBe(2); // CFS, not ready
    h.rw(0x14, 0);
    expect(h.rr(0x1c)).toBe(0);
    h.rw(0x24, 0); // one-entry admin queues
    h.rw(0x14, 1);
    expect(h.rr(0x1c) & 3).toBe(2);
  });
});

describe("nvme: admin commands", () => {
  it("identifies the controller, the namespace, the active namespace list and its descriptors", async () => {
    const h = host({ size: 8 << 20, serial: "SER123" });
    h.enable();
    const ctrl = await h.identify(1);
    expect(ctrl.cqe.status).toBe(SF.SUCCESS);
    const d = new DataView(ctrl.data.buffer);
    expect(d.getUint16(0, true)).toBe(h.fn.readConfig(0, 2));
    expect(new TextDecoder().decode(ctrl.data.subarray(4, 24))).toBe("SER123".padEnd(20));
    expect(d.getUint32(80, true)).toBe(0x10400);
    expect(d.getUint16(256, true) & 0x100).toBe(0x100); // OACS: Doorbell Buffer Config
    expect(ctrl.data[259]).toBe(3); // AERL
    expect(ctrl.data[512]).toBe(0x66);
    expect(ctrl.data[513]).toBe(0x44);
    expect(d.getUint32(516, true)).toBe(1);
    expect(d.getUint16(520, true) & 0x0c).toBe(0x0c); // DSM + Write Zeroes
    expect(ctrl.data[525] & 1).toBe(1);
    const ns = await h.identify(0, 1);
    const nd = new DataView(ns.data.buffer);
    expect(nd.getBigUint64(0, true)).toBe(BigInt((8 << 20) / 512));
    expect(ns.data[128 + 2]).toBe(9);
    const list = await h.identify(2, 0);
    expect([...new Uint32Array(list.data.buffer, 0, 2)]).toEqual([1, 0]);
    expect([...new Uint32Array((await h.identify(2, 1)).data.buffer, 0, 1)]).toEqual([0]);
    const desc = await h.identify(3, 1);
    expect(desc.data[0]).toBe(2); // NGUID
    expect(desc.data[1]).toBe(16);
    expect(desc.data.subarray(4, 20)).toEqual(ns.data.subarray(104, 120));
    expect((await h.identify(0, 2)).cqe.status).toBe(SF.INVALID_NAMESPACE);
    expect((await h.identify(3, 0)).cqe.status).toBe(SF.INVALID_NAMESPACE);
    expect((await h.identify(0x1f)).cqe.status).toBe(SF.INVALID_FIELD);
  });

  it("reports a 4096-byte LBA format when asked", async () => {
    const h = host({ size: 4 << 20, lbaSize: 4096 });
    h.enable();
    const ns = await h.identify(0, 1);
    expect(new DataView(ns.data.buffer).getBigUint64(0, true)).toBe(1024n);
    expect(ns.data[130]).toBe(12);
  });

  it("gets and sets features, with their statuses", async () => {
    const h = host();
    h.enable();
    const get = (fid: number, sel = 0, dw11 = 0) => h.admin({ opcode: 0x0a, cdw: [fid | (sel << 8), dw11] });
    const set = (fid: number, dw11: number, save = false) => h.admin({ opcode: 0x09, cdw: [fid | (save ? 1 << 31 : 0), dw11] });
    let c = await set(0x07, (3 << 16) | 3);
    expect(c.status).toBe(SF.SUCCESS);
    expect(c.dw0).toBe((15 << 16) | 15);
    expect((await set(0x07, 0xffff)).status).toBe(SF.INVALID_FIELD);
    expect((await get(0x06)).dw0).toBe(1);
    expect((await set(0x06, 0)).status).toBe(SF.SUCCESS);
    expect((await get(0x06)).dw0).toBe(0);
    expect((await get(0x06, 1)).dw0).toBe(1); // default
    expect((await get(0x06, 3)).dw0 & 4).toBe(4); // changeable
    expect((await set(0x06, 1, true)).status).toBe(SF.NOT_SAVEABLE);
    expect((await set(0x08, 0x0a05)).status).toBe(SF.SUCCESS);
    expect((await get(0x08)).dw0).toBe(0x0a05);
    expect((await set(0x09, (1 << 16) | 3)).status).toBe(SF.SUCCESS);
    expect((await get(0x09, 0, 3)).dw0).toBe((1 << 16) | 3);
    expect((await set(0x09, 17)).status).toBe(SF.INVALID_FIELD); // vector 17 does not exist
    expect((await set(0x01, 0x03020107)).status).toBe(SF.SUCCESS);
    expect((await get(0x01)).dw0).toBe(0x03020107);
    expect((await set(0x02, 1)).status).toBe(SF.INVALID_FIELD); // one power state only
    expect((await set(0x02, 0)).status).toBe(SF.SUCCESS);
    expect((await get(0x04)).dw0).toBe(343);
    expect((await set(0x0b, 0xff)).status).toBe(SF.SUCCESS);
    expect((await get(0x0b)).dw0).toBe(0xff);
    expect((await get(0x0c)).status).toBe(SF.INVALID_FIELD); // APST unsupported
    expect((await get(0x06, 4)).status).toBe(SF.INVALID_FIELD);
    expect((await set(0x80, 0)).status).toBe(SF.INVALID_FIELD);
  });

  it("creates and deletes I/O queues with every check the spec lists", async () => {
    const h = host();
    h.enable();
    const base = h.alloc(16);
    const mkCq = (qid: number, size: number, flags = 3, iv = qid, prp = base) => h.admin({ opcode: 0x05, prp1: prp, cdw: [((size - 1) << 16) | qid, (iv << 16) | flags] });
    const mkSq = (qid: number, size: number, cqid: number, flags = 1, prp = base + 0x8000n) => h.admin({ opcode: 0x01, prp1: prp, cdw: [((size - 1) << 16) | qid, (cqid << 16) | flags] });
    expect((await mkCq(0, 16)).status).toBe(SF.INVALID_QID);
    expect((await mkCq(17, 16)).status).toBe(SF.INVALID_QID);
    expect((await mkCq(1, 1)).status).toBe(SF.INVALID_QUEUE_SIZE);
    expect((await mkCq(1, 1025)).status).toBe(SF.INVALID_QUEUE_SIZE);
    expect((await mkCq(1, 16, 2)).status).toBe(SF.INVALID_FIELD); // not physically contiguous
    expect((await mkCq(1, 16, 3, 17)).status).toBe(SF.INVALID_VECTOR);
    expect((await mkCq(1, 16, 3, 1, base + 0x100n)).status).toBe(SF.PRP_OFFSET_INVALID);
    expect((await mkCq(1, 16)).status).toBe(SF.SUCCESS);
    expect((await mkCq(1, 16)).status).toBe(SF.INVALID_QID); // exists
    expect((await mkSq(1, 16, 0)).status).toBe(SF.CQ_INVALID);
    expect((await mkSq(1, 16, 2)).status).toBe(SF.CQ_INVALID);
    expect((await mkSq(0, 16, 1)).status).toBe(SF.INVALID_QID);
    expect((await mkSq(1, 0x10000, 1)).status).toBe(SF.INVALID_QUEUE_SIZE);
    expect((await mkSq(1, 16, 1, 0)).status).toBe(SF.INVALID_FIELD);
    expect((await mkSq(1, 16, 1, 1, base + 0x8008n)).status).toBe(SF.PRP_OFFSET_INVALID);
    expect((await mkSq(1, 16, 1)).status).toBe(SF.SUCCESS);
    expect((await mkSq(1, 16, 1)).status).toBe(SF.INVALID_QID);
    expect((await h.admin({ opcode: 0x04, cdw: [1] })).status).toBe(SF.INVALID_QUEUE_DELETION);
    expect((await h.admin({ opcode: 0x00, cdw: [2] })).status).toBe(SF.INVALID_QID);
    expect((await h.admin({ opcode: 0x00, cdw: [0] })).status).toBe(SF.INVALID_QID);
    expect((await h.admin({ opcode: 0x00, cdw: [1] })).status).toBe(SF.SUCCESS);
    expect((await h.admin({ opcode: 0x04, cdw: [1] })).status).toBe(SF.SUCCESS);
    expect((await h.admin({ opcode: 0x04, cdw: [1] })).status).toBe(SF.INVALID_QID);
  });

  it("refuses I/O queues while CC.IOSQES/IOCQES are not 64/16 bytes", async () => {
    const h = host();
    h.enable();
    h.rw(0x14, 1); // keeps EN, clears the entry sizes
    const base = h.alloc();
    expect((await h.admin({ opcode: 0x05, prp1: base, cdw: [(15 << 16) | 1, (1 << 16) | 3] })).status).toBe(SF.INVALID_FIELD);
  });

  it("returns the error, SMART and firmware slot log pages and refuses others", async () => {
    const h = host();
    await h.bringUp();
    const buf = h.alloc();
    const data = h.alloc();
    h.fill(data, 4096, 7);
    expect((await h.io(1, { opcode: WRITE, prp1: data, cdw: rw(0, 8) })).status).toBe(0);
    const log = (lid: number, dwords: number, offset = 0n, nsid = 0xffffffff) =>
      h.admin({ opcode: 0x02, nsid, prp1: buf, cdw: [lid | ((dwords - 1) << 16), 0, Number(offset & 0xffffffffn), Number(offset >> 32n)] });
    expect((await log(0x02, 128)).status).toBe(0);
    const smart = new DataView(h.bytes(buf, 512).buffer);
    expect(smart.getUint16(1, true)).toBe(323);
    expect(smart.getUint8(3)).toBe(100);
    expect(smart.getBigUint64(48, true)).toBe(1n); // data units written (1000 × 512 B, rounded up)
    expect(smart.getBigUint64(80, true)).toBe(1n); // host write commands
    expect((await log(0x03, 128)).status).toBe(0);
    expect(h.mem[Number(buf)]).toBe(1);
    expect(new TextDecoder().decode(h.bytes(buf + 8n, 3))).toBe("1.0");
    expect((await log(0x01, 16)).status).toBe(0);
    expect((await log(0x02, 1, 512n)).status).toBe(SF.INVALID_FIELD);
    expect((await log(0x02, 1, 2n)).status).toBe(SF.INVALID_FIELD);
    expect((await log(0x02, 1, 0n, 5)).status).toBe(SF.INVALID_NAMESPACE);
    expect((await log(0x7f, 1)).status).toBe(SF.INVALID_LOG_PAGE);
    // Offset + partial length: dwords 2..3 of the SMART page only.
    h.mem.fill(0xee, Number(buf), Number(buf) + 16);
    expect((await log(0x02, 1, 4n)).status).toBe(0);
    expect(h.mem[Number(buf) + 4]).toBe(0xee); // nothing past the 4 bytes asked for
  });

  it("answers Invalid Opcode for unknown and unadvertised admin commands, Abort with 'not aborted'", async () => {
    const h = host();
    h.enable();
    for (const op of [0x03, 0x10, 0x11, 0x18, 0x80, 0xc0]) expect((await h.admin({ opcode: op })).status).toBe(SF.INVALID_OPCODE);
    const abort = await h.admin({ opcode: 0x08, cdw: [0x1234 << 16] });
    expect(abort.status).toBe(0);
    expect(abort.dw0 & 1).toBe(1);
    expect((await h.admin({ opcode: 0x06, flags: 0x01, cdw: [1] })).status).toBe(SF.INVALID_FIELD); // fused
    expect((await h.admin({ opcode: 0x06, flags: 0x40, cdw: [1], prp1: h.alloc() })).status).toBe(SF.INVALID_FIELD); // SGL
  });

  it("holds Asynchronous Event Requests up to AERL, completes one on a temperature event and re-arms after the log read", async () => {
    const h = host();
    h.enable();
    const cids = [0, 1, 2, 3].map(() => h.submit(0, { opcode: 0x0c }));
    const fifth = await h.admin({ opcode: 0x0c });
    expect(fifth.status).toBe(SF.AER_LIMIT);
    expect((await h.admin({ opcode: 0x09, cdw: [0x0b, 0x02] })).status).toBe(0); // AEC: temperature
    // Over-temperature threshold below the composite temperature (323 K) raises the event.
    const setCid = h.submit(0, { opcode: 0x09, cdw: [0x04, 300] });
    const first = await h.complete(0);
    const second = await h.complete(0);
    const [set, aen] = first.cid === setCid ? [first, second] : [second, first];
    expect(set.status).toBe(0);
    expect(cids).toContain(aen.cid);
    expect(aen.dw0 & 7).toBe(1); // SMART / health
    expect((aen.dw0 >>> 8) & 0xff).toBe(1); // temperature threshold
    expect((aen.dw0 >>> 16) & 0xff).toBe(2); // log page 2
    const buf = h.alloc();
    await h.admin({ opcode: 0x02, nsid: 0xffffffff, prp1: buf, cdw: [0x02 | (127 << 16)] });
    expect(h.mem[Number(buf)] & 0x02).toBe(0x02); // critical warning: temperature
  });

  it("reports a doorbell write to a missing queue as an error event", async () => {
    const h = host();
    h.enable();
    const aer = h.submit(0, { opcode: 0x0c });
    h.rw(0x1000 + 8 * 5, 1); // SQ 5 does not exist
    const c = await h.complete(0);
    expect(c.cid).toBe(aer);
    expect(c.dw0 & 0xffffff).toBe(0x010000); // error type 0, invalid doorbell register, log 1
    expect(h.events.some((e) => e.kind === "guest-error")).toBe(true);
    const aer2 = h.submit(0, { opcode: 0x0c });
    h.rw(0x1000, 40); // admin SQ has 32 entries
    const buf = h.alloc();
    // The error type stays masked until the error log is read.
    await h.admin({ opcode: 0x02, prp1: buf, cdw: [0x01 | (15 << 16)] });
    const c2 = await h.complete(0);
    expect(c2.cid).toBe(aer2);
    expect(c2.dw0 & 0xffffff).toBe(0x010100); // invalid doorbell write value
    expect(new DataView(h.mem.buffer).getBigUint64(Number(buf), true)).toBeGreaterThan(0n);
  });
});

describe("nvme: I/O", () => {
  it("writes and reads back through every PRP shape", async () => {
    const h = host({ size: 16 << 20 });
    await h.bringUp();
    const src = h.alloc(40);
    const dst = h.alloc(40);
    const cases: { name: string; offset: number; length: number }[] = [
      { name: "inside one page", offset: 0, length: 4096 },
      { name: "first-page offset, ends in page", offset: 512, length: 2048 },
      { name: "PRP2 as the second page", offset: 0, length: 8192 },
      { name: "offset first page + PRP2 page", offset: 3584, length: 1024 },
      { name: "PRP list", offset: 0, length: 64 << 10 },
      { name: "offset first page + PRP list", offset: 1024, length: 128 << 10 },
    ];
    let lba = 0;
    for (const [i, c] of cases.entries()) {
      const pages = Math.ceil((c.offset + c.length) / PAGE);
      h.fill(src, pages * PAGE, i + 1);
      const prps = async (buf: bigint, op: number) => {
        const prp1 = buf + BigInt(c.offset);
        let prp2 = 0n;
        if (pages === 2) prp2 = buf + BigInt(PAGE);
        if (pages > 2) {
          prp2 = h.alloc();
          for (let p = 1; p < pages; p++) h.view.setBigUint64(Number(prp2) + (p - 1) * 8, buf + BigInt(p * PAGE), true);
        }
        return h.io(1, { opcode: op, prp1, prp2, cdw: rw(lba, c.length / 512) });
      };
      expect((await prps(src, WRITE)).status, c.name).toBe(0);
      h.mem.fill(0, Number(dst), Number(dst) + 40 * PAGE);
      expect((await prps(dst, READ)).status, c.name).toBe(0);
      expect(h.bytes(dst + BigInt(c.offset), c.length), c.name).toEqual(h.bytes(src + BigInt(c.offset), c.length));
      expect(h.mem[Number(dst) + c.offset + c.length], c.name).toBe(0); // nothing past the transfer
      lba += c.length / 512;
    }
  });

  it("follows a PRP list chained across list pages, starting at a list offset", async () => {
    const h = host({ size: 16 << 20 });
    await h.bringUp();
    const src = h.alloc(33);
    h.fill(src, 33 * PAGE, 99);
    // PRP2 points at the last two slots of a list page: one data entry, then the chain pointer.
    const list1 = h.alloc();
    const list2 = h.alloc();
    const at1 = Number(list1) + PAGE - 16;
    h.view.setBigUint64(at1, src + BigInt(PAGE), true);
    h.view.setBigUint64(at1 + 8, list2, true);
    for (let p = 2; p < 33; p++) h.view.setBigUint64(Number(list2) + (p - 2) * 8, src + BigInt(p * PAGE), true);
    expect((await h.io(1, { opcode: WRITE, prp1: src, prp2: BigInt(at1), cdw: rw(100, (33 * PAGE) / 512) })).status).toBe(0);
    const dst = h.alloc(33);
    const list3 = h.alloc();
    for (let p = 1; p < 33; p++) h.view.setBigUint64(Number(list3) + (p - 1) * 8, dst + BigInt(p * PAGE), true);
    expect((await h.io(1, { opcode: READ, prp1: dst, prp2: list3, cdw: rw(100, (33 * PAGE) / 512) })).status).toBe(0);
    expect(h.bytes(dst, 33 * PAGE)).toEqual(h.bytes(src, 33 * PAGE));
  });

  it("refuses invalid PRP offsets, unreadable PRP lists and unmapped data with their statuses", async () => {
    const h = host();
    await h.bringUp();
    const buf = h.alloc(4);
    expect((await h.io(1, { opcode: READ, prp1: buf + 2n, cdw: rw(0, 1) })).status).toBe(SF.PRP_OFFSET_INVALID); // not dword aligned
    expect((await h.io(1, { opcode: READ, prp1: buf, prp2: buf + 0x1200n, cdw: rw(0, 16) })).status).toBe(SF.PRP_OFFSET_INVALID); // PRP2 data page with offset
    const list = h.alloc();
    h.view.setBigUint64(Number(list), buf + 0x1000n, true);
    h.view.setBigUint64(Number(list) + 8, buf + 0x2010n, true); // list entry with an offset
    expect((await h.io(1, { opcode: READ, prp1: buf, prp2: list, cdw: rw(0, 24) })).status).toBe(SF.PRP_OFFSET_INVALID);
    expect((await h.io(1, { opcode: READ, prp1: buf, prp2: list + 4n, cdw: rw(0, 24) })).status).toBe(SF.PRP_OFFSET_INVALID); // list pointer not qword aligned
    expect((await h.io(1, { opcode: READ, prp1: buf, prp2: 0x4000_0000n, cdw: rw(0, 24) })).status).toBe(SF.DATA_TRANSFER_ERROR); // list outside guest memory
    expect((await h.io(1, { opcode: READ, prp1: 0x4000_0000n, cdw: rw(0, 1) })).status).toBe(SF.DATA_TRANSFER_ERROR);
    expect((await h.io(1, { opcode: WRITE, prp1: 0x4000_0000n, cdw: rw(0, 1) })).status).toBe(SF.DATA_TRANSFER_ERROR);
    // The controller keeps working.
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: rw(0, 1) })).status).toBe(0);
    expect(h.rr(0x1c) & 2).toBe(0);
  });

  it("checks namespace, LBA range, transfer size and opcode", async () => {
    const h = host({ size: 4 << 20 });
    await h.bringUp();
    const buf = h.alloc();
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: rw(8191, 1) })).status).toBe(0);
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: rw(8191, 2) })).status).toBe(SF.LBA_OUT_OF_RANGE);
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: [0, 1, 0] })).status).toBe(SF.LBA_OUT_OF_RANGE); // SLBA ≥ 2^32
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: [0xffffffff, 0xffffffff, 0] })).status).toBe(SF.LBA_OUT_OF_RANGE); // SLBA 2^64 - 1
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: [0, 0x200000, 0] })).status).toBe(SF.LBA_OUT_OF_RANGE); // SLBA 2^53
    expect((await h.io(1, { opcode: READ, nsid: 2, prp1: buf, cdw: rw(0, 1) })).status).toBe(SF.INVALID_NAMESPACE);
    expect((await h.io(1, { opcode: READ, prp1: buf, cdw: rw(0, 2049) })).status).toBe(SF.INVALID_FIELD); // past MDTS (1 MiB)
    expect((await h.io(1, { opcode: 0x05 })).status).toBe(SF.INVALID_OPCODE); // Compare: not in ONCS
    expect((await h.io(1, { opcode: 0x7f })).status).toBe(SF.INVALID_OPCODE);
    expect((await h.io(1, { opcode: 0x08, cdw: rw(8190, 3) })).status).toBe(SF.LBA_OUT_OF_RANGE);
    expect((await h.io(1, { opcode: 0x00, nsid: 0xffffffff })).status).toBe(0);
    expect((await h.io(1, { opcode: 0x00, nsid: 3 })).status).toBe(SF.INVALID_NAMESPACE);
  });

  it("zeroes with Write Zeroes and Dataset Management deallocate, checking every range first", async () => {
    const h = host({ size: 1 << 20 });
    await h.bringUp();
    const buf = h.alloc(2);
    h.fill(buf, 8192, 5);
    expect((await h.io(1, { opcode: WRITE, prp1: buf, prp2: buf + 4096n, cdw: rw(0, 16) })).status).toBe(0);
    expect((await h.io(1, { opcode: 0x08, cdw: rw(2, 2) })).status).toBe(0);
    const ranges = h.alloc();
    const setRange = (i: number, slba: number, nlb: number) => {
      h.view.setUint32(Number(ranges) + i * 16 + 4, nlb, true);
      h.view.setBigUint64(Number(ranges) + i * 16 + 8, BigInt(slba), true);
    };
    setRange(0, 8, 1);
    setRange(1, 4000, 200); // out of range: nothing may be deallocated
    expect((await h.io(1, { opcode: 0x09, prp1: ranges, cdw: [1, 0x4] })).status).toBe(SF.LBA_OUT_OF_RANGE);
    const out = h.alloc(2);
    await h.io(1, { opcode: READ, prp1: out, prp2: out + 4096n, cdw: rw(0, 16) });
    expect(h.bytes(out + 8n * 512n, 512)).toEqual(h.bytes(buf + 8n * 512n, 512));
    setRange(1, 12, 2);
    expect((await h.io(1, { opcode: 0x09, prp1: ranges, cdw: [1, 0x4] })).status).toBe(0);
    await h.io(1, { opcode: READ, prp1: out, prp2: out + 4096n, cdw: rw(0, 16) });
    const expected = h.bytes(buf, 8192);
    expected.fill(0, 2 * 512, 4 * 512);
    expected.fill(0, 8 * 512, 9 * 512);
    expected.fill(0, 12 * 512, 14 * 512);
    expect(h.bytes(out, 8192)).toEqual(expected);
  });

  it("wraps SQ and CQ with phase tags over many rounds", async () => {
    const h = host();
    await h.bringUp(1, 4);
    const buf = h.alloc();
    const phases: number[] = [];
    const heads: number[] = [];
    for (let i = 0; i < 13; i++) {
      h.view.setUint32(Number(buf), i, true);
      const c = await h.io(1, { opcode: WRITE, prp1: buf, cdw: rw(i, 1) });
      expect(c.status).toBe(0);
      phases.push(c.phase);
      heads.push(c.sqhd);
    }
    expect(phases).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0]);
    expect(heads).toEqual([1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
    for (let i = 0; i < 13; i++) {
      await h.io(1, { opcode: READ, prp1: buf, cdw: rw(i, 1) });
      expect(h.view.getUint32(Number(buf), true)).toBe(i);
    }
  });

  it("stops at a full CQ and resumes when the host frees entries", async () => {
    const h = host();
    h.enable();
    const cq = h.alloc();
    const sq = h.alloc();
    expect((await h.admin({ opcode: 0x05, prp1: cq, cdw: [(3 << 16) | 1, (1 << 16) | 3] })).status).toBe(0);
    expect((await h.admin({ opcode: 0x01, prp1: sq, cdw: [(15 << 16) | 1, (1 << 16) | 1] })).status).toBe(0);
    // Reach the queues through the driver's bookkeeping.
    (h as unknown as { cq: Map<number, unknown> }).cq.set(1, { base: cq, size: 4, tail: 0, head: 0, phase: 1 });
    (h as unknown as { sq: Map<number, unknown> }).sq.set(1, { base: sq, size: 16, tail: 0, head: 0, phase: 1 });
    const buf = h.alloc();
    for (let i = 0; i < 8; i++) h.submit(1, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) }, false);
    h.ringSq(1);
    const got: number[] = [];
    for (let i = 0; i < 3; i++) got.push((await h.complete(1, false)).sqhd);
    await new Promise((r) => setImmediate(r));
    expect(h.hasCompletion(1)).toBe(false); // a 4-entry CQ holds 3
    h.ringCqHead(1);
    for (let i = 0; i < 3; i++) got.push((await h.complete(1, false)).sqhd);
    h.ringCqHead(1);
    for (let i = 0; i < 2; i++) got.push((await h.complete(1)).sqhd);
    expect(got).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("serves several queue pairs and raises one MSI-X interrupt per queue per batch", async () => {
    const h = host();
    await h.bringUp(3, 32);
    h.interrupts.length = 0;
    const buf = h.alloc();
    for (const q of [1, 2, 3]) {
      for (let i = 0; i < 5; i++) h.submit(q, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(i, 1) }, false);
      h.ringSq(q);
    }
    for (const q of [1, 2, 3]) for (let i = 0; i < 5; i++) expect((await h.complete(q)).sqid).toBe(q);
    expect(h.interrupts.sort()).toEqual(["msix:1", "msix:2", "msix:3"]);
  });

  it("falls back to INTx, level-triggered until the host consumes the CQ, masked by INTMS", async () => {
    const h = host({ msix: false });
    h.enable();
    expect((await h.admin({ opcode: 0x06, prp1: h.alloc(), cdw: [1] })).status).toBe(0);
    expect(h.interrupts).toEqual(["intx:1", "intx:0"]);
    h.interrupts.length = 0;
    h.rw(0x0c, 1); // INTMS
    h.submit(0, { opcode: 0x0a, cdw: [0x06] });
    const c = await h.complete(0, false);
    expect(c.status).toBe(0);
    expect(h.interrupts).toEqual([]);
    h.rw(0x10, 1); // INTMC: the pending completion asserts now
    expect(h.interrupts).toEqual(["intx:1"]);
    h.ringCqHead(0);
    expect(h.interrupts).toEqual(["intx:1", "intx:0"]);
  });

  it("sets CSTS.CFS when a queue's memory is not mapped, and recovers after a reset", async () => {
    const h = host();
    h.enable();
    expect((await h.admin({ opcode: 0x05, prp1: h.alloc(), cdw: [(15 << 16) | 1, (1 << 16) | 3] })).status).toBe(0);
    expect((await h.admin({ opcode: 0x01, prp1: 0x8000_0000n, cdw: [(15 << 16) | 1, (1 << 16) | 1] })).status).toBe(0);
    h.rw(0x1000 + 8, 1); // SQ 1 tail: the fetch fails
    await until(() => (h.rr(0x1c) & 2) !== 0);
    expect(h.events.some((e) => e.kind === "fatal")).toBe(true);
    h.disable();
    expect(h.rr(0x1c)).toBe(0);
    await h.bringUp();
    expect((await h.io(1, { opcode: READ, prp1: h.alloc(), cdw: rw(0, 1) })).status).toBe(0);
  });
});

describe("nvme: reset and shutdown", () => {
  it("CC.EN 0 deletes every queue and drops held AERs; data survives and the controller comes back", async () => {
    const h = host();
    await h.bringUp();
    const buf = h.alloc();
    h.fill(buf, 512, 3);
    await h.io(1, { opcode: WRITE, prp1: buf, cdw: rw(7, 1) });
    h.submit(0, { opcode: 0x0c });
    expect(h.disable() & 1).toBe(0);
    for (let round = 0; round < 3; round++) {
      await h.bringUp();
      const out = h.alloc();
      expect((await h.io(1, { opcode: READ, prp1: out, cdw: rw(7, 1) })).status).toBe(0);
      expect(h.bytes(out, 512)).toEqual(h.bytes(buf, 512));
      // Four new AERs fit: the one from before the reset is gone.
      for (let i = 0; i < 4; i++) h.submit(0, { opcode: 0x0c });
      expect((await h.admin({ opcode: 0x0c })).status).toBe(SF.AER_LIMIT);
      h.disable();
    }
    expect(h.events.filter((e) => e.kind === "reset").length).toBe(4);
  });

  it("a function-level reset returns every register to its power-on value", async () => {
    const h = host();
    await h.bringUp();
    h.fn.reset();
    expect([h.rr(0x14), h.rr(0x1c), h.rr(0x24), h.rr(0x28), h.rr(0x30)]).toEqual([0, 0, 0, 0, 0]);
  });

  it("counts an unsafe shutdown when a ready controller loses power without CC.SHN, not on a controller reset", async () => {
    const h = host();
    const unsafeShutdowns = async () => {
      const buf = h.alloc();
      expect((await h.admin({ opcode: 0x02, nsid: 0xffffffff, prp1: buf, cdw: [0x02 | (127 << 16)] })).status).toBe(0);
      return new DataView(h.bytes(buf, 512).buffer).getBigUint64(144, true); // SMART bytes 144..159
    };
    await h.bringUp();
    // Controller resets keep power: what Linux does at every probe and on reset_controller.
    for (let i = 0; i < 3; i++) {
      h.disable();
      await h.bringUp();
    }
    expect(await unsafeShutdowns()).toBe(0n);
    h.fn.reset(); // power goes away from a ready controller: the VM was reset or its VMM killed
    h.enableMsix();
    await h.bringUp();
    expect(await unsafeShutdowns()).toBe(1n);
    h.rw(0x14, h.rr(0x14) | (1 << 14)); // a clean shutdown first, then power off
    h.fn.reset();
    h.fn.reset(); // a disabled controller has nothing to lose
    h.enableMsix();
    await h.bringUp();
    expect(await unsafeShutdowns()).toBe(1n);
  });

  it("CC.SHN reports shutdown complete in CSTS.SHST after flushing a file backing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nvme-test-"));
    try {
      const path = join(dir, "disk.img");
      const h = host({ disk: path, size: 2 << 20, lbaSize: 4096 });
      expect(statSync(path).size).toBe(2 << 20);
      await h.bringUp();
      const buf = h.alloc();
      h.fill(buf, 4096, 11);
      expect((await h.io(1, { opcode: WRITE, prp1: buf, cdw: rw(3, 1) })).status).toBe(0);
      expect((await h.io(1, { opcode: 0x00 })).status).toBe(0);
      expect(readFileSync(path).subarray(3 * 4096, 4 * 4096)).toEqual(Buffer.from(h.bytes(buf, 4096)));
      const out = h.alloc();
      expect((await h.io(1, { opcode: READ, prp1: out, cdw: rw(3, 1) })).status).toBe(0);
      expect(h.bytes(out, 4096)).toEqual(h.bytes(buf, 4096));
      h.rw(0x14, h.rr(0x14) | (1 << 14)); // SHN normal
      expect((h.rr(0x1c) >>> 2) & 3).toBe(2);
      expect(h.ctrl.stats.shutdowns).toBe(1);
      h.disable();
      h.rw(0x14, 0);
      expect((h.rr(0x1c) >>> 2) & 3).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("nvme: shadow doorbells", () => {
  it("refuses a Doorbell Buffer Config with misaligned or zero buffers", async () => {
    const h = host();
    h.enable();
    const page = h.alloc();
    expect((await h.admin({ opcode: 0x7c, prp1: page + 8n, prp2: h.alloc() })).status).toBe(SF.INVALID_FIELD);
    expect((await h.admin({ opcode: 0x7c, prp1: page, prp2: 0n })).status).toBe(SF.INVALID_FIELD);
  });

  it("takes tails from the shadow buffer and asks for MMIO doorbells only through EventIdx", async () => {
    const h = host();
    await h.bringUp(2, 64);
    const db = h.alloc();
    const ei = h.alloc();
    expect((await h.admin({ opcode: 0x7c, prp1: db, prp2: ei })).status).toBe(0);
    h.shadow = { db, ei };
    const buf = h.alloc();
    h.fill(buf, 512, 9);
    await h.io(1, { opcode: WRITE, prp1: buf, cdw: rw(0, 1) });
    // After draining SQ 1 the controller published EventIdx = its tail.
    expect(h.view.getUint32(Number(ei) + 8, true)).toBe(1);
    // Several submissions published before the device runs: only the first needs MMIO.
    const before = h.ctrl.stats.mmioDoorbells;
    const rang: boolean[] = [];
    for (let i = 0; i < 6; i++) {
      h.submit(1, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) }, false);
      rang.push(h.ringSq(1));
    }
    expect(rang).toEqual([true, false, false, false, false, false]);
    for (let i = 0; i < 6; i++) expect((await h.complete(1)).status).toBe(0);
    expect(h.view.getUint32(Number(ei) + 8, true)).toBe(7);
    // Completion-queue heads went to the shadow buffer too; MMIO only for the first SQ ring.
    expect(h.ctrl.stats.mmioDoorbells - before).toBeLessThanOrEqual(2);
    expect(h.view.getUint32(Number(db) + 12, true)).toBe(7); // CQ 1 head in the shadow slot
    // The admin queue keeps MMIO doorbells (as Linux does), mirrored into its shadow slot.
    expect((await h.admin({ opcode: 0x0a, cdw: [0x06] })).status).toBe(0);
    expect(h.view.getUint32(Number(db), true)).toBe(h.sqTail(0));
    // A second queue created afterwards gets shadow slots as well.
    h.submit(2, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) }, false);
    h.ringSq(2);
    expect((await h.complete(2)).status).toBe(0);
    expect(h.view.getUint32(Number(ei) + 16, true)).toBe(1);
  });

  it("a late MMIO doorbell carrying an older tail than the shadow does not move an I/O queue back", async () => {
    // Over vfio-user, MMIO doorbells are posted messages: one can be handled after the host
    // has published a newer tail in the shadow and the controller has already run to it.
    const h = host();
    await h.bringUp(1, 64);
    const db = h.alloc();
    const ei = h.alloc();
    expect((await h.admin({ opcode: 0x7c, prp1: db, prp2: ei })).status).toBe(0);
    h.shadow = { db, ei };
    const buf = h.alloc();
    for (let i = 0; i < 3; i++) h.submit(1, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) }, false);
    h.ringSq(1);
    for (let i = 0; i < 3; i++) expect((await h.complete(1)).status).toBe(0);
    const ran = h.ctrl.stats.ioCommands;
    h.rw(0x1000 + 8, 2); // the stale doorbell: tail 2, the shadow says 3
    await new Promise((resolve) => setImmediate(resolve));
    expect(h.ctrl.stats.ioCommands).toBe(ran);
    expect(h.hasCompletion(1)).toBe(false);
    expect(h.ctrl.csts & 0x2).toBe(0); // no fatal status
    // The queue still works.
    h.submit(1, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) });
    expect((await h.complete(1)).status).toBe(0);
  });
});

describe("nvme: interrupt coalescing (Set Features 08h)", () => {
  it("holds I/O interrupts until THR + 1 entries or TIME, never the admin queue's, and not a vector with Coalescing Disable", async () => {
    const clock = createManualClock();
    const h = host({ clock });
    await h.bringUp(2, 64);
    const buf = h.alloc();
    const reads = async (q: number, n: number) => {
      for (let i = 0; i < n; i++) h.submit(q, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(i, 1) }, false);
      h.ringSq(q);
      for (let i = 0; i < n; i++) expect((await h.complete(q)).status).toBe(0);
    };
    // THR 3 (4 entries), TIME 5 (500 µs). The admin completion itself interrupts at once.
    h.interrupts.length = 0;
    expect((await h.admin({ opcode: 0x09, cdw: [0x08, 0x0503] })).status).toBe(0);
    expect(h.interrupts).toEqual(["msix:0"]);
    expect((await h.admin({ opcode: 0x0a, cdw: [0x08] })).dw0).toBe(0x0503);

    h.interrupts.length = 0;
    await reads(1, 2); // below the threshold: held
    expect(h.interrupts).toEqual([]);
    clock.advance(0.4);
    expect(h.interrupts).toEqual([]);
    clock.advance(0.1); // the aggregation time ran out
    expect(h.interrupts).toEqual(["msix:1"]);

    h.interrupts.length = 0;
    await reads(1, 4); // one pass reaches the threshold
    expect(h.interrupts).toEqual(["msix:1"]);
    expect(clock.pending).toBe(0);

    // Interrupt Vector Configuration, CD set for vector 2: that queue is not coalesced.
    expect((await h.admin({ opcode: 0x09, cdw: [0x09, 2 | (1 << 16)] })).status).toBe(0);
    h.interrupts.length = 0;
    await reads(2, 1);
    expect(h.interrupts).toEqual(["msix:2"]);

    // Held entries are signalled when coalescing is turned off; then every pass interrupts.
    h.interrupts.length = 0;
    await reads(1, 1);
    expect(h.interrupts).toEqual([]);
    expect((await h.admin({ opcode: 0x09, cdw: [0x08, 0] })).status).toBe(0);
    expect(h.interrupts).toEqual(["msix:1", "msix:0"]);
    h.interrupts.length = 0;
    await reads(1, 1);
    expect(h.interrupts).toEqual(["msix:1"]);
    expect(clock.pending).toBe(0);
  });

  it("is implicitly off while THR or TIME is 0, and a controller reset drops a pending aggregation timer", async () => {
    const clock = createManualClock();
    const h = host({ clock });
    await h.bringUp(1, 64);
    const buf = h.alloc();
    for (const value of [0x0500, 0x0003]) {
      expect((await h.admin({ opcode: 0x09, cdw: [0x08, value] })).status).toBe(0);
      h.interrupts.length = 0;
      h.submit(1, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) });
      await h.complete(1);
      expect(h.interrupts, `value 0x${value.toString(16)}`).toEqual(["msix:1"]);
    }
    expect((await h.admin({ opcode: 0x09, cdw: [0x08, 0x0a07] })).status).toBe(0);
    h.submit(1, { opcode: READ, nsid: 1, prp1: buf, cdw: rw(0, 1) });
    await h.complete(1);
    expect(clock.pending).toBe(1);
    h.disable();
    expect(clock.pending).toBe(0);
  });
});

describe("nvme: without shadow doorbells", () => {
  it("clears OACS bit 8 and answers Doorbell Buffer Config with Invalid Opcode", async () => {
    const h = host({ shadowDoorbells: false });
    h.enable();
    const { data } = await h.identify(1);
    expect(new DataView(data.buffer, data.byteOffset).getUint16(256, true) & 0x100).toBe(0);
    expect((await h.admin({ opcode: 0x7c, prp1: h.alloc(), prp2: h.alloc() })).status).toBe(SF.INVALID_OPCODE);
  });
});

describe("nvme: file backing", () => {
  it("moves a scattered PRP list in one vectored call per command, and the bytes land in the file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wasmdev-nvme-readv-"));
    try {
      const path = join(dir, "disk.img");
      const file = createFileBacking(path, 4 << 20);
      const calls = { readv: 0, writev: 0, buffers: 0 };
      const backing: NvmeBacking = {
        ...file,
        readv(offset, dests) {
          calls.readv++;
          calls.buffers += dests.length;
          file.readv(offset, dests);
        },
        writev(offset, srcs) {
          calls.writev++;
          calls.buffers += srcs.length;
          file.writev(offset, srcs);
        },
      };
      const h = host({ backing });
      await h.bringUp();
      // 16 data pages, every other one, in reverse order: no two adjacent.
      const area = h.alloc(33);
      const pages = Array.from({ length: 16 }, (_, i) => area + BigInt((32 - 2 * i) * PAGE));
      const list = h.alloc();
      pages.slice(1).forEach((p, i) => h.view.setBigUint64(Number(list) + i * 8, p, true));
      pages.forEach((p, i) => h.fill(p, PAGE, 40 + i));
      const expected = Buffer.concat(pages.map((p) => h.bytes(p, PAGE)));
      expect((await h.io(1, { opcode: WRITE, prp1: pages[0], prp2: list, cdw: rw(8, 128) })).status).toBe(0);
      expect(calls).toEqual({ readv: 0, writev: 1, buffers: 16 });
      const fd = readFileSync(path);
      expect(Buffer.from(fd.subarray(8 * 512, 8 * 512 + 16 * PAGE)).equals(expected)).toBe(true);
      for (const p of pages) h.mem.fill(0, Number(p), Number(p) + PAGE);
      expect((await h.io(1, { opcode: READ, prp1: pages[0], prp2: list, cdw: rw(8, 128) })).status).toBe(0);
      expect(calls).toEqual({ readv: 1, writev: 1, buffers: 32 });
      expect(Buffer.concat(pages.map((p) => h.bytes(p, PAGE))).equals(expected)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
