// The mpqemu wire format (QEMU 7.2 include/hw/remote/mpqemu-link.h), as pure functions:
// bytes (+ the fds that arrived with them) in, typed messages out, and back. No I/O here.
//
// One message on the stream (host byte order; this module supports little-endian hosts):
//
//   0        4        8                16                     16+size
//   +--------+--------+----------------+----------------------+
//   | cmd    | (pad)  | size (u64)     | payload (size bytes) |    size <= 192
//   | int32  |        |                |                      |
//   +--------+--------+----------------+----------------------+
//   fds (SCM_RIGHTS, at most 8) ride on the sendmsg that carries the header.
//
// Payloads:  config access   u32 addr | u32 val | i32 len                      (12 bytes)
//            BAR access      u64 addr | u64 val | u32 size | u8 memory | pad3  (24 bytes)
//            SYNC_SYSMEM     u64 gpa[8] | u64 size[8] | i64 offset[8]          (192 bytes)
//            RET             u64 value (8 bytes), or nothing (DEVICE_RESET's reply)
import { endianness } from "node:os";
import { MpqemuError } from "./errors.js";

if (endianness() !== "LE") {
  // The protocol is host-endian with no marker; QEMU peers here are x86_64.
  throw new Error("wasmdev mpqemu: only little-endian hosts are supported");
}

export const Cmd = {
  SYNC_SYSMEM: 0,
  RET: 1,
  PCI_CFGWRITE: 2,
  PCI_CFGREAD: 3,
  BAR_WRITE: 4,
  BAR_READ: 5,
  SET_IRQFD: 6,
  DEVICE_RESET: 7,
} as const;
export type CmdValue = (typeof Cmd)[keyof typeof Cmd];

export const CMD_NAMES: readonly string[] = [
  "SYNC_SYSMEM", "RET", "PCI_CFGWRITE", "PCI_CFGREAD", "BAR_WRITE", "BAR_READ", "SET_IRQFD", "DEVICE_RESET",
];

export const HEADER_SIZE = 16;
/** sizeof the payload union in QEMU's MPQemuMsg (SyncSysmemMsg is the largest member). */
export const MAX_PAYLOAD = 192;
/** REMOTE_MAX_FDS. */
export const MAX_FDS = 8;
/** A payload above MAX_PAYLOAD but at most this many bytes is skipped and the stream stays framed. */
export const MAX_DISCARD = 64 * 1024;
export const CONFIG_PAYLOAD = 12;
export const BAR_PAYLOAD = 24;
export const SYSMEM_PAYLOAD = 192;
export const RET_PAYLOAD = 8;
/** The value QEMU's remote answers for a failed access (UINT64_MAX). */
export const ALL_ONES = 0xffff_ffff_ffff_ffffn;

export interface SysmemRegion {
  /** Guest physical address where the region starts. */
  gpa: bigint;
  size: bigint;
  /** Offset of the region within its fd. */
  offset: bigint;
  fd: number;
}

export type SyncSysmemMsg = { cmd: typeof Cmd.SYNC_SYSMEM; regions: SysmemRegion[] };
export type ConfigWriteMsg = { cmd: typeof Cmd.PCI_CFGWRITE; addr: number; value: number; len: number };
export type ConfigReadMsg = { cmd: typeof Cmd.PCI_CFGREAD; addr: number; len: number };
export type BarWriteMsg = { cmd: typeof Cmd.BAR_WRITE; addr: bigint; value: bigint; size: number; memory: boolean };
export type BarReadMsg = { cmd: typeof Cmd.BAR_READ; addr: bigint; size: number; memory: boolean };
export type SetIrqfdMsg = { cmd: typeof Cmd.SET_IRQFD; irqfd: number; resamplefd: number };
export type DeviceResetMsg = { cmd: typeof Cmd.DEVICE_RESET };
/** `value` is null when the RET carried no payload (QEMU's reply to DEVICE_RESET). */
export type RetMsg = { cmd: typeof Cmd.RET; value: bigint | null };

export type RequestMsg = SyncSysmemMsg | ConfigWriteMsg | ConfigReadMsg | BarWriteMsg | BarReadMsg | SetIrqfdMsg | DeviceResetMsg;
export type MpqemuMsg = RequestMsg | RetMsg;

/** Commands the proxy waits on a RET for. */
export function expectsReply(cmd: number): boolean {
  return cmd === Cmd.PCI_CFGWRITE || cmd === Cmd.PCI_CFGREAD || cmd === Cmd.BAR_WRITE || cmd === Cmd.BAR_READ || cmd === Cmd.DEVICE_RESET;
}

