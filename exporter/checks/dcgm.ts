/**
 * dcgm: NVIDIA DCGM diagnostics, `dcgmi diag -r <level> -j`, levels 1 (seconds) to 4 (hours).
 *
 * The output of every DCGM release from 2.1.4 to 4.x is read by dcgm-report.ts. Autopilot read only
 * the 3.x schema and treated any non-zero exit as ABORT, so a failing run, which always exits
 * non-zero, never reached its gauge (its defect #10); here stdout is read whatever the exit code.
 *
 * One device per GPU: FAIL when a test failed on it, fatal when that test is in DCGM_FATAL_ERRORS
 * (names compared whole after normalisation, where Autopilot iterated the setting per character and
 * matched substrings, its defects #8 and #12). One node device '' for the results tied to no GPU
 * (3.x deployment tests, 4.x global errors, CPU entities); it also carries Autopilot's gauge and
 * failure string, both node-level as Autopilot wrote them. A run at level 2-4 in which every hardware
 * test skipped is SKIP, naming the tests, never PASS: it verified nothing about the GPUs.
 */

import { describeEnd, type CommandResult, type RunCommand } from '../exec/run-command.js';
import type {
  Check,
  CheckOutcome,
  CheckRun,
  DeviceResult,
  EvidenceValue,
  RawParams,
  Sample,
  Verdict,
} from './check.js';
import { ParamError } from './check.js';
import { DCGM_FATAL_ERROR_KINDS, normaliseTestName, parseDcgmDiag } from './dcgm-report.js';
import { gpusNotKnownIdle, notIdleSubject } from './gpu-common.js';
import type { CheckExtras, CheckModule } from './module.js';
import type { Config } from '../config/config.js';
import type { DcgmEntry, DcgmTestStatus } from './dcgm-report.js';

export const DCGM_SUMMARY =
  'NVIDIA DCGM diagnostics (dcgmi diag, levels 1-4); a failing test in DCGM_FATAL_ERRORS evicts';

export const DCGM_LEVELS = [1, 2, 3, 4] as const;
export type DcgmLevel = (typeof DCGM_LEVELS)[number];

/**
 * Deadlines per level: DCGM's own estimates (seconds, ~2 min, ~15 min, longer) with room for large
 * nodes, slow GPUs and the host engine's start-up.
 */
export const DCGM_TIMEOUTS_MS: Readonly<Record<DcgmLevel, number>> = {
  1: 5 * 60_000,
  2: 20 * 60_000,
  3: 90 * 60_000,
  4: 4 * 3600_000,
};

/** The deadline of one level's dcgmi run, overridable per level. */
export function dcgmTimeoutMs(
  level: DcgmLevel,
  overrides: Partial<Record<DcgmLevel, number>> = {},
): number {
  return overrides[level] ?? DCGM_TIMEOUTS_MS[level];
}

/**
 * Level 1 only checks the software stack; levels 2 and up load the GPUs for minutes to hours and
 * must not share them with another check.
 */
export function dcgmIsExclusive(params: Readonly<Record<string, string | undefined>>): boolean {
  return Number(params.r ?? '1') >= 2;
}

/** Pure: the level of `r` (default 1); throws ParamError for anything but 1 to 4. */
export function parseDcgmLevel(raw: string | undefined): DcgmLevel {
  if (raw === undefined || raw === '') return 1;
  const level = DCGM_LEVELS.find((l) => String(l) === raw.trim());
  if (level === undefined) {
    throw new ParamError(
      `r must be a DCGM diagnostic level from 1 to 4 (1 quick, 2 medium, 3 long, 4 extended), got ${JSON.stringify(raw)}`,
    );
  }
  return level;
}

export { normaliseTestName, parseDcgmDiag } from './dcgm-report.js';
export type { DcgmDiag, DcgmEntry, DcgmSchema, DcgmTestStatus } from './dcgm-report.js';

