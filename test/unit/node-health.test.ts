import { describe, expect, test } from '@jest/globals';
import {
  INITIAL_NODE_HEALTH,
  evaluateNodeHealth,
  type EvictOn,
  type HealthInputs,
  type NodeHealth,
} from '../../exporter/node-health.js';
import type { CheckRun } from '../../exporter/checks/check.js';
import { createResultStore } from '../../exporter/store.js';
import { device, makeRun } from '../fakes/runs.js';

const T = Date.UTC(2026, 0, 1);

function store() {
  return createResultStore({ historySize: 3 });
}

describe('node verdict', () => {
  test('is UNKNOWN until a conclusive run, then PASS', () => {
    const s = store();
    expect(s.health().state).toBe('UNKNOWN');
    s.record(makeRun('ping', T, [], { verdict: 'ERROR', reason: 'timed out' }));
    expect(s.health().state).toBe('UNKNOWN');
    s.record(makeRun('ping', T + 1, [device('a', 'PASS')]));
    expect(s.health()).toEqual({ state: 'PASS', since: T + 1, reasons: [] });
  });

  test('a non-fatal FAIL gives WARN with the failing device as the reason; a later PASS clears it', () => {
    const s = store();
    s.record(
      makeRun('ping', T, [device('a', 'PASS'), device('b', 'FAIL', { reason: 'unreachable' })]),
    );
    expect(s.health()).toEqual({ state: 'WARN', since: T, reasons: ['ping b: unreachable'] });
    s.record(makeRun('ping', T + 10, [device('a', 'PASS'), device('b', 'PASS')]));
    expect(s.health()).toEqual({ state: 'PASS', since: T + 10, reasons: [] });
  });

  test('a device WARN alone does not degrade the node', () => {
    const s = store();
    s.record(makeRun('ping', T, [device('a', 'WARN')]));
    expect(s.health().state).toBe('PASS');
  });

  test('ERROR never turns a failing node back to PASS', () => {
    const s = store();
    s.record(makeRun('ping', T, [device('b', 'FAIL')]));
    s.record(makeRun('ping', T + 10, [], { verdict: 'ERROR', reason: 'timed out' }));
    s.record(makeRun('ping', T + 20, [device('b', 'ERROR')]));
    expect(s.health().state).toBe('WARN');
    expect(s.latest('ping')?.verdict).toBe('ERROR');
    expect(s.conclusiveRuns().map((r) => r.finishedAt)).toEqual([T]);
  });

  test('a fatal FAIL gives EVICT, which is sticky across passing rounds', () => {
    const s = store();
    s.record(
      makeRun('remapped', T, [device('3', 'FAIL', { fatal: true, reason: 'remapping failure' })]),
    );
    const evicted = {
      state: 'EVICT',
      since: T,
      reasons: ['remapped 3: remapping failure'],
      evictCause: { dcgmLevel: undefined, other: true },
    };
    expect(s.health()).toEqual(evicted);
    s.record(makeRun('remapped', T + 10, [device('3', 'PASS')]));
    s.record(makeRun('ping', T + 20, [device('a', 'PASS')]));
    expect(s.health()).toEqual(evicted);
  });

  test('the fatal failure of one check evicts even when another check only warns', () => {
    const s = store();
    s.record(makeRun('ping', T, [device('b', 'FAIL')]));
    s.record(makeRun('ecc', T + 1, [device('0', 'FAIL', { fatal: true })]));
    expect(s.health().state).toBe('EVICT');
  });

  test('an acknowledge lifts EVICT: the state follows the evidence, acknowledged failures only warn', () => {
    const s = store();
    s.record(
      makeRun('remapped', T, [device('3', 'FAIL', { fatal: true, reason: 'remapping failure' })]),
    );
    expect(s.acknowledge(T + 5)).toEqual({
      state: 'WARN',
      since: T + 5,
      reasons: ['remapped 3: remapping failure'],
    });
    s.record(makeRun('remapped', T + 10, [device('3', 'PASS')]));
    expect(s.health().state).toBe('PASS');
    // A new fatal failure after the acknowledge evicts again.
    s.record(makeRun('remapped', T + 20, [device('3', 'FAIL', { fatal: true })]));
    expect(s.health().state).toBe('EVICT');
  });

  test('an acknowledge does nothing to a node that is not evicted', () => {
    const s = store();
    s.record(makeRun('ping', T, [device('b', 'FAIL')]));
    expect(s.acknowledge(T + 1)).toEqual({
      state: 'WARN',
      since: T,
      reasons: ['ping b: fail reason'],
    });
  });
});

