// Fuzz target: a whole vfio-user server session (src/vfio-user/server/session.ts) serving the
// edu device, driven by a fuzzed sequence of messages after a valid VERSION, over an in-memory
// connection (support/memory-connection.ts). Fds are real (memfds, eventfds); DMA mappings go through a
// counting fake mapper (support/fds.ts).
//
// The input is a script (support/input.ts): max_data_xfer_size, then messages, each either a
// plausible request of one command with fuzzed fields (DMA_MAP with or without an fd,
// SET_IRQS with eventfds, region accesses at the device's registers, migration...) or raw
// bytes, with NO_REPLY, a wrong type or a broken size field now and then; then how the
// stream is cut into reads, how the client answers the server's DMA requests, and whether it
// hangs up early.
//
// Invariants on every input:
// - nothing throws out of the session (an exception fails the input);
// - every reply-wanting request gets exactly one reply, in order, with its command, unless the
//   connection closed (then the replies are a prefix of those);
// - a session still open after the script answers a REGION_READ of the ID register correctly;
// - the server's DMA_READ/DMA_WRITE requests stay inside DMA_MAP'ed ranges without an fd, and
//   every mapping is of a window of an fd that the client offered;
// - after the client hangs up: no mapping left, and this process holds the fds it held before.
import { VfioUserSession, type VfioUserSessionConfig } from "../../../src/vfio-user/server/index.js";
import { createDmaContext } from "../../../src/core/dma/context.js";
import { createEdu, EDU_ID_VALUE, EDU_REG } from "../../../src/devices/edu.js";
import * as wire from "../../../src/vfio-user/wire/index.js";
import { Command, HeaderFlag, IrqSetFlag } from "../../../src/vfio-user/wire/constants.js";
import { FuzzInput, check, concatBytes } from "../support/input.js";
import { FakeMapper, newEventFd, newMemFd, openFdCount, FAKE_FILE_SIZE } from "../support/fds.js";
import { MemoryConnection } from "../support/memory-connection.js";
import { closeFdQuietly } from "../../../src/transport/fd.js";

const PAGE = 4096n;
// Mostly valid choices, some invalid: a script should map memory more often than not.
const ADDRESSES = [0n, 0x1000n, 0x10000n, 0x20000n, 0x100000n, 0xfff000n, (1n << 64n) - PAGE, 0x1234n];
const SIZES = [PAGE, PAGE, 2n * PAGE, 4n * PAGE, 0n, 16n * PAGE, 0x10001n];
const OFFSETS = [0n, 0n, 0n, PAGE, BigInt(FAKE_FILE_SIZE) - PAGE, BigInt(FAKE_FILE_SIZE), 0x123n];
const REGION_OFFSETS = [EDU_REG.ID, EDU_REG.LIVENESS, EDU_REG.FACTORIAL, EDU_REG.STATUS, EDU_REG.IRQ_STATUS, EDU_REG.IRQ_RAISE, EDU_REG.IRQ_ACK, EDU_REG.DMA_SRC, EDU_REG.DMA_DST, EDU_REG.DMA_CNT, 0x98, 0x40000, 0xffffc, 0x100000, 0, 0x3c, 0x40, 0xfe];
const COUNTS = [1, 2, 4, 8, 3, 0, 16, 4096, 5000];
const REGIONS = [0, 0, 7, 7, 6, 1, 9, 200];

interface Planned {
  bytes: Uint8Array;
  fds: number[];
  msgId: number;
  command: number;
  /** A reply is owed: a well-framed message without NO_REPLY that is not itself a reply (a
   *  stray reply is dropped unanswered; a message of an unknown type gets an error reply). */
  wantsReply: boolean;
  /** The size field is broken: the stream cannot be framed past this message. */
  fatal: boolean;
}

function header(msgId: number, command: number, flags: number, body: Uint8Array, size = 16 + body.length): Uint8Array {
  const out = new Uint8Array(16 + body.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, msgId, true);
  v.setUint16(2, command, true);
  v.setUint32(4, size, true);
  v.setUint32(8, flags, true);
  out.set(body, 16);
  return out;
}

