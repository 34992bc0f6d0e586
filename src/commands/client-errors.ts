// How the client commands (lspci, region) word connection failures.
import type { Logger } from "../log.js";
import { VfioUserClientError } from "../vfio-user/client/errors.js";

/** The note printed once when the server answers that another client is connected. */
export function onBusyNotice(logger: Logger, path: string, timeoutMs: number): () => void {
  return () => logger.info(`another client is connected to ${path}; waiting up to ${timeoutMs} ms for it to leave (the server serves one client at a time)`);
}

/** The message of a connect or request failure, in the commands' words. */
export function describeClientError(err: unknown, path: string, timeoutMs: number): string {
  if (err instanceof VfioUserClientError && err.code === "ERR_BUSY") {
    return `another client is connected to ${path} and still was after ${timeoutMs} ms (the server serves one client at a time; --timeout waits longer)`;
  }
  return err instanceof Error ? err.message : String(err);
}