/**
 * Pure: the failure string Autopilot wrote to the dcgm.level.N.output annotation: for each test with
 * a failing result, in DCGM's order, the normalised name followed by ".<gpu>" per failing result, or
 * "NoGPUid" for a result tied to no GPU; tests concatenated without separator, e.g.
 * "pcie.2memory_bandwidth.0". '' when nothing failed.
 */
export function dcgmFailureString(
  entries: readonly Pick<DcgmEntry, 'test' | 'gpu' | 'status'>[],
): string {
  const byTest = new Map<string, string>();
  for (const entry of entries) {
    if (entry.status !== 'fail') continue;
    const gpu = entry.gpu === undefined ? 'NoGPUid' : `.${entry.gpu}`;
    byTest.set(entry.test, (byTest.get(entry.test) ?? entry.test) + gpu);
  }
  return [...byTest.values()].join('');
}

/** Pure: DCGM_FATAL_ERRORS as a set of normalised names. */
export function fatalTestSet(fatalErrors: readonly string[]): ReadonlySet<string> {
  return new Set(fatalErrors.map(normaliseTestName).filter((name) => name !== ''));
}

/**
 * Pure: whether a failed result is fatal: its test is in DCGM_FATAL_ERRORS, or an entry there names
 * the kind of an error DCGM attached to it (NVLink, ECC: DCGM_FATAL_ERROR_KINDS).
 */
export function isFatal(entry: DcgmEntry, fatal: ReadonlySet<string>): boolean {
  if (fatal.has(entry.test)) return true;
  const kinds = [...fatal].flatMap((name) => {
    const kind = DCGM_FATAL_ERROR_KINDS.get(name);
    return kind === undefined ? [] : [kind];
  });
  return (entry.errors ?? []).some((error) => kinds.some((kind) => kind(error)));
}

/** Worst first, for a test that reports more than one result on one device. */
const STATUS_ORDER: readonly DcgmTestStatus[] = ['fail', 'warn', 'pass', 'skip'];

function worstStatus(statuses: readonly DcgmTestStatus[]): DcgmTestStatus | undefined {
  return STATUS_ORDER.find((s) => statuses.includes(s));
}

const VERDICT_OF: Readonly<Record<DcgmTestStatus, Verdict>> = {
  fail: 'FAIL',
  warn: 'WARN',
  pass: 'PASS',
  skip: 'SKIP',
};

/**
 * dcgmi exits 0 when no error is attached to any GPU or to the software test, yet writes a WARN
 * result as "Fail" in JSON. So with exit 0 a "Fail" can only be a WARN; with any other exit it
 * stays a failure (DCGM's JSON cannot tell the two apart on one entity).
 */
export function applyExitStatus(
  entries: readonly DcgmEntry[],
  exitCode: number | null,
): DcgmEntry[] {
  if (exitCode !== 0) return [...entries];
  return entries.map((e) => (e.status === 'fail' ? { ...e, status: 'warn' } : e));
}

/**
 * Pure: whether a run verified any hardware: a test outside the deployment/software category that
 * did not skip. Level 1 asks DCGM for the software checks only, so it needs none.
 */
export function hardwareVerified(entries: readonly DcgmEntry[], level: DcgmLevel): boolean {
  return level === 1 || entries.some((e) => e.hardware && e.status !== 'skip');
}

/** Pure: the hardware tests a set of results skipped, once each in DCGM's order. */
export function skippedHardwareTests(entries: readonly DcgmEntry[]): string[] {
  return [...new Set(entries.filter((e) => e.hardware && e.status === 'skip').map((e) => e.test))];
}

const skippedText = (tests: readonly string[]): string =>
  tests.length === 0 ? 'DCGM reported none' : `skipped: ${tests.join(', ')}`;

/** The evidence key of an entry on the node device: the test, and the entity when there is one. */
const nodeKey = (entry: DcgmEntry): string =>
  entry.entity === undefined ? entry.test : `${entry.test}.${entry.entity}`;

