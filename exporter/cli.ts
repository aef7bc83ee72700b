/**
 * The command line: `autopilot [serve]`, `autopilot check <checks…>`, `--help` for each.
 * Flags follow Go's flag package as Autopilot's binary did: `--port 3333`, `--port=3333`,
 * `-port 3333`. Pure: main.ts feeds it argv and prints what it returns.
 */

import { ENV_SETTINGS, FLAGS, FLAG_NAMES } from './config/config.js';

export type Command =
  | { readonly kind: 'serve' }
  | { readonly kind: 'check'; readonly checks: readonly string[] }
  | { readonly kind: 'help'; readonly topic: 'serve' | 'check' | 'main' };

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
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (['--help', '-help', '-h', '--h'].includes(arg)) {
      help = true;
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (!FLAG_NAMES.has(name)) {
      throw new UsageError(
        `unknown flag ${arg}; flags: ${FLAGS.map((f) => `--${f.name}`).join(', ')}`,
      );
    }
    const value = eq >= 0 ? body.slice(eq + 1) : argv[i + 1];
    if (eq < 0) i++;
    if (value === undefined) throw new UsageError(`flag --${name} needs a value`);
    if (flags.has(name)) throw new UsageError(`flag --${name} is given more than once`);
    flags.set(name, value);
  }

  const [verb, ...rest] = positional;
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
  if (verb === 'check') {
    if (help) return { command: { kind: 'help', topic: 'check' }, flags };
    const checks = rest.flatMap((arg) => arg.split(',')).filter((name) => name !== '');
    if (checks.length === 0)
      throw new UsageError('check needs the names of the checks to run, or all');
    return { command: { kind: 'check', checks }, flags };
  }
  throw new UsageError(`unknown command ${JSON.stringify(verb)}; commands: serve, check, help`);
}

function topicOf(word: string | undefined): 'serve' | 'check' | 'main' {
  return word === 'serve' || word === 'check' ? word : 'main';
}

export interface HelpContext {
  readonly checks: readonly { readonly name: string; readonly summary: string }[];
}

export function helpText(topic: 'serve' | 'check' | 'main', context: HelpContext): string {
  const flagLines = FLAGS.map(
    (f) => `  --${f.name.padEnd(22)} ${f.help} (default ${f.defaultValue})`,
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
        '  autopilot <command> --help       help for one command',
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
        '/readinessprobe on AUTOPILOT_READINESS_PORT. Logs are JSON lines on stderr. SIGTERM or SIGINT',
        'stops running checks and exits.',
        '',
        'Flags:',
        ...flagLines,
        '',
        'Environment:',
        ...envLines,
        '',
      ].join('\n');
    case 'check':
      return [
        'Usage: autopilot check <check>[,<check>…] [flags]',
        '',
        'Runs the named checks once on this node (all = the periodic list), prints one row per device',
        'and exits 0 when no check failed, 1 when one reported FAIL or ERROR, and 2 on bad usage.',
        'The exporter does not need to be running.',
        '',
        'Checks:',
        ...checkLines,
        '',
        'Flags and environment variables are those of serve (autopilot serve --help).',
        '',
      ].join('\n');
  }
}
