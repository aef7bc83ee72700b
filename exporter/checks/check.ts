/**
 * The contract every check implements, and the shape of what a run produces.
 * Types and pure helpers only: nothing here performs I/O.
 */

import type { Logger } from '../log.js';
import type { SampleMetricName } from '../metrics/catalogue.js';
import { boundedInteger, notWholeNumber } from '../params.js';

export const VERDICTS = ['PASS', 'WARN', 'FAIL', 'SKIP', 'ERROR'] as const;
/**
 * PASS healthy; WARN suspicious but within limits; FAIL unhealthy; SKIP the check does not apply
 * here (no GPU, no peers, tool absent); ERROR the check could not complete (timeout, crash,
 * unreadable output). ERROR says nothing about health.
 */
export type Verdict = (typeof VERDICTS)[number];

export type EvidenceValue = number | string | boolean | null;
export type Evidence = Readonly<Record<string, EvidenceValue>>;

/** The finding for one GPU, one peer, or the node itself. */
export interface DeviceResult {
  /** GPU index, peer name, or '' for a node-level finding. */
  readonly id: string;
  readonly verdict: Verdict;
  readonly reason: string;
  /** The measured values the verdict rests on, in base units. */
  readonly evidence: Evidence;
  /** A FAIL that must take the node out of service (node state EVICT). */
  readonly fatal?: boolean;
  /** The value of the compatibility gauge autopilot_health_checks for this device, when it has one. */
  readonly compatValue?: number;
  /**
   * Set by the store on a result carried over from an earlier run (the device ended in ERROR
   * since): epoch milliseconds of the run that observed it.
   */
  readonly observedAt?: number;
}

/** A check-specific measurement exported as a metric; the catalogue owns its name and help. */
export interface Sample {
  readonly metric: SampleMetricName;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface CheckOutcome {
  readonly devices: readonly DeviceResult[];
  /** Set when the outcome concerns no device, for instance SKIP because nothing applies. */
  readonly verdict?: Verdict;
  readonly reason?: string;
  readonly samples?: readonly Sample[];
}

export type CheckParams = Readonly<Record<string, string>>;
/** Query parameters as they arrive from HTTP: absent or a single string. */
export type RawParams = Readonly<Record<string, string | undefined>>;

export interface CheckContext {
  /** Fires on the run's timeout and on shutdown; a check must stop its work when it fires. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  readonly params: CheckParams;
}

export type DeviceKind = 'gpu' | 'peer' | 'node';

export interface Check {
  readonly name: string;
  /** One line for --help and the API reference. */
  readonly summary: string;
  /** The first line of the per-check endpoint's text answer, as Autopilot writes it ("Ping test"). */
  readonly banner: string;
  /** The `health` label value of the compatibility gauge (gpupower exports `power-slowdown`). */
  readonly compatHealth: string;
  readonly deviceKind: DeviceKind;
  /** Touches the GPUs: never runs while an exclusive check runs. */
  readonly usesGpu: boolean;
  /** Needs the GPUs to itself: never overlaps another GPU check or exclusive check. */
  readonly exclusive: boolean;
  /**
   * false for checks whose findings are about other nodes or the links between them (iperf): they
   * are reported and exported, but do not change this node's health label. Default true.
   */
  readonly affectsNodeHealth?: boolean;
  readonly timeoutMs: number;
  /** When the parameters decide (dcgm: level 2 and above is exclusive); absent, `exclusive` does. */
  exclusiveFor?(params: CheckParams): boolean;
  /** When the parameters decide the deadline (dcgm: level 3 takes far longer than level 1). */
  timeoutFor?(params: CheckParams): number;
  /** Validates API parameters; throws ParamError naming the bad one. Returns the normalised set. */
  parseParams(raw: RawParams): CheckParams;
  /** Must not throw for expected failures: those are verdicts. Must honour ctx.signal. */
  run(ctx: CheckContext): Promise<CheckOutcome>;
  /** The Autopilot-compatible text block for one run (other tools grep these tokens). */
  formatText(run: CheckRun, nodeName: string): string;
}

/** event: an XID arrived and the xid check ran at once. */
/** postflight: a GPU pod on the node ended; deepcheck: reported by the deep-check Job. */
export const TRIGGERS = [
  'startup',
  'periodic',
  'api',
  'cli',
  'event',
  'postflight',
  'deepcheck',
] as const;
export type Trigger = (typeof TRIGGERS)[number];

/** What the store keeps of one run. */
export interface CheckRun {
  readonly check: string;
  readonly trigger: Trigger;
  readonly params: CheckParams;
  /** Epoch milliseconds. */
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly verdict: Verdict;
  readonly reason: string;
  readonly devices: readonly DeviceResult[];
  readonly samples: readonly Sample[];
}

/** A caller sent a parameter the API cannot accept; the message names it. */
export class ParamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ParamError';
  }
}

/** Worst first: the order in which a check's verdict is derived from its devices. */
const SEVERITY: readonly Verdict[] = ['FAIL', 'ERROR', 'WARN', 'PASS', 'SKIP'];

export function worstVerdict(verdicts: Iterable<Verdict>): Verdict | undefined {
  let worst: number | undefined;
  for (const verdict of verdicts) {
    const rank = SEVERITY.indexOf(verdict);
    if (worst === undefined || rank < worst) worst = rank;
  }
  return worst === undefined ? undefined : SEVERITY[worst];
}

/** The check-level verdict and reason of an outcome. */
export function summariseOutcome(outcome: CheckOutcome): { verdict: Verdict; reason: string } {
  const verdict = outcome.verdict ?? worstVerdict(outcome.devices.map((d) => d.verdict)) ?? 'SKIP';
  if (outcome.reason !== undefined) return { verdict, reason: outcome.reason };
  const counts = new Map<Verdict, number>();
  for (const device of outcome.devices)
    counts.set(device.verdict, (counts.get(device.verdict) ?? 0) + 1);
  if (counts.size === 0) return { verdict, reason: 'nothing to check' };
  const parts = SEVERITY.filter((v) => counts.has(v)).map((v) => `${counts.get(v)} ${v}`);
  return { verdict, reason: parts.join(', ') };
}

/** Pure: an optional whole-number parameter within bounds; throws ParamError naming it. */
export function wholeNumberParam(
  name: string,
  value: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined || value === '') return fallback;
  const number = boundedInteger(value, min, max);
  if (number === undefined) throw new ParamError(notWholeNumber(name, value, min, max));
  return number;
}
