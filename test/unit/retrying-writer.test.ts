/** The writer the labeler, the condition writer and the tainter share, on its own over a fake clock. */

import { describe, expect, test } from '@jest/globals';
import {
  createRetryingWriter,
  type RetryingWriterDeps,
  type WriterJob,
} from '../../exporter/cluster/retrying-writer.js';
import { FakeClock, flushPromises } from '../fakes/clock.js';
import { recordingLogger } from '../fakes/logger.js';

/** What the next run of the job does: succeed, fail, or ask to be run again later. */
type Step = 'ok' | 'fail' | { readonly retryInMs: number };

/**
 * A writer with `due` writes to do. Each run takes the next scripted step (success when the script
 * is spent) and, while `hold` is set, stays in flight until the test releases it.
 */
function setup(
  options: Partial<Pick<RetryingWriterDeps, 'pending' | 'quietWait' | 'started'>> = {},
) {
  const clock = new FakeClock();
  const t0 = clock.now();
  const { logger, lines } = recordingLogger();
  const script: Step[] = [];
  const runs: number[] = [];
  const state = { due: 0, active: 0, maxActive: 0, errorChanges: 0, hold: false };
  const held: (() => void)[] = [];
  let failures = 0;
  const job: WriterJob = {
    what: 'write the thing',
    run: async () => {
      runs.push(clock.now() - t0);
      state.active += 1;
      state.maxActive = Math.max(state.maxActive, state.active);
      // A caller reacting to the write at once (a health change) must not start a second one.
      writer.sync();
      if (state.hold) await new Promise<void>((resolve) => held.push(resolve));
      await Promise.resolve();
      state.active -= 1;
      const step = script.shift() ?? 'ok';
      if (step === 'fail') throw new Error(`refused ${++failures}`);
      if (step !== 'ok') return step;
      state.due -= 1;
    },
  };
  const writer = createRetryingWriter({
    next: () => (state.due > 0 ? job : undefined),
    started: true,
    ...options,
    onErrorChange: () => {
      state.errorChanges += 1;
    },
    clock,
    logger,
    backoff: { initialMs: 1000, maxMs: 4000 },
  });
  const warnings = () => lines.filter((line) => line.level === 'warn');
  const release = () => held.splice(0).forEach((resolve) => resolve());
  /** Gives the writer `due` writes to do and a script for its runs, and looks. */
  const kick = (due: number, ...steps: Step[]) => {
    state.due += due;
    script.push(...steps);
    writer.sync();
  };
  return { clock, t0, writer, state, runs, warnings, release, kick };
}

