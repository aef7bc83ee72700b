/**
 * dcgm: NVIDIA DCGM diagnostics, `dcgmi diag -r <level> -j`, levels 1 (seconds) to 4 (hours).
 *
 * Reads both JSON schemas: DCGM 2.x/3.x ("DCGM GPU Diagnostic", display names such as "GPU Memory",
 * string gpu_id) and 4.x ("DCGM Diagnostic", plugin names such as "memory", entity results and a
 * test_summary). Autopilot read only the first and treated any non-zero exit as ABORT, so a failing
 * run, which always exits non-zero, never reached its gauge (its defect #10); here stdout is read
 * whatever the exit code.
 *
 * One device per GPU: FAIL when a test failed on it, fatal when that test is in DCGM_FATAL_ERRORS
 * (names compared whole after normalisation, where Autopilot iterated the setting per character and
 * matched substrings, its defects #8 and #12). One node device '' for the results tied to no GPU
 * (3.x deployment tests, 4.x global errors, CPU entities); it also carries Autopilot's gauge and
 * failure string, both node-level as Autopilot wrote them.
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

/**
 * DCGM 4 renamed the tests after its plugins; these are the two whose Autopilot-normalised 3.x
 * display name differs ("GPU Memory" → gpu_memory, "EUD Test" → eud_test). Mapping them keeps
 * Autopilot's failure strings and the default fatal list ("GPU Memory") meaning the same on both.
 */
const DCGM4_PLUGIN_ALIASES: ReadonlyMap<string, string> = new Map([
  ['memory', 'gpu_memory'],
  ['eud', 'eud_test'],
]);

/**
 * Pure: Autopilot's unify_string_format (trim, lower case, every '/', '|' and white-space character
 * to '_'), then DCGM 4's plugin names to the 3.x names they replaced. Applied alike to test names and
 * to DCGM_FATAL_ERRORS entries, which are then compared whole.
 */
export function normaliseTestName(name: string): string {
  const unified = name
    .trim()
    .toLowerCase()
    .replace(/[/|\s]/g, '_');
  return DCGM4_PLUGIN_ALIASES.get(unified) ?? unified;
}

export type DcgmTestStatus = 'pass' | 'fail' | 'warn' | 'skip';

/** One result of one test, on one GPU or on nothing tied to a GPU. */
export interface DcgmEntry {
  /** normaliseTestName of the test's name. */
  readonly test: string;
  /** The GPU index; undefined for a result not tied to a GPU. */
  readonly gpu: string | undefined;
  /** A non-GPU entity (4.x), such as "cpu0"; undefined for GPUs and for test-wide results. */
  readonly entity: string | undefined;
  readonly status: DcgmTestStatus;
  /** The errors DCGM attached (its JSON calls them warnings). */
  readonly messages: readonly string[];
}

export type DcgmSchema = 'dcgm3' | 'dcgm4';

export type DcgmDiag =
  | {
      readonly kind: 'results';
      readonly schema: DcgmSchema;
      readonly version: string | undefined;
      readonly entries: readonly DcgmEntry[];
    }
  /** dcgmi could not run the diagnostic (host engine, group, paused...): runtime_error. */
  | {
      readonly kind: 'error';
      readonly schema: DcgmSchema;
      readonly version: string | undefined;
      readonly message: string;
    }
  | { readonly kind: 'unreadable'; readonly reason: string };

type Json = Record<string, unknown>;

const isRecord = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const arrayOf = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
const stringOf = (value: unknown): string | undefined =>
  typeof value === 'string' ? value : undefined;

/** JSON status strings: DCGM writes Pass, Skip and Fail (a WARN too is "Fail"); Warn is tolerated. */
const STATUSES: ReadonlyMap<string, DcgmTestStatus> = new Map([
  ['pass', 'pass'],
  ['fail', 'fail'],
  ['warn', 'warn'],
  ['skip', 'skip'],
]);

const statusOf = (value: unknown): DcgmTestStatus | undefined =>
  typeof value === 'string' ? STATUSES.get(value.trim().toLowerCase()) : undefined;

/**
 * The messages of a result's "warnings": objects with "warning" (4.x, 3.x per-GPU tests) or, in
 * 3.x deployment tests, with the text under "warnings"; a bare string is accepted too.
 */
function messagesOf(warnings: unknown): string[] {
  if (typeof warnings === 'string') return [warnings];
  return arrayOf(warnings).flatMap((entry) => {
    if (typeof entry === 'string') return [entry];
    if (!isRecord(entry)) return [];
    const text = stringOf(entry.warning) ?? stringOf(entry.warnings);
    return text === undefined ? [] : [text.trim()];
  });
}

function idOf(value: unknown): string | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return String(value);
  if (typeof value === 'string' && /^\d+$/.test(value.trim())) return String(Number(value));
  return undefined;
}

/** The document, or the one JSON object dcgmi printed among other lines. */
function parseJsonDocument(stdout: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch {
    const start = stdout.indexOf('{');
    const end = stdout.lastIndexOf('}');
    if (start === -1 || end <= start) return undefined;
    try {
      return JSON.parse(stdout.slice(start, end + 1));
    } catch {
      return undefined;
    }
  }
}

