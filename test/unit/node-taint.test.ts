/** The taint's pure parts: the breaker's limit and count, the Lease's expiry, ownership and plans. */

import { describe, expect, test } from '@jest/globals';
import {
  breakerLimit,
  countBreaker,
  heldByOther,
  isGpuNode,
  leaseDurationSeconds,
} from '../../exporter/cluster/isolation-breaker.js';
import {
  carriesOurTaint,
  planTaint,
  readOwnership,
  TAINT_OWNER_ANNOTATION,
  taintFor,
  taintUpdate,
} from '../../exporter/cluster/node-taint.js';
import { parseConfig } from '../../exporter/config/config.js';
import { CHECK_NAMES } from '../../exporter/checks/index.js';
import type { LeaseInfo, NodeInfo, Taint } from '../../exporter/k8s/ports.js';

const OURS: Taint = { key: 'autopilot.ibm.com/gpuhealth', value: 'EVICT', effect: 'NoSchedule' };
const OTHER: Taint = { key: 'example.com/maintenance', value: 'true', effect: 'NoExecute' };
const record = (taint: Taint) => JSON.stringify({ ...taint, addedAt: '2025-05-01T13:45:07.000Z' });

function node(name: string, more: Partial<NodeInfo> = {}): NodeInfo {
  return {
    name,
    labels: {},
    annotations: {},
    allocatableGpus: 8,
    capacityGpus: 8,
    resourceVersion: '7',
    taints: [],
    ...more,
  };
}
const ownedBy = (name: string, taints: Taint[]) =>
  node(name, { taints, annotations: { [TAINT_OWNER_ANNOTATION]: record(OURS) } });

describe('the breaker', () => {
  test.each([
    [0.2, 10, 2],
    [0.2, 9, 1],
    [0.2, 4, 1],
    [0.2, 0, 1],
    [0.29, 100, 29],
    [1, 3, 3],
    [0.5, 7, 3],
  ])('fraction %p of %p GPU nodes allows %p', (fraction, nodes, limit) => {
    expect(breakerLimit(fraction, nodes)).toBe(limit);
  });

  test('counts GPU nodes by capacity and the other nodes carrying a taint of ours', () => {
    const nodes = [
      ownedBy('a', [OURS]),
      ownedBy('self', [OURS]),
      node('b', { taints: [OURS] }), // someone else's: no record
      ownedBy('c', []), // ours was removed by someone
      node('cpu', { allocatableGpus: undefined, capacityGpus: 0 }),
      node('failed', { allocatableGpus: 0, capacityGpus: 8 }),
      ...['d', 'e', 'f', 'g', 'h'].map((name) => node(name)),
    ];
    expect(nodes.filter(isGpuNode)).toHaveLength(10);
    expect(countBreaker(nodes, 'self', 0.2, carriesOurTaint)).toEqual({
      gpuNodes: 10,
      tainted: 1,
      limit: 2,
      open: false,
    });
    expect(
      countBreaker([...nodes, ownedBy('i', [OURS])], 'self', 0.2, carriesOurTaint),
    ).toMatchObject({ tainted: 2, limit: 2, open: true });
  });

  test('a Lease is held by another only until its duration after the last renewal', () => {
    const lease: LeaseInfo = {
      name: 'l',
      holderIdentity: 'pod-a',
      leaseDurationSeconds: 40,
      acquireTime: 1000,
      renewTime: 1000,
      resourceVersion: '3',
    };
    expect(heldByOther(lease, 'pod-b', 40_999)).toBe(true);
    expect(heldByOther(lease, 'pod-b', 41_000)).toBe(false);
    expect(heldByOther(lease, 'pod-a', 2000)).toBe(false);
    expect(heldByOther({ ...lease, holderIdentity: undefined }, 'pod-b', 2000)).toBe(false);
    expect(leaseDurationSeconds(10_000)).toBe(40);
  });
});