interface DeviceInput {
  readonly id: string;
  readonly entries: readonly DcgmEntry[];
  readonly key: (entry: DcgmEntry) => string;
  /** A pass of the software checks alone does not make this device PASS (a GPU at level 2-4). */
  readonly needsHardware: boolean;
}

type Judged = { device: DeviceResult; statuses: Map<string, DcgmTestStatus> };

/**
 * A failing or warning reason names the skipped tests too: on a real GB10 level-2 run (DCGM 4.2.3
 * and 4.5.2) the software test fails while memory and pcie skip, and a reason that named only the
 * failure hid that no hardware test ran on the GPU.
 */
function deviceReason(
  verdict: Verdict,
  named: (status: DcgmTestStatus) => string[],
  fatalTests: readonly string[],
  detail: string,
): string {
  const skipped = named('skip');
  const alsoSkipped = skipped.length > 0 ? `; skipped: ${skipped.join(', ')}` : '';
  if (verdict === 'FAIL') {
    const fatal = fatalTests.length > 0 ? ` (fatal: ${fatalTests.join(', ')})` : '';
    return `failed ${named('fail').join(', ')}${fatal}${detail}${alsoSkipped}`;
  }
  if (verdict === 'WARN') return `warned in ${named('warn').join(', ')}${detail}${alsoSkipped}`;
  if (verdict === 'SKIP') return `no test ran; ${skippedText(skipped)}`;
  return `passed ${named('pass').length} tests${alsoSkipped}`;
}

function judgeDevice(
  { id, entries, key, needsHardware }: DeviceInput,
  fatal: ReadonlySet<string>,
): Judged {
  const grouped = new Map<string, DcgmTestStatus[]>();
  for (const entry of entries)
    grouped.set(key(entry), [...(grouped.get(key(entry)) ?? []), entry.status]);
  const statuses = new Map([...grouped].map(([k, list]) => [k, worstStatus(list)!]));
  const evidence: Record<string, EvidenceValue> = Object.fromEntries(statuses);
  const details = entries
    .filter((e) => e.status !== 'pass' && e.messages.length > 0)
    .map((e) => `${key(e)}: ${e.messages.join(' / ')}`);
  if (details.length > 0) evidence.details = details.join('; ');

  const named = (status: DcgmTestStatus): string[] =>
    [...statuses].filter(([, s]) => s === status).map(([k]) => k);
  const fatalTests = [
    ...new Set(entries.filter((e) => e.status === 'fail' && isFatal(e, fatal)).map((e) => e.test)),
  ];
  const firstMessage = entries.find((e) => e.status === 'fail' || e.status === 'warn')?.messages[0];
  const detail = firstMessage === undefined ? '' : `: ${firstMessage}`;
  let verdict = VERDICT_OF[worstStatus([...statuses.values()]) ?? 'skip'];
  let reason = deviceReason(verdict, named, fatalTests, detail);
  // Only the software checks passed on a GPU whose hardware tests all skipped: nothing verified.
  if (
    verdict === 'PASS' &&
    needsHardware &&
    !entries.some((e) => e.hardware && e.status === 'pass')
  ) {
    verdict = 'SKIP';
    reason = `no hardware test ran; ${skippedText(skippedHardwareTests(entries))}`;
  }
  return {
    device: { id, verdict, reason, evidence, ...(fatalTests.length > 0 ? { fatal: true } : {}) },
    statuses,
  };
}

export interface DcgmJudgeOptions {
  readonly level: DcgmLevel;
  /** DCGM_FATAL_ERRORS. */
  readonly fatalErrors: readonly string[];
  /** As the reasons name it; 'dcgmi' by default. */
  readonly command?: string;
  /** The deadline the run had, for the reason of a timeout. */
  readonly timeoutMs?: number;
}

export interface DcgmJudgement {
  readonly outcome: CheckOutcome;
  /** Set for a run that concluded (PASS or FAIL of the node): what the DCGM labels record. */
  readonly conclusive?: { readonly passed: boolean; readonly output: string };
}

