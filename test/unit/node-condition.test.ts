import { describe, expect, test } from '@jest/globals';
import type { CheckRun } from '../../exporter/checks/check.js';
import { CHECK_NAMES } from '../../exporter/checks/index.js';
import {
  CONDITION_REASONS,
  causeOf,
  conditionToWrite,
  createNodeConditionWriter,
  desiredCondition,
  isoSeconds,
  truncateUtf8,
  type DesiredCondition,
} from '../../exporter/cluster/node-condition.js';
import { ConfigError, parseConfig } from '../../exporter/config/config.js';
import type { NodeCondition } from '../../exporter/k8s/ports.js';
import { silentLogger } from '../../exporter/log.js';
import type { NodeHealth } from '../../exporter/node-health.js';
import { createResultStore } from '../../exporter/store.js';
import { FakeClock } from '../fakes/clock.js';
import { FakeKube } from '../fakes/kube.js';
import { device, makeRun } from '../fakes/runs.js';

const NODE = 'gpu-node-1';
const T0 = Date.UTC(2026, 0, 1);
const HOUR = 3_600_000;

/** The store's health and conclusive view after these runs, as the exporter computes them. */
function after(runs: readonly CheckRun[]): { health: NodeHealth; runs: CheckRun[] } {
  const store = createResultStore({ historySize: 5 });
  for (const run of runs) store.record(run);
  return { health: store.health(), runs: store.conclusiveRuns() };
}

const fatal = (check: string, reason: string, evidence = {}) =>
  makeRun(check, T0, [device('0', 'FAIL', { fatal: true, reason, evidence })]);
const failing = (check: string, id: string, reason: string) =>
  makeRun(check, T0, [device(id, 'FAIL', { reason })]);

describe('causeOf: a short CamelCase cause from the finding', () => {
  test.each([
    [
      'remapped',
      fatal('remapped', 'a row remapping failed', { failureOccurred: true }),
      'RowRemapFailure',
    ],
    [
      'xid',
      fatal('xid', 'XID 79 (fallen off the bus) ×1, last 2026-01-01T00:00:00Z'),
      'FatalXid79',
    ],
    ['ecc', fatal('ecc', '1 new uncorrected (double-bit) ECC error'), 'EccUncorrectable'],
    ['dcgm', fatal('dcgm', 'failed PCIe (fatal: PCIe)'), 'DcgmFatal'],
    [
      'gpumem',
      fatal('gpumem', 'uncorrectable ECC error while testing the memory (x)'),
      'EccUncorrectable',
    ],
    ['gpucount', makeRun('gpucount', T0, [device('', 'FAIL', { fatal: true })]), 'GpusMissing'],
    ['a check without an entry', fatal('fancy-new', 'broken'), 'FancyNewFailure'],
  ])('EVICT by %s', (_name, run, reason) => {
    const { health, runs } = after([run]);
    expect(health.state).toBe('EVICT');
    expect(causeOf(health, runs)).toBe(reason);
  });

  test.each([
    [
      'pciebw',
      failing('pciebw', '0', 'degraded (width): x8 of x16 at idle: h2d 3 GB/s'),
      'PcieLinkDegraded',
    ],
    [
      'pciebw',
      failing('pciebw', '0', 'h2d 3 GB/s: below the 4 GB/s threshold'),
      'PcieBandwidthLow',
    ],
    [
      'gpupower',
      failing('gpupower', '1', 'hardware power brake held across two reads'),
      'PowerSlowdown',
    ],
    [
      'ping',
      failing('ping', 'fe80::1', 'unreachable: no reply to 3 echo requests'),
      'PeerUnreachable',
    ],
    ['remapped', failing('remapped', '0', 'row remapping pending: reset the GPU'), 'RowsRemapped'],
    [
      'nvlink, a link',
      failing('nvlink', '2', '1 NVLink down: link 3 (17 of 18 active, 18 expected)'),
      'NvlinkDown',
    ],
    [
      'nvlink, the fabric',
      failing('nvlink', '5', 'fabric registration failed: NVML_ERROR_NOT_READY (27)'),
      'FabricNotReady',
    ],
  ])('WARN by %s', (_name, run, reason) => {
    const { health, runs } = after([run]);
    expect(health.state).toBe('WARN');
    expect(causeOf(health, runs)).toBe(reason);
  });

  test('an EVICT found on the node at start, with no finding of this process, is EvictRestored', () => {
    const store = createResultStore({ historySize: 5 });
    store.restoreEvict('node label autopilot.ibm.com/gpuhealth=EVICT was set before', T0);
    expect(causeOf(store.health(), [])).toBe(CONDITION_REASONS.restored);
  });
});

