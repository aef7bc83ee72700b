import type Koa from 'koa';
import { createApiApp, type ApiDeps } from '../../exporter/api/app.js';
import { createStaticTokenAuthorizer } from '../../exporter/api/auth.js';
import { silentLogger } from '../../exporter/log.js';
import type { RealRunner } from './checks.js';

export interface ApiNode {
  readonly nodeName: string;
  /** The static API token; undefined: none is set. */
  readonly token: string | undefined;
  readonly periodicChecks: readonly string[];
}

/**
 * The API app over a RealRunner's checks, runner and store, for one node in standalone mode, on
 * the system clock; `more` adds dependencies or replaces these (a cluster, a wrapped runner).
 */
export function apiAppOver(real: RealRunner, node: ApiNode, more: Partial<ApiDeps> = {}): Koa {
  return createApiApp({
    nodeName: node.nodeName,
    checks: real.checks,
    periodicChecks: node.periodicChecks,
    runner: real.runner,
    store: real.store,
    logger: silentLogger,
    authorizer: createStaticTokenAuthorizer(node.token),
    now: () => Date.now(),
    cluster: undefined,
    ...more,
  });
}
