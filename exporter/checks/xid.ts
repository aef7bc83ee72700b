/**
 * xid: XID error events, which the driver raises for GPU faults (and for some application errors).
 * A watcher listens to NVML continuously and feeds a ledger; the check judges each GPU from it:
 * a fatal XID since the exporter started → FAIL, fatal (the node is evicted, and stays so until
 * an acknowledge); another hardware or firmware XID in the last hour → WARN; XIDs that an
 * application causes (13, 31, 43, 45) are counted but judged healthy. The same XID on the same
 * GPU within the debounce window counts once: a storm of one fault is one fault.
 */

import type { Clock, CancelTimer } from '../clock.js';
import type { Logger } from '../log.js';
import type { NvmlLoad, XidEvent } from '../native/ports.js';
import type { Check, DeviceResult } from './check.js';
import { gpuCheckBase, gpuSample, judgeEach, withGpus } from './gpu-common.js';

export type XidSeverity = 'fatal' | 'warn' | 'application';

/** NVIDIA's XID catalogue, the codes with a known meaning for node health; others count as warn. */
export const XID_TABLE: Readonly<
  Record<number, { readonly severity: XidSeverity; readonly meaning: string }>
> = {
  13: { severity: 'application', meaning: 'graphics engine exception' },
  31: { severity: 'application', meaning: 'GPU memory page fault' },
  43: { severity: 'application', meaning: 'GPU stopped processing' },
  45: { severity: 'application', meaning: 'preemptive cleanup' },
  48: { severity: 'fatal', meaning: 'double-bit ECC error' },
  61: { severity: 'warn', meaning: 'internal micro-controller breakpoint' },
  62: { severity: 'warn', meaning: 'internal micro-controller halt' },
  63: { severity: 'fatal', meaning: 'ECC page retirement or row remapping event' },
  64: { severity: 'fatal', meaning: 'ECC page retirement or row remapping recording failure' },
  69: { severity: 'warn', meaning: 'graphics engine class error' },
  74: { severity: 'fatal', meaning: 'NVLink error' },
  79: { severity: 'fatal', meaning: 'GPU has fallen off the bus' },
  92: { severity: 'fatal', meaning: 'high single-bit ECC error rate' },
  94: { severity: 'fatal', meaning: 'contained ECC error' },
  95: { severity: 'fatal', meaning: 'uncontained ECC error' },
  109: { severity: 'warn', meaning: 'context switch timeout' },
  119: { severity: 'warn', meaning: 'GSP RPC timeout' },
  120: { severity: 'warn', meaning: 'GSP error' },
  121: { severity: 'warn', meaning: 'C2C link corrected error' },
  140: { severity: 'warn', meaning: 'unrecovered ECC error' },
  143: { severity: 'warn', meaning: 'GPU initialization failure' },
  149: { severity: 'warn', meaning: 'NVLink NETIR error' },
  154: { severity: 'warn', meaning: 'GPU recovery action changed' },
};

export function classifyXid(xid: number): {
  readonly severity: XidSeverity;
  readonly meaning: string;
} {
  return XID_TABLE[xid] ?? { severity: 'warn', meaning: 'XID not in the catalogue' };
}

export interface XidTally {
  readonly xid: number;
  readonly count: number;
  readonly firstAt: number;
  readonly lastAt: number;
}

/** Counts XIDs per GPU and code, debounced; pure state with the time passed in. */
export interface XidLedger {
  /** Returns whether the event counted (false: a repeat inside the debounce window). */
  record(event: XidEvent, at: number): boolean;
  /** Tallies of one GPU, by code. */
  tallies(gpuIndex: number): readonly XidTally[];
  /** Why the listener cannot currently hear events, or undefined while it can. */
  listenerFailure(): string | undefined;
  setListenerFailure(reason: string | undefined): void;
  /** When the listener's pending wait began; undefined between waits. */
  waitingSince(): number | undefined;
  setWaitingSince(at: number | undefined): void;
}

/**
 * A wait of the listener still running this long is stuck in the driver: waits last a second, and
 * the wait has a thread of its own, so nothing else delays it for long.
 */
export const XID_WAIT_STUCK_MS = 10_000;

export const XID_SUMMARY = 'XID error events, listened to continuously and classified by severity';

export function createXidLedger(options: { readonly debounceMs: number }): XidLedger {
  const byGpu = new Map<number, Map<number, XidTally>>();
  let listenerFailure: string | undefined;
  let waitingSince: number | undefined;
  return {
    listenerFailure: () => listenerFailure,
    setListenerFailure: (reason) => {
      listenerFailure = reason;
    },
    waitingSince: () => waitingSince,
    setWaitingSince: (at) => {
      waitingSince = at;
    },
    record(event, at) {
      const codes = byGpu.get(event.gpuIndex) ?? new Map<number, XidTally>();
      byGpu.set(event.gpuIndex, codes);
      const previous = codes.get(event.xid);
      if (previous !== undefined && at - previous.lastAt < options.debounceMs) {
        codes.set(event.xid, { ...previous, lastAt: at });
        return false;
      }
      codes.set(event.xid, {
        xid: event.xid,
        count: (previous?.count ?? 0) + 1,
        firstAt: previous?.firstAt ?? at,
        lastAt: at,
      });
      return true;
    },
    tallies: (gpuIndex) => [...(byGpu.get(gpuIndex)?.values() ?? [])].sort((a, b) => a.xid - b.xid),
  };
}

