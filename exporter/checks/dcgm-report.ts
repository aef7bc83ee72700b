/**
 * Pure reading of `dcgmi diag -j` output, every shape DCGM 2.1.4 to 4.6 writes (the key changes,
 * with the release and source of each, are in docs/checks.md#dcgm, "JSON shapes by release"):
 *
 * - root `DCGM GPU Diagnostic` (2.x, 3.x) or `DCGM Diagnostic` (4.x);
 * - the GPU of a per-GPU result as `gpu_ids` (a string, up to 3.2.x), `gpu_id` (a string, 3.3.1
 *   on; an integer on 3.3.3+ deployment errors) or `entity_group`/`entity_id` (4.x);
 * - `warnings` as a string (up to 3.2.x), objects with `warning` (3.3.1+ per GPU, 4.x) or with the
 *   text under `warnings` (3.3.3+ deployment tests), and status-less extra results that carry only
 *   an error (3.3.1 and 3.3.2 deployment tests);
 * - `cpu_id` results of the CPU EUD test (3.3.7+), other 4.x entities, 4.x `test_summary`;
 * - the version under the root (runtime errors, 3.2.5+), at the top (3.1.7+) or in `metadata` (4.x).
 */

export type DcgmTestStatus = 'pass' | 'fail' | 'warn' | 'skip';

/** One result of one test, on one GPU or on nothing tied to a GPU. */
export interface DcgmEntry {
  /** normaliseTestName of the test's name. */
  readonly test: string;
  /** False for the deployment/software category, which checks the software stack only. */
  readonly hardware: boolean;
  /** The GPU index; undefined for a result not tied to a GPU. */
  readonly gpu: string | undefined;
  /** A non-GPU entity, such as "cpu0"; undefined for GPUs and for test-wide results. */
  readonly entity: string | undefined;
  readonly status: DcgmTestStatus;
  /** The errors DCGM attached (its JSON calls them warnings). */
  readonly messages: readonly string[];
  /** The DCGM error code and category of each attached error that names one; absent when none does. */
  readonly errors?: readonly DcgmErrorRef[];
}

/**
 * One attached error's DCGM_FR_* code (`error_id`, 3.3+ and 4.x) and DCGM_FR_EC_* category
 * (`error_category`, 3.3+ and 4.x; from the code through DCGM_ERROR_CATEGORY_OF where the document
 * has only the code).
 */
export interface DcgmErrorRef {
  readonly id: number | undefined;
  readonly category: number | undefined;
}

/** dcgmError_category_t (dcgmlib/dcgm_errors.h, the same numbers at v3.3.9 and v4.2.3). */
export const DCGM_ERROR_CATEGORY = {
  HARDWARE_MEMORY: 10,
  HARDWARE_NVLINK: 11,
  HARDWARE_NVSWITCH: 12,
  HARDWARE_PCIE: 13,
} as const;

/**
 * The category of each DCGM_FR_* code in the four hardware categories above, for a document that
 * carries an error's code and not its category. From the dcgmErrorMeta table of DCGM v4.2.3
 * (dcgmlib/src/dcgm_errors.c; codes from dcgmlib/dcgm_errors.h, unchanged since v3.3.9, where the
 * codes are the same).
 */
const DCGM_ERROR_CATEGORY_OF: ReadonlyMap<number, number> = new Map([
  // HARDWARE_MEMORY: VOLATILE_DBE/SBE_DETECTED, PENDING_PAGE_RETIREMENTS, RETIRED_PAGES_LIMIT,
  // RETIRED_PAGES_DBE_LIMIT, FAULTY_MEMORY, ECC_DISABLED, CUDA_DBE, MEMORY_MISMATCH, ECC_UNSUPPORTED,
  // ECC_PENDING, NO_MEMORY_CLOCKS, L1TAG_MISCOMPARE, ROW_REMAP_FAILURE, DBE_PENDING_PAGE_RETIREMENTS,
  // UNCORRECTABLE_ROW_REMAP, PENDING_ROW_REMAP, SBE/DBE_VIOLATION, SBE/DBE_THRESHOLD_VIOLATION,
  // NAN_VALUE, SRAM_THRESHOLD.
  ...[
    4, 5, 6, 7, 8, 52, 55, 57, 58, 60, 61, 75, 79, 80, 83, 84, 85, 102, 103, 105, 106, 111, 118,
  ].map((id) => [id, DCGM_ERROR_CATEGORY.HARDWARE_MEMORY] as const),
  // HARDWARE_NVLINK: NVLINK_ERROR_THRESHOLD, NVLINK_DOWN, NVLINK_CRC_ERROR_THRESHOLD,
  // NVLINK_ERROR_CRITICAL, NVSWITCH_NVLINK_DOWN, GPU/NVSWITCH_EXPECTED_NVLINKS_UP,
  // BROKEN_P2P_NVLINK_MEMORY/WRITER_DEVICE.
  ...[13, 14, 70, 71, 88, 99, 100, 115, 116].map(
    (id) => [id, DCGM_ERROR_CATEGORY.HARDWARE_NVLINK] as const,
  ),
  // HARDWARE_NVSWITCH: NVSWITCH_FATAL_ERROR, NVSWITCH_NON_FATAL_ERROR, NVSWITCH_DOWN.
  ...[15, 16, 17].map((id) => [id, DCGM_ERROR_CATEGORY.HARDWARE_NVSWITCH] as const),
  // HARDWARE_PCIE: PCI_REPLAY_RATE, LOW_BANDWIDTH, HIGH_LATENCY, PCIE_GENERATION, PCIE_WIDTH,
  // PCIE_H_REPLAY_VIOLATION, PCIE_REPLAY_VIOLATION, PCIE_REPLAY_THRESHOLD_VIOLATION,
  // BROKEN_P2P_PCIE_MEMORY/WRITER_DEVICE.
  ...[3, 30, 31, 45, 46, 98, 104, 107, 113, 114].map(
    (id) => [id, DCGM_ERROR_CATEGORY.HARDWARE_PCIE] as const,
  ),
]);

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

