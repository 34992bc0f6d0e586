// Reconnecting to a server that serves one client at a time.
import { connectVfioUser } from "../../src/vfio-user/client/connect.js";
import type { VfioUserClient } from "../../src/vfio-user/client/client.js";

/** Connects once the server has let go of its previous client (connectVfioUser waits while it answers EBUSY). */
export function connectWhenFree(path: string): Promise<VfioUserClient> {
  return connectVfioUser(path, { connectTimeoutMs: 5000 });
}