/** How long a non-fatal XID keeps its GPU at WARN. */
export const XID_WARN_WINDOW_MS = 3_600_000;

/** Pure: the verdict for one GPU from its tallies. */
export function judgeXids(id: string, tallies: readonly XidTally[], now: number): DeviceResult {
  const describe = (t: XidTally): string =>
    `XID ${t.xid} (${classifyXid(t.xid).meaning}) ×${t.count}, last ${new Date(t.lastAt).toISOString()}`;
  const evidence = Object.fromEntries(tallies.map((t) => [`xid${t.xid}`, t.count]));
  const fatal = tallies.filter((t) => classifyXid(t.xid).severity === 'fatal');
  if (fatal.length > 0) {
    return {
      // When the fault happened, not when it was judged: an acknowledge after it must hold.
      observedAt: Math.max(...fatal.map((t) => t.lastAt)),
      id,
      verdict: 'FAIL',
      fatal: true,
      reason: fatal.map(describe).join('; '),
      evidence,
      compatValue: 1,
    };
  }
  const recent = tallies.filter(
    (t) => classifyXid(t.xid).severity === 'warn' && now - t.lastAt < XID_WARN_WINDOW_MS,
  );
  if (recent.length > 0) {
    return {
      id,
      verdict: 'WARN',
      reason: recent.map(describe).join('; '),
      evidence,
      compatValue: 0,
    };
  }
  const seen =
    tallies.length === 0
      ? 'no XID since the exporter started'
      : `only application XIDs: ${tallies.map(describe).join('; ')}`;
  return { id, verdict: 'PASS', reason: seen, evidence, compatValue: 0 };
}

export interface XidCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
  readonly ledger: XidLedger;
  readonly now: () => number;
}

export function createXidCheck(deps: XidCheckDeps): Check {
  return {
    ...gpuCheckBase('[[ XID ]]'),
    name: 'xid',
    summary: XID_SUMMARY,
    banner: 'XID events',
    compatHealth: 'xid',
    usesGpu: false,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: () => {
      // Without a listener, "no XID" would be a claim nobody checked.
      const since = deps.ledger.waitingSince();
      const stuckMs = since === undefined ? 0 : deps.now() - since;
      const failure =
        deps.ledger.listenerFailure() ??
        (stuckMs > XID_WAIT_STUCK_MS
          ? `nvmlEventSetWait_v2 has not returned for ${Math.round(stuckMs / 1000)} s (a wait lasts 1 s): the driver may be hung`
          : undefined);
      if (failure !== undefined) {
        return Promise.resolve({
          devices: [],
          verdict: 'ERROR',
          reason: `the XID listener is failing: ${failure}`,
        });
      }
      return withGpus(deps.nvml, (_nvml, gpus) =>
        judgeEach(gpus, (gpu) => {
          const tallies = deps.ledger.tallies(gpu.index);
          return Promise.resolve({
            device: judgeXids(String(gpu.index), tallies, deps.now()),
            samples: tallies.map((t) =>
              gpuSample('autopilot_gpu_xid_events_total', gpu, t.count, { xid: String(t.xid) }),
            ),
          });
        }),
      );
    },
  };
}

export interface XidWatcher {
  start(): void;
  /** Stops listening; resolves when the pending wait has returned. */
  stop(): Promise<void>;
}

export interface XidWatcherDeps {
  readonly nvml: NvmlLoad;
  readonly ledger: XidLedger;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Called after new XIDs counted, so that the xid check runs and the node verdict follows. */
  readonly onCounted: () => void;
  readonly waitMs?: number;
  readonly retryMs?: number;
}

/** Listens to NVML's XID events in a loop, one wait at a time, until stopped. */
export function createXidWatcher(deps: XidWatcherDeps): XidWatcher {
  let stopped = true;
  let loop: Promise<void> = Promise.resolve();
  let cancelPause: CancelTimer | undefined;
  let wakePause: (() => void) | undefined;

  const pause = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      wakePause = resolve;
      cancelPause = deps.clock.setTimer(resolve, ms);
    });

  const listen = async (): Promise<void> => {
    if (!deps.nvml.ok) return;
    const { nvml } = deps.nvml;
    while (!stopped) {
      try {
        deps.ledger.setWaitingSince(deps.clock.now());
        const events = await nvml
          .waitXidEvents(deps.waitMs ?? 1000)
          .finally(() => deps.ledger.setWaitingSince(undefined));
        let counted = false;
        for (const event of events) {
          const fresh = deps.ledger.record(event, deps.clock.now());
          counted ||= fresh;
          deps.logger.warn('XID event', {
            gpu: event.gpuIndex,
            xid: event.xid,
            ...classifyXid(event.xid),
            counted: fresh,
          });
        }
        deps.ledger.setListenerFailure(undefined);
        if (counted && !stopped) deps.onCounted();
      } catch (error) {
        deps.ledger.setListenerFailure(error instanceof Error ? error.message : String(error));
        deps.logger.error('waiting for XID events failed; retrying', { error });
        await pause(deps.retryMs ?? 10_000);
      }
    }
  };

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      loop = listen();
    },
    async stop() {
      stopped = true;
      cancelPause?.();
      wakePause?.();
      await loop;
    },
  };
}