/** dcgmi's exit statuses (a negative dcgmReturn_t modulo 256) that explain a run without results. */
const EXIT_MEANINGS: ReadonlyMap<number, string> = new Map([
  [235, 'the host engine connection is invalid or lost (DCGM_ST_CONNECTION_NOT_VALID)'],
  [254, 'dcgmi rejected its command line'],
  [255, 'bad parameter (DCGM_ST_BADPARAM)'],
  [250, 'the driver is not supported (DCGM_ST_NOT_SUPPORTED)'],
  [245, 'the diagnostic timed out (DCGM_ST_TIMEOUT)'],
  [242, 'the diagnostic returned no data (DCGM_ST_NO_DATA)'],
  [233, 'the GPUs are not all of one kind (DCGM_ST_GROUP_INCOMPATIBLE)'],
  [217, 'another diagnostic is running (DCGM_ST_DIAG_ALREADY_RUNNING)'],
  [215, 'the host engine could not launch nvvs (DCGM_ST_DIAG_BAD_LAUNCH)'],
  [204, 'the nvvs binary was not found (DCGM_ST_NVVS_BINARY_NOT_FOUND)'],
  [203, 'the diagnostic was killed by a signal (DCGM_ST_NVVS_KILLED)'],
  [202, 'DCGM is paused (DCGM_ST_PAUSED)'],
  [198, 'no such test (DCGM_ST_NVVS_NO_AVAILABLE_TEST)'],
]);

function exitText(code: number | null): string {
  const meaning = code === null ? undefined : EXIT_MEANINGS.get(code);
  return `exited with ${code}${meaning === undefined ? '' : `: ${meaning}`}`;
}

const firstLine = (text: string): string => text.trim().split('\n')[0]?.trim() ?? '';

/**
 * Pure: the first line a person can read something in: not empty, not JSON punctuation alone
 * (`{`, `},`), not a JSON key or string (dcgmi's document cut short). '' when there is none.
 */
