/**
 * Whether the Kubernetes API is answering, as seen from every call this exporter makes: the
 * decorator records each call's outcome, so /status and the metrics say "the API refused to patch
 * the node 5 minutes ago" without every caller reporting it by hand.
 */

import type { KubeApi } from '../k8s/ports.js';
import { KubeError } from '../k8s/ports.js';

export type KubeOperation = keyof KubeApi;

/** Every method of the port, listed so that implementations with inherited methods are wrapped too. */
const OPERATIONS = [
  'getNode',
  'patchNodeMetadata',
  'listNodes',
  'listPods',
  'listEndpointSlices',
  'watchEndpointSlices',
  'listPodsOnNode',
  'listJobPods',
  'createJob',
  'listJobs',
  'readJob',
  'deleteJob',
  'readStorageClass',
  'createPvc',
  'readPvc',
  'deletePvc',
  'reviewToken',
  'reviewAccess',
  'patchNodeStatus',
  'createEvent',
  'patchEvent',
  'patchNodeTaints',
  'readLease',
  'createLease',
  'replaceLease',
  'watchNode',
] as const satisfies readonly KubeOperation[];

// Fails to compile when the port gains a method this list lacks.
type Unlisted = Exclude<KubeOperation, (typeof OPERATIONS)[number]>;
const everyOperationListed: Unlisted extends never ? true : never = true;
void everyOperationListed;

export interface KubeFailure {
  readonly operation: KubeOperation;
  readonly message: string;
  /** HTTP status, undefined when no answer came. */
  readonly status: number | undefined;
  /** Epoch milliseconds. */
  readonly at: number;
}

export interface KubeHealthSnapshot {
  /** The last call answered (a 404 for something absent counts as an answer). */
  readonly up: boolean;
  readonly lastFailure: KubeFailure | undefined;
  readonly lastSuccessAt: number | undefined;
  /** Failed calls per operation since start. */
  readonly failures: ReadonlyMap<KubeOperation, number>;
}

export interface KubeHealth {
  snapshot(): KubeHealthSnapshot;
  /** Changes whenever up, lastFailure or failures change (not on every success). */
  version(): number;
}

/** Wraps `api` so that every call's outcome is recorded; the behaviour is otherwise unchanged. */
export function observeKubeApi(
  api: KubeApi,
  now: () => number,
): { readonly api: KubeApi; readonly health: KubeHealth } {
  let up = true;
  let lastFailure: KubeFailure | undefined;
  let lastSuccessAt: number | undefined;
  let version = 0;
  const failures = new Map<KubeOperation, number>();

  const succeeded = (): void => {
    if (!up) version += 1;
    up = true;
    lastSuccessAt = now();
  };
  const failed = (operation: KubeOperation, error: unknown): void => {
    version += 1;
    const kubeError = error instanceof KubeError ? error : undefined;
    // 404 and 409 are answers about objects, not about the API being unwell.
    if (kubeError?.status === 404 || kubeError?.status === 409) {
      succeeded();
      return;
    }
    up = false;
    failures.set(operation, (failures.get(operation) ?? 0) + 1);
    lastFailure = {
      operation,
      message: error instanceof Error ? error.message : String(error),
      status: kubeError?.status,
      at: now(),
    };
  };

  const observed = {} as Record<KubeOperation, unknown>;
  for (const operation of OPERATIONS) {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- applied to `api` below
    const method = api[operation] as (...args: unknown[]) => Promise<unknown>;
    observed[operation] = async (...args: unknown[]) => {
      try {
        const result = await method.apply(api, args);
        succeeded();
        return result;
      } catch (error) {
        failed(operation, error);
        throw error;
      }
    };
  }

  return {
    api: observed as unknown as KubeApi,
    health: {
      snapshot: () => ({ up, lastFailure, lastSuccessAt, failures: new Map(failures) }),
      version: () => version,
    },
  };
}
