// The eventfds a PCI function's ioeventfds are made of, for both servers.
import type { EventFdSource } from "../core/pci/api.js";
import { EventFd } from "../transport/eventfd.js";

/** Creates non-blocking eventfds watched on the event loop (the transport's EventFd). */
export const hostEventFds: EventFdSource = {
  create: () => EventFd.create(),
};