describe('truncateUtf8: at most 1 KiB, on a character boundary', () => {
  const bytes = (text: string) => Buffer.byteLength(text, 'utf8');

  test('a short message is kept whole', () => {
    expect(truncateUtf8('fine')).toBe('fine');
    expect(truncateUtf8('é'.repeat(512))).toBe('é'.repeat(512));
  });

  test('a long one is cut to 1024 bytes with an ellipsis, never inside a character', () => {
    for (const unit of ['a', 'é', '€', '😀']) {
      const cut = truncateUtf8(unit.repeat(2000));
      expect(bytes(cut)).toBeLessThanOrEqual(1024);
      expect(cut.endsWith('…')).toBe(true);
      // Every character before the ellipsis is whole: no lone surrogate, no replacement character.
      expect(Buffer.from(cut, 'utf8').toString('utf8')).toBe(cut);
      expect(cut.slice(0, -1).replaceAll(unit, '')).toBe('');
      expect(bytes(cut)).toBeGreaterThan(1024 - 3 - bytes(unit));
    }
  });
});

describe('desiredCondition', () => {
  const inputs = (runs: CheckRun[], now: number, stale: number | 'never' = 3 * HOUR) => ({
    ...after(runs),
    now,
    staleAfterMs: stale === 'never' ? undefined : stale,
  });

  test('PASS and WARN are True, EVICT False with the cause', () => {
    expect(desiredCondition(inputs([makeRun('remapped', T0, [device('0', 'PASS')])], T0))).toEqual({
      status: 'True',
      reason: 'ChecksPassed',
      message: 'PASS: no check failed',
    });
    const warn = desiredCondition(inputs([failing('ping', 'node-b', 'unreachable: x')], T0));
    expect(warn).toMatchObject({ status: 'True', reason: 'PeerUnreachable' });
    expect(warn.message).toContain('ping node-b: unreachable: x');
    const evict = desiredCondition(
      inputs([fatal('remapped', 'a row remapping failed', { failureOccurred: true })], T0),
    );
    expect(evict).toMatchObject({ status: 'False', reason: 'RowRemapFailure' });
    expect(evict.message).toBe('EVICT: remapped 0: a row remapping failed');
  });

  test('Unknown before the first conclusive result, and once results are 3 rounds old', () => {
    expect(desiredCondition(inputs([], T0)).status).toBe('Unknown');
    expect(desiredCondition(inputs([], T0)).reason).toBe(CONDITION_REASONS.noResults);
    const pass = [makeRun('remapped', T0, [device('0', 'PASS')])];
    expect(desiredCondition(inputs(pass, T0 + 3 * HOUR)).status).toBe('True');
    const stale = desiredCondition(inputs(pass, T0 + 3 * HOUR + 1));
    expect(stale).toMatchObject({ status: 'Unknown', reason: CONDITION_REASONS.stale });
    expect(stale.message).toContain(isoSeconds(T0));
    // Without a periodic round nothing is expected, so nothing goes stale.
    expect(desiredCondition(inputs(pass, T0 + 100 * HOUR, 'never')).status).toBe('True');
  });

  test('an ERROR concludes nothing: checks that only ERROR go stale; an EVICT stays False', () => {
    const pass = makeRun('remapped', T0, [device('0', 'PASS')]);
    const error = makeRun('remapped', T0 + 2 * HOUR, [device('0', 'ERROR')]);
    expect(desiredCondition(inputs([pass, error], T0 + 3 * HOUR + 1)).status).toBe('Unknown');
    const evict = fatal('ecc', 'double-bit');
    expect(desiredCondition(inputs([evict, error], T0 + 10 * HOUR)).status).toBe('False');
  });

  test('a message over 1 KiB is truncated', () => {
    const long = 'x'.repeat(3000);
    const condition = desiredCondition(inputs([fatal('ecc', long)], T0));
    expect(Buffer.byteLength(condition.message)).toBeLessThanOrEqual(1024);
  });
});

describe('conditionToWrite: transitions and heartbeats', () => {
  const TYPE = 'GPUHealthy';
  const timing = (now: number) => ({ now, heartbeatMs: 300_000, keepUnprovenMs: 3 * HOUR });
  const want = (status: DesiredCondition['status'], reason = 'R'): DesiredCondition => ({
    status,
    reason,
    message: 'm',
  });
  const written = (status: NodeCondition['status'], at: number, reason = 'R'): NodeCondition => ({
    type: TYPE,
    status,
    reason,
    message: 'm',
    lastTransitionTime: isoSeconds(at),
    lastHeartbeatTime: isoSeconds(at),
  });

  test('the first write sets both times', () => {
    expect(conditionToWrite(TYPE, undefined, want('False'), timing(T0))).toEqual(
      written('False', T0),
    );
  });

  test('nothing while unchanged and the heartbeat is fresh; a heartbeat once it is not', () => {
    const previous = written('False', T0);
    expect(conditionToWrite(TYPE, previous, want('False'), timing(T0 + 299_000))).toBeUndefined();
    const beat = conditionToWrite(TYPE, previous, want('False'), timing(T0 + 300_000));
    expect(beat?.lastHeartbeatTime).toBe(isoSeconds(T0 + 300_000));
    expect(beat?.lastTransitionTime).toBe(isoSeconds(T0));
  });

  test('a new reason is written at once but keeps lastTransitionTime; a new status moves it', () => {
    const previous = written('False', T0);
    const reason = conditionToWrite(TYPE, previous, want('False', 'Other'), timing(T0 + 1000));
    expect(reason).toMatchObject({ reason: 'Other', lastTransitionTime: isoSeconds(T0) });
    const status = conditionToWrite(TYPE, previous, want('True'), timing(T0 + 1000));
    expect(status?.lastTransitionTime).toBe(isoSeconds(T0 + 1000));
  });

  test('before its first result the exporter leaves a fresh condition alone, not a stale one', () => {
    const unproven = want('Unknown', CONDITION_REASONS.noResults);
    const previous = written('True', T0);
    expect(conditionToWrite(TYPE, previous, unproven, timing(T0 + HOUR))).toBeUndefined();
    expect(conditionToWrite(TYPE, previous, unproven, timing(T0 + 4 * HOUR))?.status).toBe(
      'Unknown',
    );
  });

  test('an EVICT restored at start keeps the cause the node carries', () => {
    const previous = written('False', T0, 'FatalXid79');
    const restored = want('False', CONDITION_REASONS.restored);
    expect(conditionToWrite(TYPE, previous, restored, timing(T0 + 1000))).toBeUndefined();
  });
});

