/**
 * Issue 17 part 5: a GPU named anywhere carries its UUID, board serial and PCI bus id (the device
 * evidence of every GPU check, and autopilot_gpu_info), and the node's state has a date
 * (autopilot_node_state_since_seconds).
 */

import { describe, expect, test } from '@jest/globals';
import type { CheckContext } from '../../exporter/checks/check.js';
import { createRemappedCheck } from '../../exporter/checks/remapped.js';
import { createMetricsRegistry, stateSinceTracker } from '../../exporter/metrics/registry.js';
import type { NodeHealth } from '../../exporter/node-health.js';
import { createResultStore, type ResultStore } from '../../exporter/store.js';
import { fakeNode, fakeNvml } from '../fakes/gpu.js';
import { device, makeRun } from '../fakes/runs.js';
import { checkStub } from '../fakes/check-stub.js';

const T = Date.UTC(2026, 0, 1, 12);
const ctx = { params: {}, signal: new AbortController().signal } as unknown as CheckContext;

describe('GPU identity in the device evidence', () => {
  test('every GPU result of a GPU check carries uuid, serial and pciBusId', async () => {
    const gpus = fakeNode(2);
    const check = createRemappedCheck({ nvml: { ok: true, nvml: fakeNvml(gpus) } });
    const outcome = await check.run(ctx);
    expect(outcome.devices.map((d) => d.evidence)).toEqual(
      gpus.map((gpu) =>
        expect.objectContaining({
          uuid: gpu.device.uuid,
          serial: gpu.device.serial,
          pciBusId: gpu.device.pciBusId,
        }),
      ),
    );
    // The check's own measurements are still there beside the identity.
    expect(outcome.devices[0]?.evidence).toHaveProperty('pending', false);
  });

  test('a GPU whose board has no serial says so with an empty serial, keeping the rest', async () => {
    const gpus = fakeNode(1).map((gpu) => ({ ...gpu, device: { ...gpu.device, serial: '' } }));
    const check = createRemappedCheck({ nvml: { ok: true, nvml: fakeNvml(gpus) } });
    const [result] = (await check.run(ctx)).devices;
    expect(result?.evidence).toMatchObject({ serial: '', uuid: gpus[0]?.device.uuid });
  });
});

function registry(now?: () => number): { store: ResultStore; render: () => Promise<string> } {
  const store = createResultStore({ historySize: 5 });
  const metrics = createMetricsRegistry({
    store,
    checks: new Map([
      ['remapped', checkStub('remapped', 'gpu')],
      ['ping', checkStub('ping', 'peer')],
    ]),
    host: { nodeName: 'node-a', cpuModel: 'cpu', gpuModel: 'NVIDIA H200' },
    build: { version: '1', nodejs: '20' },
    ...(now === undefined ? {} : { now }),
  });
  return { store, render: () => metrics.metrics() };
}

const identity = (uuid: string, serial: string, pciBusId: string) => ({ uuid, serial, pciBusId });

