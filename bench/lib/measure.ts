/** Small measuring tools the benchmarks share: /proc readings, percentiles. */

export { freePort, freePorts } from '../../test/fakes/ports.js';

import { readFileSync } from 'node:fs';

export function rssMB(pid: number): number {
  const line = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return line === null ? Number.NaN : Number(line[1]) / 1024;
}

/** CPU seconds of the process and of its reaped children, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime, stime, cutime, cstime are fields 14-17 of stat, 12-15 after the command name.
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0);
  return ticks / 100; // USER_HZ is 100 on Linux
}

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `url` answers `status`; rejects after `withinMs`. */
export async function waitForStatus(url: string, status: number, withinMs: number): Promise<void> {
  const started = Date.now();
  while (Date.now() - started < withinMs) {
    try {
      if ((await fetch(url)).status === status) return;
    } catch {
      // Not listening yet.
    }
    await sleep(50);
  }
  throw new Error(`${url} did not answer ${status} within ${withinMs} ms`);
}