describe('result store', () => {
  test('a device that ends in ERROR keeps its last conclusive result; the others are updated', () => {
    const s = store();
    s.record(
      makeRun('ping', T, [device('a', 'PASS'), device('b', 'FAIL', { reason: 'unreachable' })]),
    );
    s.record(
      makeRun('ping', T + 10, [device('a', 'WARN'), device('b', 'ERROR'), device('c', 'ERROR')]),
    );
    const view = s.conclusiveRuns()[0]!;
    expect(view.finishedAt).toBe(T + 10);
    expect(view.devices.map((d) => [d.id, d.verdict, d.observedAt])).toEqual([
      ['a', 'WARN', undefined],
      ['b', 'FAIL', T],
      ['c', 'ERROR', undefined],
    ]);
    expect(view.verdict).toBe('FAIL');
    expect(s.latest('ping')?.verdict).toBe('ERROR');
    expect(s.health()).toMatchObject({ state: 'WARN', reasons: ['ping b: unreachable'] });
  });

  test('devices absent from the latest run leave the view', () => {
    const s = store();
    s.record(makeRun('ping', T, [device('a', 'PASS'), device('b', 'FAIL')]));
    s.record(makeRun('ping', T + 10, [device('a', 'PASS')]));
    expect(s.conclusiveRuns()[0]!.devices.map((d) => d.id)).toEqual(['a']);
    expect(s.health().state).toBe('PASS');
  });

  test('an acknowledged fatal failure carried over by an ERROR stays acknowledged', () => {
    const s = store();
    s.record(makeRun('ecc', T, [device('0', 'FAIL', { fatal: true }), device('1', 'PASS')]));
    expect(s.acknowledge(T + 5).state).toBe('WARN');
    s.record(makeRun('ecc', T + 10, [device('0', 'ERROR'), device('1', 'PASS')]));
    expect(s.health().state).toBe('WARN');
  });

  test('SKIP alone is never PASS: the node stays UNKNOWN', () => {
    const s = store();
    s.record(makeRun('ping', T, [], { verdict: 'SKIP', reason: 'no peers' }));
    s.record(makeRun('gpupower', T + 1, [device('0', 'SKIP')]));
    expect(s.health().state).toBe('UNKNOWN');
  });

  test('keeps a bounded history, newest first, and counts runs by verdict', () => {
    const s = store();
    for (let i = 0; i < 5; i++)
      s.record(makeRun('ping', T + i, [device('a', i % 2 === 0 ? 'PASS' : 'FAIL')]));
    expect(s.history('ping').map((r) => r.finishedAt)).toEqual([T + 4, T + 3, T + 2]);
    expect(s.runCount('ping', 'PASS')).toBe(3);
    expect(s.runCount('ping', 'FAIL')).toBe(2);
    expect(s.runCount('ping', 'ERROR')).toBe(0);
    expect(s.latest('ping')?.finishedAt).toBe(T + 4);
    expect(s.history('other')).toEqual([]);
  });

  test('tracks the last run that found nothing failing; SKIP counts, ERROR and FAIL do not', () => {
    const s = store();
    expect(s.lastSuccessAt('ping')).toBeUndefined();
    s.record(makeRun('ping', T, [], { verdict: 'SKIP' }));
    s.record(makeRun('ping', T + 1, [device('a', 'FAIL')]));
    s.record(makeRun('ping', T + 2, [], { verdict: 'ERROR' }));
    expect(s.lastSuccessAt('ping')).toBe(T);
    s.record(makeRun('ping', T + 3, [device('a', 'WARN')]));
    expect(s.lastSuccessAt('ping')).toBe(T + 3);
  });
});

