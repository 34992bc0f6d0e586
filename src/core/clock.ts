// Time as devices see it. Devices schedule their delayed work (a DMA that completes after
// 100 ms, a computation that finishes on the next tick) through a DeviceClock, so a test can
// drive time by hand instead of sleeping, and a VMM could supply virtual time.

/** A scheduled callback; cancel() is idempotent and harmless after it ran. */
export interface DeviceTimer {
  cancel(): void;
}

export interface DeviceClock {
  /** Milliseconds on this clock's time line (monotonic). */
  now(): number;
  /** Runs `callback` once, `ms` (≥ 0) milliseconds from now. Timers due at the same time run
   *  in the order they were set. */
  setTimeout(callback: () => void, ms: number): DeviceTimer;
}

/** Real time: Node timers that do not keep the process alive (a device's pending work does
 *  not hold a server open), and performance.now(). */
export const realClock: DeviceClock = {
  now: () => performance.now(),
  setTimeout(callback, ms) {
    const t = setTimeout(callback, ms);
    t.unref?.();
    return { cancel: () => clearTimeout(t) };
  },
};

/** A clock that moves only when told to (tests). */
export interface ManualClock extends DeviceClock {
  /** Moves time forward by `ms`, running every timer that falls due, in due-time order
   *  (including timers those callbacks set, if they fall due within the step). */
  advance(ms: number): void;
  /** Timers set and not yet run or cancelled. */
  readonly pending: number;
}

export function createManualClock(start = 0): ManualClock {
  let now = start;
  let seq = 0;
  const timers: { due: number; seq: number; callback: () => void }[] = [];
  const clock: ManualClock = {
    now: () => now,
    setTimeout(callback, ms) {
      if (!(ms >= 0)) throw new RangeError(`timer delay must be ≥ 0 ms, not ${ms}`);
      const timer = { due: now + ms, seq: seq++, callback };
      timers.push(timer);
      return {
        cancel() {
          const i = timers.indexOf(timer);
          if (i >= 0) timers.splice(i, 1);
        },
      };
    },
    advance(ms) {
      if (!(ms >= 0)) throw new RangeError(`cannot advance by ${ms} ms`);
      const end = now + ms;
      for (;;) {
        let next = -1;
        for (let i = 0; i < timers.length; i++) {
          const t = timers[i];
          if (t.due > end) continue;
          if (next < 0 || t.due < timers[next].due || (t.due === timers[next].due && t.seq < timers[next].seq)) next = i;
        }
        if (next < 0) break;
        const [t] = timers.splice(next, 1);
        now = t.due;
        t.callback();
      }
      now = end;
    },
    get pending() {
      return timers.length;
    },
  };
  return clock;
}
