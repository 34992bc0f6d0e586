// Our proxy's start-up against QEMU 7.2's remote when the remote's reads lag behind its
// replies. QEMU's remote runs its machine reset (wiping BARs, command register, device state)
// only once its message loop first finds the socket empty, so a fixed quiet time after the
// first answer is not enough when the remote is slow to read again (a busy machine). strace
// delays every recvmsg of the remote to make that lag deterministic.
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { MpqemuProxy } from "../../src/mpqemu/proxy.js";
import { killAllQemu, qemuAvailable, qemuRemoteCommand } from "./harness.js";

const haveQemu = qemuAvailable();
const haveStrace = spawnSync("strace", ["-V"], { encoding: "utf8" }).status === 0;
/** Lag of each of the remote's reads; longer than any plausible fixed quiet time (ours was 50 ms). */
const READ_LAG_MS = 60;

describe.skipIf(!haveQemu || !haveStrace)("start-up against QEMU's remote whose reads lag", () => {
  afterAll(async () => {
    await killAllQemu();
  });

  it("start() resolves only after the remote's start-up reset: what is programmed afterwards stays", async () => {
    const lagged = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=recvmsg", "-e", `inject=recvmsg:delay_enter=${READ_LAG_MS * 1000}`, ...qemuRemoteCommand("pci-testdev")];
    const logs: string[] = [];
    const proxy = await MpqemuProxy.start({ command: lagged, stderr: "pipe", heartbeatMs: 0, log: (l) => logs.push(l) });
    try {
      expect(logs).toEqual([]); // the start-up reset was observed, not given up on
      await proxy.configWrite(0x0c, 1, 0x20); // cache line size: QEMU's machine reset clears it
      await proxy.configWrite(0x04, 2, 0x3);
      // Long enough for the remote to find its socket empty (and reset, were it still due).
      await new Promise((r) => setTimeout(r, 3 * READ_LAG_MS));
      expect(await proxy.configRead(0x0c, 1)).toBe(0x20);
      expect((await proxy.configRead(0x04, 2)) & 0x3).toBe(0x3);
    } finally {
      await proxy.close();
    }
  }, 20_000);
});
