/**
 * The command line: `autopilot [serve]`, `autopilot check <checks…>`, `--help` for each.
 * Flags follow Go's flag package as Autopilot's binary did: `--port 3333`, `--port=3333`,
 * `-port 3333`. Pure: main.ts feeds it argv and prints what it returns.
 */

import type { Check, CheckParams } from './checks/check.js';
import { CHECK_TABLE } from './checks/index.js';
import { ENV_SETTINGS, FLAGS, FLAG_NAMES } from './config/config.js';

export type Command =
  | { readonly kind: 'serve' }
  | {
      readonly kind: 'check';
      readonly checks: readonly string[];
      readonly output: 'table' | 'json';
      /** dcgm's level (its r parameter), when --level is given. */
      readonly level?: number;
    }
  | { readonly kind: 'version' }
  | { readonly kind: 'preflight'; readonly options: ReadonlyMap<string, string> }
  | { readonly kind: 'deepcheck'; readonly options: ReadonlyMap<string, string> }
  | { readonly kind: 'ack'; readonly node: string; readonly options: ReadonlyMap<string, string> }
  | { readonly kind: 'help'; readonly topic: HelpTopic };

export type HelpTopic = 'serve' | 'check' | 'preflight' | 'deepcheck' | 'ack' | 'main';

/** Flags of one command, beside the exporter's own (which configure the checks it runs). */
export const COMMAND_FLAGS = {
  check: [
    {
      name: 'output',
      defaultValue: 'table',
      help: "table: one row per device; json: one document, as the API's /status?format=json",
    },
    { name: 'level', defaultValue: '', help: "dcgm's diagnostic level, 1 to 4 (as /status?r=N)" },
  ],
  preflight: [
    {
      name: 'url',
      defaultValue: 'http://autopilot-healthchecks.autopilot.svc:3333',
      help: "the exporters' API (the Service); the node is named by NODE_NAME",
    },
    { name: 'max-age', defaultValue: '1h', help: 'results older than this are run again' },
    {
      name: 'checks',
      defaultValue: CHECK_TABLE.preflight.join(','),
      help: 'the quick checks to require',
    },
    {
      name: 'fail-on',
      defaultValue: 'warn',
      help: 'warn: WARN, EVICT or a failed check; evict: only EVICT; error: also checks that could not run',
    },
    {
      name: 'on-unreachable',
      defaultValue: 'fail',
      help: 'when the exporters cannot be asked: fail blocks the job, pass lets it start (the reason is printed either way)',
    },
  ],
  ack: [
    {
      name: 'kubeconfig',
      defaultValue: '',
      help: 'the kubeconfig to use (default: KUBECONFIG, then ~/.kube/config, as kubectl)',
    },
    {
      name: 'context',
      defaultValue: '',
      help: "the kubeconfig's context (default: its current one)",
    },
    { name: 'reason', defaultValue: '', help: "why, for the exporter's audit line" },
    {
      name: 'timeout',
      defaultValue: '2m',
      help: "how long to wait for the node's exporter to lift the EVICT",
    },
  ],
  deepcheck: [
    {
      name: 'report-file',
      defaultValue: '/dev/termination-log',
      help: 'where the JSON report for the exporter goes (the container termination message)',
    },
  ],
} as const;

/**
 * `autopilot check`'s exit statuses, so that a script can tell a sick node (FAIL) from a check
 * that could not tell (ERROR: a tool missing, a timeout), which calls for another fix.
 */
export const CHECK_EXIT = { ok: 0, fail: 1, usage: 2, error: 3 } as const;

/** Pure: FAIL wins over ERROR (the node is known to be sick); SKIP, WARN and PASS are 0. */
export function checkExitCode(verdicts: readonly string[]): 0 | 1 | 3 {
  if (verdicts.includes('FAIL')) return CHECK_EXIT.fail;
  if (verdicts.includes('ERROR')) return CHECK_EXIT.error;
  return CHECK_EXIT.ok;
}

/** How often `autopilot check` says that a check still runs (dcgm at level 3 runs for an hour). */
export const PROGRESS_EVERY_MS = 5_000;