export function cmdName(cmd: number): string {
  return CMD_NAMES[cmd] ?? `command ${cmd}`;
}

/**
 * One parse outcome. On rejection the fds that came with the message are already closed;
 * `fatal` means the stream can no longer be framed and the connection must be closed.
 */
export type ParseEvent<M> =
  | { ok: true; message: M }
  | { ok: false; error: MpqemuError; cmd: number; fatal: boolean };

/** Which side of the link this parser sits on: a remote receives requests, a proxy replies. */
export type ParserRole = "remote" | "proxy";

interface Frame {
  cmd: number;
  size: number;
  payload: Uint8Array | null; // null while discarding an oversized payload
  fds: number[];
}

const enum Phase {
  Header,
  Payload,
  Discard,
  Broken,
}

/**
 * Push parser. Feed each received chunk with the fds that arrived on the same recvmsg.
 *
 * Fd attribution follows Linux AF_UNIX stream semantics: a recvmsg returns at most one
 * batch of SCM_RIGHTS, and stops right after the data of the sendmsg that carried it, so
 * the fds in a chunk belong to the last message that starts in that chunk (or, if none
 * starts there, to the message the chunk continues).
 */
export class MpqemuParser<M extends MpqemuMsg = MpqemuMsg> {
  private phase = Phase.Header;
  private readonly header = new Uint8Array(HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private headerFill = 0;
  private current: Frame | null = null;
  private payloadFill = 0;
  private discardLeft = 0;
  /** fds that arrived on a data-less recvmsg; they go to the next message to start. */
  private pendingFds: number[] = [];
  /** DataView over the last chunk's buffer (receive buffers are reused, so this rarely changes). */
  private chunkBuffer: ArrayBufferLike | null = null;
  private chunkView: DataView | null = null;

  constructor(
    private readonly role: ParserRole,
    private readonly closeFd: (fd: number) => void,
  ) {}

  /** Bytes of an incomplete message held (0 at a message boundary). */
  get buffered(): number {
    if (this.phase === Phase.Header) return this.headerFill;
    return HEADER_SIZE + this.payloadFill;
  }

  push(chunk: Uint8Array, fds: readonly number[] | null | undefined, emit: (ev: ParseEvent<M>) => void): void {
    if (this.phase === Phase.Broken) {
      if (fds) for (const fd of fds) this.closeFd(fd);
      return;
    }
    const n0 = chunk.length;
    if (this.phase === Phase.Header && this.headerFill === 0 && n0 >= HEADER_SIZE && this.pendingFds.length === 0) {
      // Fast path: the chunk is exactly one whole message (the request/reply steady state).
      if (chunk.buffer !== this.chunkBuffer) {
        this.chunkBuffer = chunk.buffer;
        this.chunkView = new DataView(chunk.buffer);
      }
      const v = this.chunkView!;
      const base = chunk.byteOffset;
      const size = v.getUint32(base + 8, true);
      if (v.getUint32(base + 12, true) === 0 && size <= MAX_PAYLOAD && n0 === HEADER_SIZE + size) {
        emit(this.decodeAt(v.getInt32(base, true), size, size > 0 ? v : null, base + HEADER_SIZE, fds && fds.length > 0 ? fds.slice() : NO_FDS_IN));
        return;
      }
    }
    const done: Frame[] = [];
    // The message that started last in this chunk (completed or still in progress).
    let lastStarted: Frame | null = null;
    // The message in progress when the chunk began: a Frame if its header was complete,
    // otherwise it is created when the header completes (continuedPartialHeader).
    const continuedPartialHeader = this.phase === Phase.Header && this.headerFill > 0;
    let continuedFrame: Frame | null = this.current;
    let fatal: { frame: Frame; error: MpqemuError } | null = null;

    let pos = 0;
    const n = chunk.length;
    while (pos < n && fatal === null) {
      if (this.phase === Phase.Header) {
        const startsHere = this.headerFill === 0;
        const take = Math.min(HEADER_SIZE - this.headerFill, n - pos);
        this.header.set(chunk.subarray(pos, pos + take), this.headerFill);
        this.headerFill += take;
        pos += take;
        if (this.headerFill < HEADER_SIZE) {
          if (startsHere) lastStarted = PARTIAL_HEADER;
          break;
        }
        this.headerFill = 0;
        const cmd = this.headerView.getInt32(0, true);
        const sizeLo = this.headerView.getUint32(8, true);
        const sizeHi = this.headerView.getUint32(12, true);
        const frame: Frame = { cmd, size: sizeLo, payload: null, fds: this.pendingFds };
        this.pendingFds = [];
        if (startsHere) lastStarted = frame;
        else if (continuedPartialHeader && continuedFrame === null) continuedFrame = frame;
        if (sizeHi !== 0 || sizeLo > MAX_DISCARD) {
          frame.size = sizeHi !== 0 ? Number.MAX_SAFE_INTEGER : sizeLo;
          fatal = {
            frame,
            error: new MpqemuError("MPQEMU_FRAMING", `mpqemu: ${cmdName(cmd)} declares a ${sizeHi !== 0 ? "64-bit" : sizeLo}-byte payload; the stream cannot be trusted, closing`, { cmd }),
          };
          this.phase = Phase.Broken;
          break;
        }
        this.current = frame;
        if (sizeLo === 0) {
          this.finish(done);
        } else if (sizeLo > MAX_PAYLOAD) {
          this.phase = Phase.Discard;
          this.discardLeft = sizeLo;
        } else {
          frame.payload = new Uint8Array(sizeLo);
          this.payloadFill = 0;
          this.phase = Phase.Payload;
        }
      } else if (this.phase === Phase.Payload) {
        const frame = this.current!;
        const take = Math.min(frame.size - this.payloadFill, n - pos);
        frame.payload!.set(chunk.subarray(pos, pos + take), this.payloadFill);
        this.payloadFill += take;
        pos += take;
        if (this.payloadFill === frame.size) this.finish(done);
      } else {
        const take = Math.min(this.discardLeft, n - pos);
        this.discardLeft -= take;
        this.payloadFill += take;
        pos += take;
        if (this.discardLeft === 0) this.finish(done);
      }
    }

    if (fds && fds.length > 0) {
      const owner = lastStarted === PARTIAL_HEADER ? null : lastStarted ?? continuedFrame;
      if (owner) owner.fds = owner.fds.concat(fds);
      else this.pendingFds = this.pendingFds.concat(fds); // next message (partial header, or no data)
    }

    for (const frame of done) emit(this.decode(frame));
    if (fatal) {
      for (const fd of fatal.frame.fds) this.closeFd(fd);
      for (const fd of this.pendingFds) this.closeFd(fd);
      this.pendingFds = [];
      this.current = null;
      emit({ ok: false, error: fatal.error, cmd: fatal.frame.cmd, fatal: true });
    }
  }

  /**
   * The peer hung up. Returns a MPQEMU_TRUNCATED error if a message was incomplete (its fds
   * are closed), or null at a clean boundary.
   */
  end(): MpqemuError | null {
    const partial = this.phase === Phase.Payload || this.phase === Phase.Discard || this.headerFill > 0;
    const cmd = this.current?.cmd;
    const held = this.buffered;
    for (const fd of this.current?.fds ?? []) this.closeFd(fd);
    for (const fd of this.pendingFds) this.closeFd(fd);
    this.pendingFds = [];
    this.current = null;
    this.phase = Phase.Broken;
    this.headerFill = 0;
    if (!partial) return null;
    return new MpqemuError("MPQEMU_TRUNCATED", `mpqemu: connection closed inside a message (${held} bytes of ${cmd === undefined ? "a header" : cmdName(cmd)} received)`, { cmd, size: held });
  }

  private finish(done: Frame[]): void {
    done.push(this.current!);
    this.current = null;
    this.payloadFill = 0;
    this.phase = Phase.Header;
  }

  private reject(cmd: number, size: number, fds: number[], code: MpqemuError["code"], message: string): ParseEvent<M> {
    for (const fd of fds) this.closeFd(fd);
    return { ok: false, error: new MpqemuError(code, message, { cmd, size, fds: fds.length }), cmd, fatal: false };
  }

  private decode(frame: Frame): ParseEvent<M> {
    const p = frame.payload;
    const view = p && p.length > 0 ? new DataView(p.buffer, p.byteOffset, p.byteLength) : null;
    return this.decodeAt(frame.cmd, frame.size, view, 0, frame.fds);
  }

  /** Validates and decodes one message whose payload starts at `view[at]` (view null: none). */
  private decodeAt(cmd: number, size: number, view: DataView | null, at: number, fds: number[]): ParseEvent<M> {
    const nfds = fds.length;
    if (view === null && size > MAX_PAYLOAD) {
      return this.reject(cmd, size, fds, "MPQEMU_OVERSIZED", `mpqemu: ${cmdName(cmd)} with a ${size}-byte payload exceeds the ${MAX_PAYLOAD}-byte maximum; skipped`);
    }
    if (cmd < 0 || cmd > Cmd.DEVICE_RESET) {
      return this.reject(cmd, size, fds, "MPQEMU_UNKNOWN_COMMAND", `mpqemu: unknown command ${cmd} (size ${size}, ${nfds} fds)`);
    }
    if ((cmd === Cmd.RET) !== (this.role === "proxy")) {
      return this.reject(cmd, size, fds, "MPQEMU_UNEXPECTED_COMMAND", `mpqemu: ${cmdName(cmd)} is not valid in this direction (received by the ${this.role})`);
    }
    let wantSize: number;
    let wantFds: string;
    let fdsOk: boolean;
    switch (cmd) {
      case Cmd.RET:
        wantSize = size === 0 ? 0 : RET_PAYLOAD;
        wantFds = "0";
        fdsOk = nfds === 0;
        break;
      case Cmd.PCI_CFGREAD:
      case Cmd.PCI_CFGWRITE:
        wantSize = CONFIG_PAYLOAD;
        wantFds = "0";
        fdsOk = nfds === 0;
        break;
      case Cmd.BAR_READ:
      case Cmd.BAR_WRITE:
        wantSize = BAR_PAYLOAD;
        wantFds = "0";
        fdsOk = nfds === 0;
        break;
      case Cmd.SET_IRQFD:
        wantSize = 0;
        wantFds = "2 (irqfd, resample fd)";
        fdsOk = nfds === 2;
        break;
      case Cmd.DEVICE_RESET:
        wantSize = 0;
        wantFds = "0";
        fdsOk = nfds === 0;
        break;
      default: // SYNC_SYSMEM
        wantSize = SYSMEM_PAYLOAD;
        wantFds = `1 to ${MAX_FDS}`;
        fdsOk = nfds >= 1 && nfds <= MAX_FDS;
    }
    if (size !== wantSize) {
      return this.reject(cmd, size, fds, "MPQEMU_BAD_SIZE", `mpqemu: ${cmdName(cmd)} needs a ${wantSize}-byte payload, got ${size}`);
    }
    if (!fdsOk) return this.reject(cmd, size, fds, "MPQEMU_BAD_FDS", `mpqemu: ${cmdName(cmd)} needs ${wantFds} fds, got ${nfds}`);
    let message: MpqemuMsg;
    const v = view!;
    switch (cmd) {
      case Cmd.RET:
        message = { cmd, value: size === 0 ? null : v.getBigUint64(at, true) };
        break;
      case Cmd.PCI_CFGREAD:
        message = { cmd, addr: v.getUint32(at, true), len: v.getInt32(at + 8, true) };
        break;
      case Cmd.PCI_CFGWRITE:
        message = { cmd, addr: v.getUint32(at, true), value: v.getUint32(at + 4, true), len: v.getInt32(at + 8, true) };
        break;
      case Cmd.BAR_READ:
        message = { cmd, addr: v.getBigUint64(at, true), size: v.getUint32(at + 16, true), memory: v.getUint8(at + 20) !== 0 };
        break;
      case Cmd.BAR_WRITE:
        message = { cmd, addr: v.getBigUint64(at, true), value: v.getBigUint64(at + 8, true), size: v.getUint32(at + 16, true), memory: v.getUint8(at + 20) !== 0 };
        break;
      case Cmd.SET_IRQFD:
        message = { cmd, irqfd: fds[0], resamplefd: fds[1] };
        break;
      case Cmd.DEVICE_RESET:
        message = { cmd };
        break;
      default: {
        const regions: SysmemRegion[] = [];
        for (let i = 0; i < nfds; i++) {
          const gpa = v.getBigUint64(at + i * 8, true);
          const rsize = v.getBigUint64(at + 64 + i * 8, true);
          const offset = v.getBigInt64(at + 128 + i * 8, true);
          if (rsize === 0n || gpa + rsize > 1n << 64n || offset < 0n || offset + rsize > 1n << 63n) {
            return this.reject(cmd, size, fds, "MPQEMU_BAD_FIELD", `mpqemu: SYNC_SYSMEM region ${i} is invalid (gpa 0x${gpa.toString(16)}, size 0x${rsize.toString(16)}, offset ${offset})`);
          }
          regions.push({ gpa, size: rsize, offset, fd: fds[i] });
        }
        message = { cmd: Cmd.SYNC_SYSMEM, regions };
      }
    }
    return { ok: true, message: message as M };
  }
}

const NO_FDS_IN: number[] = [];

/** Marker: a header started in this chunk but is still incomplete (its fds wait in pendingFds). */
const PARTIAL_HEADER: Frame = { cmd: -1, size: 0, payload: null, fds: [] };

/** One encoded message: `bytes` is a view into the encoder's buffer, valid until its next call. */
export interface Encoded {
  bytes: Uint8Array;
  fds: number[];
}

const NO_FDS: number[] = [];

/** Serializer writing into one reused buffer; one method per message. */
export class MpqemuEncoder {
  private readonly buf = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD);
  private readonly view = new DataView(this.buf.buffer);

