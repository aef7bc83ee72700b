/**
 * Fake checks whose runs the test controls, and a real runner + store + GPU lock to run them with.
 *
 * A fake check answers every run with the behaviour set last: a fixed outcome (the default: one
 * PASS device), a crash, or a hold that keeps each run "running" until the test releases it.
 */

import type {
  Check,
  CheckContext,
  CheckOutcome,
  CheckParams,
  CheckRun,
  DeviceKind,
  RawParams,
} from '../../exporter/checks/check.js';
import { ParamError } from '../../exporter/checks/check.js';
import { createCheckRunner, type CheckRunner } from '../../exporter/check-runner.js';
import { createSystemClock, type Clock } from '../../exporter/clock.js';
import { createGpuLock, type GpuLock } from '../../exporter/gpu-lock.js';
import { silentLogger } from '../../exporter/log.js';
import { createResultStore, type ResultStore } from '../../exporter/store.js';

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: Error): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve: (value: T) => void = () => undefined;
  let reject: (error: Error) => void = () => undefined;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** The outcome a fake check gives unless told otherwise: GPU 0 passes. */
export const PASS_OUTCOME: CheckOutcome = {
  devices: [{ id: '0', verdict: 'PASS', reason: 'all good', evidence: { score: 1 } }],
};

export const LEVELS = ['1', '2', '3', '4'] as const;

export interface FakeCheckOptions {
  readonly name: string;
  readonly banner?: string;
  readonly compatHealth?: string;
  readonly deviceKind?: DeviceKind;
  readonly usesGpu?: boolean;
  readonly exclusive?: boolean;
  readonly timeoutMs?: number;
  /** The tag of the text line `[[ TAG ]] <verdict>`; FAKE by default. */
  readonly tag?: string;
  /** The name of the parameter read as the level (must be 1..4); `level` by default. */
  readonly levelParam?: string;
  /** The outcome of every run until the test says otherwise; PASS_OUTCOME by default. */
  readonly outcome?: CheckOutcome;
}

/** Keeps runs in progress until released; runs started after the release finish at once. */
export interface Hold {
  /** Resolves when the given number of runs (counted from the start of the hold) are waiting. */
  waiting(runs?: number): Promise<void>;
  release(outcome?: CheckOutcome): void;
}

export interface FakeCheck extends Check {
  /** How many times run() was called. */
  readonly runCount: number;
  /** The params of every run, in order. */
  readonly runParams: readonly CheckParams[];
  /** Every later run returns this outcome (and a released hold ends with it). */
  succeedWith(outcome: CheckOutcome): void;
  /** Every later run throws this error. */
  crashWith(error: Error): void;
  /** Every later run waits until the returned hold is released. */
  hold(): Hold;
}

type Behaviour =
  | { readonly kind: 'outcome'; readonly outcome: CheckOutcome }
  | { readonly kind: 'crash'; readonly error: Error }
  | {
      readonly kind: 'hold';
      readonly gate: Deferred<CheckOutcome>;
      readonly onRun: () => void;
    };

export function createFakeCheck(options: FakeCheckOptions): FakeCheck {
  const levelParam = options.levelParam ?? 'level';
  const tag = options.tag ?? 'FAKE';
  const runParams: CheckParams[] = [];
  let lastOutcome = options.outcome ?? PASS_OUTCOME;
  let behaviour: Behaviour = { kind: 'outcome', outcome: lastOutcome };

  return {
    name: options.name,
    summary: `fake check ${options.name}`,
    banner: options.banner ?? `Fake ${options.name} test`,
    compatHealth: options.compatHealth ?? options.name,
    deviceKind: options.deviceKind ?? 'gpu',
    usesGpu: options.usesGpu ?? false,
    exclusive: options.exclusive ?? false,
    timeoutMs: options.timeoutMs ?? 60_000,

    get runCount() {
      return runParams.length;
    },
    get runParams() {
      return [...runParams];
    },

    parseParams(raw: RawParams): CheckParams {
      const level = raw[levelParam];
      if (level === undefined) return {};
      if (!(LEVELS as readonly string[]).includes(level)) {
        throw new ParamError(
          `${levelParam} ${JSON.stringify(level)} is not a level; use ${LEVELS.join(', ')}`,
        );
      }
      return { [levelParam]: level };
    },

    async run(ctx: CheckContext): Promise<CheckOutcome> {
      runParams.push(ctx.params);
      const current = behaviour;
      switch (current.kind) {
        case 'outcome':
          return current.outcome;
        case 'crash':
          throw current.error;
        case 'hold':
          current.onRun();
          return current.gate.promise;
      }
    },

    formatText(run: CheckRun): string {
      return `[[ ${tag} ]] ${run.verdict}\n`;
    },

    succeedWith(outcome) {
      lastOutcome = outcome;
      behaviour = { kind: 'outcome', outcome };
    },
    crashWith(error) {
      behaviour = { kind: 'crash', error };
    },
    hold() {
      const gate = deferred<CheckOutcome>();
      let waitingRuns = 0;
      const watchers: { readonly runs: number; readonly resolve: () => void }[] = [];
      const notify = (): void => {
        for (const watcher of watchers.filter((w) => waitingRuns >= w.runs)) {
          watchers.splice(watchers.indexOf(watcher), 1);
          watcher.resolve();
        }
      };
      const current: Behaviour = {
        kind: 'hold',
        gate,
        onRun: () => {
          waitingRuns += 1;
          notify();
        },
      };
      behaviour = current;
      return {
        waiting(runs = 1) {
          return new Promise<void>((resolve) => {
            watchers.push({ runs, resolve });
            notify();
          });
        },
        release(outcome = lastOutcome) {
          if (behaviour === current) behaviour = { kind: 'outcome', outcome: lastOutcome };
          gate.resolve(outcome);
        },
      };
    },
  };
}

export interface RealRunner {
  readonly checks: ReadonlyMap<string, Check>;
  readonly store: ResultStore;
  readonly gpuLock: GpuLock;
  readonly clock: Clock;
  readonly runner: CheckRunner;
}

/** A real check runner, store and GPU lock over the given checks, with the system clock. */
export function createRealRunner(checkList: readonly Check[], historySize = 10): RealRunner {
  const checks = new Map(checkList.map((check) => [check.name, check]));
  const store = createResultStore({ historySize });
  const gpuLock = createGpuLock();
  const clock = createSystemClock();
  const runner = createCheckRunner({ checks, store, clock, gpuLock, logger: silentLogger });
  return { checks, store, gpuLock, clock, runner };
}
