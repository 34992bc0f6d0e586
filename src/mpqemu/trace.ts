// Trace events for mpqemu messages (see log.ts): from a decoded message on the way in, from the
// encoded bytes on the way out. Only called when a logger traces.
import type { TraceEvent } from "../log.js";
import { BAR_PAYLOAD, CONFIG_PAYLOAD, Cmd, HEADER_SIZE, RET_PAYLOAD, SYSMEM_PAYLOAD, cmdName, type MpqemuMsg, type ParseEvent } from "./wire.js";

const hex = (v: number | bigint) => "0x" + v.toString(16);

/** Payload bytes and fds of an accepted message (each command has one size: wire.ts decodeAt). */
function wireShape(m: MpqemuMsg): [payload: number, fds: number] {
  switch (m.cmd) {
    case Cmd.RET:
      return [m.value === null ? 0 : RET_PAYLOAD, 0];
    case Cmd.PCI_CFGREAD:
    case Cmd.PCI_CFGWRITE:
      return [CONFIG_PAYLOAD, 0];
    case Cmd.BAR_READ:
    case Cmd.BAR_WRITE:
      return [BAR_PAYLOAD, 0];
    case Cmd.SET_IRQFD:
      return [0, 2];
    case Cmd.DEVICE_RESET:
      return [0, 0];
    case Cmd.SYNC_SYSMEM:
      return [SYSMEM_PAYLOAD, m.regions.length];
  }
}

/** A message as the parser delivered it (rejected ones carry the reason). */
export function traceReceived(ev: ParseEvent<MpqemuMsg>): TraceEvent {
  if (!ev.ok) {
    const e = ev.error;
    return { protocol: "mpqemu", direction: "in", command: cmdName(ev.cmd), type: ev.cmd === Cmd.RET ? "reply" : "command", size: HEADER_SIZE + (e.size ?? 0), fds: e.fds ?? 0, flags: [ev.fatal ? "unframeable" : "rejected"], fields: { reason: e.code } };
  }
  const m = ev.message;
  const [payload, fds] = wireShape(m);
  const event: TraceEvent = { protocol: "mpqemu", direction: "in", command: cmdName(m.cmd), type: m.cmd === Cmd.RET ? "reply" : "command", size: HEADER_SIZE + payload, fds };
  switch (m.cmd) {
    case Cmd.PCI_CFGREAD:
      event.fields = { addr: hex(m.addr), len: m.len };
      break;
    case Cmd.PCI_CFGWRITE:
      event.fields = { addr: hex(m.addr), len: m.len, value: hex(m.value) };
      break;
    case Cmd.BAR_READ:
      event.fields = { addr: hex(m.addr), len: m.size, space: m.memory ? "memory" : "io" };
      break;
    case Cmd.BAR_WRITE:
      event.fields = { addr: hex(m.addr), len: m.size, value: hex(m.value), space: m.memory ? "memory" : "io" };
      break;
    case Cmd.SYNC_SYSMEM:
      event.fields = { regions: m.regions.length };
      break;
    case Cmd.RET:
      if (m.value !== null) event.fields = { value: hex(m.value) };
      break;
  }
  return event;
}

/** An encoded message about to be sent (header: cmd i32 at 0, size u64 at 8). */
export function traceSent(bytes: Uint8Array, fds: number): TraceEvent {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cmd = v.getInt32(0, true);
  const payload = bytes.byteLength - HEADER_SIZE;
  const event: TraceEvent = { protocol: "mpqemu", direction: "out", command: cmdName(cmd), type: cmd === Cmd.RET ? "reply" : "command", size: bytes.byteLength, fds };
  if (cmd === Cmd.RET && payload >= 8) event.fields = { value: hex(v.getBigUint64(16, true)) };
  else if ((cmd === Cmd.PCI_CFGREAD || cmd === Cmd.PCI_CFGWRITE) && payload >= 12) {
    event.fields = { addr: hex(v.getUint32(16, true)), len: v.getInt32(24, true) };
    if (cmd === Cmd.PCI_CFGWRITE) event.fields.value = hex(v.getUint32(20, true));
  } else if ((cmd === Cmd.BAR_READ || cmd === Cmd.BAR_WRITE) && payload >= 24) {
    event.fields = { addr: hex(v.getBigUint64(16, true)), len: v.getUint32(32, true), space: v.getUint8(36) ? "memory" : "io" };
    if (cmd === Cmd.BAR_WRITE) event.fields.value = hex(v.getBigUint64(24, true));
  }
  return event;
}