describe('the condition writer', () => {
  function setup() {
    const clock = new FakeClock(T0);
    const kube = new FakeKube();
    kube.addNode(NODE);
    let desired: DesiredCondition = { status: 'True', reason: 'ChecksPassed', message: 'ok' };
    const writer = createNodeConditionWriter({
      kube: kube.api,
      nodeName: NODE,
      type: 'GPUHealthy',
      desired: () => desired,
      heartbeatMs: 300_000,
      keepUnprovenMs: 3 * HOUR,
      clock,
      logger: silentLogger,
      backoff: { initialMs: 1000, maxMs: 4000 },
    });
    const set = (next: DesiredCondition) => {
      desired = next;
      writer.sync();
    };
    return { clock, kube, writer, set, patches: () => kube.callsTo('patchNodeStatus').length };
  }

  test('writes on change, heartbeats on the timer, nothing in between', async () => {
    const { clock, kube, writer, set, patches } = setup();
    await writer.start();
    await writer.idle();
    expect(patches()).toBe(1);
    expect(kube.node(NODE).conditions?.[0]).toMatchObject({ type: 'GPUHealthy', status: 'True' });
    set({ status: 'True', reason: 'ChecksPassed', message: 'ok' });
    await writer.idle();
    expect(patches()).toBe(1);
    await clock.advance(240_000);
    expect(patches()).toBe(1);
    await clock.advance(60_000);
    expect(patches()).toBe(2);
    set({ status: 'False', reason: 'DcgmFatal', message: 'bad' });
    await writer.idle();
    expect(patches()).toBe(3);
    expect(kube.node(NODE).conditions?.[0]?.lastTransitionTime).toBe(isoSeconds(clock.now()));
    writer.stop();
  });

  test('a refused write is retried with backoff', async () => {
    const { clock, kube, writer, patches } = setup();
    kube.failNext('patchNodeStatus', 403, 'forbidden');
    kube.failNext('patchNodeStatus', 500, 'down');
    await writer.start();
    expect(patches()).toBe(1);
    await clock.advance(1000);
    expect(patches()).toBe(2);
    await clock.advance(1999);
    expect(patches()).toBe(2);
    await clock.advance(1);
    await writer.idle();
    expect(patches()).toBe(3);
    expect(kube.node(NODE).conditions?.[0]?.status).toBe('True');
    writer.stop();
  });
});

describe('settings', () => {
  const config = (env: Record<string, string>) =>
    parseConfig({ flags: new Map(), env, hostname: NODE, knownChecks: CHECK_NAMES });

  test('AUTOPILOT_NODE_CONDITION renames the condition, none turns it off, junk is refused', () => {
    expect(config({}).nodeCondition).toBe('GPUHealthy');
    expect(config({ AUTOPILOT_NODE_CONDITION: 'example.com/GPUOk' }).nodeCondition).toBe(
      'example.com/GPUOk',
    );
    expect(config({ AUTOPILOT_NODE_CONDITION: 'none' }).nodeCondition).toBeUndefined();
    expect(() => config({ AUTOPILOT_NODE_CONDITION: 'gpu healthy' })).toThrow(ConfigError);
    expect(() => config({ AUTOPILOT_NODE_CONDITION: 'gpu healthy' })).toThrow(
      /AUTOPILOT_NODE_CONDITION/,
    );
  });

  test('AUTOPILOT_NODE_CONDITION_HEARTBEAT is a duration of 10s to 1h', () => {
    expect(config({}).nodeConditionHeartbeatMs).toBe(300_000);
    expect(config({ AUTOPILOT_NODE_CONDITION_HEARTBEAT: '1m' }).nodeConditionHeartbeatMs).toBe(
      60_000,
    );
    expect(() => config({ AUTOPILOT_NODE_CONDITION_HEARTBEAT: '1s' })).toThrow(ConfigError);
  });
});
