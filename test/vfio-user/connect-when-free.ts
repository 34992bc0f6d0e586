// Reconnecting to a server that serves one client at a time.
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient } from "../../src/vfio-user/client/client.js";
import { sleep } from "./raw-client.js";

/** Connects once the server has let go of its previous client (it answers EBUSY until then). */
export async function connectWhenFree(path: string): Promise<VfioUserClient> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await connectVfioUser(path);
    } catch (err) {
      if ((err as { errno?: number }).errno !== 16 || Date.now() > deadline) throw err; // 16 = EBUSY
      await sleep(5);
    }
  }
}
