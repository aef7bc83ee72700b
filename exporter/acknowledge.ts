/**
 * Lifting a sticky EVICT, one path whoever asks: POST /acknowledge (api/action-routes.ts), or a
 * request written on the node and seen by its watch (cluster/node-labeler.ts: the
 * autopilot.ibm.com/acknowledge annotation that `autopilot ack` sets, or a gpuhealth label set
 * EVICT → PASS by hand). The store's change of health is the one trigger that the label, the
 * condition, the taint and /status follow; this adds the audit line and the hook.
 */

import type { Logger } from './log.js';
import type { NodeHealth } from './node-health.js';
import type { ResultStore } from './store.js';

export interface AcknowledgeDeps {
  readonly store: ResultStore;
  readonly logger: Logger;
  readonly now: () => number;
  /** Told after the store lifted the EVICT (or found nothing to lift), and who asked. */
  readonly onAcknowledged?: (health: NodeHealth, caller: string) => void;
}

export interface Acknowledged {
  readonly previous: NodeHealth;
  readonly health: NodeHealth;
}

/**
 * `caller`: who asked, as far as the path can tell (the API's authenticated user; the node
 * annotation's text); `via` and `fields` say how, for the audit line.
 */
export function acknowledgeEvict(
  deps: AcknowledgeDeps,
  caller: string,
  via: 'api' | 'node-annotation' | 'node-label',
  fields: Readonly<Record<string, unknown>> = {},
): Acknowledged {
  const previous = deps.store.health();
  const health = deps.store.acknowledge(deps.now());
  // The audit line: who lifted what, and the evidence that stood at the time.
  deps.logger.warn('EVICT acknowledged', {
    audit: true,
    caller,
    via,
    ...fields,
    previousState: previous.state,
    previousReasons: previous.reasons,
    state: health.state,
  });
  deps.onAcknowledged?.(health, caller);
  return { previous, health };
}