/**
 * The fields of a "check still running" line on stderr: the check, its parameters, the GPUs it is
 * on and the whole seconds since it started. A GPU check works on every GPU of the node in one go
 * (one dcgmi diag, one NVML pass over the devices), so the runner cannot know which GPU it is on at
 * a given moment: the line says "all GPUs" rather than naming one it would have to guess. Peer and
 * node checks are on no GPU, and their lines name none.
 */
export function progressFields(
  check: Pick<Check, 'name' | 'deviceKind'>,
  params: CheckParams,
  elapsedMs: number,
): Record<string, unknown> {
  return {
    check: check.name,
    params,
    ...(check.deviceKind === 'gpu' ? { gpus: 'all GPUs' } : {}),
    elapsedSeconds: Math.round(elapsedMs / 1000),
  };
}

export interface CommandLine {
  readonly command: Command;
  readonly flags: ReadonlyMap<string, string>;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseCommandLine(argv: readonly string[]): CommandLine {
  const flags = new Map<string, string>();
  const positional: string[] = [];
  let help = false;
  let version = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (['--help', '-help', '-h', '--h'].includes(arg)) {
      help = true;
      continue;
    }
    if (arg === '--version' || arg === '-version') {
      version = true;
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (!FLAG_NAMES.has(name) && !commandFlagNames(argv).has(name)) {
      throw new UsageError(unknownFlag(arg, name, argv));
    }
    const value = eq >= 0 ? body.slice(eq + 1) : argv[i + 1];
    if (eq < 0) i++;
    if (value === undefined) throw new UsageError(`flag --${name} needs a value`);
    if (flags.has(name)) throw new UsageError(`flag --${name} is given more than once`);
    flags.set(name, value);
  }

  const [verb, ...rest] = positional;
  if (version && !help) return { command: { kind: 'version' }, flags };
  if (verb === 'help') return { command: { kind: 'help', topic: topicOf(rest[0]) }, flags };
  if (verb === undefined || verb === 'serve') {
    if (rest.length > 0) throw new UsageError(`serve takes no arguments, got ${rest.join(' ')}`);
    return {
      command: help
        ? { kind: 'help', topic: verb === undefined ? 'main' : 'serve' }
        : { kind: 'serve' },
      flags,
    };
  }
  if (verb === 'preflight' || verb === 'deepcheck') {
    if (help) return { command: { kind: 'help', topic: verb }, flags };
    if (rest.length > 0) throw new UsageError(`${verb} takes no arguments, got ${rest.join(' ')}`);
    const options = new Map<string, string>();
    for (const flag of COMMAND_FLAGS[verb]) {
      options.set(flag.name, flags.get(flag.name) ?? flag.defaultValue);
      flags.delete(flag.name);
    }
    return { command: { kind: verb, options }, flags };
  }
  if (verb === 'ack') {
    if (help) return { command: { kind: 'help', topic: 'ack' }, flags };
    return { command: ackCommand(rest, flags), flags };
  }
  if (verb === 'check') {
    if (help) return { command: { kind: 'help', topic: 'check' }, flags };
    const checks = rest.flatMap((arg) => arg.split(',')).filter((name) => name !== '');
    if (checks.length === 0)
      throw new UsageError('check needs the names of the checks to run, or all');
    return { command: checkCommand(checks, flags), flags };
  }
  throw new UsageError(
    `unknown command ${JSON.stringify(verb)}; commands: serve, check, preflight, deepcheck, ack, help`,
  );
}

/** ack's node and options; the exporter's flags mean nothing to it, so they are refused. */
function ackCommand(rest: readonly string[], flags: Map<string, string>): Command {
  if (rest.length !== 1) {
    throw new UsageError(
      `ack needs exactly one node name (autopilot ack <node>), got ${rest.length === 0 ? 'none' : rest.join(' ')}`,
    );
  }
  const options = new Map<string, string>();
  for (const flag of COMMAND_FLAGS.ack) {
    options.set(flag.name, flags.get(flag.name) ?? flag.defaultValue);
    flags.delete(flag.name);
  }
  const stray = [...flags.keys()];
  if (stray.length > 0) {
    throw new UsageError(
      `ack takes only its own flags (autopilot ack --help), not --${stray.join(', --')}`,
    );
  }
  return { kind: 'ack', node: rest[0]!, options };
}

/** check's own options, taken out of `flags` (which then holds the exporter's alone). */
function checkCommand(checks: readonly string[], flags: Map<string, string>): Command {
  const output = flags.get('output') ?? 'table';
  const level = flags.get('level');
  flags.delete('output');
  flags.delete('level');
  if (output !== 'table' && output !== 'json') {
    throw new UsageError(`invalid --output ${JSON.stringify(output)}: expected table or json`);
  }
  if (level === undefined) return { kind: 'check', checks, output };
  if (!/^[1-4]$/.test(level)) {
    throw new UsageError(`invalid --level ${JSON.stringify(level)}: expected 1, 2, 3 or 4`);
  }
  // Only dcgm has levels: a --level that changes nothing would let a script believe it did.
  if (!checks.includes('dcgm') && !checks.includes('all')) {
    throw new UsageError('--level is the level of dcgm: name dcgm (or all) among the checks');
  }
  return { kind: 'check', checks, output, level: Number(level) };
}

/** The error for an unknown flag: the closest known one when it looks like a typo, then all. */
function unknownFlag(arg: string, name: string, argv: readonly string[]): string {
  const known = [...commandFlagNames(argv), ...FLAGS.map((f) => f.name)];
  let best: { name: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = editDistance(name, candidate);
    if (best === undefined || distance < best.distance) best = { name: candidate, distance };
  }
  // Two edits at most, and fewer than half the letters: -x is not a typo of -w.
  const hint =
    best !== undefined && best.distance <= 2 && best.distance < name.length / 2
      ? ` did you mean --${best.name}?`
      : '';
  return `unknown flag ${arg};${hint} flags: ${known.map((f) => `--${f}`).join(', ')}`;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The flags the command named in argv accepts beside the exporter's. */
function commandFlagNames(argv: readonly string[]): ReadonlySet<string> {
  const verb = argv.find(
    (arg) => arg === 'preflight' || arg === 'deepcheck' || arg === 'check' || arg === 'ack',
  );
  return new Set(verb === undefined ? [] : COMMAND_FLAGS[verb].map((flag) => flag.name));
}

function topicOf(word: string | undefined): HelpTopic {
  return word === 'serve' ||
    word === 'check' ||
    word === 'preflight' ||
    word === 'deepcheck' ||
    word === 'ack'
    ? word
    : 'main';
}

/** What preflight and deepcheck do, above their flags in their help. */
const COMMAND_USAGE: Readonly<Record<'preflight' | 'deepcheck' | 'ack', readonly string[]>> = {
  ack: [
    'Usage: autopilot ack <node> [flags]',
    '',
    "Lifts the node's EVICT, from any machine with a kubeconfig: writes the annotation",
    'autopilot.ibm.com/acknowledge on the Node with your own credentials (RBAC: patch nodes), and',
    "waits until the node's exporter has taken it and the gpuhealth label has left EVICT.",
    '',
    'Exit status: 0 when the EVICT was lifted (or the node was not EVICT), 1 when it was not lifted',
    'within --timeout (a request no exporter took is then withdrawn), 2 on bad usage, 3 when the',
    'Kubernetes API refused or could not be reached.',
  ],
  preflight: [
    'Usage: autopilot preflight [flags]',
    '',
    'For an initContainer: asks the exporters (through --url) for the node NODE_NAME, with results',
    'not older than --max-age (the checks run again when they are older), prints a short report, and',
    'exits 0 when the node may run the job, 1 when it may not (see --fail-on) or cannot be asked',
    '(see --on-unreachable), 2 on a bad option.',
  ],
  deepcheck: [
    'Usage: autopilot deepcheck [flags]',
    '',
    'Run by the deep-check Job, which holds all the GPUs of the node: DCGM diagnostics level 3 and',
    'gpumem. Prints a table, writes a JSON report to --report-file for the exporter that created',
    'the Job, and exits 0 when nothing failed, 1 otherwise.',
  ],
};

/** A command's own flags, as Go's flag package shows them (no default for an empty one). */
function ownFlagLines(command: keyof typeof COMMAND_FLAGS): string[] {
  return COMMAND_FLAGS[command].map(
    (f: { name: string; defaultValue: string; help: string }) =>
      `  --${f.name.padEnd(22)} ${f.help}${f.defaultValue === '' ? '' : ` (default ${f.defaultValue})`}`,
  );
}

export interface HelpContext {
  readonly checks: readonly { readonly name: string; readonly summary: string }[];
}

export function helpText(topic: HelpTopic, context: HelpContext): string {
  // Go's flag package shows no default for an empty string; neither does this.
  const flagLines = FLAGS.map(
    (f) =>
      `  --${f.name.padEnd(22)} ${f.help}${f.defaultValue === '' ? '' : ` (default ${f.defaultValue})`}`,
  );
  const envLines = ENV_SETTINGS.map(
    ([name, fallback, meaning]) =>
      `  ${name.padEnd(30)} ${meaning}${fallback === '' ? '' : ` (default: ${fallback})`}`,
  );
  const checkLines = context.checks.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`);
  switch (topic) {
    case 'main':
      return [
        'autopilot: GPU-node health checks for Kubernetes AI clusters.',
        '',
        'Usage:',
        '  autopilot [serve] [flags]        run the exporter (the default command)',
        '  autopilot check <checks…> [flags] run checks once on this node and print a table',
        '  autopilot preflight [flags]      before a job: is this node healthy? (exit 0, 1 or 2)',
        '  autopilot deepcheck [flags]      inside the deep-check Job: DCGM level 3 and gpumem',
        "  autopilot ack <node> [flags]     lift a node's EVICT with your kubeconfig (exit 0, 1, 2 or 3)",
        '  autopilot <command> --help       help for one command',
        '  autopilot --version              the version',
        '',
        'Flags:',
        ...flagLines,
        '',
        'Checks:',
        ...checkLines,
        '',
      ].join('\n');
    case 'serve':
      return [
        'Usage: autopilot [serve] [flags]',
        '',
        'Runs the exporter: the periodic round at start-up and then on the --w schedule, the API on',
        '--port (/status, /results and one endpoint per check), /metrics on AUTOPILOT_METRICS_PORT and',
        '/readinessprobe on AUTOPILOT_READINESS_PORT. Logs are JSON lines on stderr, also appended to',
        '--logfile when it is set. SIGTERM or SIGINT stops running checks and exits.',
        '',
        'Flags:',
        ...flagLines,
        '',
        'Environment:',
        ...envLines,
        '',
      ].join('\n');
    case 'preflight':
    case 'deepcheck':
      return [
        ...COMMAND_USAGE[topic],
        '',
        'Flags:',
        ...ownFlagLines(topic),
        '',
        // Its own flags only: the exporter's are accepted too, and serve --help lists them.
        "The exporter's flags and environment variables are accepted too (autopilot serve --help).",
        '',
      ].join('\n');
    case 'ack':
      return [...COMMAND_USAGE.ack, '', 'Flags:', ...ownFlagLines('ack'), ''].join('\n');
    case 'check':
      return [
        'Usage: autopilot check <check>[,<check>…] [flags]',
        '',
        'Runs the named checks once on this node (all = the periodic list) and prints one row per device.',
        'The exporter does not need to be running.',
        '',
        'Exit status: 0 when no check reported FAIL or ERROR (PASS, WARN, SKIP), 1 when one reported',
        'FAIL, 3 when none failed but one reported ERROR (it could not tell), 2 on bad usage.',
        '',
        'Checks:',
        ...checkLines,
        '',
        'Flags:',
        ...ownFlagLines('check'),
        '',
        "The exporter's flags and environment variables apply too (autopilot serve --help).",
        '',
      ].join('\n');
  }
}
