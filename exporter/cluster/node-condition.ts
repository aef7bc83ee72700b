/**
 * The node's health as a NodeCondition (type GPUHealthy unless AUTOPILOT_NODE_CONDITION renames
 * it), where Cluster API's MachineHealthCheck, auto-repair controllers and `kubectl describe node`
 * look.
 *
 * Rules: True for PASS and WARN, False for EVICT (sticky, whatever came since), Unknown before the
 * first conclusive result and once the newest conclusive result is older than STALE_ROUNDS
 * periodic rounds (an ERROR concludes nothing, so checks that keep failing to run go stale too).
 * lastTransitionTime moves only when the status does: repair controllers time their remedies from
 * it. Nothing is sent while the condition is unchanged and its heartbeat younger than the
 * heartbeat interval. The write is a strategic merge patch of nodes/status, so the kubelet's
 * conditions stay; a refused write is retried with backoff while the exporter goes on serving.
 */

import type { CheckRun, DeviceResult } from '../checks/check.js';
import type { Clock } from '../clock.js';
import type { KubeApi, NodeCondition } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import type { NodeHealth } from '../node-health.js';
import { createRetryingWriter, type WriterJob } from './retrying-writer.js';
import type { BackoffSettings } from './backoff.js';

export const DEFAULT_NODE_CONDITION = 'GPUHealthy';
/** The API server refuses longer messages in Events; conditions keep to the same size. */
export const CONDITION_MESSAGE_MAX_BYTES = 1024;
/** Rounds without a conclusive result before the condition says Unknown. */
export const STALE_ROUNDS = 3;

export type ConditionStatus = NodeCondition['status'];

export interface DesiredCondition {
  readonly status: ConditionStatus;
  /** Short CamelCase cause (CONDITION_REASONS). */
  readonly reason: string;
  readonly message: string;
}

/** The reasons this module writes, for the docs; per-check causes come from CAUSES. */
export const CONDITION_REASONS = {
  passed: 'ChecksPassed',
  noResults: 'NoResultsYet',
  stale: 'ResultsStale',
  /** An EVICT found on the node at start, its cause unknown to this process. */
  restored: 'EvictRestored',
} as const;

/** A failing result the node's health names, with what the check measured. */
interface Finding {
  readonly check: string;
  readonly device: DeviceResult | undefined;
  readonly text: string;
  /** The finding is what made the node EVICT. */
  readonly evicting: boolean;
}

const has = (pattern: RegExp) => (finding: Finding) => pattern.test(finding.text);

/** Per check, the cause in one CamelCase word; checks without an entry get <Check>Failure. */
const CAUSES: Readonly<Record<string, (finding: Finding) => string>> = {
  remapped: ({ device }) =>
    device?.evidence.failureOccurred === true
      ? 'RowRemapFailure'
      : device?.evidence.pending === true
        ? 'RowRemapPending'
        : 'RowsRemapped',
  xid: (finding) =>
    `${finding.evicting ? 'FatalXid' : 'Xid'}${/XID (\d+)/.exec(finding.text)?.[1] ?? ''}`,
  ecc: (finding) => (finding.evicting ? 'EccUncorrectable' : 'EccRetirementPending'),
  dcgm: (finding) => (finding.evicting ? 'DcgmFatal' : 'DcgmFailure'),
  gpucount: () => 'GpusMissing',
  pciebw: (finding) => (has(/degraded/)(finding) ? 'PcieLinkDegraded' : 'PcieBandwidthLow'),
  gpupower: (finding) => (has(/thermal/i)(finding) ? 'ThermalSlowdown' : 'PowerSlowdown'),
  gpumem: (finding) =>
    has(/ECC/)(finding)
      ? 'EccUncorrectable'
      : has(/pattern/)(finding)
        ? 'GpuMemoryFault'
        : 'GpuMemorySlow',
  ping: (finding) => (has(/unreachable/)(finding) ? 'PeerUnreachable' : 'PacketLoss'),
  nvlink: (finding) =>
    has(/fabric/)(finding)
      ? 'FabricNotReady'
      : has(/error counters rising/)(finding)
        ? 'NvlinkErrors'
        : 'NvlinkDown',
  p2pbw: () => 'P2pBandwidthLow',
  pvc: () => 'PvcFailure',
};

/** "gpu-mem_x" → "GpuMemX": the fallback cause of a check without a CAUSES entry. */
function camel(name: string): string {
  return name
    .split(/[^A-Za-z0-9]+/)
    .filter((part) => part !== '')
    .map((part) => part[0]!.toUpperCase() + part.slice(1))
    .join('');
}

/**
 * Pure: which check and device a line of NodeHealth.reasons names. The line is
 * `<check>[ <device>]: <reason>` (node-health.ts); matched against the runs rather than parsed,
 * since a peer's name may hold a colon (an IPv6 address).
 */
