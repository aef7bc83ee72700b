/**
 * xid: XID error events, which the driver raises for GPU faults (and for some application errors).
 * A watcher listens to NVML continuously and feeds a ledger; the check judges each GPU from it:
 * an XID of the fatal list (AUTOPILOT_XID_FATAL; by default those NVIDIA's XID catalogue answers
 * with a GPU reset or a reboot) since the exporter started → FAIL, fatal (the node is evicted, and
 * stays so until an acknowledge); an XID of the warn list in the last hour → WARN; any other XID
 * is counted but judged healthy. The warn list (AUTOPILOT_XID_WARN) is by default every XID but
 * the fatal ones and those an application causes (13, 31, 43, 45). A GPU the listener
 * could not register is ERROR: silence from it proves nothing. The same XID on the same GPU within
 * the debounce window counts once: a storm of one fault is one fault.
 */

import type { Clock, CancelTimer } from '../clock.js';
import {
  ConfigError,
  givenEnv,
  setting,
  type ConfigInputs,
  type SettingValues,
} from '../config/setting.js';
import { boundedInteger } from '../params.js';
import type { Logger } from '../log.js';
import type { Nvml, NvmlLoad, XidEvent } from '../native/ports.js';
import type { Check, DeviceResult } from './check.js';
import { gpuCheckBase, gpuSample, judgeEach, withGpus } from './gpu-common.js';
import type { CheckExtras, CheckModule } from './module.js';

/** application: counted, healthy; an XID of neither list when AUTOPILOT_XID_WARN lists codes. */
export type XidSeverity = 'fatal' | 'warn' | 'application';

/**
 * The "Resolution Bucket (Immediate Action)" of NVIDIA's XID catalogue
 * (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html), as docs/checks.md cites it.
 */
export type XidAction =
  | 'RESET_GPU'
  | 'RESTART_BM'
  | 'RESTART_APP'
  | 'IGNORE'
  | 'CONTACT_SUPPORT'
  | 'WORKFLOW_XID_45'
  | 'WORKFLOW_XID_48'
  | 'WORKFLOW_NVLINK_ERR'
  | 'WORKFLOW_NVLINK5_ERR'
  | 'XID_154';

/** The XIDs this check names, with their meaning and the catalogue's immediate action. */
export const XID_CATALOGUE: Readonly<
  Record<number, { readonly meaning: string; readonly action: XidAction | undefined }>
> = {
  13: { meaning: 'graphics engine exception', action: 'RESTART_APP' },
  31: { meaning: 'GPU memory page fault', action: 'RESTART_APP' },
  43: { meaning: 'GPU stopped processing', action: 'IGNORE' },
  45: { meaning: 'preemptive cleanup', action: 'WORKFLOW_XID_45' },
  46: { meaning: 'GPU stopped processing (timeout)', action: 'RESET_GPU' },
  48: { meaning: 'double-bit ECC error', action: 'WORKFLOW_XID_48' },
  61: { meaning: 'internal micro-controller breakpoint', action: 'CONTACT_SUPPORT' },
  62: { meaning: 'internal micro-controller halt', action: 'RESET_GPU' },
  63: { meaning: 'ECC page retirement or row remapping event', action: 'IGNORE' },
  64: { meaning: 'ECC page retirement or row remapping recording failure', action: 'RESET_GPU' },
  69: { meaning: 'graphics engine class error', action: 'RESTART_APP' },
  74: { meaning: 'NVLink error', action: 'WORKFLOW_NVLINK_ERR' },
  79: { meaning: 'GPU has fallen off the bus', action: 'RESTART_BM' },
  92: { meaning: 'high single-bit ECC error rate', action: 'IGNORE' },
  94: { meaning: 'contained ECC error', action: 'RESTART_APP' },
  95: { meaning: 'uncontained ECC error', action: 'RESET_GPU' },
  109: { meaning: 'context switch timeout', action: 'RESET_GPU' },
  110: { meaning: 'security fault', action: 'RESET_GPU' },
  119: { meaning: 'GSP RPC timeout', action: 'RESET_GPU' },
  120: { meaning: 'GSP error', action: 'RESET_GPU' },
  121: { meaning: 'C2C link corrected error', action: 'IGNORE' },
  136: { meaning: 'NVLink link training failure', action: 'RESET_GPU' },
  140: { meaning: 'unrecovered ECC error', action: 'RESET_GPU' },
  143: { meaning: 'GPU initialization failure', action: 'RESET_GPU' },
  149: { meaning: 'NVLink NETIR error', action: 'WORKFLOW_NVLINK5_ERR' },
  154: { meaning: 'GPU recovery action changed', action: 'XID_154' },
  155: { meaning: 'NVLink software-defined error', action: 'RESET_GPU' },
  156: { meaning: 'resource retirement event', action: 'RESET_GPU' },
  158: { meaning: 'GPU fatal timeout', action: 'RESET_GPU' },
  160: { meaning: 'channel retirement event', action: 'RESTART_BM' },
  162: { meaning: 'unnamed in the catalogue', action: 'RESET_GPU' },
  // nvml.h, nvmlEventData_t.eventData: "set as 999 for unknown Xid error".
  999: { meaning: 'unknown XID', action: undefined },
};

