// Fuzz target: the mpqemu framer and decoders (src/mpqemu/wire.ts), in both roles.
//
// Input: [role] [cut count] [cut points...] [stream...]. As for the vfio-user parser: nothing
// throws, whole and split parses agree message for message, nothing follows a fatal error,
// and every fd is handed out in a message or closed by the parser exactly once.
import { MpqemuParser, type MpqemuMsg } from "../../../src/mpqemu/wire.js";
import { MpqemuError } from "../../../src/mpqemu/errors.js";
import { FuzzInput, splitAt, check } from "../support/input.js";

interface Seen {
  events: string[];
  given: number[];
  closed: number[];
}

function fdsOf(m: MpqemuMsg): number[] {
  if (m.cmd === 0) return m.regions.map((r) => r.fd);
  if (m.cmd === 6) return [m.irqfd, m.resamplefd];
  return [];
}

function describe(m: MpqemuMsg): string {
  const { cmd, ...rest } = m as MpqemuMsg & Record<string, unknown>;
  const fields = Object.entries(rest)
    .filter(([k]) => k !== "irqfd" && k !== "resamplefd")
    .map(([k, v]) => `${k}=${k === "regions" ? (v as { gpa: bigint; size: bigint; offset: bigint }[]).map((r) => `${r.gpa}/${r.size}/${r.offset}`).join(",") : String(v)}`);
  return `msg ${cmd} ${fields.join(" ")}`;
}

function run(role: "remote" | "proxy", chunks: Uint8Array[], fdsFor: (i: number) => number[]): Seen {
  const seen: Seen = { events: [], given: [], closed: [] };
  const parser = new MpqemuParser(role, (fd) => seen.closed.push(fd));
  let failed = false;
  chunks.forEach((chunk, i) => {
    parser.push(chunk, fdsFor(i), (ev) => {
      check(!failed, "an event after a fatal framing error");
      if (ev.ok) {
        seen.given.push(...fdsOf(ev.message));
        seen.events.push(describe(ev.message));
      } else {
        check(ev.error instanceof MpqemuError, "a rejection that is not an MpqemuError");
        if (ev.fatal) failed = true;
        seen.events.push(`error ${ev.error.code} ${ev.cmd} ${ev.fatal}`);
      }
    });
  });
  const end = parser.end();
  if (end) seen.events.push(`end ${end.code}`);
  return seen;
}

export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const role = input.bool() ? "remote" : "proxy";
  const cutCount = input.below(8);
  const cutSeed = input.bytes(cutCount * 4);
  const stream = input.rest();
  const whole = run(role, [stream], () => []);
  const chunks = splitAt(stream, new FuzzInput(cutSeed), cutCount);
  let nextFd = 1000;
  const sent: number[] = [];
  const split = run(role, chunks, (i) => {
    const n = (cutSeed[i] ?? 0) % 3;
    const fds = Array.from({ length: n }, () => nextFd++);
    sent.push(...fds);
    return fds;
  });
  // Fds change which messages are valid (SYNC_SYSMEM needs one per region), so compare the
  // split run with a whole run only when no fds rode along.
  if (sent.length === 0) {
    check(whole.events.join("\n") === split.events.join("\n"), () => `split-dependent parse:\nwhole:\n${whole.events.join("\n")}\nsplit:\n${split.events.join("\n")}`);
  }
  const accounted = [...split.given, ...split.closed].sort((a, b) => a - b);
  check(accounted.join() === sent.join(), `fds sent ${sent.join()} but handed out ${split.given.join()} and closed ${split.closed.join()}`);
}
