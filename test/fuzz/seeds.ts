// Writes the seed corpora in test/fuzz/corpus/<target>/ (committed; `node test/fuzz/run.mjs
// --seeds` reruns this). The framer seeds are small valid messages made by the project's own
// serializers, whole and in streams; the script targets' seeds are scripts recorded from a
// seeded generator (RecordingInput), so each is a complete, meaningful session that the
// engine then mutates.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as wire from "../../src/vfio-user/wire/index.js";
import { MpqemuEncoder } from "../../src/mpqemu/wire.js";
import { RecordingInput, concatBytes, type FuzzInput } from "./support/input.js";
import { fuzzWith as session, stats as sessionStats } from "./targets/vfio-user-session.js";
import { fuzzWith as remote, stats as remoteStats } from "./targets/mpqemu-remote.js";
import { fuzzWith as memory } from "./targets/memory-core.js";
import { fuzzWith as nvme } from "./targets/nvme.js";

const corpus = join(process.argv[2] ?? "test/fuzz", "corpus");

function writeSeeds(target: string, seeds: Uint8Array[]): void {
  const dir = join(corpus, target);
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (f.startsWith("seed-")) rmSync(join(dir, f));
  seeds.forEach((s, i) => writeFileSync(join(dir, `seed-${String(i).padStart(2, "0")}`), s));
  console.log(`${target}: ${seeds.length} seeds`);
}

function vfioUserMessages(): Uint8Array[] {
  const w = new wire.MessageWriter(256);
  const take = (f: () => void) => {
    f();
    return w.take().slice();
  };
  return [
    take(() => wire.writeVersionRequest(w, 1, { capabilities: { maxMsgFds: 8, maxDataXferSize: 4096 } })),
    take(() => wire.writeDmaMapRequest(w, 2, { flags: 3, offset: 0n, address: 0x10000n, size: 0x1000n })),
    take(() => wire.writeDmaUnmapRequest(w, 3, { flags: 0, address: 0x10000n, size: 0x1000n })),
    take(() => wire.writeDeviceInfoRequest(w, 4)),
    take(() => wire.writeRegionInfoRequest(w, 5, 0)),
    take(() => wire.writeRegionIoFdsRequest(w, 6, 0)),
    take(() => wire.writeIrqInfoRequest(w, 7, 0)),
    take(() => wire.writeIrqSetRequest(w, 8, { flags: 0x24, index: 0, start: 0, count: 1 })),
    take(() => wire.writeRegionReadRequest(w, 9, 0, 0, 0, 4)),
    take(() => wire.writeRegionWriteRequest(w, 10, 4, 0, 0, Uint8Array.of(1, 2, 3, 4))),
    take(() => wire.writeRegionWriteMultiRequest(w, 11, [{ offsetLo: 8, offsetHi: 0, region: 0, data: Uint8Array.of(5, 0, 0, 0) }])),
    take(() => wire.writeDmaReadReply(w, 12, 0x10000n, Uint8Array.of(9, 9, 9, 9))),
    take(() => wire.writeDeviceResetRequest(w, 13)),
    take(() => wire.writeDeviceFeatureRequest(w, 14, 1 << 16 | 1)),
    take(() => wire.writeMigDataReadRequest(w, 15, 8)),
    take(() => wire.writeMigDataWriteRequest(w, 16, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8))),
    take(() => wire.writeErrorReply(w, 17, 9, 22)),
  ];
}

function mpqemuMessages(): Uint8Array[] {
  const e = new MpqemuEncoder();
  const take = (x: { bytes: Uint8Array }) => x.bytes.slice();
  return [
    take(e.configRead(0, 2)),
    take(e.configWrite(4, 6, 2)),
    take(e.barRead(0xfea00000n, 4, true)),
    take(e.barWrite(0xfea00004n, 0x12345678n, 4, true)),
    take(e.syncSysmem([{ gpa: 0n, size: 0x10000n, offset: 0n, fd: 3 }])),
    take(e.setIrqfd(3, 4)),
    take(e.deviceReset()),
    take(e.ret(0x1234n)),
    take(e.ret(null)),
  ];
}

/** [selector][cut count = 0][stream]: one seed per message, and one stream of all of them. */
function framerSeeds(selector: number, messages: Uint8Array[]): Uint8Array[] {
  const seeds = messages.map((m) => concatBytes([Uint8Array.of(selector, 0), m]));
  seeds.push(concatBytes([Uint8Array.of(selector, 0), ...messages]));
  // The stream again, cut at three points (4 bytes each).
  seeds.push(concatBytes([Uint8Array.of(selector, 3, 7, 0, 0, 0, 40, 0, 0, 0, 101, 0, 0, 0), ...messages]));
  return seeds;
}

/**
 * `count` recorded scripts. With `reaches`, candidates are drawn until half the seeds are ones
 * for which it says true (e.g. the script mapped memory and made the device DMA), so the
 * corpus starts at the paths the invariants are about.
 */
async function recorded(run: (input: FuzzInput) => unknown, count: number, budget: number, reaches?: () => boolean): Promise<Uint8Array[]> {
  const plain: Uint8Array[] = [];
  const deep: Uint8Array[] = [];
  for (let i = 1; (plain.length < count - (reaches ? count >> 1 : 0) || (reaches && deep.length < count >> 1)) && i < 5000; i++) {
    const input = new RecordingInput(Math.imul(0x9e3779b9, i), budget);
    await run(input);
    if (reaches?.()) {
      if (deep.length < count >> 1) deep.push(input.recorded());
    } else if (plain.length < count - (reaches ? count >> 1 : 0)) plain.push(input.recorded());
  }
  return [...plain, ...deep];
}

async function main(): Promise<void> {
  writeSeeds("vfio-user-parser", framerSeeds(3, vfioUserMessages()));
  writeSeeds("mpqemu-parser", [...framerSeeds(1, mpqemuMessages()), ...framerSeeds(0, mpqemuMessages().slice(-2))]);
  const sessionMark = { dma: 0, maps: 0 };
  writeSeeds("vfio-user-session", await recorded(session, 16, 600, () => {
    const reached = sessionStats.dmaRequests > sessionMark.dma && sessionStats.fdMaps > sessionMark.maps;
    [sessionMark.dma, sessionMark.maps] = [sessionStats.dmaRequests, sessionStats.fdMaps];
    return reached;
  }));
  let remoteMaps = 0;
  writeSeeds("mpqemu-remote", await recorded(remote, 16, 400, () => {
    const reached = remoteStats.fdMaps > remoteMaps && remoteStats.stillServing > 0;
    remoteMaps = remoteStats.fdMaps;
    return reached;
  }));
  writeSeeds("memory-core", await recorded(memory, 16, 700));
  writeSeeds("nvme", await recorded(nvme, 16, 900));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
