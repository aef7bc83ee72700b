/**
 * Autopilot's workload and label selectors (`job=namespace:selector`, `nodelabel=`), checked before
 * any of them reaches the API server. Pure, and outside cluster/ so that checks (ping's pingnodes
 * selection) and the cluster-wide /status read the same grammar without the checks depending on
 * the cluster layer.
 */

import { LABEL_SELECTOR_CHARACTERS } from './net-names.js';
import { ParamError } from './checks/check.js';

const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Pure: Autopilot's `job=namespace:selector`; throws ParamError naming the problem. */
export function parseJob(value: string): { namespace: string; selector: string } {
  const colon = value.indexOf(':');
  const namespace = colon < 0 ? '' : value.slice(0, colon);
  const selector = colon < 0 ? '' : value.slice(colon + 1).trim();
  if (!NAMESPACE.test(namespace) || selector === '') {
    throw new ParamError(
      `job ${JSON.stringify(value)} is not namespace:label-selector, such as default:app=trainer`,
    );
  }
  checkSelector('job', selector);
  return { namespace, selector };
}

/** Pure: a label selector's characters, before the API server judges its grammar. */
export function checkSelector(name: string, selector: string): string {
  if (selector.trim() === '' || !LABEL_SELECTOR_CHARACTERS.test(selector)) {
    throw new ParamError(
      `${name} ${JSON.stringify(selector)} is not a label selector, such as app=trainer or gpu-type in (h100,h200)`,
    );
  }
  return selector.trim();
}
