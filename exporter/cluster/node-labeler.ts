/**
 * Writes this node's health where schedulers read it: the label autopilot.ibm.com/gpuhealth
 * (PASS, WARN, TESTING, EVICT), and for DCGM the autopilot.ibm.com/dcgm.level.N label and its
 * .output annotation in Autopilot's format.
 *
 * Rules (design §4): EVICT is sticky, so nothing this exporter learns later overwrites it unless the
 * store lifts it (an acknowledge, or a passing DCGM run after an EVICT that DCGM set); TESTING
 * shows while an exclusive check holds the GPUs and is not overwritten by a periodic round in the
 * meantime; a label is sent only when its value changes, as a merge patch; an API that refuses is
 * retried with backoff while the exporter goes on serving.
 *
 * Ownership (observe, fed by node-watch.ts): a change of the label that this exporter did not
 * write is undone, except EVICT → PASS while the node is EVICT, which a person means as an
 * acknowledgement and which is adopted; an autopilot.ibm.com/acknowledge annotation is adopted
 * too, then replaced by autopilot.ibm.com/acknowledged. Writes of our own are told apart by the
 * resourceVersion their answers carried, and events wait while a write is in flight, so a late
 * event of our own write is never mistaken for someone else's.
 */

import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { NodeHealth } from '../node-health.js';
import type { KubeApi, NodeInfo, NodeMetadataPatch } from '../k8s/ports.js';
import { ACK_ANNOTATION, ACKNOWLEDGED_ANNOTATION } from './node-watch.js';
import { createRetryingWriter, type WriterJob } from './retrying-writer.js';
import type { BackoffSettings } from './backoff.js';

export const GPUHEALTH_LABEL = 'autopilot.ibm.com/gpuhealth';
export const dcgmLevelLabel = (level: number): string => `autopilot.ibm.com/dcgm.level.${level}`;
export const dcgmOutputAnnotation = (level: number): string => `${dcgmLevelLabel(level)}.output`;

export type GpuHealthLabel = 'PASS' | 'WARN' | 'TESTING' | 'EVICT';

/**
 * Pure: the gpuhealth value for what is known now; undefined means "write nothing" (no evidence
 * yet, so whatever the node carries stays).
 */
export function desiredGpuHealth(
  health: NodeHealth,
  exclusiveRunning: boolean,
): GpuHealthLabel | undefined {
  if (health.state === 'EVICT') return 'EVICT';
  if (exclusiveRunning || health.state === 'TESTING') return 'TESTING';
  if (health.state === 'UNKNOWN') return undefined;
  return health.state;
}

/** Autopilot's timestamp: PASS_2025-05-01_13.45.07UTC. */
export function dcgmTimestamp(at: number): string {
  const iso = new Date(at).toISOString(); // 2025-05-01T13:45:07.123Z
  return `${iso.slice(0, 10)}_${iso.slice(11, 19).replaceAll(':', '.')}UTC`;
}

export interface DcgmLabelResult {
  readonly level: number;
  readonly passed: boolean;
  /** The failing tests and GPUs, Autopilot's annotation text; '' when it passed. */
  readonly output: string;
  readonly at: number;
}

/**
 * Pure: the highest DCGM level whose dcgm.level.N label records a failure (ERR_<time>, or the
 * failure string appended to it as Autopilot before v2.1.3 wrote it); undefined when none does.
 */
export function highestFailedDcgmLevel(
  labels: Readonly<Record<string, string>>,
): number | undefined {
  const failed = [1, 2, 3, 4].filter((level) => labels[dcgmLevelLabel(level)]?.startsWith('ERR'));
  return failed.length === 0 ? undefined : Math.max(...failed);
}

/** Pure: the merge patch Autopilot's DCGM script wrote for one result. */
export function dcgmPatch(result: DcgmLabelResult): NodeMetadataPatch {
  return {
    labels: {
      [dcgmLevelLabel(result.level)]:
        `${result.passed ? 'PASS' : 'ERR'}_${dcgmTimestamp(result.at)}`,
    },
    annotations: { [dcgmOutputAnnotation(result.level)]: result.passed ? '' : result.output },
  };
}

export interface NodeLabelerStatus {
  /** The gpuhealth value the node carries, as last read or written; undefined before the first read. */
  readonly applied: string | undefined;
  /** The value waiting to be written ('removal' when the label is to go), if any. */
  readonly pending: string | undefined;
  readonly lastError: { readonly message: string; readonly at: number } | undefined;
}