/** DCGM at level r: GPU 2 failing PCIe (a test of DCGM_FATAL_ERRORS), or every GPU passing. */
const dcgmFatal = (at: number, r: string): CheckRun =>
  makeRun(
    'dcgm',
    at,
    [
      device('0', 'PASS'),
      device('2', 'FAIL', { fatal: true, reason: 'failed pcie (fatal: pcie)' }),
    ],
    { params: { r } },
  );
const dcgmPass = (at: number, r: string | undefined): CheckRun =>
  makeRun('dcgm', at, [device('0', 'PASS'), device('2', 'PASS'), device('', 'PASS')], {
    params: r === undefined ? {} : { r },
  });
const remapFailure = (at: number): CheckRun =>
  makeRun('remapped', at, [
    device('4', 'FAIL', {
      fatal: true,
      reason: 'a row remapping failed: replace the GPU',
      evidence: { remapFailure: true },
    }),
  ]);
const xid79 = (at: number): CheckRun =>
  makeRun('xid', at, [
    device('2', 'FAIL', { fatal: true, reason: 'XID 79 (GPU has fallen off the bus) ×1' }),
  ]);

/**
 * Drives evaluateNodeHealth as the store does: after each run, over the latest run of each check,
 * with that run as `latest`.
 */
function replay(evictOn: EvictOn, runs: readonly CheckRun[]): NodeHealth[] {
  const view = new Map<string, CheckRun>();
  let health: NodeHealth = INITIAL_NODE_HEALTH;
  return runs.map((run) => {
    view.set(run.check, run);
    const inputs: HealthInputs = {
      conclusiveRuns: [...view.values()],
      acknowledgedAt: undefined,
      now: run.finishedAt,
      evictOn,
      latest: run,
    };
    health = evaluateNodeHealth(health, inputs);
    return health;
  });
}

