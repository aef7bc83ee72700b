/**
 * Autopilot's node-local iperf endpoints, which the iperf check of another node drives:
 * /iperfservers starts iperf3 servers on this pod's interfaces, /iperfclients runs clients
 * against one destination and answers their figures, /iperfstopservers stops the servers. All
 * three are protected like the iperf check itself: they load the network other jobs share.
 */

import { isIP } from 'node:net';
import type Router from '@koa/router';
import type Koa from 'koa';
import { ParamError, wholeNumberParam, type RawParams } from '../checks/check.js';
import type { PodInterface } from '../network/interfaces.js';
import {
  clientsToAutopilotJson,
  formatServerStartLines,
  formatStopLine,
  type IperfService,
} from '../network/iperf-service.js';

export interface IperfRouteDeps {
  readonly service: IperfService;
  /** This pod's addresses, the ones servers bind to and clients send from. */
  readonly localAddresses: () => readonly PodInterface[];
  readonly podName: string;
  readonly nodeName: string;
  /** Throws when the caller may not run iperf. */
  readonly authorize: (ctx: Koa.Context) => Promise<void>;
  readonly readQuery: (ctx: Koa.Context) => RawParams;
  /** Throws a ParamError for a format other than text or json. */
  readonly wantsJson: (ctx: Koa.Context) => boolean;
}

const DEFAULT_SERVER_LIFETIME_S = 600;

export function addIperfRoutes(router: Router, deps: IperfRouteDeps): void {
  router.all('/iperfservers', async (ctx) => {
    const query = deps.readQuery(ctx);
    const numservers = wholeNumberParam('numservers', query.numservers, 8, 1, 64);
    const startport = wholeNumberParam(
      'startport',
      query.startport,
      5200,
      1024,
      65535 - numservers + 1,
    );
    const lifetime = wholeNumberParam(
      'lifetime',
      query.lifetime,
      DEFAULT_SERVER_LIFETIME_S,
      1,
      24 * 3600,
    );
    const json = deps.wantsJson(ctx);
    await deps.authorize(ctx);
    const addresses = deps
      .localAddresses()
      .map((nic) => ({ interface: nic.name, address: nic.address }));
    const starts = await deps.service.startServers({
      addresses,
      numservers,
      startport,
      lifetimeMs: lifetime * 1000,
    });
    if (json) {
      ctx.body = { node: deps.nodeName, servers: starts };
    } else {
      ctx.type = 'text/plain';
      ctx.body = formatServerStartLines(starts, deps.podName, deps.nodeName);
    }
  });

  router.all('/iperfclients', async (ctx) => {
    const query = deps.readQuery(ctx);
    const dstip = address('dstip', query.dstip);
    const dstport = wholeNumberParam('dstport', required('dstport', query.dstport), 0, 1, 65535);
    const numclients = wholeNumberParam(
      'numclients',
      required('numclients', query.numclients),
      0,
      1,
      64,
    );
    if (dstport + numclients - 1 > 65535) {
      throw new ParamError(`dstport ${dstport} with numclients ${numclients} goes past port 65535`);
    }
    const duration = wholeNumberParam('duration', query.duration, 5, 1, 300);
    let bindAddress: string | undefined;
    if (query.bindip !== undefined) {
      bindAddress = address('bindip', query.bindip);
      if (!deps.localAddresses().some((nic) => nic.address === bindAddress)) {
        throw new ParamError(`bindip ${bindAddress} is not an address of this pod`);
      }
    }
    await deps.authorize(ctx);
    const controller = new AbortController();
    ctx.req.once('close', () => {
      if (!ctx.res.writableFinished)
        controller.abort(new Error('the caller closed the connection'));
    });
    const outcome = await deps.service.runClients({
      dstip,
      dstport,
      numclients,
      durationSeconds: duration,
      ...(bindAddress === undefined ? {} : { bindAddress }),
      signal: controller.signal,
    });
    // Autopilot answered JSON here whatever was asked; so does this.
    ctx.body = clientsToAutopilotJson(outcome);
  });

  router.all('/iperfstopservers', async (ctx) => {
    const json = deps.wantsJson(ctx);
    await deps.authorize(ctx);
    const count = await deps.service.stopServers();
    if (json) ctx.body = { node: deps.nodeName, stopped: count };
    else {
      ctx.type = 'text/plain';
      ctx.body = formatStopLine(count);
    }
  });
}

function required(name: string, value: string | undefined): string {
  if (value === undefined || value === '') throw new ParamError(`${name} is required`);
  return value;
}

function address(name: string, value: string | undefined): string {
  const given = required(name, value);
  if (isIP(given) === 0)
    throw new ParamError(`${name} ${JSON.stringify(given)} is not an IP address`);
  return given;
}