class Body {
  private readonly parts: number[] = [];
  u32(v: number): this {
    for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 0xff);
    return this;
  }
  u64(v: bigint): this {
    for (let i = 0n; i < 8n; i++) this.parts.push(Number((BigInt.asUintN(64, v) >> (8n * i)) & 0xffn));
    return this;
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  build(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** A plausible request body for `command` (and the fds it carries). */
/** Not a protocol command: a REGION_WRITE_MULTI that starts an edu DMA (see plausible()). */
const EDU_DMA = -1;

interface Offered {
  /** fd-less DMA_MAPs sent: the server's DMA_READ/WRITE must stay inside these. */
  mapped: { address: bigint; size: bigint }[];
  /** Every DMA_MAP sent, with or without an fd (where edu DMA is aimed). */
  all: { address: bigint; size: bigint }[];
  mapper: FakeMapper;
}

function plausible(command: number, input: FuzzInput, offered: Offered): { body: Uint8Array; fds: number[] } {
  const fds: number[] = [];
  switch (command) {
    case Command.DMA_MAP: {
      const address = input.pick(ADDRESSES);
      const size = input.pick(SIZES);
      const offset = input.pick(OFFSETS);
      const flags = input.pick([3, 3, 3, 3, 3, 1, 2, 0, 4]);
      if (input.u8() % 3 !== 0) {
        const fd = newMemFd();
        fds.push(fd);
        offered.mapper.allow(fd, offset, size);
      } else offered.mapped.push({ address, size });
      offered.all.push({ address, size });
      return { body: new Body().u32(input.pick([32, 32, 32, 32, 32, 16, 64])).u32(flags).u64(offset).u64(address).u64(size).build(), fds };
    }
    case Command.DMA_UNMAP:
      return { body: new Body().u32(input.pick([24, 24, 8])).u32(input.pick([0, 0, 2, 1, 8])).u64(input.pick(ADDRESSES)).u64(input.pick(SIZES)).build(), fds };
    case Command.DEVICE_GET_INFO:
      return { body: new Body().u32(input.pick([16, 16, 8, 64])).u32(0).u32(0).u32(0).build(), fds };
    case Command.DEVICE_GET_REGION_INFO:
    case Command.DEVICE_GET_REGION_IO_FDS:
      return { body: new Body().u32(input.pick([32, 16, 256, 4096, 8])).u32(0).u32(input.pick(REGIONS)).u32(0).raw(input.bytes(input.below(3) * 8)).build(), fds };
    case Command.DEVICE_GET_IRQ_INFO:
      return { body: new Body().u32(16).u32(0).u32(input.below(6)).u32(0).build(), fds };
    case Command.DEVICE_SET_IRQS: {
      const count = input.below(4);
      const eventfd = input.bool();
      const flags = (eventfd ? IrqSetFlag.DATA_EVENTFD : input.pick([1, 2, 0])) | input.pick([IrqSetFlag.ACTION_TRIGGER, 1 << 3, 1 << 4, 0]);
      if (eventfd) for (let i = 0; i < count; i++) fds.push(newEventFd());
      const data = eventfd ? new Uint8Array(0) : input.bytes(input.below(2) * count);
      return { body: new Body().u32(20 + data.length).u32(flags).u32(input.below(6)).u32(input.below(3)).u32(count).raw(data).build(), fds };
    }
    case Command.REGION_READ:
    case Command.REGION_WRITE: {
      const count = input.pick(COUNTS);
      const region = input.pick(REGIONS);
      const offset = BigInt(input.pick(REGION_OFFSETS)) + (input.u8() === 255 ? 1n << 60n : 0n);
      const body = new Body().u64(offset).u32(region).u32(count);
      if (command === Command.REGION_WRITE) {
        // Edu's DMA registers take addresses: aim them at what was mapped now and then.
        const value = offered.mapped.length && input.bool() ? input.pick(offered.mapped).address + BigInt(input.u16()) : input.u64();
        const data = new Uint8Array(count);
        new Body().u64(value).build().forEach((b, i) => i < count && (data[i] = b));
        if (count > 8) data.set(input.bytes(count - 8), 8);
        body.raw(input.u8() === 7 ? data.subarray(0, count >> 1) : data);
      }
      return { body: body.build(), fds };
    }
    case Command.REGION_WRITE_MULTI: {
      const n = input.below(4);
      const body = new Body().u64(BigInt(n));
      for (let i = 0; i < n; i++) {
        const count = input.pick([1, 2, 4, 8]);
        const data = new Uint8Array(8);
        data.set(input.bytes(count));
        body.u64(BigInt(input.pick(REGION_OFFSETS))).u32(input.pick(REGIONS)).u32(count).raw(data);
      }
      return { body: body.build(), fds };
    }
    case Command.DEVICE_FEATURE:
      return { body: new Body().u32(input.pick([16, 24, 8])).u32(input.pick([1 << 16, 1 << 17, 1 << 18, 0, 0x7])).u32(input.pick([1, 4, 6, 0])).raw(input.bytes(input.below(3) * 8)).build(), fds };
    case EDU_DMA: {
      // One REGION_WRITE_MULTI that programs and starts an edu DMA between its buffer and a
      // range the client mapped (or anywhere): source, destination, count, command.
      const ram = offered.all.length && input.u8() % 4 !== 0 ? input.pick(offered.all).address + BigInt(input.below(8) * 512) : input.u64() & 0xfffffffn;
      const toRam = input.bool();
      const buffer = 0x40000n + BigInt(input.below(8) * 256);
      const count = BigInt(input.pick([0x100, 0x1000, 1, 0x1001, 8]));
      const cmd = 1n | (toRam ? 2n : 0n) | (input.bool() ? 4n : 0n);
      const body = new Body().u64(4n);
      for (const [offset, value] of [[EDU_REG.DMA_SRC, toRam ? buffer : ram], [EDU_REG.DMA_DST, toRam ? ram : buffer], [EDU_REG.DMA_CNT, count], [0x98, cmd]] as const) {
        body.u64(BigInt(offset)).u32(0).u32(8).u64(value);
      }
      return { body: body.build(), fds };
    }
    case Command.MIG_DATA_READ:
    case Command.MIG_DATA_WRITE:
      return { body: new Body().u32(input.pick([8, 16, 64])).u32(input.pick([8, 0, 4096, 1 << 20])).raw(input.bytes(input.below(3) * 8)).build(), fds };
    default:
      return { body: input.bytes(input.below(40)), fds };
  }
}

const COMMANDS = [2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 10, 10, EDU_DMA, EDU_DMA, 13, 15, 16, 17, 18, 1, 11, 12, 14, 99];

/** What the runs so far exercised (the regression test checks that the seeds reach it all). */
export const stats = { runs: 0, fdMaps: 0, dmaRequests: 0, replies: 0, errorReplies: 0, stillServing: 0 };

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

export function fuzz(data: Uint8Array): Promise<void> {
  return fuzzWith(new FuzzInput(data));
}

/** The target with its choices read from `input` (seeds.ts records random ones). */
export async function fuzzWith(input: FuzzInput): Promise<void> {
  const fdsBefore = openFdCount();
  const mapper = new FakeMapper();
  const offered: Offered = { mapped: [], all: [], mapper };
  const maxDataXferSize = input.pick([4096, 1 << 20, 64]);
  const config: VfioUserSessionConfig = {
    device: createEdu({ dmaDelayMs: 0, onGuestError: process.env.FUZZ_LOG ? (l) => console.log(l) : undefined }).fn,
    maxDataXferSize: Math.max(maxDataXferSize, 4096),
    maxMsgFds: 8,
    maxDmaMaps: 8,
    dmaRequestTimeoutMs: 1000,
    log: process.env.FUZZ_LOG ? (l) => console.log(l) : () => {},
    createDma: (hook) => createDmaContext({ hook, mapFd: mapper.mapFd }),
  };

  // What the server sends: replies to our requests, and its own DMA requests.
  const replies: wire.Frame[] = [];
  const answers: Uint8Array[] = [];
  const dmaAnswerMode = input.below(4); // 0..2 answer correctly, 3 answer with EIO
  const out = new wire.MessageWriter(256);
  const fromServer = new wire.MessageParser({ maxMessageSize: 64 << 20, closeFd: () => {} });
  // Broken invariants seen inside the server's send path are collected, not thrown: the
  // session would take a throw from send() for a dead connection and carry on.
  const violations: string[] = [];
  const conn = new MemoryConnection((bytes) => {
    fromServer.parse(bytes, [], (ev) => {
      if (ev.kind === "error") {
        violations.push(`the server sent an unframeable stream: ${ev.error.message}`);
        return;
      }
      if (wire.isReply(ev.flags)) {
        replies.push({ ...ev, body: ev.body.slice() });
        return;
      }
      if (ev.command !== Command.DMA_READ && ev.command !== Command.DMA_WRITE) {
        violations.push(`the server sent command ${ev.command}`);
        return;
      }
      stats.dmaRequests++;
      const v = new DataView(ev.body.buffer, ev.body.byteOffset, ev.body.length);
      const address = v.getBigUint64(0, true);
      const count = Number(v.getBigUint64(8, true));
      if (!offered.mapped.some((m) => address >= m.address && address + BigInt(count) <= m.address + m.size)) {
        violations.push(`server DMA of ${count} bytes at 0x${address.toString(16)} outside every fd-less DMA_MAP the client sent`);
      }
      if (dmaAnswerMode === 3) wire.writeErrorReply(out, ev.msgId, ev.command, 5);
      else if (ev.command === Command.DMA_READ) wire.writeDmaReadReply(out, ev.msgId, address, new Uint8Array(count).fill(0xa5));
      else wire.writeDmaWriteReply(out, ev.msgId, address, count);
      answers.push(out.take().slice()); // take() aliases the writer: keep a copy
    });
  });
  const session = new VfioUserSession(config, conn, () => {});

  // The script.
  const planned: Planned[] = [];
  const version = new wire.MessageWriter(256);
  wire.writeVersionRequest(version, 0, { capabilities: { maxMsgFds: 8, maxDataXferSize } });
  planned.push({ bytes: version.take(), fds: [], msgId: 0, command: Command.VERSION, wantsReply: true, fatal: false });
  const count = input.below(24);
  let startsDma = false;
  for (let i = 0; i < count && input.remaining > 0; i++) {
    const msgId = (i + 1) & 0xffff;
    const chosen = input.pick(COMMANDS);
    if (chosen === EDU_DMA) startsDma = true;
    const command = chosen === EDU_DMA ? Command.REGION_WRITE_MULTI : chosen;
    const raw = input.u8() % 16 === 0;
    const { body, fds } = raw ? { body: input.bytes(input.below(48)), fds: [] } : plausible(chosen, input, offered);
    const type = input.pick([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    const noReply = input.u8() % 8 === 0;
    const broken = input.u8() === 0xee;
    const flags = type | (noReply ? HeaderFlag.NO_REPLY : 0);
    const size = broken ? input.pick([0, 8, 15, 0xffffffff, (64 << 20) + 1]) : 16 + body.length;
    planned.push({ bytes: header(msgId, command, flags, body, size), fds, msgId, command, wantsReply: type !== HeaderFlag.TYPE_REPLY && !noReply && !broken, fatal: broken });
    if (broken) break;
  }
  const hangUpEarly = input.u8() === 0x99;

  // Reads: fds arrive with the read that ends their message (one sendmsg per fd message).
  const stream = concatBytes(planned.map((p) => p.bytes));
  const fdEnds = new Map<number, number[]>();
  let at = 0;
  for (const p of planned) {
    at += p.bytes.length;
    if (p.fds.length) fdEnds.set(at, p.fds);
  }
  const boundaries = new Set<number>([0]);
  at = 0;
  for (const p of planned) boundaries.add((at += p.bytes.length));
  const cuts = new Set<number>(fdEnds.keys());
  for (let i = input.below(6); i > 0; i--) cuts.add(input.below(stream.length + 1));
  // No cut inside a message that carries fds.
  at = 0;
  for (const p of planned) {
    if (p.fds.length) for (const c of [...cuts]) if (c > at && c < at + p.bytes.length) cuts.delete(c);
    at += p.bytes.length;
  }
  const points = [...cuts, stream.length].filter((c) => c > 0).sort((a, b) => a - b);

  // How much of the stream has been delivered: answers may follow only at a message boundary.
  let from = 0;
  const answer = () => {
    // A client that stopped mid-message (hung up early) sends nothing more into that message.
    if (!boundaries.has(from)) answers.length = 0;
    while (answers.length) conn.deliver(answers.shift()!, []);
  };
  try {
    for (const p of [...new Set(points)]) {
      const fds = fdEnds.get(p) ?? [];
      fdEnds.delete(p);
      if (!conn.deliver(stream.subarray(from, p), fds)) for (const fd of fds) closeFdQuietly(fd);
      from = p;
      if (hangUpEarly && from > stream.length / 2) break;
      await turn();
      // Our answers to the server's DMA requests go between messages, never inside one.
      if (boundaries.has(from)) answer();
    }
    for (const fds of fdEnds.values()) for (const fd of fds) closeFdQuietly(fd); // not delivered

    const owed = planned.filter((p) => p.wantsReply);
    const fatalAt = planned.findIndex((p) => p.fatal);
    // Wait for the replies (device work such as edu's DMA runs on the event loop).
    for (let i = 0; i < 200 && replies.length < owed.length && !conn.isClosed; i++) {
      await turn();
      answer();
    }
    // edu starts a transfer from a timer: let it run (and its DMA requests be answered) before
    // the checks, however quickly the replies came (the check of the server's DMA requests
    // must not depend on the machine's load).
    if (startsDma && !conn.isClosed) {
      await new Promise<void>((resolve) => setTimeout(resolve, 0));
      for (let i = 0; i < 20 && !conn.isClosed; i++) {
        await turn();
        answer();
      }
    }
    const got = replies.map((r) => `${r.msgId}/${r.command}`);
    const want = owed.map((p) => `${p.msgId}/${p.command}`);
    if (conn.isClosed || hangUpEarly || fatalAt >= 0) {
      const allowed = fatalAt >= 0 ? [...want, `${planned[fatalAt].msgId}/${planned[fatalAt].command}`] : want;
      check(got.every((g, i) => g === allowed[i]), () => `replies ${got.join(" ")} are not a prefix of the requests ${allowed.join(" ")}`);
    } else {
      check(got.join(" ") === want.join(" "), () => `replies ${got.join(" ")} for requests ${want.join(" ")}`);
      // Still serving: the ID register reads back (a pending posted failure may come first).
      for (let attempt = 0; attempt < 2; attempt++) {
        const id = 0xfff0 + attempt;
        conn.deliver(header(id, Command.REGION_READ, 0, new Body().u64(BigInt(EDU_REG.ID)).u32(0).u32(4).build()), []);
        for (let i = 0; i < 50 && !replies.some((r) => r.msgId === id) && !conn.isClosed; i++) await turn();
        const r = replies.find((x) => x.msgId === id);
        check(r !== undefined, "no reply to the final REGION_READ of the ID register");
        // The first may report a posted failure (and is then not performed); not the second.
        check(!wire.hasError(r.flags) || attempt === 0, `the final REGION_READ of the ID register failed twice (errno ${r.error})`);
        if (wire.hasError(r.flags)) continue;
        const value = new DataView(r.body.buffer, r.body.byteOffset, r.body.length).getUint32(16, true);
        check(value === EDU_ID_VALUE, `ID register read 0x${value.toString(16)}`);
        stats.stillServing++;
        break;
      }
    }
  } finally {
    conn.hangUp();
    for (let i = 0; i < 20 && !session.isClosed; i++) await turn();
    // A function keeps its regions in the shared wasm core until disposed.
    config.device.dispose();
  }
  stats.runs++;
  stats.fdMaps += mapper.maps;
  stats.replies += replies.length;
  stats.errorReplies += replies.filter((r) => wire.hasError(r.flags)).length;
  check(violations.length === 0, () => violations.join("\n"));
  check(session.isClosed, "the session did not close after the client hung up");
  check(mapper.violations.length === 0, () => mapper.violations.join("\n"));
  check(mapper.live === 0, `${mapper.live} DMA mappings left after the session closed`);
  const fdsAfter = openFdCount();
  check(fdsAfter === fdsBefore, `the process holds ${fdsAfter} fds after the session, ${fdsBefore} before`);
}