type Json = Record<string, unknown>;

const isRecord = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const arrayOf = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
const stringOf = (value: unknown): string | undefined =>
  typeof value === 'string' ? value : undefined;

/**
 * JSON status strings: dcgmi writes Pass, Skip and Fail (a WARN too is "Fail"); "Warn" appears in
 * its text output and some third-party JSON. "Not Run" (4.5+) never reaches dcgmi's JSON, which
 * leaves out results that did not run; read anyway, it means the same as a skip: nothing verified.
 */
const STATUSES: ReadonlyMap<string, DcgmTestStatus> = new Map([
  ['pass', 'pass'],
  ['fail', 'fail'],
  ['warn', 'warn'],
  ['skip', 'skip'],
  ['not run', 'skip'],
]);

const statusOf = (value: unknown): DcgmTestStatus | undefined =>
  typeof value === 'string' ? STATUSES.get(value.trim().toLowerCase()) : undefined;

/**
 * The messages of a result's "warnings": a bare string (up to 3.2.x), or objects with "warning"
 * (3.3.1+ per-GPU tests, 4.x) or with the text under "warnings" (3.3.3+ deployment tests).
 */
function messagesOf(warnings: unknown): string[] {
  if (typeof warnings === 'string') return warnings.trim() === '' ? [] : [warnings.trim()];
  return arrayOf(warnings).flatMap((entry) => {
    if (typeof entry === 'string') return [entry.trim()];
    if (!isRecord(entry)) return [];
    const text = stringOf(entry.warning) ?? stringOf(entry.warnings);
    return text === undefined ? [] : [text.trim()];
  });
}

const integerOf = (value: unknown): number | undefined =>
  typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : undefined;

/** The code and category of each error object in a result's "warnings" that names either. */
function errorsOf(warnings: unknown): { errors?: DcgmErrorRef[] } {
  const errors = arrayOf(warnings).flatMap((entry) => {
    if (!isRecord(entry)) return [];
    const id = integerOf(entry.error_id);
    const category =
      integerOf(entry.error_category) ??
      integerOf(entry.category) ??
      (id === undefined ? undefined : DCGM_ERROR_CATEGORY_OF.get(id));
    return id === undefined && category === undefined ? [] : [{ id, category }];
  });
  return errors.length > 0 ? { errors } : {};
}

const withErrors = (entry: DcgmEntry, errors: readonly DcgmErrorRef[] | undefined): DcgmEntry =>
  errors === undefined ? entry : { ...entry, errors: [...(entry.errors ?? []), ...errors] };

function idOf(value: unknown): string | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return String(value);
  if (typeof value === 'string' && /^\d+$/.test(value.trim())) return String(Number(value));
  return undefined;
}

/**
 * The GPUs of a 2.x/3.x result: "gpu_id" (3.3.1+), else "gpu_ids" (2.1.4 to 3.2.x), which dcgmi
 * writes with one index; a comma list (NVVS's own JSON) names each GPU it lists.
 */
function gpusOf3(result: Json): string[] {
  const single = idOf(result.gpu_id);
  if (single !== undefined) return [single];
  const listed = result.gpu_ids;
  if (typeof listed === 'number') return [idOf(listed)].filter((id) => id !== undefined);
  if (typeof listed !== 'string') return [];
  return listed.split(',').flatMap((part) => {
    const id = idOf(part);
    return id === undefined ? [] : [id];
  });
}