function findingOf(line: string, runs: readonly CheckRun[], evicting: boolean): Finding {
  for (const run of runs) {
    for (const device of run.devices) {
      const prefix = `${run.check}${device.id === '' ? '' : ` ${device.id}`}: `;
      if (device.verdict === 'FAIL' && line.startsWith(prefix)) {
        return { check: run.check, device, text: line.slice(prefix.length), evicting };
      }
    }
    if (run.devices.length === 0 && line.startsWith(`${run.check}: `)) {
      return { check: run.check, device: undefined, text: line, evicting };
    }
  }
  return { check: '', device: undefined, text: line, evicting };
}

/** Pure: the CamelCase cause of the first finding the health names. */
export function causeOf(health: NodeHealth, runs: readonly CheckRun[]): string {
  const evicting = health.state === 'EVICT';
  const first = health.reasons[0];
  if (first === undefined) return evicting ? CONDITION_REASONS.restored : CONDITION_REASONS.passed;
  const finding = findingOf(first, runs, evicting);
  if (finding.check === '') return evicting ? CONDITION_REASONS.restored : 'CheckFailed';
  return CAUSES[finding.check]?.(finding) ?? `${camel(finding.check)}Failure`;
}

/**
 * Pure: at most `maxBytes` of UTF-8, cut on a character boundary (never inside a code point or a
 * surrogate pair), with an ellipsis when something was cut.
 */
export function truncateUtf8(text: string, maxBytes = CONDITION_MESSAGE_MAX_BYTES): string {
  const encoder = new TextEncoder();
  if (encoder.encode(text).length <= maxBytes) return text;
  const ellipsis = '…';
  const budget = maxBytes - encoder.encode(ellipsis).length;
  let used = 0;
  let kept = '';
  for (const character of text) {
    const size = encoder.encode(character).length;
    if (used + size > budget) break;
    used += size;
    kept += character;
  }
  return kept + ellipsis;
}

export interface ConditionInputs {
  readonly health: NodeHealth;
  /** The conclusive view of the checks that count for the node's health. */
  readonly runs: readonly CheckRun[];
  readonly now: number;
  /** No conclusive result for this long makes the condition Unknown; undefined: never stale. */
  readonly staleAfterMs: number | undefined;
}

/** Pure: the condition for what is known now. */
export function desiredCondition(inputs: ConditionInputs): DesiredCondition {
  const { health, runs } = inputs;
  const message = (text: string) => truncateUtf8(text);
  if (health.state === 'EVICT') {
    return {
      status: 'False',
      reason: causeOf(health, runs),
      message: message(`EVICT: ${health.reasons.join('; ')}`),
    };
  }
  if (health.state === 'UNKNOWN') {
    return {
      status: 'Unknown',
      reason: CONDITION_REASONS.noResults,
      message: 'no conclusive health check result yet',
    };
  }
  const newest = runs.reduce((latest, run) => Math.max(latest, run.finishedAt), 0);
  if (inputs.staleAfterMs !== undefined && inputs.now - newest > inputs.staleAfterMs) {
    return {
      status: 'Unknown',
      reason: CONDITION_REASONS.stale,
      message: `no conclusive health check result since ${isoSeconds(newest)} (${STALE_ROUNDS} periodic rounds)`,
    };
  }
  if (health.state === 'WARN') {
    return {
      status: 'True',
      reason: causeOf(health, runs),
      message: message(`WARN: ${health.reasons.join('; ')}`),
    };
  }
  return { status: 'True', reason: CONDITION_REASONS.passed, message: 'PASS: no check failed' };
}

