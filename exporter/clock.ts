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

/** Node fires a setTimeout longer than this after 1 ms instead, so longer waits are chained. */
const LONGEST_TIMEOUT_MS = 2 ** 31 - 1;

export function createSystemClock(): Clock {
  return {
    now: () => Date.now(),
    setTimer: (callback, delayMs) => {
      const due = Date.now() + Math.max(0, delayMs);
      let handle: NodeJS.Timeout;
      const arm = (): void => {
        const remaining = due - Date.now();
        handle =
          remaining > LONGEST_TIMEOUT_MS
            ? setTimeout(arm, LONGEST_TIMEOUT_MS)
            : setTimeout(callback, Math.max(0, remaining));
      };
      arm();
      return () => clearTimeout(handle);
    },
  };
}

/** Resolves after `delayMs` on `clock`; rejects with the signal's reason as soon as it aborts. */
export function sleep(clock: Clock, delayMs: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const reason = (): Error =>
      signal.reason instanceof Error
        ? signal.reason
        : new Error(String(signal.reason ?? 'aborted'));
    if (signal.aborted) {
      reject(reason());
      return;
    }
    const onAbort = (): void => {
      cancel();
      reject(reason());
    };
    const cancel = clock.setTimer(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