/**
 * The document, or the one JSON object dcgmi printed among other lines. jsoncpp starts it on a line
 * of its own, so a brace inside other text is no document.
 */
function parseJsonDocument(stdout: string): { doc: unknown } | { error: string } {
  try {
    return { doc: JSON.parse(stdout) };
  } catch (whole) {
    const opening = /^[ \t]*\{/m.exec(stdout);
    if (opening === null) return { error: 'no JSON document' };
    const start = opening.index + opening[0].length - 1;
    const end = stdout.lastIndexOf('}');
    if (end <= start) return { error: `an incomplete JSON document (${messageOf(whole)})` };
    try {
      return { doc: JSON.parse(stdout.slice(start, end + 1)) };
    } catch (part) {
      return { error: `an incomplete or malformed JSON document (${messageOf(part)})` };
    }
  }
}

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);

/** Pure: reads `dcgmi diag -j` output of DCGM 2.x, 3.x or 4.x. Never throws. */
export function parseDcgmDiag(stdout: string): DcgmDiag {
  if (stdout.trim() === '') return { kind: 'unreadable', reason: 'printed nothing' };
  const parsed = parseJsonDocument(stdout);
  if ('error' in parsed) return { kind: 'unreadable', reason: `printed ${parsed.error}` };
  const doc = parsed.doc;
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
  return { kind: 'results', schema, version, entries: entriesOf(schema, body.test_categories) };
}

function entriesOf(schema: DcgmSchema, categories: readonly unknown[]): DcgmEntry[] {
  const entries: DcgmEntry[] = [];
  for (const category of categories) {
    if (!isRecord(category)) continue;
    // The deployment/software checks (3.x: nine tests, 4.x: "software") look at no hardware.
    const hardware = stringOf(category.category)?.trim().toLowerCase() !== 'deployment';
    for (const test of arrayOf(category.tests)) {
      if (!isRecord(test) || typeof test.name !== 'string') continue;
      const name = { test: normaliseTestName(test.name), hardware };
      entries.push(...(schema === 'dcgm4' ? entriesOf4(name, test) : entriesOf3(name, test)));
    }
  }
  return entries;
}

type TestName = Pick<DcgmEntry, 'test' | 'hardware'>;

function entryOf4(name: TestName, result: Json): DcgmEntry | undefined {
  const status = statusOf(result.status);
  if (status === undefined) return undefined;
  const isGpu = result.entity_group === 'GPU' || result.entity_group_id === 1;
  const id = idOf(result.entity_id);
  const group =
    stringOf(result.entity_group)?.toLowerCase() ?? `group${String(result.entity_group_id)}`;
  return {
    ...name,
    gpu: isGpu ? id : undefined,
    entity: !isGpu && id !== undefined ? `${group}${id}` : undefined,
    status,
    messages: messagesOf(result.warnings),
    ...errorsOf(result.warnings),
  };
}

function entriesOf4(name: TestName, json: Json): DcgmEntry[] {
  const entries = arrayOf(json.results).flatMap((result) => {
    const entry = isRecord(result) ? entryOf4(name, result) : undefined;
    return entry === undefined ? [] : [entry];
  });
  // A test-wide error belongs to no entity: test_summary is then the only place that says so.
  const summary = isRecord(json.test_summary) ? json.test_summary : undefined;
  const overall = statusOf(summary?.status);
  const told = entries.some((e) => e.status === overall);
  if (overall !== undefined && (entries.length === 0 || (overall !== 'pass' && !told))) {
    entries.push({
      ...name,
      gpu: undefined,
      entity: undefined,
      status: overall,
      messages: messagesOf(summary?.warnings),
      ...errorsOf(summary?.warnings),
    });
  }
  return entries;
}

function entriesOf3(name: TestName, json: Json): DcgmEntry[] {
  const entries: DcgmEntry[] = [];
  for (const result of arrayOf(json.results)) {
    // jsoncpp fills the slot of a GPU that did not run a test with null.
    if (!isRecord(result)) continue;
    const status = statusOf(result.status);
    const messages = messagesOf(result.warnings);
    const { errors } = errorsOf(result.warnings);
    if (status === undefined) {
      // 3.3.1/3.3.2 deployment tests: results[1..] carry only a further error of results[0].
      const first = entries[0];
      if (first !== undefined && messages.length > 0) {
        entries[0] = withErrors({ ...first, messages: [...first.messages, ...messages] }, errors);
      }
      continue;
    }
    const cpu = idOf(result.cpu_id);
    const gpus = gpusOf3(result);
    const base = { ...name, status, messages, ...(errors === undefined ? {} : { errors }) };
    if (cpu !== undefined) entries.push({ ...base, gpu: undefined, entity: `cpu${cpu}` });
    else if (gpus.length === 0) entries.push({ ...base, gpu: undefined, entity: undefined });
    else entries.push(...gpus.map((gpu) => ({ ...base, gpu, entity: undefined })));
  }
  return entries;
}