  private begin(cmd: number, size: number): void {
    this.buf.fill(0, 0, HEADER_SIZE + size);
    this.view.setInt32(0, cmd, true);
    this.view.setUint32(8, size, true);
  }

  private done(size: number, fds: number[] = NO_FDS): Encoded {
    return { bytes: this.buf.subarray(0, HEADER_SIZE + size), fds };
  }

  configRead(addr: number, len: number): Encoded {
    this.begin(Cmd.PCI_CFGREAD, CONFIG_PAYLOAD);
    this.view.setUint32(16, addr, true);
    this.view.setInt32(24, len, true);
    return this.done(CONFIG_PAYLOAD);
  }

  configWrite(addr: number, value: number, len: number): Encoded {
    this.begin(Cmd.PCI_CFGWRITE, CONFIG_PAYLOAD);
    this.view.setUint32(16, addr, true);
    this.view.setUint32(20, value >>> 0, true);
    this.view.setInt32(24, len, true);
    return this.done(CONFIG_PAYLOAD);
  }

  barRead(addr: bigint, size: number, memory: boolean): Encoded {
    this.begin(Cmd.BAR_READ, BAR_PAYLOAD);
    this.view.setBigUint64(16, addr, true);
    this.view.setUint32(32, size, true);
    this.buf[36] = memory ? 1 : 0;
    return this.done(BAR_PAYLOAD);
  }

