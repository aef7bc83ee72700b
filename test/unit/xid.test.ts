/**
 * The xid check's policy (the fatal list, NVIDIA's catalogue, the node state it leads to) and its
 * listener (GPUs that could not register, retried every wait), on the TypeScript fake of NVML.
 * test/integration/nvml-binding.test.ts covers the same listener over the koffi binding.
 */
import { describe, expect, test } from '@jest/globals';
import type { CheckOutcome } from '../../exporter/checks/check.js';
import {
  DEFAULT_XID_FATAL,
  XID_CATALOGUE,
  classifyXid,
  createXidCheck,
  createXidLedger,
  type XidLedger,
} from '../../exporter/checks/xid.js';
import { silentLogger } from '../../exporter/log.js';
import { NvmlError } from '../../exporter/native/ports.js';
import { INITIAL_NODE_HEALTH, evaluateNodeHealth } from '../../exporter/node-health.js';
import { fakeNode, fakeNvml, type FakeNvml } from '../fakes/gpu.js';
import { makeRun } from '../fakes/runs.js';
import { countingXidWatcher } from '../fakes/xid-watcher.js';

const T = Date.UTC(2026, 0, 1);
const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
const GPU_LOST = new NvmlError('nvmlDeviceRegisterEvents', 15, 'GPU is lost');

const verdicts = (outcome: CheckOutcome): string[] =>
  outcome.devices.map((d) => `${d.id}:${d.verdict}`);

/** The node state after one xid run that saw `xid` on GPU 0, with the given fatal list. */
async function nodeAfter(xid: number, fatalXids?: readonly number[]) {
  const ledger = createXidLedger({ debounceMs: 0 });
  ledger.record({ gpuIndex: 0, xid }, T);
  const outcome = await createXidCheck({
    nvml: { ok: true, nvml: fakeNvml(fakeNode(2)) },
    ledger,
    now: () => T + 1000,
    ...(fatalXids === undefined ? {} : { fatalXids }),
  }).run(ctx);
  const run = makeRun('xid', T + 1000, [...outcome.devices]);
  const node = evaluateNodeHealth(INITIAL_NODE_HEALTH, {
    conclusiveRuns: [run],
    acknowledgedAt: undefined,
    now: T + 1000,
  });
  return { check: outcome.devices[0], node: node.state };
}

describe('the fatal XIDs, from NVIDIA’s XID catalogue', () => {
  test('the default is every XID the catalogue answers with RESET_GPU or RESTART_BM, and 48 and 74', () => {
    const resetOrReboot = Object.entries(XID_CATALOGUE)
      .filter(([, entry]) => entry.action === 'RESET_GPU' || entry.action === 'RESTART_BM')
      .map(([xid]) => Number(xid));
    expect([...DEFAULT_XID_FATAL].sort((a, b) => a - b)).toEqual(
      [...resetOrReboot, 48, 74].sort((a, b) => a - b),
    );
    for (const xid of [48, 74, 79, 95, 119, 120]) expect(DEFAULT_XID_FATAL).toContain(xid);
  });

  test('63, 92 and 94 are not node-fatal: the catalogue says IGNORE or RESTART_APP', () => {
    for (const xid of [63, 92, 94]) {
      expect(classifyXid(xid).severity).toBe('warn');
      expect(['IGNORE', 'RESTART_APP']).toContain(XID_CATALOGUE[xid]?.action);
    }
  });

  test('999 is the unknown XID of nvml.h, judged as a warning', () => {
    expect(classifyXid(999)).toEqual({ severity: 'warn', meaning: 'unknown XID' });
  });

  test('the fatal list decides; application XIDs stay healthy unless listed', () => {
    expect(classifyXid(79, new Set([48])).severity).toBe('warn');
    expect(classifyXid(94, new Set([94])).severity).toBe('fatal');
    expect(classifyXid(13, new Set()).severity).toBe('application');
    expect(classifyXid(13, new Set([13])).severity).toBe('fatal');
  });
});

describe('the node state an XID leads to', () => {
  test('XID 94 (contained ECC error) is WARN on its GPU and does not evict the node', async () => {
    const { check, node } = await nodeAfter(94);
    expect(check).toMatchObject({
      verdict: 'WARN',
      reason: expect.stringMatching(/^XID 94 \(contained ECC error\) ×1/) as unknown,
    });
    expect(check?.fatal).toBeUndefined();
    expect(node).toBe('PASS');
  });

  test('XID 79 (fallen off the bus) is FAIL, fatal, and evicts the node', async () => {
    const { check, node } = await nodeAfter(79);
    expect(check).toMatchObject({ verdict: 'FAIL', fatal: true });
    expect(node).toBe('EVICT');
  });

  test('the fatal-list setting changes the judgement both ways', async () => {
    expect(await nodeAfter(94, [94])).toMatchObject({ check: { verdict: 'FAIL' }, node: 'EVICT' });
    expect(await nodeAfter(79, [48, 95])).toMatchObject({
      check: { verdict: 'WARN' },
      node: 'PASS',
    });
    expect(await nodeAfter(79, [])).toMatchObject({ check: { verdict: 'WARN' }, node: 'PASS' });
  });
});

