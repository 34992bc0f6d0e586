// The README's "Write a device" example, verbatim apart from the socket path: what a new
// user copies first must keep working.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPciFunction, VfioUserServer, connectVfioUser } from "../../src/index.js";

describe("README example", () => {
  const dir = mkdtempSync(join(tmpdir(), "wasmdev-readme-"));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("serves a one-register device and drives it with the client", async () => {
    const socketPath = join(dir, "counter.sock");

    let counter = 0;
    const fn = createPciFunction({
      name: "counter",
      vendorId: 0x1234,
      deviceId: 0x0001,
      classCode: 0xff0000,
      bars: [
        {
          kind: "mem32",
          size: 4096,
          ops: {
            valid: { min: 4, max: 4 },
            read: (offset) => (offset === 0 ? counter : 0),
            write: (offset, _size, value) => {
              if (offset === 0) counter = Number(value) + 1;
            },
          },
        },
      ],
    });
    const server = VfioUserServer.listen({ device: fn, socketPath });

    const client = await connectVfioUser(socketPath);
    await client.writeValue(0, 0, 4, 41);
    const value = await client.readValue(0, 0, 4);
    client.close();
    await server.close();
    fn.dispose();

    expect(value).toBe(42n);
  });
});
