import { describe, expect, test } from '@jest/globals';
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
    expect(s.health()).toEqual({
      state: 'EVICT',
      since: T,
      reasons: ['remapped 3: remapping failure'],
    });
    s.record(makeRun('remapped', T + 10, [device('3', 'PASS')]));
    s.record(makeRun('ping', T + 20, [device('a', 'PASS')]));
    expect(s.health()).toEqual({
      state: 'EVICT',
      since: T,
      reasons: ['remapped 3: remapping failure'],
    });
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
