/**
 * Time as a port: the scheduler and the check runner take a Clock so that tests drive time by hand
 * instead of sleeping.
 */

export type CancelTimer = () => void;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `callback` once after `delayMs`; the returned function cancels it. */
  setTimer(callback: () => void, delayMs: number): CancelTimer;
}

export function createSystemClock(): Clock {
  return {
    now: () => Date.now(),
    setTimer: (callback, delayMs) => {
      const handle = setTimeout(callback, Math.max(0, delayMs));
      return () => clearTimeout(handle);
    },
  };
}