describe('GPUs the listener could not register', () => {
  const check = (nvml: FakeNvml, ledger: XidLedger) =>
    createXidCheck({ nvml: { ok: true, nvml }, ledger, now: () => Date.now() });

  /** Runs the watcher until `done` holds, given how often it asked for a run; returns that count. */
  async function watchUntil(
    nvml: FakeNvml,
    ledger: XidLedger,
    done: (changes: number) => boolean,
  ): Promise<number> {
    const { watcher, changes } = countingXidWatcher(nvml, ledger, 5);
    watcher.start();
    for (let i = 0; i < 200 && !done(changes()); i++) await new Promise((r) => setTimeout(r, 5));
    await watcher.stop();
    return changes();
  }

  test('GPU 3 alone is ERROR while its registration fails, and PASS once it registers', async () => {
    const gpus = fakeNode(4);
    gpus[3]!.xidRegistration = GPU_LOST;
    const nvml = fakeNvml(gpus);
    const ledger = createXidLedger({ debounceMs: 0 });

    // The xid check is asked to run once, when GPU 3 is first found out, not on every retry.
    const failing = await watchUntil(nvml, ledger, () => nvml.listens() >= 3);
    expect(failing).toBe(1);
    const outcome = await check(nvml, ledger).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:PASS', '1:PASS', '2:PASS', '3:ERROR']);
    expect(outcome.devices[3]?.reason).toBe(
      'not listening: nvmlDeviceRegisterEvents: GPU is lost (15)',
    );

    // Retried before every wait: the failure clears on the first cycle after the driver allows it.
    const before = nvml.listens();
    gpus[3]!.xidRegistration = undefined;
    const cleared = await watchUntil(nvml, ledger, (changes) => changes > 0);
    expect(cleared).toBe(1);
    expect(ledger.notListening().size).toBe(0);
    expect(nvml.listens() - before).toBeGreaterThanOrEqual(1);
    expect(verdicts(await check(nvml, ledger).run(ctx))).toEqual([
      '0:PASS',
      '1:PASS',
      '2:PASS',
      '3:PASS',
    ]);
  });

  test('every wait cycle asks NVML to register the GPUs still out', async () => {
    const gpus = fakeNode(2);
    gpus[1]!.xidRegistration = GPU_LOST;
    const nvml = fakeNvml(gpus);
    const ledger = createXidLedger({ debounceMs: 0 });
    await watchUntil(nvml, ledger, () => nvml.listens() >= 5);
    expect(nvml.listens()).toBeGreaterThanOrEqual(5);
    expect([...ledger.notListening()]).toEqual([[1, GPU_LOST.message]]);
  });

  test('a fatal XID heard before stays FAIL on a GPU that stopped listening', async () => {
    const ledger = createXidLedger({ debounceMs: 0 });
    ledger.record({ gpuIndex: 1, xid: 79 }, T);
    ledger.record({ gpuIndex: 0, xid: 94 }, T);
    ledger.setNotListening(
      new Map([
        [0, GPU_LOST.message],
        [1, GPU_LOST.message],
      ]),
    );
    const outcome = await createXidCheck({
      nvml: { ok: true, nvml: fakeNvml(fakeNode(2)) },
      ledger,
      now: () => T + 1000,
    }).run(ctx);
    expect(verdicts(outcome)).toEqual(['0:ERROR', '1:FAIL']);
  });

  test('a registration stuck in the driver names that call', async () => {
    const ledger = createXidLedger({ debounceMs: 0 });
    ledger.setWaitingSince(T - 42_000, 'nvmlDeviceRegisterEvents');
    const outcome = await createXidCheck({
      nvml: { ok: true, nvml: fakeNvml(fakeNode(1)) },
      ledger,
      now: () => T,
    }).run(ctx);
    expect(outcome).toEqual({
      devices: [],
      verdict: 'ERROR',
      reason:
        'the XID listener is failing: nvmlDeviceRegisterEvents has not returned for 42 s: the driver may be hung',
    });
  });
});
