import { describe, expect, test } from '@jest/globals';
import {
  EVENT_BURST,
  EVENT_NAMESPACE,
  EVENT_REASONS,
  REPORTING_CONTROLLER,
  createNodeEventRecorder,
  deepCheckEvent,
  healthChangeEvent,
  liftEvent,
  planEvent,
  takeToken,
  type NodeEvent,
} from '../../exporter/cluster/node-events.js';
import { silentLogger } from '../../exporter/log.js';
import type { NodeHealth, NodeState } from '../../exporter/node-health.js';
import { FakeClock } from '../fakes/clock.js';
import { FakeKube } from '../fakes/kube.js';

const NODE = 'gpu-node-1';
const T0 = Date.UTC(2026, 0, 1);
const health = (state: NodeState, reasons: string[] = []): NodeHealth => ({
  state,
  since: T0,
  reasons,
});

describe('which changes of health get an Event', () => {
  test('to WARN and to EVICT: Warning, with the cause and the findings', () => {
    const warn = healthChangeEvent(health('PASS'), health('WARN', ['ping b: lost']), 'PacketLoss');
    expect(warn).toEqual({
      type: 'Warning',
      reason: EVENT_REASONS.warn,
      message: 'PacketLoss: ping b: lost',
      action: 'Warn',
      key: 'GPUHealthWarn/PacketLoss',
    });
    const evict = healthChangeEvent(
      health('WARN'),
      health('EVICT', ['xid 0: XID 79']),
      'FatalXid79',
    );
    expect(evict?.reason).toBe(EVENT_REASONS.evict);
    expect(evict?.message).toBe('FatalXid79: xid 0: XID 79');
  });

  test('back to PASS from WARN is Normal; the first PASS, no change, and leaving EVICT are not', () => {
    expect(healthChangeEvent(health('WARN'), health('PASS'), 'ChecksPassed')?.reason).toBe(
      EVENT_REASONS.pass,
    );
    expect(healthChangeEvent(health('UNKNOWN'), health('PASS'), 'ChecksPassed')).toBeUndefined();
    expect(healthChangeEvent(health('WARN'), health('WARN'), 'X')).toBeUndefined();
    expect(healthChangeEvent(health('EVICT'), health('PASS'), 'X')).toBeUndefined();
  });

  test('an EVICT lifted names who acknowledged it, when known', () => {
    const acknowledged = liftEvent(health('EVICT', ['ecc 0: bad']), health('PASS'), 'alice');
    expect(acknowledged.reason).toBe(EVENT_REASONS.acknowledged);
    expect(acknowledged.message).toBe(
      'EVICT acknowledged by alice; health is now PASS (was: ecc 0: bad)',
    );
    expect(liftEvent(health('EVICT'), health('PASS')).reason).toBe(EVENT_REASONS.lifted);
  });

  test('a deep check: started, passed (Normal), failed (Warning)', () => {
    expect(deepCheckEvent('started').reason).toBe(EVENT_REASONS.deepCheckStarted);
    expect(deepCheckEvent('passed')).toMatchObject({
      type: 'Normal',
      message: 'deep check passed',
    });
    expect(deepCheckEvent('failed').type).toBe('Warning');
    expect(deepCheckEvent('stuck').reason).toBe(EVENT_REASONS.deepCheckEnded);
  });
});

describe('repeats and rate', () => {
  test('a repeat within the window raises the count; after it, a new object', () => {
    const recorded = { name: 'e', count: 2, first: T0, last: T0 + 1000 };
    expect(planEvent(recorded, T0 + 1000 + 59_000, 60_000)).toEqual({ kind: 'repeat', count: 3 });
    expect(planEvent(recorded, T0 + 1000 + 60_000, 60_000)).toEqual({ kind: 'create' });
    expect(planEvent(undefined, T0)).toEqual({ kind: 'create' });
  });

  test('the token bucket allows a burst, then one per refill interval', () => {
    let bucket = { tokens: 2, at: T0 };
    const take = (now: number) => {
      const result = takeToken(bucket, now, 2, 1000);
      bucket = { tokens: result.tokens, at: result.at };
      return result.taken;
    };
    expect([take(T0), take(T0), take(T0)]).toEqual([true, true, false]);
    expect(take(T0 + 999)).toBe(false);
    expect(take(T0 + 1000)).toBe(true);
    expect(take(T0 + 1500)).toBe(false);
    expect(take(T0 + 2000)).toBe(true);
  });
});

describe('the recorder against an in-memory API', () => {
  const event: NodeEvent = {
    type: 'Warning',
    reason: 'GPUHealthWarn',
    message: 'm',
    action: 'Warn',
  };

  function setup() {
    const clock = new FakeClock(T0);
    const kube = new FakeKube();
    kube.addNode(NODE);
    const recorder = createNodeEventRecorder({
      kube: kube.api,
      nodeName: NODE,
      instance: 'autopilot-abcde',
      clock,
      logger: silentLogger,
      windowMs: 600_000,
    });
    return { clock, kube, recorder };
  }

  test('creates a core/v1 Event on the node in the default namespace, repeats patch its count', async () => {
    const { clock, kube, recorder } = setup();
    recorder.record(event);
    await recorder.idle();
    expect(kube.events).toHaveLength(1);
    expect(kube.events[0]).toMatchObject({
      namespace: EVENT_NAMESPACE,
      nodeName: NODE,
      reason: 'GPUHealthWarn',
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: 'autopilot-abcde',
      count: 1,
    });
    expect(kube.events[0]?.name.startsWith(`${NODE}.`)).toBe(true);
    await clock.advance(60_000);
    recorder.record(event);
    recorder.record(event);
    await recorder.idle();
    expect(kube.events).toHaveLength(1);
    expect(kube.events[0]?.count).toBe(3);
    expect(kube.events[0]?.lastTimestamp).toBe('2026-01-01T00:01:00Z');
    recorder.record({ ...event, message: 'other' });
    await recorder.idle();
    expect(kube.events).toHaveLength(2);
  });

  test('a repeat with the same key but new measured values patches the count and the message', async () => {
    const { kube, recorder } = setup();
    const slow = (ms: number) =>
      healthChangeEvent(
        health('PASS'),
        health('WARN', [`gpupower 1: held ${ms} ms`]),
        'PowerSlowdown',
      )!;
    recorder.record(slow(100));
    recorder.record(slow(101));
    await recorder.idle();
    expect(kube.events).toHaveLength(1);
    expect(kube.events[0]).toMatchObject({
      count: 2,
      message: 'PowerSlowdown: gpupower 1: held 101 ms',
    });
  });

  test('a repeat whose Event expired (404) creates it anew with the count carried on', async () => {
    const { kube, recorder } = setup();
    recorder.record(event);
    await recorder.idle();
    kube.failNext('patchEvent', 404, 'not found');
    recorder.record(event);
    await recorder.idle();
    expect(kube.events.map((e) => e.count)).toEqual([1, 2]);
  });

  test('new objects beyond the burst are dropped; a failed write does not stop the next', async () => {
    const { kube, recorder } = setup();
    kube.failNext('createEvent', 500, 'down');
    for (let i = 0; i < EVENT_BURST + 5; i++) recorder.record({ ...event, message: `m${i}` });
    await recorder.idle();
    expect(kube.callsTo('createEvent')).toHaveLength(EVENT_BURST);
    expect(kube.events).toHaveLength(EVENT_BURST - 1);
  });
});