export interface NodeLabeler {
  /**
   * Reads the node once (an EVICT written before this process started is handed to `onEvictFound`)
   * and from then on follows `health()` and the exclusive flag.
   */
  start(): Promise<void>;
  stop(): void;
  /** Re-evaluates the label after a change of health or of the exclusive flag. */
  sync(): void;
  /** Writes a DCGM result's label and annotation (retried like the health label). */
  recordDcgm(result: DcgmLabelResult): Promise<void>;
  status(): NodeLabelerStatus;
  /** Resolves when no write is pending or in flight (tests, shutdown). */
  idle(): Promise<void>;
  /** A state of the node as the watch saw it: restores the label or adopts an acknowledgement. */
  observe(node: NodeInfo): void;
}

/** Someone asked on the node itself for the EVICT to be lifted. */
export interface AcknowledgeRequest {
  /** annotation: autopilot.ibm.com/acknowledge appeared; label: gpuhealth set EVICT → PASS. */
  readonly via: 'annotation' | 'label';
  /** The annotation's value (when, who, why, as `autopilot ack` wrote it); '' for a label. */
  readonly request: string;
}

export interface NodeLabelerDeps {
  readonly kube: KubeApi;
  readonly nodeName: string;
  readonly health: () => NodeHealth;
  readonly exclusiveRunning: () => boolean;
  /** dcgmFailedLevel: the highest level whose dcgm.level.N label says ERR (highestFailedDcgmLevel). */
  readonly onEvictFound: (reason: string, dcgmFailedLevel: number | undefined) => void;
  /** Lifts the EVICT as POST /acknowledge does (the same function, so the same audit line). */
  readonly onAcknowledgeRequest?: (request: AcknowledgeRequest) => void;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly backoff?: BackoffSettings;
}

export function createNodeLabeler(deps: NodeLabelerDeps): NodeLabeler {
  let applied: string | undefined;
  let known = false;
  /** The value TESTING replaced, while the TESTING on the node is ours. */
  let beforeTesting: { readonly value: string | undefined } | undefined;
  const extraPatches: { patch: NodeMetadataPatch; done: () => void }[] = [];
  const ownership = createOwnership(deps, {
    applied: () => applied,
    setApplied: (value) => (applied = value),
    wanted: () => desired(),
    queuePatch: (patch) => extraPatches.push({ patch, done: () => undefined }),
  });

  /**
   * The value to write: a label value, null to remove the label, undefined to leave it. Without
   * evidence (UNKNOWN) nothing is written, except to undo what this exporter itself wrote: a TESTING
   * whose exclusive check has ended goes back to what it replaced, and an EVICT that was
   * acknowledged is removed, so neither can outlive its reason.
   */
  const desired = (): string | null | undefined => {
    const value = desiredGpuHealth(deps.health(), deps.exclusiveRunning());
    if (value !== undefined) return value;
    if (applied === 'TESTING' && beforeTesting !== undefined) return beforeTesting.value ?? null;
    if (applied === 'EVICT' && deps.health().state !== 'EVICT') return null;
    return undefined;
  };
  const differs = (value: string | null | undefined): boolean =>
    value !== undefined && value !== (applied ?? null);

  /** The node as found at start: an EVICT on it is taken over, then it is observed as any other. */
  const firstRead = (node: NodeInfo): void => {
    applied = node.labels[GPUHEALTH_LABEL];
    known = true;
    ownership.baseline(node);
    if (applied === 'EVICT') {
      deps.onEvictFound(
        `node label ${GPUHEALTH_LABEL}=EVICT was set before this exporter started`,
        highestFailedDcgmLevel(node.labels),
      );
    }
    ownership.observe(node);
    ownership.drain();
  };

  const readNode: WriterJob = {
    what: 'read this node',
    run: async () => firstRead(await deps.kube.getNode(deps.nodeName)),
  };

  /** One write at a time, of the newest desired value; nothing is written before the first read. */
  const writer = createRetryingWriter({
    next: () => (known ? nextWrite() : readNode),
    pending: () => known && (extraPatches.length > 0 || differs(desired())),
    clock: deps.clock,
    logger: deps.logger,
    backoff: deps.backoff,
  });

  const patch = (body: NodeMetadataPatch, onSuccess: () => void): WriterJob => ({
    what: 'write node labels',
    run: async () => {
      try {
        const node = await deps.kube.patchNodeMetadata(deps.nodeName, body);
        ownership.wrote(node);
        applied = node.labels[GPUHEALTH_LABEL];
        onSuccess();
      } finally {
        // The answer (or the failure) is in: every version of ours is known, so events can be judged.
        ownership.drain();
      }
    },
  });

  const nextWrite = (): WriterJob | undefined => {
    const extra = extraPatches[0];
    if (extra !== undefined) {
      return patch(extra.patch, () => {
        extraPatches.shift();
        extra.done();
      });
    }
    const value = desired();
    if (value === undefined || !differs(value)) return undefined;
    const previous = applied;
    return patch({ labels: { [GPUHEALTH_LABEL]: value } }, () => {
      if (value === 'TESTING') beforeTesting ??= { value: previous };
      else beforeTesting = undefined;
      deps.logger.info('Node patched with label', {
        label: GPUHEALTH_LABEL,
        value,
        previous: previous ?? null,
      });
    });
  };

  return {
    async start() {
      if (writer.running()) return;
      // Each start reads the node afresh before anything is written.
      known = false;
      await writer.start();
    },
    stop() {
      for (const extra of extraPatches.splice(0)) extra.done();
      writer.stop();
    },
    sync: () => writer.sync(),
    recordDcgm(result) {
      if (!writer.running()) return Promise.resolve();
      return new Promise<void>((resolve) => {
        extraPatches.push({ patch: dcgmPatch(result), done: resolve });
        writer.sync();
      });
    },
    status: () => {
      const value = desired();
      const pending = differs(value) ? (value ?? 'removal') : undefined;
      return { applied, pending, lastError: writer.lastError() };
    },
    idle: () => writer.idle(),
    observe(node) {
      if (!writer.running()) return;
      if (!known) {
        firstRead(node);
      } else {
        ownership.observe(node);
        if (!writer.writing()) ownership.drain();
      }
      writer.sync();
    },
  };
}