describe('autopilot_gpu_info', () => {
  test('one series per GPU, from the newest result, under dcgm-exporter label names', async () => {
    const { store, render } = registry();
    store.record(
      makeRun('remapped', T, [
        device('0', 'PASS', { evidence: identity('GPU-a', '1650000000001', '00000000:1B:00.0') }),
        device('1', 'FAIL', { evidence: identity('GPU-b', '', '00000000:43:00.0') }),
      ]),
    );
    // A peer's evidence is never a GPU, whatever it holds.
    store.record(
      makeRun('ping', T, [device('node-b', 'PASS', { evidence: identity('x', 'y', 'z') })]),
    );
    const text = await render();
    expect(text.split('\n').filter((line) => line.startsWith('autopilot_gpu_info'))).toEqual([
      'autopilot_gpu_info{gpu="0",UUID="GPU-a",serial="1650000000001",pci_bus_id="00000000:1B:00.0",gpumodel="NVIDIA H200"} 1',
      'autopilot_gpu_info{gpu="1",UUID="GPU-b",serial="",pci_bus_id="00000000:43:00.0",gpumodel="NVIDIA H200"} 1',
    ]);
  });

  test('the newest result names the GPU; no GPU result, no series', async () => {
    const { store, render } = registry();
    expect(await render()).not.toMatch(/^autopilot_gpu_info\{/m);
    store.record(
      makeRun('remapped', T, [
        device('0', 'PASS', { evidence: identity('GPU-a', 's', '00000000:1B:00.0') }),
      ]),
    );
    store.record(
      makeRun('remapped', T + 1000, [
        device('0', 'PASS', { evidence: identity('GPU-c', 's2', '00000000:1B:00.0') }),
      ]),
    );
    const lines = (await render()).split('\n').filter((l) => l.startsWith('autopilot_gpu_info{'));
    expect(lines).toEqual([
      'autopilot_gpu_info{gpu="0",UUID="GPU-c",serial="s2",pci_bus_id="00000000:1B:00.0",gpumodel="NVIDIA H200"} 1',
    ]);
  });
});

describe('autopilot_node_state_since_seconds', () => {
  const health = (state: NodeHealth['state'], since: number): NodeHealth => ({
    state,
    since,
    reasons: [],
  });

  test('the value changes only when the shown state changes', () => {
    let now = T;
    const track = stateSinceTracker(() => now);
    // Never changed since the exporter started: UNKNOWN since the start.
    expect(track(health('UNKNOWN', 0), false)).toEqual({ state: 'UNKNOWN', since: T });
    now += 60_000;
    expect(track(health('UNKNOWN', 0), false)).toEqual({ state: 'UNKNOWN', since: T });
    expect(track(health('PASS', T + 30_000), false)).toEqual({ state: 'PASS', since: T + 30_000 });
    now += 60_000;
    expect(track(health('PASS', T + 30_000), false)).toEqual({ state: 'PASS', since: T + 30_000 });
    // TESTING has no date in the store: the first scrape that shows it dates it.
    expect(track(health('PASS', T + 30_000), true)).toEqual({ state: 'TESTING', since: now });
    const testingFrom = now;
    now += 60_000;
    expect(track(health('PASS', T + 30_000), true)).toEqual({
      state: 'TESTING',
      since: testingFrom,
    });
    // Back to PASS: the PASS that follows TESTING began when TESTING ended, and stays so.
    expect(track(health('PASS', T + 30_000), false)).toEqual({ state: 'PASS', since: now });
    const passFrom = now;
    now += 60_000;
    expect(track(health('PASS', T + 30_000), false)).toEqual({ state: 'PASS', since: passFrom });
    // EVICT wins over TESTING and carries the store's date.
    expect(track(health('EVICT', now - 5), true)).toEqual({ state: 'EVICT', since: now - 5 });
  });

  test('without a clock, undated states have no value rather than a made-up one', () => {
    const track = stateSinceTracker(undefined);
    expect(track(health('UNKNOWN', 0), false)).toBeUndefined();
    expect(track(health('WARN', T), true)).toBeUndefined();
    expect(track(health('WARN', T), false)).toEqual({ state: 'WARN', since: T });
  });

  test('/metrics shows the state with its start in seconds, one series', async () => {
    const { store, render } = registry(() => T + 5000);
    expect(await render()).toContain(
      `autopilot_node_state_since_seconds{state="UNKNOWN"} ${(T + 5000) / 1000}\n`,
    );
    store.record(makeRun('remapped', T + 9000, [device('0', 'FAIL')]));
    const lines = (await render())
      .split('\n')
      .filter((l) => l.startsWith('autopilot_node_state_since_seconds{'));
    expect(lines).toEqual([
      `autopilot_node_state_since_seconds{state="WARN"} ${store.health().since / 1000}`,
    ]);
    expect(store.health().since).toBeGreaterThan(0);
  });
});