/** Pure: reads `dcgmi diag -j` output of DCGM 2.x, 3.x or 4.x. Never throws. */
export function parseDcgmDiag(stdout: string): DcgmDiag {
  if (stdout.trim() === '') return { kind: 'unreadable', reason: 'printed nothing' };
  const doc = parseJsonDocument(stdout);
  if (doc === undefined) return { kind: 'unreadable', reason: 'printed no JSON document' };
  if (!isRecord(doc)) return { kind: 'unreadable', reason: 'printed JSON that is not an object' };
  const v4 = doc['DCGM Diagnostic'];
  const v3 = doc['DCGM GPU Diagnostic'];
  const schema: DcgmSchema | undefined = isRecord(v4)
    ? 'dcgm4'
    : isRecord(v3)
      ? 'dcgm3'
      : undefined;
  if (schema === undefined) {
    const what = 'iterations' in doc ? 'an --iterations document' : 'no DCGM diagnostic results';
    return { kind: 'unreadable', reason: `printed ${what}` };
  }
  const body = (schema === 'dcgm4' ? v4 : v3) as Json;
  const metadata = isRecord(doc.metadata) ? doc.metadata : {};
  const version = stringOf(body.version) ?? stringOf(metadata.version) ?? stringOf(doc.version);
  const runtimeError = stringOf(body.runtime_error);
  if (runtimeError !== undefined && !Array.isArray(body.test_categories)) {
    return { kind: 'error', schema, version, message: runtimeError.trim() };
  }
  if (!Array.isArray(body.test_categories)) {
    return { kind: 'unreadable', reason: 'printed a document without test_categories' };
  }
  const entries: DcgmEntry[] = [];
  for (const category of body.test_categories) {
    if (!isRecord(category)) continue;
    for (const test of arrayOf(category.tests)) {
      if (!isRecord(test) || typeof test.name !== 'string') continue;
      const name = normaliseTestName(test.name);
      entries.push(...(schema === 'dcgm4' ? entriesOf4(name, test) : entriesOf3(name, test)));
    }
  }
  return { kind: 'results', schema, version, entries };
}

function entriesOf4(test: string, json: Json): DcgmEntry[] {
  const entries: DcgmEntry[] = [];
  for (const result of arrayOf(json.results)) {
    if (!isRecord(result)) continue;
    const status = statusOf(result.status);
    if (status === undefined) continue;
    const isGpu = result.entity_group === 'GPU' || result.entity_group_id === 1;
    const id = idOf(result.entity_id);
    const group =
      stringOf(result.entity_group)?.toLowerCase() ?? `group${String(result.entity_group_id)}`;
    entries.push({
      test,
      gpu: isGpu ? id : undefined,
      entity: !isGpu && id !== undefined ? `${group}${id}` : undefined,
      status,
      messages: messagesOf(result.warnings),
    });
  }
  // A test-wide error belongs to no entity: test_summary is then the only place that says so.
  const summary = isRecord(json.test_summary) ? json.test_summary : undefined;
  const overall = statusOf(summary?.status);
  const told = entries.some((e) => e.status === overall);
  if (overall !== undefined && (entries.length === 0 || (overall !== 'pass' && !told))) {
    entries.push({
      test,
      gpu: undefined,
      entity: undefined,
      status: overall,
      messages: messagesOf(summary?.warnings),
    });
  }
  return entries;
}

function entriesOf3(test: string, json: Json): DcgmEntry[] {
  return arrayOf(json.results).flatMap((result): DcgmEntry[] => {
    if (!isRecord(result)) return [];
    const status = statusOf(result.status);
    if (status === undefined) return [];
    return [
      {
        test,
        // Deployment tests carry no gpu_id, or an integer one when they report an error.
        gpu: idOf(result.gpu_id),
        entity: undefined,
        status,
        messages: messagesOf(result.warnings),
      },
    ];
  });
}

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

/** The evidence key of an entry on the node device: the test, and the entity when there is one. */
const nodeKey = (entry: DcgmEntry): string =>
  entry.entity === undefined ? entry.test : `${entry.test}.${entry.entity}`;

interface DeviceInput {
  readonly id: string;
  readonly entries: readonly DcgmEntry[];
  readonly key: (entry: DcgmEntry) => string;
}