/** How many of our own writes are remembered until the watch shows them. */
const OWN_VERSIONS_KEPT = 64;

interface LabelAccess {
  applied(): string | undefined;
  setApplied(value: string | undefined): void;
  /** What the label should say: a value, null for no label, undefined for no opinion. */
  wanted(): string | null | undefined;
  queuePatch(patch: NodeMetadataPatch): void;
}

/** Tells our own writes from others', and decides what someone else's change means. */
function createOwnership(deps: NodeLabelerDeps, label: LabelAccess) {
  const ownVersions = new Set<string>();
  const queue: NodeInfo[] = [];
  /** The label as the watch last showed it (not as our answers did). */
  let watched: string | undefined;
  /** The acknowledge request acted on, so that later events still carrying it do not repeat it. */
  let handledRequest: string | undefined;

  const acknowledgeFromAnnotation = (node: NodeInfo): void => {
    const request = node.annotations[ACK_ANNOTATION];
    if (request === undefined || request === handledRequest) {
      if (request === undefined) handledRequest = undefined;
      return;
    }
    handledRequest = request;
    const before = deps.health().state;
    deps.logger.warn('acknowledge requested on the node', {
      annotation: ACK_ANNOTATION,
      request,
      state: before,
    });
    deps.onAcknowledgeRequest?.({ via: 'annotation', request });
    const record = `${new Date(deps.clock.now()).toISOString()} ${before === 'EVICT' ? 'lifted EVICT' : `nothing to lift (${before})`}; request: ${request}`;
    label.queuePatch({
      annotations: { [ACK_ANNOTATION]: null, [ACKNOWLEDGED_ANNOTATION]: record },
    });
  };

  const labelChanged = (previous: string | undefined, value: string | undefined): void => {
    if (previous === 'EVICT' && value === 'PASS' && deps.health().state === 'EVICT') {
      deps.logger.warn(
        'gpuhealth label set EVICT → PASS by someone else: adopted as an acknowledge',
        {
          label: GPUHEALTH_LABEL,
          previous,
          value,
        },
      );
      label.setApplied(value);
      deps.onAcknowledgeRequest?.({ via: 'label', request: '' });
      return;
    }
    const wanted = label.wanted();
    const restoring = wanted !== undefined && wanted !== (value ?? null);
    deps.logger.warn(
      restoring
        ? 'gpuhealth label changed by someone else; restoring it'
        : 'gpuhealth label changed by someone else; it agrees with the health, kept',
      {
        label: GPUHEALTH_LABEL,
        previous: previous ?? null,
        value: value ?? null,
        ...(restoring ? { restoring: wanted } : {}),
        health: deps.health().state,
      },
    );
    label.setApplied(value);
  };

  const process = (node: NodeInfo): void => {
    const own = node.resourceVersion !== undefined && ownVersions.delete(node.resourceVersion);
    const value = node.labels[GPUHEALTH_LABEL];
    const previous = watched;
    watched = value;
    acknowledgeFromAnnotation(node);
    if (!own && value !== previous) labelChanged(previous, value);
  };

  return {
    baseline(node: NodeInfo): void {
      watched = node.labels[GPUHEALTH_LABEL];
    },
    wrote(node: NodeInfo): void {
      if (node.resourceVersion === undefined) return;
      ownVersions.add(node.resourceVersion);
      if (ownVersions.size > OWN_VERSIONS_KEPT) {
        ownVersions.delete(ownVersions.values().next().value!);
      }
    },
    observe(node: NodeInfo): void {
      queue.push(node);
    },
    /** Called only while no write is in flight, so every answer's version is known. */
    drain(): void {
      for (const node of queue.splice(0)) process(node);
    },
  };
}
