// Explicit limits of the transport. Every one is enforced and has a test; protocols narrow them
// to what they negotiated (e.g. vfio-user's max_msg_fds and max_data_xfer_size).

export interface TransportLimits {
  /**
   * Largest message a framer may accept, header included. ReceiveBuffer.need() rejects larger
   * declared sizes before allocating (ERR_MESSAGE_TOO_LARGE); the receive buffer never grows
   * beyond this.
   */
  maxMessageSize: number;
  /**
   * Most fds one message (one sendmsg) may carry, in either direction. The receive control
   * buffer is sized for exactly this many; a peer that sends more gets the connection closed
   * with ERR_TOO_MANY_FDS and every fd that did arrive is closed. Hard cap: 253 (SCM_MAX_FD).
   */
  maxFdsPerMessage: number;
}

export const DEFAULT_LIMITS: Readonly<TransportLimits> = Object.freeze({
  maxMessageSize: 4 * 1024 * 1024,
  maxFdsPerMessage: 16,
});

/** The kernel's own cap on fds in one SCM_RIGHTS message (SCM_MAX_FD). */
export const KERNEL_MAX_FDS_PER_MESSAGE = 253;

/** Default budget of bytes mapped at once through mmapFd() by the whole process (16 GiB). */
export const DEFAULT_MAX_MAPPED_BYTES = 16 * 1024 * 1024 * 1024;

/**
 * Most mappings (mmapFd regions) the whole process holds at once: the size of the addon's
 * SIGBUS guard table, which must know every mapping to recover from a peer shrinking its file.
 * One more fails with ERR_MAP_LIMIT. (Linux's own default, vm.max_map_count, is 65530.)
 */
export const MAX_MAPPINGS = 32768;
