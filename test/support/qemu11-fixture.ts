// What every QEMU 11.1 test needs around its QEMUs: a temporary folder, our vfio-user server
// on a socket in it (edu unless the test brings its own device), optionally a recording proxy
// in front of it, and the teardown of all three. Call inside a describe block: it registers
// the beforeAll/afterAll hooks and hands back an object filled in by beforeAll.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, it } from "vitest";
import type { PciFunction } from "../../src/core/pci/api.js";
import { createEdu } from "../../src/devices/edu.js";
import { VfioUserServer, type VfioUserServerOptions } from "../../src/vfio-user/server/index.js";
import { RecordingProxy } from "./recording-proxy.js";
import { trixie, trixieSkipReason } from "./trixie.js";

/** describe() that runs only with the QEMU 11.1 root; without it one skipped test says why. */
export function describeQemu11(name: string, body: () => void): void {
  if (trixieSkipReason) it.skip(`QEMU 11.1 e2e skipped: ${trixieSkipReason}`, () => {});
  describe.skipIf(!trixie)(name, body);
}

export interface Qemu11FixtureOptions {
  /** The served function (default: a fresh edu). */
  device?: () => PciFunction;
  /** Put a RecordingProxy between QEMU and the server. */
  proxy?: boolean;
  /** Further server options. */
  server?: Omit<VfioUserServerOptions, "device" | "socketPath">;
}

export interface Qemu11Fixture {
  dir: string;
  /** The server's own socket. */
  serverSocket: string;
  server: VfioUserServer;
  device: PciFunction;
  /** Present when asked for. */
  proxy: RecordingProxy | undefined;
  /** Where QEMU should connect: the proxy's socket if there is one, else the server's. */
  socketPath: string;
  /**
   * Resolves once the server has seen its current client go (at once if none): a QEMU that
   * exited may not have been noticed yet, and the server refuses a newcomer until it has.
   */
  sessionEnded(): Promise<void>;
}

export function useQemu11Fixture(options: Qemu11FixtureOptions = {}): Qemu11Fixture {
  const f = {} as Qemu11Fixture;
  beforeAll(() => {
    f.dir = mkdtempSync(join(tmpdir(), "wasmdev-qemu11-"));
    f.serverSocket = join(f.dir, "server.sock");
    f.device = options.device ? options.device() : createEdu().fn;
    f.server = VfioUserServer.listen({ ...options.server, device: f.device, socketPath: f.serverSocket });
    f.proxy = options.proxy ? new RecordingProxy(join(f.dir, "proxy.sock"), f.serverSocket) : undefined;
    f.socketPath = f.proxy?.path ?? f.serverSocket;
    f.sessionEnded = async () => {
      const s = f.server.current;
      if (!s || s.connection.isClosed) return;
      await new Promise<void>((resolve) => s.connection.once("close", () => resolve()));
    };
  });
  afterAll(async () => {
    f.proxy?.close();
    await f.server?.close();
    if (f.dir) rmSync(f.dir, { recursive: true, force: true });
  });
  return f;
}
