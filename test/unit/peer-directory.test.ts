import { recordingLogger } from '../fakes/logger.js';
import { describe, expect, test } from '@jest/globals';
import type { EndpointSliceInfo, SliceEndpoint } from '../../exporter/k8s/ports.js';
import { createPeerDirectory, peersFromSlices } from '../../exporter/cluster/peer-directory.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';
import { FakeKube } from '../fakes/kube.js';

const NS = 'autopilot';
const SERVICE = 'autopilot-healthchecks';
const HEALTHCHECK = [{ name: 'healthcheck', port: 3333 }];

function endpoint(
  address: string | undefined,
  nodeName: string | undefined,
  extra: Partial<SliceEndpoint> = {},
): SliceEndpoint {
  return {
    addresses: address === undefined ? [] : [address],
    ready: true,
    nodeName,
    podName: nodeName === undefined ? undefined : `autopilot-${nodeName}`,
    ...extra,
  };
}

function slice(
  name: string,
  endpoints: SliceEndpoint[],
  ports: EndpointSliceInfo['ports'] = HEALTHCHECK,
): EndpointSliceInfo {
  return { name, ports, endpoints };
}

function setup(backoff?: { initialMs: number; maxMs: number }) {
  const clock = new FakeClock();
  const kube = new FakeKube();
  const log = recordingLogger();
  const directory = createPeerDirectory({
    kube: kube.api,
    namespace: NS,
    service: SERVICE,
    portName: 'healthcheck',
    clock,
    logger: log.logger,
    ...(backoff === undefined ? {} : { backoff }),
  });
  return { clock, kube, log, directory, start: clock.now() };
}

describe('peersFromSlices', () => {
  test('takes the port named healthcheck among several', () => {
    const ports = [
      { name: 'metrics', port: 8081 },
      { name: 'healthcheck', port: 3333 },
    ];
    expect(
      peersFromSlices([slice('s', [endpoint('10.0.0.1', 'a')], ports)], 'healthcheck'),
    ).toEqual([{ node: 'a', address: '10.0.0.1', port: 3333, ready: true, pod: 'autopilot-a' }]);
  });

  test('takes a single port whatever its name', () => {
    const ports = [{ name: undefined, port: 8080 }];
    const [peer] = peersFromSlices([slice('s', [endpoint('10.0.0.1', 'a')], ports)], 'healthcheck');
    expect(peer?.port).toBe(8080);
  });

  test('has no port when the slice lists none, or several without the named one', () => {
    const none = peersFromSlices([slice('s', [endpoint('10.0.0.1', 'a')], [])], 'healthcheck');
    const ambiguous = peersFromSlices(
      [
        slice(
          's',
          [endpoint('10.0.0.2', 'b')],
          [
            { name: 'metrics', port: 8081 },
            { name: 'http', port: 8080 },
          ],
        ),
      ],
      'healthcheck',
    );
    expect(none.map((peer) => peer.port)).toEqual([undefined]);
    expect(ambiguous.map((peer) => peer.port)).toEqual([undefined]);
  });

  test('keeps not-ready endpoints, marked', () => {
    const peers = peersFromSlices(
      [slice('s', [endpoint('10.0.0.1', 'a', { ready: false })])],
      'healthcheck',
    );
    expect(peers).toEqual([
      { node: 'a', address: '10.0.0.1', port: 3333, ready: false, pod: 'autopilot-a' },
    ]);
  });

  test('merges slices and sorts by node, then address; an endpoint without address is ignored', () => {
    const peers = peersFromSlices(
      [
        slice('s1', [endpoint('10.0.0.2', 'node-b'), endpoint(undefined, 'node-c')]),
        slice(
          's2',
          [endpoint('10.0.0.3', 'node-a'), endpoint('10.0.0.1', 'node-a')],
          [{ name: 'healthcheck', port: 4444 }],
        ),
        slice('s3', [endpoint('10.0.0.9', undefined)]),
      ],
      'healthcheck',
    );
    expect(peers.map((peer) => [peer.node, peer.address, peer.port])).toEqual([
      [undefined, '10.0.0.9', 3333],
      ['node-a', '10.0.0.1', 4444],
      ['node-a', '10.0.0.3', 4444],
      ['node-b', '10.0.0.2', 3333],
    ]);
  });
});

