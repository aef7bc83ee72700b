/**
 * `/`: a short index of the API's endpoints, so that an operator who opens :3333 with curl learns
 * where to go instead of getting a 404; a browser (Accept: text/html) gets the status page
 * instead (status-page.ts). Text by default, JSON with
 * `format=json` or `Accept: application/json`. Built from the routes this app serves (the checks
 * it has, the iperf endpoints only when they are on), so it cannot list a path that answers 404.
 */

import type Router from '@koa/router';
import { formatOf, readQuery, type RouteKit } from './request.js';
import { serveStatusPage } from './status-page.js';

export interface EndpointEntry {
  readonly path: string;
  /** `any` for Autopilot's paths, which accept every method. */
  readonly methods: string;
  readonly description: string;
}

/** Pure: the endpoints, in the order docs/api.md lists them. */
export function apiEndpoints(
  checkNames: readonly string[],
  iperf: boolean,
): readonly EndpointEntry[] {
  const any = 'any';
  return [
    {
      path: '/status',
      methods: any,
      description: 'run checks now and answer with their results (check=, host=, maxage=)',
    },
    { path: '/results', methods: any, description: 'the last results, without running anything' },
    ...checkNames.map((name) => ({
      path: `/${name}`,
      methods: any,
      description: `run the ${name} check once`,
    })),
    ...(iperf
      ? [
          { path: '/iperfservers', methods: any, description: 'start iperf3 servers on this node' },
          { path: '/iperfclients', methods: any, description: 'run iperf3 clients from this node' },
          { path: '/iperfstopservers', methods: any, description: 'stop the iperf3 servers' },
        ]
      : []),
    {
      path: '/invasive',
      methods: any,
      description: 'start a deep check on this node (Kubernetes mode)',
    },
    { path: '/acknowledge', methods: 'POST', description: 'lift a sticky EVICT' },
    {
      path: '/node/<name>',
      methods: 'GET',
      description: "a node's status page (JSON with format=json); / in a browser: the cluster's",
    },
    {
      path: '/node/<name>/summary',
      methods: 'GET',
      description: "this node's state and each check's last verdict, as the page asks each node",
    },
    { path: '/run', methods: 'POST', description: "the status page's run form" },
  ];
}

/** Pure: the text answer, one endpoint a line with its path padded into a column. */
export function renderIndexText(nodeName: string, endpoints: readonly EndpointEntry[]): string {
  const width = Math.max(...endpoints.map((e) => e.path.length));
  const lines = endpoints.map((e) => {
    const method = e.methods === 'any' ? '' : ` (${e.methods} only)`;
    return `  ${e.path.padEnd(width)}  ${e.description}${method}`;
  });
  return [
    `Autopilot health-check API on ${nodeName}. Endpoints (JSON with format=json; docs/api.md):`,
    ...lines,
    '',
  ].join('\n');
}

export function addIndexRoute(router: Router, kit: RouteKit): void {
  const { deps } = kit;
  router.all('/', async (ctx) => {
    // A browser gets the status page; curl, scripts and format= keep the index.
    if (await serveStatusPage(ctx, kit)) return;
    const format = formatOf(ctx, readQuery(ctx.query));
    const endpoints = apiEndpoints([...deps.checks.keys()], deps.iperf !== undefined);
    if (format === 'json') {
      ctx.body = { node: deps.nodeName, endpoints };
      return;
    }
    ctx.type = 'text/plain';
    ctx.body = renderIndexText(deps.nodeName, endpoints);
  });
}