  barWrite(addr: bigint, value: bigint, size: number, memory: boolean): Encoded {
    this.begin(Cmd.BAR_WRITE, BAR_PAYLOAD);
    this.view.setBigUint64(16, addr, true);
    this.view.setBigUint64(24, BigInt.asUintN(64, value), true);
    this.view.setUint32(32, size, true);
    this.buf[36] = memory ? 1 : 0;
    return this.done(BAR_PAYLOAD);
  }

  /** At most MAX_FDS regions; each carries its own fd. */
  syncSysmem(regions: readonly SysmemRegion[]): Encoded {
    if (regions.length < 1 || regions.length > MAX_FDS) {
      throw new MpqemuError("MPQEMU_BAD_ARGUMENT", `mpqemu: SYNC_SYSMEM carries 1 to ${MAX_FDS} regions, got ${regions.length}`);
    }
    this.begin(Cmd.SYNC_SYSMEM, SYSMEM_PAYLOAD);
    regions.forEach((r, i) => {
      this.view.setBigUint64(16 + i * 8, r.gpa, true);
      this.view.setBigUint64(16 + 64 + i * 8, r.size, true);
      this.view.setBigInt64(16 + 128 + i * 8, r.offset, true);
    });
    return this.done(SYSMEM_PAYLOAD, regions.map((r) => r.fd));
  }

  setIrqfd(irqfd: number, resamplefd: number): Encoded {
    this.begin(Cmd.SET_IRQFD, 0);
    return this.done(0, [irqfd, resamplefd]);
  }

  deviceReset(): Encoded {
    this.begin(Cmd.DEVICE_RESET, 0);
    return this.done(0);
  }

  /** `value` null encodes a RET without payload (what QEMU answers to DEVICE_RESET). */
  ret(value: bigint | null): Encoded {
    if (value === null) {
      this.begin(Cmd.RET, 0);
      return this.done(0);
    }
    this.begin(Cmd.RET, RET_PAYLOAD);
    this.view.setBigUint64(16, BigInt.asUintN(64, value), true);
    return this.done(RET_PAYLOAD);
  }

  /** Raw frame, for tests and fault injection: any command, any payload, any fds. */
  raw(cmd: number, payload: Uint8Array, declaredSize: number = payload.length, fds: number[] = NO_FDS): Encoded {
    const out = new Uint8Array(HEADER_SIZE + payload.length);
    const v = new DataView(out.buffer);
    v.setInt32(0, cmd, true);
    v.setBigUint64(8, BigInt(declaredSize), true);
    out.set(payload, HEADER_SIZE);
    return { bytes: out, fds };
  }
}
