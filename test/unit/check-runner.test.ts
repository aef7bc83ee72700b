import { describe, expect, test } from '@jest/globals';
import type { Check, CheckContext, CheckOutcome } from '../../exporter/checks/check.js';
import { createCheckRunner } from '../../exporter/check-runner.js';
import { createGpuLock } from '../../exporter/gpu-lock.js';
import { silentLogger } from '../../exporter/log.js';
import { createResultStore } from '../../exporter/store.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';

interface Held {
  readonly ctx: CheckContext;
  finish(outcome?: CheckOutcome): void;
  fail(error: Error): void;
}

/** A check whose runs stay in progress until the test finishes them. */
function heldCheck(
  name: string,
  options: Partial<Pick<Check, 'usesGpu' | 'exclusive' | 'timeoutMs'>> = {},
) {
  const runs: Held[] = [];
  const check: Check = {
    name,
    summary: name,
    banner: name,
    compatHealth: name,
    deviceKind: 'node',
    usesGpu: options.usesGpu ?? false,
    exclusive: options.exclusive ?? false,
    timeoutMs: options.timeoutMs ?? 10_000,
    parseParams: (raw) => (raw.level === undefined ? {} : { level: raw.level }),
    run: (ctx) =>
      new Promise<CheckOutcome>((resolve, reject) => {
        runs.push({
          ctx,
          finish: (
            outcome = { devices: [{ id: '', verdict: 'PASS', reason: 'ok', evidence: {} }] },
          ) => resolve(outcome),
          fail: reject,
        });
      }),
    formatText: () => '',
  };
  return { check, runs };
}

function setup(...checks: Check[]) {
  const clock = new FakeClock();
  const store = createResultStore({ historySize: 5 });
  const runner = createCheckRunner({
    checks: new Map(checks.map((c) => [c.name, c])),
    store,
    clock,
    gpuLock: createGpuLock(),
    logger: silentLogger,
  });
  return { clock, store, runner };
}