describe('peer directory', () => {
  test('lists, then follows the watch: ADDED, MODIFIED and DELETED update peers()', async () => {
    const { kube, directory } = setup();
    kube.putSlice(NS, SERVICE, slice('s1', [endpoint('10.0.0.1', 'node-a')]));
    directory.start();
    await flushPromises();

    expect(directory.peers()).toEqual([
      { node: 'node-a', address: '10.0.0.1', port: 3333, ready: true, pod: 'autopilot-node-a' },
    ]);
    expect(directory.status()).toEqual({ synced: true, watching: true, lastError: undefined });
    // The watch starts from the list's resource version, so no change in between is lost.
    expect(kube.callsTo('watchEndpointSlices')).toEqual([[NS, SERVICE, '2']]);

    kube.putSlice(NS, SERVICE, slice('s2', [endpoint('10.0.0.2', 'node-b')]));
    expect(directory.peers().map((peer) => peer.address)).toEqual(['10.0.0.1', '10.0.0.2']);

    kube.putSlice(NS, SERVICE, slice('s1', [endpoint('10.0.0.1', 'node-a', { ready: false })]));
    expect(directory.peers().map((peer) => [peer.address, peer.ready])).toEqual([
      ['10.0.0.1', false],
      ['10.0.0.2', true],
    ]);

    kube.removeSlice(NS, SERVICE, 's2');
    expect(directory.peers().map((peer) => peer.address)).toEqual(['10.0.0.1']);
    expect(kube.callsTo('listEndpointSlices')).toEqual([[NS, SERVICE]]);
  });

  test('version() changes when the peers do', async () => {
    const { kube, directory } = setup();
    const before = directory.version();
    directory.start();
    await flushPromises();
    const listed = directory.version();
    expect(listed).not.toBe(before);
    kube.putSlice(NS, SERVICE, slice('s1', [endpoint('10.0.0.1', 'node-a')]));
    expect(directory.version()).not.toBe(listed);
  });

  test('start() twice lists once', async () => {
    const { kube, directory } = setup();
    directory.start();
    directory.start();
    await flushPromises();
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(1);
  });

  test('a watch the server ends normally after serving a while is resumed at once from the last version it saw, without a list', async () => {
    const { clock, kube, directory } = setup();
    directory.start();
    await flushPromises();
    await clock.advance(1000);
    kube.putSlice(NS, SERVICE, slice('s1', [endpoint('10.0.0.1', 'node-a')]));
    kube.putSlice(NS, SERVICE, slice('s2', [endpoint('10.0.0.2', 'node-b')]));
    kube.openWatch()!.end();
    await flushPromises();

    expect(kube.callsTo('listEndpointSlices')).toHaveLength(1);
    expect(kube.watches).toHaveLength(2);
    expect(kube.callsTo('watchEndpointSlices')).toEqual([
      [NS, SERVICE, '1'],
      [NS, SERVICE, '3'],
    ]);
    expect(directory.peers().map((peer) => peer.node)).toEqual(['node-a', 'node-b']);
    expect(clock.pending()).toEqual([]);
    expect(directory.status()).toEqual({ synced: true, watching: true, lastError: undefined });
  });

  test('a resumed watch whose version is too old (410) lists again; a resume that fails backs off, then lists', async () => {
    const { clock, kube, directory, start } = setup();
    directory.start();
    await flushPromises();
    await clock.advance(1000);
    kube.openWatch()!.end();
    await flushPromises();
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(1);
    kube.openWatch()!.fail(410, 'too old resource version: 1 (5)');
    await flushPromises();
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(2);

    await clock.advance(1000);
    kube.failNext('watchEndpointSlices', 503, 'unavailable');
    kube.openWatch()!.end();
    await flushPromises();
    expect(directory.status().lastError).toEqual({
      message: 'watchEndpointSlices: 503 unavailable',
      at: start + 2000,
    });
    await clock.advance(1000);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(3);
    expect(directory.status()).toEqual({ synced: true, watching: true, lastError: undefined });
  });

  test('a watch closed right after it opened counts as a failure and backs off', async () => {
    const { clock, kube, directory, start } = setup();
    directory.start();
    await flushPromises();
    kube.openWatch()!.end();
    await flushPromises();

    expect(directory.status()).toEqual({
      synced: true,
      watching: false,
      lastError: { message: 'the watch was closed by the server right after it opened', at: start },
    });
    expect(clock.pending()).toEqual([start + 1000]);
    await clock.advance(999);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(1);
    await clock.advance(1);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(2);
    expect(directory.status().lastError).toBeUndefined();
  });

  test('410 Gone lists again at once, without backoff, and says so in the log', async () => {
    const { clock, kube, directory, log } = setup();
    directory.start();
    await flushPromises();
    kube.openWatch()!.fail(410, 'too old resource version: 2 (7)');
    await flushPromises();

    expect(kube.callsTo('listEndpointSlices')).toHaveLength(2);
    expect(kube.openWatch()).toBeDefined();
    expect(clock.pending()).toEqual([]);
    expect(directory.status().lastError).toBeUndefined();
    expect(log.lines).toContainEqual({
      level: 'info',
      message: 'peer watch expired (410 Gone); listing again',
      fields: { error: 'watchEndpointSlices: 410 too old resource version: 2 (7)' },
    });
  });

  test('a watch that ends with another error is a failure, retried after the backoff', async () => {
    const { clock, kube, directory } = setup();
    directory.start();
    await flushPromises();
    await clock.advance(5000);
    kube.openWatch()!.fail(500, 'etcd unavailable');
    await flushPromises();

    expect(directory.status().lastError).toEqual({
      message: 'watchEndpointSlices: 500 etcd unavailable',
      at: clock.now(),
    });
    expect(clock.pending()).toEqual([clock.now() + 1000]);
    await clock.advance(1000);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(2);
  });

  test('a failing list backs off 1 s, 2 s, 4 s (capped at maxMs); a success clears the error', async () => {
    const { clock, kube, directory, log, start } = setup({ initialMs: 1000, maxMs: 4000 });
    for (let i = 0; i < 4; i++) kube.failNext('listEndpointSlices', 500, 'internal error');
    directory.start();
    await flushPromises();

    expect(directory.status()).toEqual({
      synced: false,
      watching: false,
      lastError: { message: 'listEndpointSlices: 500 internal error', at: start },
    });
    expect(clock.pending()).toEqual([start + 1000]);
    await clock.advance(1000);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(2);
    expect(clock.pending()).toEqual([start + 1000 + 2000]);
    await clock.advance(2000);
    expect(clock.pending()).toEqual([start + 3000 + 4000]);
    await clock.advance(4000);
    expect(clock.pending()).toEqual([start + 7000 + 4000]);
    expect(directory.status().lastError?.at).toBe(start + 7000);
    await clock.advance(4000);

    expect(kube.callsTo('listEndpointSlices')).toHaveLength(5);
    expect(directory.status()).toEqual({ synced: true, watching: true, lastError: undefined });
    expect(clock.pending()).toEqual([]);
    expect(
      log.lines.filter((line) => line.level === 'warn').map((line) => line.fields?.retryInMs),
    ).toEqual([1000, 2000, 4000, 4000]);
  });

  test('a watch that served a while and then fails is retried after the initial delay again', async () => {
    // The failures at start are long over; an error hours later must not wait out their backoff.
    const { clock, kube, directory } = setup({ initialMs: 1000, maxMs: 60_000 });
    kube.failNext('listEndpointSlices', 503, 'unavailable');
    kube.failNext('listEndpointSlices', 503, 'unavailable');
    kube.failNext('listEndpointSlices', 503, 'unavailable');
    directory.start();
    await clock.advance(1000 + 2000 + 4000);
    expect(directory.status().watching).toBe(true);

    await clock.advance(3_600_000);
    kube.openWatch()!.fail(500, 'etcd leader changed');
    await flushPromises();
    expect(clock.pending()).toEqual([clock.now() + 1000]);
  });

  test('stop() cancels a pending retry', async () => {
    const { clock, kube, directory } = setup();
    kube.failNext('listEndpointSlices', undefined, 'connect ECONNREFUSED');
    directory.start();
    await flushPromises();
    expect(clock.pending()).toHaveLength(1);

    directory.stop();
    expect(clock.pending()).toEqual([]);
    await clock.advance(60_000);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(1);
  });

  test('stop() stops the watch and nothing follows it', async () => {
    const { clock, kube, directory } = setup();
    directory.start();
    await flushPromises();
    const watch = kube.openWatch()!;

    directory.stop();
    await flushPromises();
    expect(watch.stopped).toBe(true);
    expect(directory.status().watching).toBe(false);
    await clock.advance(60_000);
    expect(kube.callsTo('listEndpointSlices')).toHaveLength(1);
    expect(kube.watches).toHaveLength(1);
  });

  test('stop() while the list is in flight opens no watch', async () => {
    const { kube, directory } = setup();
    kube.putSlice(NS, SERVICE, slice('s1', [endpoint('10.0.0.1', 'node-a')]));
    directory.start();
    directory.stop();
    await flushPromises();
    expect(kube.watches).toEqual([]);
    expect(directory.peers()).toEqual([]);
  });
});
