/** Polling for a condition, for tests that wait on other processes (Prometheus, an exporter). */

import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The first value `probe` gives other than undefined, asked every `everyMs`; throws naming `what`
 * once `withinMs` has passed without one. The deadline is a guard against a hang, not a figure
 * under test: give it room for a loaded 2-CPU machine.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  withinMs: number,
  everyMs = 250,
): Promise<T> {
  const started = performance.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() - started > withinMs)
      throw new Error(`${what} not within ${withinMs / 1000} s`);
    await sleep(everyMs);
  }
}
