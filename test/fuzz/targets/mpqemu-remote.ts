// Fuzz target: the mpqemu remote (src/mpqemu/remote.ts) serving the edu device over a real
// socketpair, driven by a fuzzed stream of requests, as QEMU 7.2's x-pci-proxy-dev would send.
// SYNC_SYSMEM carries memfds (mapped through the counting fake mapper of support/fds.ts),
// SET_IRQFD eventfds.
//
// Invariants on every input:
// - nothing throws out of the remote;
// - every request that expects a RET (config and BAR accesses, DEVICE_RESET) gets exactly one,
//   in order, unless the stream broke (then serving ended with an error and no RET is extra);
// - a remote still serving after the script answers a config read of the vendor ID;
// - guest RAM is only ever mapped from windows the proxy offered;
// - after the proxy hangs up serving ends, no mapping is left and this process holds the fds
//   it held before.
import { MpqemuRemote } from "../../../src/mpqemu/remote.js";
import { Cmd, MpqemuEncoder, MpqemuParser, expectsReply, type RetMsg } from "../../../src/mpqemu/wire.js";
import { createEdu, EDU_VENDOR_ID } from "../../../src/devices/edu.js";
import { adoptFd } from "../../../src/transport/connection.js";
import { socketpair, closeFdQuietly } from "../../../src/transport/fd.js";
import { FuzzInput, check } from "../support/input.js";
import { FakeMapper, newEventFd, newMemFd, openFdCount, FAKE_FILE_SIZE } from "../support/fds.js";

const GPAS = [0n, 0x1000n, 0x100000n, 0xfebf0000n, (1n << 64n) - 0x1000n];
const SIZES = [0x1000n, 0x10000n, 0n, BigInt(FAKE_FILE_SIZE) + 0x1000n];
const OFFSETS = [0n, 0x1000n, -0x1000n, BigInt(FAKE_FILE_SIZE)];
const CFG_ADDRS = [0x00, 0x04, 0x10, 0x14, 0x3c, 0x3d, 0x40, 0xfc, 0xfe, 0x100, 0xfff, 0x1000];
const BAR_ADDRS = [0xfea00000n, 0xfea00004n, 0xfea00080n, 0xfea00098n, 0xfeb00000n, 0n, 0xc000n];
const CMDS = [Cmd.PCI_CFGREAD, Cmd.PCI_CFGWRITE, Cmd.BAR_READ, Cmd.BAR_WRITE, Cmd.BAR_WRITE, Cmd.SYNC_SYSMEM, Cmd.SET_IRQFD, Cmd.DEVICE_RESET, Cmd.RET, 8, -1];

/** What the runs so far exercised (the regression test checks that the seeds reach it all). */
export const stats = { runs: 0, fdMaps: 0, rets: 0, stillServing: 0, broken: 0 };