/**
 * The default of AUTOPILOT_XID_FATAL: every XID the catalogue answers with RESET_GPU or RESTART_BM
 * (the GPU or the node must be reset before it is trusted again), and 48 (double-bit ECC) and 74
 * (NVLink), whose catalogue workflows end in a reset as well.
 */
export const DEFAULT_XID_FATAL: readonly number[] = [
  46, 48, 62, 64, 74, 79, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158, 160, 162,
];

/** The largest XID code accepted; NVML reports an XID it cannot name as 999 (nvml.h). */
const MAX_XID = 999;

/** XID codes, comma-separated, without repeats; accepted says what else the setting takes. */
function parseXidCodes(name: string, value: string, accepted: string): number[] {
  const items = value.split(',').map((item) => item.trim());
  if (items.every((item) => item === '')) throw new ConfigError(name, value, accepted);
  const codes: number[] = [];
  for (const item of items.filter((part) => part !== '')) {
    const code = boundedInteger(item, 1, MAX_XID);
    if (code === undefined) throw new ConfigError(name, value, `${accepted} ("${item}" is not)`);
    codes.push(code);
  }
  return [...new Set(codes)];
}

function parseXidList(value: string | undefined): number[] {
  if (value === undefined) return [...DEFAULT_XID_FATAL];
  if (value === 'none') return [];
  const accepted = `a comma-separated list of XID codes from 1 to ${MAX_XID}, such as 48,79,95, or none`;
  return parseXidCodes('AUTOPILOT_XID_FATAL', value, accepted);
}

/**
 * AUTOPILOT_XID_WARN: all (every XID neither fatal nor an application's), none, or the codes that
 * WARN. A code may not be in both lists: which one wins would be a guess, and a fatal XID quietly
 * judged as a warning loses an eviction.
 */
function parseXidWarn(value: string, inputs: ConfigInputs): XidWarnList {
  if (value === 'all' || value === 'none') return value === 'all' ? 'all' : [];
  const accepted = `all, none, or a comma-separated list of XID codes from 1 to ${MAX_XID}, such as 63,92,94`;
  const codes = parseXidCodes('AUTOPILOT_XID_WARN', value, accepted);
  const fatalGiven = givenEnv(inputs, 'AUTOPILOT_XID_FATAL');
  const fatal = new Set(parseXidList(fatalGiven));
  const both = codes.filter((code) => fatal.has(code));
  if (both.length === 0) return codes;
  const whose = fatalGiven === undefined ? 'its default' : 'as set';
  throw new ConfigError(
    'AUTOPILOT_XID_WARN',
    value,
    `XID codes that AUTOPILOT_XID_FATAL (${whose}) does not list; ${both.join(', ')} ${both.length === 1 ? 'is' : 'are'} in both`,
  );
}

/** The xid check's own settings, after DCGM_FATAL_ERRORS in --help and the docs. */
const XID_SETTINGS = {
  AUTOPILOT_XID_FATAL: setting({
    shown: DEFAULT_XID_FATAL.join(','),
    help: 'XIDs whose event fails the xid check as fatal, evicting the node (comma-separated; none: no XID)',
    parse: parseXidList,
  }),
  AUTOPILOT_XID_WARN: setting({
    fallback: 'all',
    help: 'XIDs whose event makes the xid check WARN for an hour (comma-separated; all: every XID neither fatal nor one applications cause, 13,31,43,45; none: no XID)',
    parse: parseXidWarn,
  }),
};

/** The codes of AUTOPILOT_XID_WARN, or all: every XID neither fatal nor an application's. */
export type XidWarnList = 'all' | readonly number[];

/** XID_SETTINGS parsed, by setting name, as parseConfig hands them to the module. */
export type XidSettingValues = SettingValues<typeof XID_SETTINGS>;

/** XIDs an application causes: counted, but no sign of a bad GPU. */
export const APPLICATION_XIDS: readonly number[] = [13, 31, 43, 45];

const DEFAULT_FATAL_SET: ReadonlySet<number> = new Set(DEFAULT_XID_FATAL);

