import { createXidWatcher, type XidLedger, type XidWatcher } from '../../exporter/checks/xid.js';
import { createSystemClock } from '../../exporter/clock.js';
import { silentLogger } from '../../exporter/log.js';
import type { Nvml } from '../../exporter/native/ports.js';

/** An XID watcher over `nvml` on the system clock, and how many runs it has asked for so far. */
export function countingXidWatcher(
  nvml: Nvml,
  ledger: XidLedger,
  waitMs: number,
): { readonly watcher: XidWatcher; readonly changes: () => number } {
  let changes = 0;
  const watcher = createXidWatcher({
    nvml: { ok: true, nvml },
    ledger,
    clock: createSystemClock(),
    logger: silentLogger,
    onChange: () => (changes += 1),
    waitMs,
  });
  return { watcher, changes: () => changes };
}