interface Planned {
  bytes: Uint8Array;
  fds: number[];
  wantsRet: boolean;
  fatal: boolean;
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function raw(cmd: number, payload: Uint8Array, size: bigint = BigInt(payload.length)): Uint8Array {
  const out = new Uint8Array(16 + payload.length);
  const v = new DataView(out.buffer);
  v.setInt32(0, cmd, true);
  v.setBigUint64(8, size, true);
  out.set(payload, 16);
  return out;
}

function plan(input: FuzzInput, enc: MpqemuEncoder, mapper: FakeMapper): Planned {
  const cmd = input.pick(CMDS);
  const mode = input.u8();
  if (mode % 9 === 0) {
    // Raw: a declared size that may disagree with the payload, or break framing.
    const payload = input.bytes(input.below(64));
    const broken = mode === 0 && input.bool();
    const size = broken ? input.pick([1n << 32n, 0x10001n]) : input.pick([BigInt(payload.length), BigInt(payload.length)]);
    const fds = cmd === Cmd.SYNC_SYSMEM || cmd === Cmd.SET_IRQFD ? Array.from({ length: input.below(3) }, () => newEventFd()) : [];
    return { bytes: raw(cmd, broken ? payload.subarray(0, Math.min(payload.length, 8)) : payload, size), fds, wantsRet: !broken && expectsReply(cmd), fatal: broken };
  }
  switch (cmd) {
    case Cmd.PCI_CFGREAD:
      return { bytes: enc.configRead(input.pick(CFG_ADDRS), input.pick([1, 2, 4, 4, 3, 8, 0])).bytes.slice(), fds: [], wantsRet: true, fatal: false };
    case Cmd.PCI_CFGWRITE:
      return { bytes: enc.configWrite(input.pick(CFG_ADDRS), input.u32(), input.pick([1, 2, 4, 4, 3])).bytes.slice(), fds: [], wantsRet: true, fatal: false };
    case Cmd.BAR_READ:
      return { bytes: enc.barRead(input.pick(BAR_ADDRS) + BigInt(input.below(8)), input.pick([4, 4, 8, 1, 2, 3]), input.u8() % 4 !== 0).bytes.slice(), fds: [], wantsRet: true, fatal: false };
    case Cmd.BAR_WRITE:
      return { bytes: enc.barWrite(input.pick(BAR_ADDRS) + BigInt(input.below(8)), input.u64(), input.pick([4, 4, 8, 1, 2, 3]), input.u8() % 4 !== 0).bytes.slice(), fds: [], wantsRet: true, fatal: false };
    case Cmd.SYNC_SYSMEM: {
      const n = 1 + input.below(3);
      const regions = Array.from({ length: n }, () => {
        const fd = newMemFd();
        const r = { gpa: input.pick(GPAS), size: input.pick(SIZES), offset: input.pick(OFFSETS), fd };
        mapper.allow(fd, r.offset, r.size);
        return r;
      });
      const e = enc.syncSysmem(regions);
      // A region count that disagrees with the fds (one fewer or one more) now and then.
      const fds = [...e.fds];
      if (input.u8() % 7 === 0) closeFdQuietly(fds.pop()!);
      return { bytes: e.bytes.slice(), fds, wantsRet: false, fatal: false };
    }
    case Cmd.SET_IRQFD: {
      const n = input.pick([2, 2, 2, 1, 0, 3]);
      return { bytes: raw(Cmd.SET_IRQFD, new Uint8Array(0)), fds: Array.from({ length: n }, () => newEventFd()), wantsRet: false, fatal: false };
    }
    case Cmd.DEVICE_RESET:
      return { bytes: enc.deviceReset().bytes.slice(), fds: [], wantsRet: true, fatal: false };
    default:
      return { bytes: raw(cmd, input.bytes(input.pick([0, 8, 12, 24]))), fds: [], wantsRet: false, fatal: false };
  }
}

export function fuzz(data: Uint8Array): Promise<void> {
  return fuzzWith(new FuzzInput(data));
}

/** The target with its choices read from `input` (seeds.ts records random ones). */
export async function fuzzWith(input: FuzzInput): Promise<void> {
  const fdsBefore = openFdCount();
  const mapper = new FakeMapper();
  const [remoteEnd, proxyEnd] = socketpair();
  const device = createEdu({ dmaDelayMs: 0 }).fn;
  const remote = new MpqemuRemote({ fd: remoteEnd, fn: device, log: () => {}, mapFd: mapper.mapFd }).start();
  let ended = false;
  void remote.ended.then(() => (ended = true));
  const proxy = adoptFd(proxyEnd, { limits: { maxFdsPerMessage: 16 } });
  const rets: RetMsg[] = [];
  const parser = new MpqemuParser<RetMsg>("proxy", closeFdQuietly);
  // Collected, not thrown: the connection would take a throw from its receiver as a hang-up.
  const violations: string[] = [];
  proxy.onData((chunk, fds) =>
    parser.push(chunk, fds, (ev) => {
      if (ev.ok) rets.push(ev.message);
      else violations.push(`the remote sent an unparseable message: ${ev.error.message}`);
    }),
  );
  const enc = new MpqemuEncoder();
  const planned: Planned[] = [];
  for (let i = input.below(20); i > 0 && input.remaining > 0; i--) {
    const p = plan(input, enc, mapper);
    planned.push(p);
    if (p.fatal) break;
  }
  try {
    for (const p of planned) {
      if (proxy.isClosed || ended) {
        for (const fd of p.fds) closeFdQuietly(fd);
        continue;
      }
      const cut = p.fds.length === 0 && input.u8() % 4 === 0 ? input.below(p.bytes.length) : 0;
      if (cut > 0) {
        proxy.send(p.bytes.subarray(0, cut));
        await turn();
        proxy.send(p.bytes.subarray(cut));
      } else proxy.send(p.bytes, p.fds);
      for (const fd of p.fds) closeFdQuietly(fd); // the remote got its own copies
      if (input.bool()) await turn();
    }
    const owed = planned.filter((p) => p.wantsRet).length;
    const fatal = planned.some((p) => p.fatal);
    for (let i = 0; i < 500 && rets.length < owed && !ended; i++) await turn();
    if (fatal) {
      for (let i = 0; i < 500 && !ended; i++) await turn();
      check(ended, "the remote kept serving after a message that breaks framing");
      stats.broken++;
      check(rets.length <= owed, `${rets.length} RETs for ${owed} requests`);
    } else {
      check(!ended, "the remote stopped serving on a well-framed stream");
      check(rets.length === owed, `${rets.length} RETs for ${owed} requests that expect one`);
      proxy.send(enc.configRead(0, 2).bytes);
      for (let i = 0; i < 500 && rets.length === owed && !ended; i++) await turn();
      check(rets.length === owed + 1, "no RET for the final config read");
      check(rets[owed].value === BigInt(EDU_VENDOR_ID), `vendor ID read as ${rets[owed].value}`);
      stats.stillServing++;
    }
  } finally {
    if (!proxy.isClosed) proxy.destroy();
    for (let i = 0; i < 500 && !ended; i++) await turn();
    await turn(); // the proxy's 'close' runs on the next tick
    // A function keeps its regions in the shared wasm core until disposed.
    device.dispose();
  }
  check(ended, "the remote kept serving after the proxy hung up");
  stats.runs++;
  stats.fdMaps += mapper.maps;
  stats.rets += rets.length;
  check(violations.length === 0, () => violations.join("\n"));
  check(mapper.violations.length === 0, () => mapper.violations.join("\n"));
  check(mapper.live === 0, `${mapper.live} guest RAM mappings left after serving ended`);
  const fdsAfter = openFdCount();
  check(fdsAfter === fdsBefore, `the process holds ${fdsAfter} fds after serving, ${fdsBefore} before`);
}