describe('evaluateNodeHealth: what may evict (AUTOPILOT_EVICT_ON)', () => {
  test('dcgm: a row-remap failure and XID 79 are WARN, each with its reason, and say why they do not evict', () => {
    const [afterRemap, afterXid] = replay('dcgm', [remapFailure(T), xid79(T + 1)]);
    expect(afterRemap).toEqual({
      state: 'WARN',
      since: T,
      reasons: [
        'remapped 4: a row remapping failed: replace the GPU (fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm)',
      ],
    });
    expect(afterXid?.state).toBe('WARN');
    expect(afterXid?.reasons).toEqual([
      'remapped 4: a row remapping failed: replace the GPU (fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm)',
      'xid 2: XID 79 (GPU has fallen off the bus) ×1 (fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm)',
    ]);
  });

  test('all: the same findings evict', () => {
    expect(replay('all', [remapFailure(T)])[0]).toMatchObject({
      state: 'EVICT',
      reasons: ['remapped 4: a row remapping failed: replace the GPU'],
      evictCause: { dcgmLevel: undefined, other: true },
    });
    expect(replay('all', [xid79(T)])[0]?.state).toBe('EVICT');
  });

  test.each<EvictOn>(['dcgm', 'all'])('%s: a DCGM level-3 fatal failure evicts', (mode) => {
    expect(replay(mode, [dcgmFatal(T, '3')])[0]).toEqual({
      state: 'EVICT',
      since: T,
      reasons: ['dcgm 2: failed pcie (fatal: pcie)'],
      evictCause: { dcgmLevel: 3, other: false },
    });
  });

  test.each<EvictOn>(['dcgm', 'all'])(
    '%s: a later passing level-3 or level-4 run lifts a level-3 EVICT; a passing level 1 or 2 does not',
    (mode) => {
      const states = (runs: CheckRun[]) => replay(mode, runs).map((h) => h.state);
      expect(states([dcgmFatal(T, '3'), dcgmPass(T + 1, undefined), dcgmPass(T + 2, '2')])).toEqual(
        ['EVICT', 'EVICT', 'EVICT'],
      );
      const lifted = replay(mode, [dcgmFatal(T, '3'), dcgmPass(T + 1, '3')]);
      expect(lifted[1]).toEqual({ state: 'PASS', since: T + 1, reasons: [] });
      expect(states([dcgmFatal(T, '3'), dcgmPass(T + 1, '4')])).toEqual(['EVICT', 'PASS']);
    },
  );

  test('a level-1 EVICT is lifted by a passing level-1 run (the periodic round)', () => {
    const health = replay('dcgm', [dcgmFatal(T, '1'), dcgmPass(T + 1, undefined)]);
    expect(health.map((h) => h.state)).toEqual(['EVICT', 'PASS']);
  });

  test('a DCGM run that left a GPU untested (SKIP) or failed non-fatally does not lift', () => {
    const skipped = makeRun('dcgm', T + 1, [device('0', 'PASS'), device('2', 'SKIP')], {
      params: { r: '3' },
    });
    const warnOnly = makeRun('dcgm', T + 2, [device('0', 'PASS'), device('2', 'FAIL')], {
      params: { r: '3' },
    });
    const health = replay('dcgm', [dcgmFatal(T, '3'), skipped, warnOnly]);
    expect(health.map((h) => h.state)).toEqual(['EVICT', 'EVICT', 'EVICT']);
  });

  test('all: an EVICT from another check is not lifted by a passing DCGM run, even when DCGM also evicted', () => {
    expect(replay('all', [remapFailure(T), dcgmPass(T + 1, '3')]).map((h) => h.state)).toEqual([
      'EVICT',
      'EVICT',
    ]);
    // The remapping failure is repaired and its check passes: the EVICT still stands.
    const repaired = makeRun('remapped', T + 2, [device('4', 'PASS')]);
    const health = replay('all', [
      xid79(T),
      dcgmFatal(T + 1, '3'),
      makeRun('xid', T + 2, [device('2', 'PASS')]),
      repaired,
      dcgmPass(T + 3, '4'),
    ]);
    expect(health.map((h) => h.state)).toEqual(['EVICT', 'EVICT', 'EVICT', 'EVICT', 'EVICT']);
    expect(health[4]?.evictCause).toEqual({ dcgmLevel: 3, other: true });
  });

  test('dcgm: lifting a DCGM EVICT leaves the node WARN when another fatal finding stands', () => {
    const health = replay('dcgm', [dcgmFatal(T, '3'), remapFailure(T + 1), dcgmPass(T + 2, '3')]);
    expect(health.map((h) => h.state)).toEqual(['EVICT', 'EVICT', 'WARN']);
    expect(health[1]?.evictCause).toEqual({ dcgmLevel: 3, other: false });
    expect(health[2]?.reasons).toEqual([
      'remapped 4: a row remapping failed: replace the GPU (fatal, but only DCGM evicts with AUTOPILOT_EVICT_ON=dcgm)',
    ]);
  });

  test('an EVICT found on the node at start: in dcgm mode, a pass at its ERR level lifts it; in all mode only an acknowledge', () => {
    const inDcgm = createResultStore({ historySize: 3, evictOn: 'dcgm' });
    inDcgm.restoreEvict('found on the node', T, 2);
    inDcgm.record(dcgmPass(T + 1, undefined));
    expect(inDcgm.health().state).toBe('EVICT');
    inDcgm.record(dcgmPass(T + 2, '2'));
    expect(inDcgm.health().state).toBe('PASS');

    const unknownOrigin = createResultStore({ historySize: 3, evictOn: 'dcgm' });
    unknownOrigin.restoreEvict('found on the node', T, undefined);
    unknownOrigin.record(dcgmPass(T + 1, '4'));
    expect(unknownOrigin.health().state).toBe('EVICT');

    const inAll = createResultStore({ historySize: 3, evictOn: 'all' });
    inAll.restoreEvict('found on the node', T, 3);
    inAll.record(dcgmPass(T + 1, '4'));
    expect(inAll.health().state).toBe('EVICT');
    expect(inAll.acknowledge(T + 2).state).toBe('PASS');
  });

  test('the store applies its mode, and an acknowledge lifts any EVICT in either', () => {
    for (const evictOn of ['dcgm', 'all'] as const) {
      const s = createResultStore({ historySize: 3, evictOn });
      s.record(dcgmFatal(T, '3'));
      s.record(remapFailure(T + 1));
      expect(s.health().state).toBe('EVICT');
      expect(s.acknowledge(T + 2).state).toBe('WARN');
    }
    expect(createResultStore({ historySize: 3 }).health()).toEqual(INITIAL_NODE_HEALTH);
  });
});