export function classifyXid(
  xid: number,
  fatal: ReadonlySet<number> = DEFAULT_FATAL_SET,
  warn: XidWarnList = 'all',
): { readonly severity: XidSeverity; readonly meaning: string } {
  const meaning = XID_CATALOGUE[xid]?.meaning ?? 'XID not in the catalogue';
  if (fatal.has(xid)) return { severity: 'fatal', meaning };
  const warns = warn === 'all' ? !APPLICATION_XIDS.includes(xid) : warn.includes(xid);
  return { severity: warns ? 'warn' : 'application', meaning };
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
  /** When the listener's pending NVML call began; undefined between calls. */
  waitingSince(): number | undefined;
  /** The pending call: the wait, or the registration that comes before each wait. */
  waitingOn(): XidListenerCall;
  setWaitingSince(at: number | undefined, call?: XidListenerCall): void;
  /** GPUs not registered for XID events, by NVML index, with the NVML error. */
  notListening(): ReadonlyMap<number, string>;
  setNotListening(gpus: ReadonlyMap<number, string>): void;
}

export type XidListenerCall = 'nvmlEventSetWait_v2' | 'nvmlDeviceRegisterEvents';

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
  let waitingOn: XidListenerCall = 'nvmlEventSetWait_v2';
  let notListening: ReadonlyMap<number, string> = new Map();
  return {
    listenerFailure: () => listenerFailure,
    setListenerFailure: (reason) => {
      listenerFailure = reason;
    },
    waitingSince: () => waitingSince,
    waitingOn: () => waitingOn,
    setWaitingSince: (at, call = 'nvmlEventSetWait_v2') => {
      waitingSince = at;
      waitingOn = call;
    },
    notListening: () => notListening,
    setNotListening: (gpus) => {
      notListening = new Map(gpus);
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

/** Pure: the verdict for one GPU from its tallies and the fatal list. */
export function judgeXids(
  id: string,
  tallies: readonly XidTally[],
  now: number,
  fatalXids: ReadonlySet<number> = DEFAULT_FATAL_SET,
  warnXids: XidWarnList = 'all',
): DeviceResult {
  const severity = (t: XidTally): XidSeverity => classifyXid(t.xid, fatalXids, warnXids).severity;
  const describe = (t: XidTally): string =>
    `XID ${t.xid} (${classifyXid(t.xid).meaning}) ×${t.count}, last ${new Date(t.lastAt).toISOString()}`;
  const evidence = Object.fromEntries(tallies.map((t) => [`xid${t.xid}`, t.count]));
  const fatal = tallies.filter((t) => severity(t) === 'fatal');
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
    (t) => severity(t) === 'warn' && now - t.lastAt < XID_WARN_WINDOW_MS,
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
  // An XID that warned more than an hour ago, or one AUTOPILOT_XID_WARN leaves out, is no
  // application's: the reason says what let it pass.
  const seen =
    tallies.length === 0
      ? 'no XID since the exporter started'
      : tallies.every((t) => APPLICATION_XIDS.includes(t.xid))
        ? `only application XIDs: ${tallies.map(describe).join('; ')}`
        : `no fatal XID, and none of AUTOPILOT_XID_WARN in the last hour: ${tallies.map(describe).join('; ')}`;
  return { id, verdict: 'PASS', reason: seen, evidence, compatValue: 0 };
}

export interface XidCheckDeps {
  readonly nvml: NvmlLoad;
  readonly timeoutMs?: number;
  readonly ledger: XidLedger;
  readonly now: () => number;
  /** AUTOPILOT_XID_FATAL; DEFAULT_XID_FATAL when absent. */
  readonly fatalXids?: readonly number[];
  /** AUTOPILOT_XID_WARN; all when absent. */
  readonly warnXids?: XidWarnList;
}

/** Why the whole listener cannot be trusted now, or undefined. */
function listenerFailure(ledger: XidLedger, now: number): string | undefined {
  const since = ledger.waitingSince();
  const stuckMs = since === undefined ? 0 : now - since;
  if (ledger.listenerFailure() !== undefined || stuckMs <= XID_WAIT_STUCK_MS) {
    return ledger.listenerFailure();
  }
  const call = ledger.waitingOn();
  const usual = call === 'nvmlEventSetWait_v2' ? ' (a wait lasts 1 s)' : '';
  return `${call} has not returned for ${Math.round(stuckMs / 1000)} s${usual}: the driver may be hung`;
}

const TEXT = gpuCheckBase('[[ XID ]]');

export function createXidCheck(deps: XidCheckDeps): Check {
  const fatalXids = new Set(deps.fatalXids ?? DEFAULT_XID_FATAL);
  return {
    ...TEXT,
    name: 'xid',
    summary: XID_SUMMARY,
    banner: 'XID events',
    compatHealth: 'xid',
    usesGpu: false,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    run: () => {
      // Without a listener, "no XID" would be a claim nobody checked.
      const failure = listenerFailure(deps.ledger, deps.now());
      if (failure !== undefined) {
        return Promise.resolve({
          devices: [],
          verdict: 'ERROR',
          reason: `the XID listener is failing: ${failure}`,
        });
      }
      const notListening = deps.ledger.notListening();
      return withGpus(deps.nvml, (_nvml, gpus) =>
        judgeEach(gpus, (gpu) => {
          const tallies = deps.ledger.tallies(gpu.index);
          const judged = judgeXids(
            String(gpu.index),
            tallies,
            deps.now(),
            fatalXids,
            deps.warnXids,
          );
          const why = notListening.get(gpu.index);
          // A fatal XID heard before is still the finding; anything milder may hide one unheard.
          const device: DeviceResult =
            why === undefined || judged.verdict === 'FAIL'
              ? judged
              : { ...judged, verdict: 'ERROR', reason: `not listening: ${why}` };
          return Promise.resolve({
            device,
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
  /**
   * Called after new XIDs counted, or when the GPUs not listening changed, so that the xid check
   * runs and the node verdict follows.
   */
  readonly onChange: () => void;
  readonly waitMs?: number;
  readonly retryMs?: number;
}

const sameFailures = (a: ReadonlyMap<number, string>, b: ReadonlyMap<number, string>): boolean =>
  a.size === b.size && [...a].every(([gpu, why]) => b.get(gpu) === why);

/**
 * Listens to NVML's XID events in a loop, one wait at a time, until stopped. Each cycle first asks
 * NVML to register the GPUs not yet registered: a GPU whose registration failed is retried before
 * every wait (about once a second), so it rejoins as soon as the driver lets it; one that answered
 * NVML_ERROR_UNKNOWN only after a pause of up to a minute (Nvml.listenXidEvents says why).
 */
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

  /** One registration and one wait; resolves whether the xid check should run again. */
  const cycle = async (nvml: Nvml): Promise<boolean> => {
    const { ledger } = deps;
    ledger.setWaitingSince(deps.clock.now(), 'nvmlDeviceRegisterEvents');
    const notListening = await nvml
      .listenXidEvents()
      .finally(() => ledger.setWaitingSince(undefined));
    const changed = !sameFailures(notListening, ledger.notListening());
    if (changed && notListening.size > 0) {
      deps.logger.warn('GPUs not registered for XID events; retrying', {
        gpus: Object.fromEntries(notListening),
      });
    } else if (changed) {
      deps.logger.info('every GPU is registered for XID events');
    }
    ledger.setNotListening(notListening);
    ledger.setWaitingSince(deps.clock.now());
    const events = await nvml
      .waitXidEvents(deps.waitMs ?? 1000)
      .finally(() => ledger.setWaitingSince(undefined));
    let counted = false;
    for (const event of events) {
      const fresh = ledger.record(event, deps.clock.now());
      counted ||= fresh;
      const { meaning, action } = XID_CATALOGUE[event.xid] ?? {};
      deps.logger.warn('XID event', {
        gpu: event.gpuIndex,
        xid: event.xid,
        meaning,
        action,
        counted: fresh,
      });
    }
    return counted || changed;
  };

  const listen = async (): Promise<void> => {
    if (!deps.nvml.ok) return;
    const { nvml } = deps.nvml;
    while (!stopped) {
      try {
        const changed = await cycle(nvml);
        const recovered = deps.ledger.listenerFailure() !== undefined;
        deps.ledger.setListenerFailure(undefined);
        if ((changed || recovered) && !stopped) deps.onChange();
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

/** A repeat of the same XID on the same GPU within this counts once. */
const XID_DEBOUNCE_MS = 10_000;

export const xidModule: CheckModule<XidSettingValues> = {
  name: 'xid',
  summary: XID_SUMMARY,
  policy: { exclusive: false, nvmlOnly: true },
  metrics: ['autopilot_gpu_xid_events_total'],
  formatText: TEXT.formatText,
  settings: { after: 'DCGM_FATAL_ERRORS', specs: XID_SETTINGS },
  // The ledger is the check's memory: the listener counts into it, each run judges from it.
  create(config, ports, extras: Pick<CheckExtras, 'runOnEvent'>, settings) {
    const ledger = createXidLedger({ debounceMs: XID_DEBOUNCE_MS });
    return {
      check: createXidCheck({
        nvml: ports.nvml,
        ledger,
        now: () => ports.clock.now(),
        timeoutMs: config.nvmlCheckTimeoutMs,
        fatalXids: settings.AUTOPILOT_XID_FATAL,
        warnXids: settings.AUTOPILOT_XID_WARN,
      }),
      listener: createXidWatcher({
        nvml: ports.nvml,
        ledger,
        clock: ports.clock,
        logger: ports.logger.child({ component: 'xid' }),
        onChange: () => extras.runOnEvent('xid'),
      }),
    };
  },
};