describe('the retrying writer', () => {
  test('the wait after a failure doubles up to the cap, and each retry is logged with it', async () => {
    const { clock, t0, kick, runs, warnings } = setup();
    kick(1, 'fail', 'fail', 'fail', 'fail', 'fail');
    await flushPromises();
    expect(clock.pending()).toEqual([t0 + 1000]);
    await clock.advance(60_000);
    expect(runs).toEqual([0, 1000, 3000, 7000, 11_000, 15_000]);
    expect(warnings().map((line) => [line.message, line.fields])).toEqual([
      ['cannot write the thing; retrying', { error: 'refused 1', retryInMs: 1000 }],
      ['cannot write the thing; retrying', { error: 'refused 2', retryInMs: 2000 }],
      ['cannot write the thing; retrying', { error: 'refused 3', retryInMs: 4000 }],
      ['cannot write the thing; retrying', { error: 'refused 4', retryInMs: 4000 }],
      ['cannot write the thing; retrying', { error: 'refused 5', retryInMs: 4000 }],
    ]);
    expect(clock.pending()).toEqual([]);
  });

  test('a success starts the backoff afresh', async () => {
    const { clock, kick, warnings } = setup();
    kick(1, 'fail', 'fail', 'ok');
    await clock.advance(3000);
    expect(warnings().map((line) => line.fields?.retryInMs)).toEqual([1000, 2000]);
    kick(1, 'fail');
    await flushPromises();
    expect(warnings().map((line) => line.fields?.retryInMs)).toEqual([1000, 2000, 1000]);
  });

  test('one job in flight at a time, however often sync() is called, from inside it too', async () => {
    const { state, writer, runs, release, kick } = setup();
    state.hold = true;
    kick(2);
    kick(0);
    writer.sync();
    await flushPromises();
    expect(runs).toHaveLength(1);
    expect(writer.writing()).toBe(true);
    release();
    await flushPromises();
    expect(runs).toHaveLength(2);
    release();
    await flushPromises();
    expect(state.maxActive).toBe(1);
    expect(state.due).toBe(0);
    expect(writer.writing()).toBe(false);
  });

  test('a sync() while a retry waits starts no second loop; the retry runs once, on time', async () => {
    const { clock, t0, writer, runs, kick } = setup();
    kick(1, 'fail');
    await flushPromises();
    writer.sync();
    kick(1);
    await flushPromises();
    expect(runs).toEqual([0]);
    expect(clock.pending()).toEqual([t0 + 1000]);
    await clock.advance(999);
    expect(runs).toEqual([0]);
    await clock.advance(1);
    expect(runs).toEqual([0, 1000, 1000]);
    expect(clock.pending()).toEqual([]);
  });

  test('sync(true) drops a waiting retry and runs at once', async () => {
    const { clock, writer, runs, kick } = setup();
    kick(1, 'fail');
    await flushPromises();
    writer.sync(true);
    await flushPromises();
    expect(runs).toEqual([0, 0]);
    expect(clock.pending()).toEqual([]);
  });

  test('stop() cancels the waiting retry, and nothing runs after it', async () => {
    const { clock, writer, runs, kick } = setup();
    kick(1, 'fail');
    await flushPromises();
    writer.stop();
    expect(clock.pending()).toEqual([]);
    writer.sync();
    kick(1);
    await clock.advance(60_000);
    expect(runs).toEqual([0]);
    expect(writer.running()).toBe(false);
  });

  test('a job that fails after stop() arms no timer, though its error is kept', async () => {
    const { clock, state, writer, runs, release, kick } = setup();
    state.hold = true;
    kick(1, 'fail');
    await flushPromises();
    writer.stop();
    release();
    await flushPromises();
    expect(clock.pending()).toEqual([]);
    await clock.advance(60_000);
    expect(runs).toEqual([0]);
    expect(writer.lastError()?.message).toBe('refused 1');
  });

  test('not started, it runs nothing until start(), which resolves once that job was tried', async () => {
    const { writer, state, runs, kick } = setup({ started: false });
    kick(1, 'fail');
    await flushPromises();
    expect(runs).toEqual([]);
    const started = writer.start();
    expect(writer.writing()).toBe(true);
    await started;
    expect(writer.writing()).toBe(false);
    expect(runs).toEqual([0]);
    expect(writer.lastError()?.message).toBe('refused 1');
    expect(state.due).toBe(1);
  });

  test('lastError is set by a failure and cleared by the next success, each change told once', async () => {
    const { clock, t0, state, writer, kick } = setup();
    kick(1, 'fail', 'fail');
    await flushPromises();
    expect(writer.lastError()).toEqual({ message: 'refused 1', at: t0 });
    await clock.advance(1000);
    expect(writer.lastError()).toEqual({ message: 'refused 2', at: t0 + 1000 });
    await clock.advance(2000);
    expect(writer.lastError()).toBeUndefined();
    kick(1);
    await flushPromises();
    expect(writer.lastError()).toBeUndefined();
    expect(state.errorChanges).toBe(3);
  });

  test('a job asking to run again later is no failure: no log, the backoff and the error stay', async () => {
    const { clock, t0, writer, runs, warnings, kick } = setup();
    kick(1, 'fail', { retryInMs: 500 }, 'fail');
    await clock.advance(1000);
    expect(clock.pending()).toEqual([t0 + 1500]);
    expect(writer.lastError()?.message).toBe('refused 1');
    await clock.advance(500);
    expect(runs).toEqual([0, 1000, 1500]);
    expect(warnings().map((line) => line.fields?.retryInMs)).toEqual([1000, 2000]);
  });
});

describe('idle()', () => {
  const watch = (promise: Promise<void>) => {
    const seen = { resolved: false };
    void promise.then(() => (seen.resolved = true));
    return seen;
  };

  test('waits through a job in flight and a retry, and resolves after the success', async () => {
    const { clock, writer, kick } = setup();
    kick(1, 'fail');
    const idle = watch(writer.idle());
    await flushPromises();
    expect(idle.resolved).toBe(false);
    await clock.advance(1000);
    expect(idle.resolved).toBe(true);
  });

  test('a quiet wait is not waited for; any other wait is', async () => {
    let quiet = false;
    const { writer, kick } = setup({ quietWait: () => quiet });
    kick(1, { retryInMs: 60_000 });
    await flushPromises();
    const loud = watch(writer.idle());
    await flushPromises();
    expect(loud.resolved).toBe(false);
    quiet = true;
    const calm = watch(writer.idle());
    await flushPromises();
    expect(calm.resolved).toBe(true);
  });

  test('pending work is waited for while the writer runs, not once it is stopped', async () => {
    const { writer } = setup({ pending: () => true });
    const idle = watch(writer.idle());
    await flushPromises();
    expect(idle.resolved).toBe(false);
    writer.stop();
    await flushPromises();
    expect(idle.resolved).toBe(true);
  });
});