/**
 * DCGM_FATAL_ERRORS entries that name a kind of error rather than a test (IBM Autopilot's default
 * list has NVLink and ECC, which no DCGM test is called): a failed result is fatal when one of its
 * attached errors is of that kind.
 *
 * - NVLink: the HARDWARE_NVLINK and HARDWARE_NVSWITCH categories.
 * - ECC: the codes of uncorrectable ECC errors and of their consequences (dcgmlib/dcgm_errors.h,
 *   v3.3.9 and v4.2.3): VOLATILE_DBE_DETECTED 4, RETIRED_PAGES_LIMIT 7, RETIRED_PAGES_DBE_LIMIT 8,
 *   CUDA_DBE 57, ROW_REMAP_FAILURE 80, DBE_PENDING_PAGE_RETIREMENTS 83, UNCORRECTABLE_ROW_REMAP 84,
 *   DBE_VIOLATION 103, DBE_THRESHOLD_VIOLATION 106. Not the single-bit ones (VOLATILE_SBE_DETECTED 5,
 *   SBE_VIOLATION 102, SBE_THRESHOLD_VIOLATION 105: corrected, the GPU keeps working) nor the merely
 *   pending ones (PENDING_PAGE_RETIREMENTS 6, PENDING_ROW_REMAP 85: a reset applies them), which the
 *   ecc and remapped checks judge as non-fatal too: evicting on them would drain healthy nodes. Not
 *   the whole HARDWARE_MEMORY category either: it also holds ECC_DISABLED 55 and ECC_UNSUPPORTED 60
 *   (a setting, not an error), and the memory tests' own findings, which "GPU Memory" covers.
 */
const ECC_ERROR_IDS: ReadonlySet<number> = new Set([4, 7, 8, 57, 80, 83, 84, 103, 106]);
export const DCGM_FATAL_ERROR_KINDS: ReadonlyMap<string, (error: DcgmErrorRef) => boolean> =
  new Map([
    [
      'nvlink',
      (error: DcgmErrorRef) =>
        error.category === DCGM_ERROR_CATEGORY.HARDWARE_NVLINK ||
        error.category === DCGM_ERROR_CATEGORY.HARDWARE_NVSWITCH,
    ],
    ['ecc', (error: DcgmErrorRef) => error.id !== undefined && ECC_ERROR_IDS.has(error.id)],
  ]);

/**
 * Every DCGM test name, normalised: the 2.x/3.x display names and the 4.x plugin names
 * (nvvs/include/PluginStrings.h, v3.3.9 and v4.2.3).
 */
export const DCGM_TEST_NAMES: ReadonlySet<string> = new Set(
  [
    'Denylist',
    'Blacklist',
    'NVML Library',
    'CUDA Main Library',
    'CUDA Toolkit Library',
    'Permissions and OS Blocks',
    'Persistence Mode',
    'Environment Variables',
    'Page Retirement/Row Remap',
    'Graphics Processes',
    'Inforom',
    'Fabric Manager',
    'software',
    'GPU Memory',
    'memory',
    'Memtest',
    'Memory Test',
    'Diagnostic',
    'PCIe',
    'SM Stress',
    'Targeted Stress',
    'Targeted Power',
    'Memory Bandwidth',
    'Pulse Test',
    'Context Create',
    'EUD Test',
    'eud',
    'CPU EUD',
    'cpu_eud',
    'nvbandwidth',
  ].map(normaliseTestName),
);

/** Pure: the DCGM_FATAL_ERRORS entries that name neither a DCGM test nor a kind of error. */
export function unknownFatalErrors(entries: readonly string[]): string[] {
  return entries.filter((entry) => {
    const name = normaliseTestName(entry);
    return !DCGM_TEST_NAMES.has(name) && !DCGM_FATAL_ERROR_KINDS.has(name);
  });
}

/** The names DCGM_FATAL_ERRORS accepts, for an error message. */
export const FATAL_ERROR_NAMES_HELP =
  'NVLink, ECC (kinds of DCGM error) or a DCGM test name such as PCIe, GPU Memory, Memory Bandwidth, Targeted Stress, Targeted Power, SM Stress, Diagnostic, Pulse Test, memtest, nvbandwidth, software or a 3.x software test (Persistence Mode, Page Retirement/Row Remap...)';
