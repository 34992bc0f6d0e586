// Fuzz target: the vfio-user framer (src/vfio-user/wire/parser.ts) and every payload decoder.
//
// Input: [limit selector] [cut count] [cut points...] [stream...]. The stream is parsed twice,
// once whole and once cut at the chosen points with fake fds riding on some chunks.
// Invariants: nothing throws; every frame is within the size limit and its body is exactly
// size - 16 bytes; both runs yield the same frames and errors (framing does not depend on how
// reads split the stream); no frame follows a fatal error; every fd is handed out in a frame or
// closed by the parser exactly once; every decoder returns a value or a WireError.
import * as wire from "../../../src/vfio-user/wire/index.js";
import { FuzzInput, splitAt, check } from "../support/input.js";

const LIMITS = [64, 256, 4096, 1 << 20];
const decoders = Object.entries(wire)
  .filter(([name, f]) => name.startsWith("decode") && typeof f === "function")
  .map(([name, f]) => [name, f as (b: Uint8Array) => unknown] as const);

interface Seen {
  events: string[];
  given: number[];
  closed: number[];
}

function run(maxMessageSize: number, chunks: Uint8Array[], fdsFor: (i: number) => number[]): Seen {
  const seen: Seen = { events: [], given: [], closed: [] };
  const parser = new wire.MessageParser({ maxMessageSize, closeFd: (fd) => seen.closed.push(fd) });
  let failed = false;
  chunks.forEach((chunk, i) => {
    parser.parse(chunk, fdsFor(i), (ev) => {
      check(!failed, "an event after a fatal framing error");
      if (ev.kind === "frame") {
        check(ev.size >= wire.HEADER_SIZE && ev.size <= maxMessageSize, `frame size ${ev.size} outside [16, ${maxMessageSize}]`);
        check(ev.body.length === ev.size - wire.HEADER_SIZE, `frame body ${ev.body.length} bytes for size ${ev.size}`);
        seen.given.push(...ev.fds);
        seen.events.push(`frame ${ev.msgId} ${ev.command} ${ev.flags} ${ev.error} ${ev.size} ${Buffer.from(ev.body).toString("hex")}`);
        for (const [name, decode] of decoders) {
          const r = decode(ev.body);
          check(r !== undefined && r !== null, `${name} returned ${r}`);
        }
      } else {
        check(ev.error instanceof wire.WireError, "a framing error that is not a WireError");
        if (ev.fatal) failed = true;
        seen.events.push(`error ${ev.error.code} ${ev.fatal} ${ev.msgId} ${ev.command}`);
      }
    });
  });
  const end = parser.end();
  if (end) seen.events.push(`end ${end.code}`);
  return seen;
}

export function fuzz(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const maxMessageSize = input.pick(LIMITS);
  const cutCount = input.below(8);
  const cutSeed = input.bytes(cutCount * 4);
  const stream = input.rest();
  const whole = run(maxMessageSize, [stream], () => []);
  const chunks = splitAt(stream, new FuzzInput(cutSeed), cutCount);
  let nextFd = 1000;
  const sent: number[] = [];
  const split = run(maxMessageSize, chunks, (i) => {
    if ((cutSeed[i] ?? 0) & 1) return [];
    const fds = [nextFd++];
    sent.push(...fds);
    return fds;
  });
  check(
    whole.events.join("\n") === split.events.join("\n"),
    () => `split-dependent parse:\nwhole:\n${whole.events.join("\n")}\nsplit:\n${split.events.join("\n")}`,
  );
  const accounted = [...split.given, ...split.closed].sort((a, b) => a - b);
  check(accounted.join() === sent.join(), `fds sent ${sent.join()} but handed out ${split.given.join()} and closed ${split.closed.join()}`);
}