/** RFC 3339 in whole seconds, as the API server writes metav1.Time. */
export function isoSeconds(at: number): string {
  return new Date(at).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export interface ConditionTiming {
  readonly now: number;
  /** An unchanged condition is re-sent (its lastHeartbeatTime) once it is this old. */
  readonly heartbeatMs: number;
  /**
   * Before this exporter's first result, a condition the node already carries is left alone
   * while younger than this, so a restart does not flip it to Unknown and back.
   */
  readonly keepUnprovenMs: number;
}

/**
 * Pure: the condition to send, or undefined when nothing should be sent. lastTransitionTime is
 * kept unless the status changes; an EVICT restored at start keeps the cause the node carries.
 */
export function conditionToWrite(
  type: string,
  previous: NodeCondition | undefined,
  desired: DesiredCondition,
  timing: ConditionTiming,
): NodeCondition | undefined {
  const age =
    previous === undefined ? Infinity : timing.now - Date.parse(previous.lastHeartbeatTime);
  const fresh = (limit: number) => Number.isFinite(age) && age < limit;
  if (desired.reason === CONDITION_REASONS.noResults && fresh(timing.keepUnprovenMs)) {
    return undefined;
  }
  const kept =
    desired.reason === CONDITION_REASONS.restored && previous?.status === 'False'
      ? { ...desired, reason: previous.reason, message: previous.message }
      : desired;
  const unchanged =
    previous !== undefined &&
    previous.status === kept.status &&
    previous.reason === kept.reason &&
    previous.message === kept.message;
  if (unchanged && fresh(timing.heartbeatMs)) return undefined;
  const now = isoSeconds(timing.now);
  const sameStatus = previous?.status === kept.status && previous.lastTransitionTime !== '';
  return {
    type,
    ...kept,
    lastTransitionTime: sameStatus ? previous.lastTransitionTime : now,
    lastHeartbeatTime: now,
  };
}

/** What /status reports of the condition, as of the labeler: written, waiting, refused. */
export interface NodeConditionStatus {
  /** The condition as last read or written; undefined before the first read or when absent. */
  readonly applied: NodeCondition | undefined;
  /** A change of status or reason waiting to be written (a heartbeat alone is not one). */
  readonly pending: Pick<NodeCondition, 'status' | 'reason'> | undefined;
  /** The last refused read or write; cleared by the next that succeeds. */
  readonly lastError: { readonly message: string; readonly at: number } | undefined;
}

export interface NodeConditionWriter {
  /** Reads the node's condition once (retried until it answers), then keeps it up to date. */
  start(): Promise<void>;
  stop(): void;
  /** Re-evaluates after a change of health; a timer also does, for heartbeats and staleness. */
  sync(): void;
  /** The condition as last read or written; undefined before the first read. */
  applied(): NodeCondition | undefined;
  status(): NodeConditionStatus;
  /** Resolves when no write is due, in flight or waiting for a retry (tests, shutdown). */
  idle(): Promise<void>;
}

export interface NodeConditionDeps {
  readonly kube: KubeApi;
  readonly nodeName: string;
  readonly type: string;
  readonly desired: () => DesiredCondition;
  readonly heartbeatMs: number;
  /** See ConditionTiming.keepUnprovenMs. */
  readonly keepUnprovenMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly backoff?: BackoffSettings;
}

/** How often the writer looks again without a change of health: heartbeats and staleness. */
const MAX_TICK_MS = 60_000;

export function createNodeConditionWriter(deps: NodeConditionDeps): NodeConditionWriter {
  let known = false;
  let applied: NodeCondition | undefined;
  let cancelTick: (() => void) | undefined;

  const toWrite = (): NodeCondition | undefined =>
    conditionToWrite(deps.type, applied, deps.desired(), {
      now: deps.clock.now(),
      heartbeatMs: deps.heartbeatMs,
      keepUnprovenMs: deps.keepUnprovenMs,
    });

  const read: WriterJob = {
    what: `read node ${deps.nodeName} for its conditions`,
    run: async () => {
      const node = await deps.kube.getNode(deps.nodeName);
      applied = node.conditions?.find((c) => c.type === deps.type);
      known = true;
    },
  };

  const write = (condition: NodeCondition): WriterJob => ({
    what: `write the node condition ${deps.type}`,
    run: async () => {
      const node = await deps.kube.patchNodeStatus(deps.nodeName, [condition]);
      const before = applied;
      applied = node.conditions?.find((c) => c.type === deps.type) ?? condition;
      if (before?.status !== condition.status || before.reason !== condition.reason) {
        deps.logger.info('node condition written', {
          type: deps.type,
          status: condition.status,
          reason: condition.reason,
          previous: before === undefined ? null : `${before.status} (${before.reason})`,
        });
      }
    },
  });

  /** One write at a time, always of the newest desired condition, once the node was read. */
  const writer = createRetryingWriter({
    next: () => {
      if (!known) return read;
      const condition = toWrite();
      return condition === undefined ? undefined : write(condition);
    },
    pending: () => !known || toWrite() !== undefined,
    clock: deps.clock,
    logger: deps.logger,
    backoff: deps.backoff,
  });

  const tick = (): void => {
    cancelTick = deps.clock.setTimer(
      () => {
        if (!writer.running()) return;
        writer.sync();
        tick();
      },
      Math.min(deps.heartbeatMs, MAX_TICK_MS),
    );
  };

  return {
    async start() {
      if (writer.running()) return;
      known = false;
      tick();
      await writer.start();
    },
    stop() {
      writer.stop();
      cancelTick?.();
    },
    sync: () => writer.sync(),
    applied: () => applied,
    status() {
      // Before the first read nothing is known to be on the node: what would be written is pending.
      const due = known ? toWrite() : deps.desired();
      const changes =
        due !== undefined && (due.status !== applied?.status || due.reason !== applied.reason);
      return {
        applied,
        pending: changes ? { status: due.status, reason: due.reason } : undefined,
        lastError: writer.lastError(),
      };
    },
    idle: () => writer.idle(),
  };
}