describe('check runner', () => {
  test('a second request with the same parameters joins the running one', async () => {
    const slow = heldCheck('slow');
    const { runner, store } = setup(slow.check);
    const first = runner.run('slow', {}, 'periodic');
    const second = runner.run('slow', {}, 'api');
    await flushPromises();
    expect(slow.runs).toHaveLength(1);
    expect(runner.active()).toEqual(['slow']);
    slow.runs[0]!.finish();
    const [a, b] = await Promise.all([first, second]);
    expect(b).toBe(a);
    expect(a.trigger).toBe('periodic');
    expect(store.history('slow')).toHaveLength(1);
    expect(runner.active()).toEqual([]);
  });

  test('a request with other parameters waits for the running one, then runs', async () => {
    const slow = heldCheck('slow');
    const { runner } = setup(slow.check);
    const first = runner.run('slow', {}, 'api');
    const second = runner.run('slow', { level: '2' }, 'api');
    const third = runner.run('slow', { level: '2' }, 'api');
    await flushPromises();
    expect(slow.runs).toHaveLength(1);
    slow.runs[0]!.finish();
    await first;
    await flushPromises();
    expect(slow.runs).toHaveLength(2);
    expect(slow.runs[1]!.ctx.params).toEqual({ level: '2' });
    slow.runs[1]!.finish();
    expect(await third).toBe(await second);
    expect(slow.runs).toHaveLength(2);
  });

  test('a run past its timeout is an ERROR and its work is told to stop', async () => {
    const slow = heldCheck('slow', { timeoutMs: 1000 });
    const { runner, clock, store } = setup(slow.check);
    const first = runner.run('slow', {}, 'api');
    await clock.advance(1000);
    const timedOut = await first;
    expect(timedOut.verdict).toBe('ERROR');
    expect(timedOut.reason).toBe('timed out after 1s');
    expect(slow.runs[0]!.ctx.signal.aborted).toBe(true);
    expect(store.history('slow').map((r) => r.verdict)).toEqual(['ERROR']);
  });

  test('a request whose deadline passes while it waits says what it waited for', async () => {
    const slow = heldCheck('slow', { timeoutMs: 1000 });
    const { runner, clock } = setup(slow.check);
    void runner.run('slow', {}, 'api');
    await clock.advance(500);
    const waiting = runner.run('slow', { level: '3' }, 'api');
    await clock.advance(1000);
    const result = await waiting;
    expect(result.verdict).toBe('ERROR');
    expect(result.reason).toBe(
      'timed out after 1s waiting for the previous run of this check to end',
    );
    slow.runs[0]!.finish();
    await flushPromises();
    expect(slow.runs).toHaveLength(1);
  });

  test('an exclusive check never overlaps a GPU check, and GPU checks share the GPUs', async () => {
    const light1 = heldCheck('light1', { usesGpu: true });
    const light2 = heldCheck('light2', { usesGpu: true });
    const deep = heldCheck('deep', { usesGpu: true, exclusive: true });
    const network = heldCheck('network');
    const { runner } = setup(light1.check, light2.check, deep.check, network.check);

    const l1 = runner.run('light1', {}, 'periodic');
    const l2 = runner.run('light2', {}, 'periodic');
    const d = runner.run('deep', {}, 'api');
    const n = runner.run('network', {}, 'api');
    await flushPromises();
    expect([light1.runs.length, light2.runs.length, deep.runs.length, network.runs.length]).toEqual(
      [1, 1, 0, 1],
    );

    light1.runs[0]!.finish();
    await l1;
    await flushPromises();
    expect(deep.runs).toHaveLength(0);
    light2.runs[0]!.finish();
    await l2;
    await flushPromises();
    expect(deep.runs).toHaveLength(1);

    // While the exclusive check runs, a GPU check queues behind it.
    const l3 = runner.run('light1', {}, 'periodic');
    await flushPromises();
    expect(light1.runs).toHaveLength(1);
    deep.runs[0]!.finish();
    await d;
    await flushPromises();
    expect(light1.runs).toHaveLength(2);
    light1.runs[1]!.finish();
    network.runs[0]!.finish();
    await Promise.all([l3, n]);
  });

  test('a check that throws gives an ERROR result that is recorded', async () => {
    const broken = heldCheck('broken');
    const { runner, store } = setup(broken.check);
    const result = runner.run('broken', {}, 'api');
    await flushPromises();
    broken.runs[0]!.fail(new Error('driver said no'));
    const run = await result;
    expect(run.verdict).toBe('ERROR');
    expect(run.reason).toBe('check crashed: driver said no');
    expect(store.latest('broken')).toBe(run);
    expect(store.runCount('broken', 'ERROR')).toBe(1);
  });

  test('the verdict and times come from the outcome and the clock', async () => {
    const slow = heldCheck('slow');
    const { runner, clock } = setup(slow.check);
    const start = clock.now();
    const result = runner.run('slow', {}, 'cli');
    await clock.advance(250);
    slow.runs[0]!.finish({
      devices: [
        { id: '0', verdict: 'PASS', reason: 'ok', evidence: {} },
        { id: '1', verdict: 'FAIL', reason: 'bad', evidence: {} },
      ],
    });
    const run = await result;
    expect(run).toMatchObject({
      verdict: 'FAIL',
      reason: '1 FAIL, 1 PASS',
      startedAt: start,
      finishedAt: start + 250,
    });
  });

  test('an unknown check is refused', async () => {
    const { runner } = setup();
    await expect(runner.run('nope', {}, 'api')).rejects.toThrow('unknown check "nope"');
  });

  test('shutdown aborts running checks and waits until their work has ended', async () => {
    const slow = heldCheck('slow');
    const { runner } = setup(slow.check);
    const result = runner.run('slow', {}, 'api');
    await flushPromises();
    let stoppedYet = false;
    const stopped = runner.shutdown(5000).then(() => (stoppedYet = true));
    expect(slow.runs[0]!.ctx.signal.aborted).toBe(true);
    expect((await result).reason).toBe('exporter shutting down');
    await flushPromises();
    expect(stoppedYet).toBe(false);
    slow.runs[0]!.finish();
    await stopped;
    expect(stoppedYet).toBe(true);
  });

  test('shutdown gives up on work that ignores it after the grace period', async () => {
    const slow = heldCheck('slow');
    const { runner, clock } = setup(slow.check);
    void runner.run('slow', {}, 'api');
    await flushPromises();
    let stoppedYet = false;
    const stopped = runner.shutdown(3000).then(() => (stoppedYet = true));
    await clock.advance(2999);
    expect(stoppedYet).toBe(false);
    await clock.advance(1);
    await stopped;
    expect(stoppedYet).toBe(true);
  });

  test('while a run is past its deadline and still working, requests get ERROR at once', async () => {
    const slow = heldCheck('slow', { timeoutMs: 1000 });
    const { runner, clock, store } = setup(slow.check);
    void runner.run('slow', {}, 'api');
    await clock.advance(1000);
    await clock.advance(4000);
    const refused = await runner.run('slow', { level: '2' }, 'api');
    expect(refused.verdict).toBe('ERROR');
    expect(refused.reason).toBe('the previous run has not ended 4s after its deadline');
    expect(slow.runs).toHaveLength(1);
    expect(store.runCount('slow', 'ERROR')).toBe(2);
    // Once the hung work ends, the check runs again.
    slow.runs[0]!.finish();
    await flushPromises();
    const next = runner.run('slow', {}, 'api');
    await flushPromises();
    expect(slow.runs).toHaveLength(2);
    slow.runs[1]!.finish();
    expect((await next).verdict).toBe('PASS');
  });
});