describe('ownership and plans', () => {
  test('the record is read only when well formed', () => {
    expect(readOwnership(ownedBy('a', [OURS]))).toMatchObject(OURS);
    for (const text of ['not json', '{"key":"k"}', '[]']) {
      expect(readOwnership(node('a', { annotations: { [TAINT_OWNER_ANNOTATION]: text } }))).toBe(
        undefined,
      );
    }
  });

  test('adds ours after the others, removes only ours, and forgets a stale record', () => {
    expect(planTaint(node('a', { taints: [OTHER] }), OURS)).toEqual({
      action: 'add',
      taints: [OTHER, OURS],
    });
    expect(planTaint(ownedBy('a', [OTHER, OURS]), undefined)).toEqual({
      action: 'remove',
      taints: [OTHER],
    });
    expect(planTaint(ownedBy('a', [OTHER]), undefined)).toEqual({
      action: 'forget',
      taints: [OTHER],
    });
    expect(planTaint(ownedBy('a', [OURS]), OURS)).toEqual({ action: 'none', state: 'tainted' });
    expect(planTaint(node('a', { taints: [OTHER] }), undefined)).toEqual({
      action: 'none',
      state: 'untainted',
    });
  });

  test("someone else's taint with our key is never ours: not removed, and it blocks ours", () => {
    const theirs = node('a', { taints: [OURS] });
    expect(planTaint(theirs, undefined)).toEqual({ action: 'none', state: 'untainted' });
    expect(planTaint(theirs, OURS)).toMatchObject({ action: 'none', state: 'blocked' });
    // Same key, another value: still theirs; ours is added beside it only for another effect.
    const otherValue = node('a', { taints: [{ ...OURS, value: 'manual' }] });
    expect(planTaint(otherValue, OURS)).toMatchObject({ state: 'blocked' });
    const otherEffect = { ...OURS, effect: 'NoExecute' };
    expect(planTaint(node('a', { taints: [otherEffect] }), OURS)).toEqual({
      action: 'add',
      taints: [otherEffect, OURS],
    });
    // Ours, removed by someone while EVICT: not put back.
    expect(planTaint(ownedBy('a', []), OURS)).toMatchObject({ state: 'blocked' });
  });

  test('the patch carries the resourceVersion read, and the record with the taint only', () => {
    const plain = node('a', { taints: [OTHER] });
    const add = planTaint(plain, OURS);
    if (add.action !== 'add') throw new Error('expected add');
    const update = taintUpdate(plain, add, OURS, Date.parse('2025-05-01T13:45:07Z'));
    expect(update.resourceVersion).toBe('7');
    expect(JSON.parse(update.annotations[TAINT_OWNER_ANNOTATION] ?? 'null')).toEqual({
      ...OURS,
      addedAt: '2025-05-01T13:45:07.000Z',
    });
    const owned = ownedBy('a', [OURS]);
    const remove = planTaint(owned, undefined);
    if (remove.action !== 'remove') throw new Error('expected remove');
    expect(taintUpdate(owned, remove, undefined, 0).annotations).toEqual({
      [TAINT_OWNER_ANNOTATION]: null,
    });
    expect(taintFor('none')).toBeUndefined();
  });
});

describe('settings', () => {
  const parse = (env: Record<string, string>) =>
    parseConfig({ flags: new Map(), env, hostname: 'n', knownChecks: CHECK_NAMES }).taint;

  test('defaults, and each setting read', () => {
    expect(parse({})).toEqual({ effect: 'none', maxFraction: 0.2, dryRun: false });
    expect(
      parse({
        AUTOPILOT_TAINT_EFFECT: 'NoExecute',
        AUTOPILOT_TAINT_MAX_FRACTION: '1',
        AUTOPILOT_TAINT_DRY_RUN: 'true',
      }),
    ).toEqual({ effect: 'NoExecute', maxFraction: 1, dryRun: true });
  });

  test.each([
    [{ AUTOPILOT_TAINT_EFFECT: 'PreferNoSchedule' }, 'expected one of none, NoSchedule, NoExecute'],
    [{ AUTOPILOT_TAINT_MAX_FRACTION: '0' }, 'AUTOPILOT_TAINT_MAX_FRACTION "0"'],
    [{ AUTOPILOT_TAINT_MAX_FRACTION: '1.5' }, 'at most 1'],
    [{ AUTOPILOT_TAINT_DRY_RUN: 'yes' }, 'expected one of true, false'],
  ])('%j is refused, naming the setting', (env, message) => {
    expect(() => parse(env)).toThrow(message);
  });
});