function judgeDevice(
  { id, entries, key }: DeviceInput,
  fatal: ReadonlySet<string>,
): { device: DeviceResult; statuses: Map<string, DcgmTestStatus> } {
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
  const failed = named('fail');
  const warned = named('warn');
  const skipped = named('skip');
  const fatalTests = [
    ...new Set(entries.filter((e) => e.status === 'fail').map((e) => e.test)),
  ].filter((test) => fatal.has(test));
  const firstMessage = entries.find((e) => e.status === 'fail' || e.status === 'warn')?.messages[0];
  const detail = firstMessage === undefined ? '' : `: ${firstMessage}`;
  const verdict = VERDICT_OF[worstStatus([...statuses.values()]) ?? 'skip'];
  const reason =
    verdict === 'FAIL'
      ? `failed ${failed.join(', ')}${fatalTests.length > 0 ? ` (fatal: ${fatalTests.join(', ')})` : ''}${detail}`
      : verdict === 'WARN'
        ? `warned in ${warned.join(', ')}${detail}`
        : verdict === 'SKIP'
          ? `DCGM skipped every test (${skipped.join(', ')})`
          : `passed ${named('pass').length} tests${skipped.length > 0 ? `, skipped ${skipped.join(', ')}` : ''}`;
  return {
    device: {
      id,
      verdict,
      reason,
      evidence,
      ...(fatalTests.length > 0 ? { fatal: true } : {}),
    },
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
    const said =
      firstLine(result.stderr) || (diag.kind === 'unreadable' ? firstLine(result.stdout) : '');
    return errorOutcome(
      `${run} ${exitText(result.exitCode)} and ${what}${said === '' ? '' : `: ${said}`}`,
    );
  }

  const entries = applyExitStatus(diag.entries, result.exitCode);
  const fatal = fatalTestSet(options.fatalErrors);
  const gpuIds = [...new Set(entries.flatMap((e) => (e.gpu === undefined ? [] : [e.gpu])))].sort(
    (a, b) => Number(a) - Number(b),
  );
  const gpus = gpuIds.map((id) =>
    judgeDevice({ id, entries: entries.filter((e) => e.gpu === id), key: (e) => e.test }, fatal),
  );
  const nodeEntries = entries.filter((e) => e.gpu === undefined);
  const output = dcgmFailureString(entries);
  const passed = output === '';
  const node = nodeDevice(
    nodeEntries.length === 0
      ? undefined
      : judgeDevice({ id: '', entries: nodeEntries, key: nodeKey }, fatal),
    { gpus: gpuIds.length, level, output, version: diag.version },
  );

  const samples: Sample[] = [
    ...gpus.flatMap(({ device, statuses }) => testSamples(level, device.id, statuses)),
    ...(node.statuses === undefined ? [] : testSamples(level, '', node.statuses)),
  ];
  return {
    outcome: { devices: [...gpus.map((g) => g.device), node.device], samples },
    conclusive: { passed, output },
  };
}

/**
 * The node device: the results tied to no GPU when there are any, and in every case Autopilot's
 * node-level gauge (1 when any test failed) and failure string.
 */
function nodeDevice(
  judged: { device: DeviceResult; statuses: Map<string, DcgmTestStatus> } | undefined,
  run: { gpus: number; level: DcgmLevel; output: string; version: string | undefined },
): { device: DeviceResult; statuses: Map<string, DcgmTestStatus> | undefined } {
  const summary: Record<string, EvidenceValue> = {
    level: run.level,
    gpus: run.gpus,
    failures: run.output,
    dcgmVersion: run.version ?? null,
  };
  const compatValue = run.output === '' ? 0 : 1;
  if (judged !== undefined) {
    return {
      device: {
        ...judged.device,
        evidence: { ...judged.device.evidence, ...summary },
        compatValue,
      },
      statuses: judged.statuses,
    };
  }
  return {
    device: {
      id: '',
      verdict: 'PASS',
      reason:
        run.output === ''
          ? `level ${run.level}: every test passed on ${run.gpus} GPUs`
          : `no test outside the GPUs failed; failing: ${run.output}`,
      evidence: summary,
      compatValue,
    },
    statuses: undefined,
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
  /** DCGM_FATAL_ERRORS: test names whose failure takes the node out of service. */
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

    formatText(run: CheckRun, nodeName: string) {
      if (run.devices.length === 0) return `${TEXT_PREFIX} ${run.verdict}: ${run.reason}. ABORT\n`;
      const lines = [`${TEXT_PREFIX} Briefings completed. Continue with dcgm evaluation.`];
      const troubled = run.devices.filter((d) => d.verdict === 'FAIL' || d.verdict === 'WARN');
      const describe = (d: DeviceResult): string =>
        `${d.id === '' ? 'Node' : `GPU ${d.id}`}: ${d.verdict}${d.fatal === true ? ' (fatal)' : ''} ${d.reason}`;
      const node = run.devices.find((d) => d.id === '');
      const failures = typeof node?.evidence.failures === 'string' ? node.evidence.failures : '';
      if (failures === '') {
        // Autopilot's daemon reads SUCCESS from the last line.
        lines.push(...troubled.map(describe), `${TEXT_PREFIX} SUCCESS`);
      } else {
        lines.push(`Host ${nodeName}`, `${TEXT_PREFIX} FAIL`, ...troubled.map(describe), failures);
      }
      return `${lines.join('\n')}\n`;
    },
  };
}

function formatDuration(ms: number): string {
  if (ms >= 3600_000 && ms % 3600_000 === 0) return `${ms / 3600_000} h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}