export function meaningfulLine(text: string): string {
  const lines = text.split('\n').map((line) => line.trim());
  return lines.find((line) => /[\p{L}\p{N}]/u.test(line) && !/^["{}[\],]/.test(line)) ?? '';
}

const errorOutcome = (reason: string): DcgmJudgement => ({
  outcome: { devices: [], verdict: 'ERROR', reason },
});

/**
 * Pure: the outcome of one `dcgmi diag` run. Results are judged whatever the exit status (failing
 * tests make dcgmi exit 226 or 205); stderr is ignored when stdout has results (dcgmi warns there
 * about CUDA_VISIBLE_DEVICES and carries on).
 */
export function judgeDcgm(result: CommandResult, options: DcgmJudgeOptions): DcgmJudgement {
  const { level, command = 'dcgmi' } = options;
  const run = `${command} diag -r ${level}`;
  if (result.end === 'spawn-failed') {
    if (result.spawnError === 'ENOENT') {
      return { outcome: { devices: [], verdict: 'SKIP', reason: `${command} is not installed` } };
    }
    return errorOutcome(`${run} could not start (${result.spawnError})`);
  }
  if (result.end === 'timeout') {
    const limit = options.timeoutMs ?? dcgmTimeoutMs(level);
    return errorOutcome(`${run} did not finish within ${formatDuration(limit)}`);
  }
  if (result.end !== 'exited') return errorOutcome(`${run} ${describeEnd(result, exitText)}`);

  const diag = parseDcgmDiag(result.stdout);
  if (diag.kind === 'error') {
    return errorOutcome(`${run} ${exitText(result.exitCode)}: ${firstLine(diag.message)}`);
  }
  if (diag.kind === 'unreadable' || diag.entries.length === 0) {
    const what = diag.kind === 'unreadable' ? diag.reason : 'printed no test result';
    // A host engine that cannot be reached is described on stderr or as plain text on stdout.
    const said = meaningfulLine(result.stderr) || meaningfulLine(result.stdout);
    return errorOutcome(
      `${run} ${exitText(result.exitCode)} and ${what}${said === '' ? '' : `: ${said}`}`,
    );
  }
  return judgeResults(applyExitStatus(diag.entries, result.exitCode), diag.version, options);
}

function judgeResults(
  entries: readonly DcgmEntry[],
  version: string | undefined,
  { level, fatalErrors }: DcgmJudgeOptions,
): DcgmJudgement {
  const fatal = fatalTestSet(fatalErrors);
  const gpuIds = [...new Set(entries.flatMap((e) => (e.gpu === undefined ? [] : [e.gpu])))].sort(
    (a, b) => Number(a) - Number(b),
  );
  const gpus = gpuIds.map((id) =>
    judgeDevice(
      {
        id,
        entries: entries.filter((e) => e.gpu === id),
        key: (e) => e.test,
        needsHardware: level > 1,
      },
      fatal,
    ),
  );
  const nodeEntries = entries.filter((e) => e.gpu === undefined);
  const output = dcgmFailureString(entries);
  const verified = hardwareVerified(entries, level);
  const node = nodeDevice(
    nodeEntries.length === 0
      ? undefined
      : judgeDevice({ id: '', entries: nodeEntries, key: nodeKey, needsHardware: false }, fatal),
    {
      gpus: gpuIds.length,
      level,
      output,
      version,
      verified,
      skipped: skippedHardwareTests(entries),
    },
  );
  const devices = [...gpus.map((g) => g.device), node.device];
  const samples: Sample[] = [
    ...gpus.flatMap(({ device, statuses }) => testSamples(level, device.id, statuses)),
    ...(node.statuses === undefined ? [] : testSamples(level, '', node.statuses)),
  ];
  const troubled = entries.some((e) => e.status === 'fail' || e.status === 'warn');
  if (!verified && !troubled) {
    // Nothing failed, and nothing about the hardware was checked: neither PASS nor a PASS label.
    return { outcome: { devices, samples, verdict: 'SKIP', reason: node.device.reason } };
  }
  return {
    outcome: { devices, samples },
    ...(verified || output !== '' ? { conclusive: { passed: output === '', output } } : {}),
  };
}

interface RunSummary {
  readonly gpus: number;
  readonly level: DcgmLevel;
  readonly output: string;
  readonly version: string | undefined;
  readonly verified: boolean;
  readonly skipped: readonly string[];
}

/**
 * The node device: the results tied to no GPU when there are any, and in every case Autopilot's
 * node-level gauge (1 when any test failed) and failure string. SKIP, naming the skipped tests,
 * when the run checked no hardware and its own results neither failed nor warned, even if a GPU
 * failed a software test: it then says that no hardware was verified, which a GPU's FAIL does not.
 */
function nodeDevice(
  judged: Judged | undefined,
  run: RunSummary,
): { device: DeviceResult; statuses: Map<string, DcgmTestStatus> | undefined } {
  const summary: Record<string, EvidenceValue> = {
    level: run.level,
    gpus: run.gpus,
    failures: run.output,
    dcgmVersion: run.version ?? null,
  };
  const compatValue = run.output === '' ? 0 : 1;
  const base: DeviceResult = judged?.device ?? {
    id: '',
    verdict: 'PASS',
    reason:
      run.output === ''
        ? `level ${run.level}: every test passed on ${run.gpus} GPUs`
        : `no test outside the GPUs failed; failing: ${run.output}`,
    evidence: {},
  };
  const unverified =
    !run.verified && (base.verdict === 'PASS' || base.verdict === 'SKIP')
      ? {
          verdict: 'SKIP' as const,
          reason: `level ${run.level}: no hardware test ran on ${run.gpus} GPUs; ${skippedText(run.skipped)}`,
        }
      : {};
  return {
    device: { ...base, ...unverified, evidence: { ...base.evidence, ...summary }, compatValue },
    statuses: judged?.statuses,
  };
}

function testSamples(
  level: DcgmLevel,
  gpu: string,
  statuses: ReadonlyMap<string, DcgmTestStatus>,
): Sample[] {
  // One series per test and GPU, its current result in a label: series stay tests × GPUs.
  const byTest = new Map<string, DcgmTestStatus[]>();
  for (const [key, status] of statuses) {
    const test = gpu === '' ? key.split('.')[0]! : key;
    byTest.set(test, [...(byTest.get(test) ?? []), status]);
  }
  return [...byTest].map(([test, list]) => ({
    metric: 'autopilot_dcgm_test_result' as const,
    labels: { level: String(level), test, gpu, result: worstStatus(list)! },
    value: 1,
  }));
}

export interface DcgmCheckDeps {
  readonly run: RunCommand;
  /** dcgmi, by name (PATH) or path. */
  readonly command: string;
  /** DCGM_FATAL_ERRORS: test names, or NVLink/ECC error kinds, whose failure takes the node out of service. */
  readonly fatalErrors: readonly string[];
  readonly timeoutsMs?: Partial<Record<DcgmLevel, number>>;
  /** After each conclusive run (not ERROR, not SKIP): the DCGM label and annotation to write. */
  readonly onResult?: (result: {
    readonly level: number;
    readonly passed: boolean;
    readonly output: string;
    readonly at: number;
  }) => void;
  readonly now?: () => number;
}

const TEXT_PREFIX = '[[ DCGM ]]';

/** A level-4 diagnostic of 8 GPUs with -v info stays far below this; a runaway tool does not. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export function createDcgmCheck(deps: DcgmCheckDeps): Check {
  const now = deps.now ?? Date.now;
  return {
    name: 'dcgm',
    summary: DCGM_SUMMARY,
    banner: 'DCGM test',
    compatHealth: 'dcgm',
    deviceKind: 'gpu',
    usesGpu: true,
    // Depends on the level (dcgmIsExclusive); the caller routes levels 2-4 through the exclusive lock.
    exclusive: false,
    // The outer bound for any level; each run's own deadline is its level's (dcgmTimeoutMs).
    timeoutMs: Math.max(...DCGM_LEVELS.map((level) => dcgmTimeoutMs(level, deps.timeoutsMs))),

    parseParams(raw: RawParams) {
      return { r: String(parseDcgmLevel(raw.r)) };
    },

    async run(ctx): Promise<CheckOutcome> {
      const level = parseDcgmLevel(ctx.params.r);
      const timeoutMs = dcgmTimeoutMs(level, deps.timeoutsMs);
      const result = await deps.run(
        {
          file: deps.command,
          args: ['diag', '-r', String(level), '-j'],
          timeoutMs,
          maxOutputBytes: MAX_OUTPUT_BYTES,
        },
        ctx.signal,
      );
      const judged = judgeDcgm(result, {
        level,
        fatalErrors: deps.fatalErrors,
        command: deps.command,
        timeoutMs,
      });
      if (judged.conclusive !== undefined && !ctx.signal.aborted) {
        deps.onResult?.({ level, ...judged.conclusive, at: now() });
      }
      return judged.outcome;
    },

    formatText: formatDcgmText,
  };
}

function formatDcgmText(run: CheckRun, nodeName: string): string {
  // A run that verified no hardware must not end in SUCCESS, which Autopilot's daemon reads.
  if (run.devices.length === 0 || run.verdict === 'SKIP') {
    return `${TEXT_PREFIX} ${run.verdict}: ${run.reason}. ABORT\n`;
  }
  const lines = [`${TEXT_PREFIX} Briefings completed. Continue with dcgm evaluation.`];
  const troubled = run.devices.filter((d) => d.verdict === 'FAIL' || d.verdict === 'WARN');
  const describe = (d: DeviceResult): string =>
    `${d.id === '' ? 'Node' : `GPU ${d.id}`}: ${d.verdict}${d.fatal === true ? ' (fatal)' : ''} ${d.reason}`;
  const node = run.devices.find((d) => d.id === '');
  const failures = typeof node?.evidence.failures === 'string' ? node.evidence.failures : '';
  if (failures === '') {
    // Autopilot's daemon reads SUCCESS from the last line.
    lines.push(...troubled.map(describe), ...skippedLine(run.devices), `${TEXT_PREFIX} SUCCESS`);
  } else {
    lines.push(`Host ${nodeName}`, `${TEXT_PREFIX} FAIL`, ...troubled.map(describe), failures);
  }
  return `${lines.join('\n')}\n`;
}

/** "Skipped: eud_test on GPU 0, GPU 1" when a passing run skipped tests; nothing otherwise. */
function skippedLine(devices: readonly DeviceResult[]): string[] {
  const where = new Map<string, string[]>();
  for (const d of devices) {
    const name = d.id === '' ? 'the node' : `GPU ${d.id}`;
    for (const [test, value] of Object.entries(d.evidence)) {
      if (value === 'skip') where.set(test, [...(where.get(test) ?? []), name]);
    }
  }
  const tests = [...where].map(([test, names]) => `${test} on ${names.join(', ')}`);
  return tests.length === 0 ? [] : [`Skipped: ${tests.join('; ')}`];
}

function formatDuration(ms: number): string {
  if (ms >= 3600_000 && ms % 3600_000 === 0) return `${ms / 3600_000} h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

/** The command has its own deadline per level; the runner's comes a little later. */
const DCGM_RUNNER_SLACK_MS = 30_000;

function dcgmTimeoutOverrides(
  timeouts: Config['checkTimeoutsMs'],
): Partial<Record<DcgmLevel, number>> {
  const overrides: Partial<Record<DcgmLevel, number>> = {};
  for (const level of DCGM_LEVELS) {
    const ms = timeouts.get(`dcgm.${level}`);
    if (ms !== undefined) overrides[level] = ms;
  }
  return overrides;
}

export const dcgmModule: CheckModule = {
  name: 'dcgm',
  summary: DCGM_SUMMARY,
  policy: {
    periodic: 3,
    postflight: { order: 5, params: { r: '1' } },
    exclusive: 'by-params',
    timeoutSettings: DCGM_LEVELS.map((level) => `dcgm.${level}`),
  },
  metrics: ['autopilot_dcgm_test_result'],
  formatText: formatDcgmText,
  statusName: 'DCGM',
  create(config, ports, extras: Pick<CheckExtras, 'onDcgmResult'>) {
    const timeoutsMs = dcgmTimeoutOverrides(config.checkTimeoutsMs);
    const check = createDcgmCheck({
      run: ports.run,
      command: config.dcgmiCommand,
      fatalErrors: config.dcgmFatalErrors,
      timeoutsMs,
      ...(extras.onDcgmResult === undefined ? {} : { onResult: extras.onDcgmResult }),
    });
    const { nvml } = ports;
    return {
      ...check,
      // Level 2 and above load the GPUs for minutes: exclusive, on idle GPUs only, and with a
      // deadline per level.
      exclusiveFor: dcgmIsExclusive,
      timeoutFor: (params) =>
        dcgmTimeoutMs(parseDcgmLevel(params.r), timeoutsMs) + DCGM_RUNNER_SLACK_MS,
      async run(ctx) {
        if (dcgmIsExclusive(ctx.params)) {
          const notIdle = await gpusNotKnownIdle(nvml);
          if (notIdle.gpus.length > 0) {
            return {
              devices: [],
              verdict: 'SKIP',
              reason: `${notIdleSubject(notIdle)}, not tested: ${notIdle.gpus.join(', ')}`,
            };
          }
        }
        return check.run(ctx);
      },
    };
  },
};
