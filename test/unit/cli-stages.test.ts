import { describe, expect, test } from '@jest/globals';
import {
  COMMAND_FLAGS,
  helpText,
  parseCommandLine,
  type HelpContext,
  type HelpTopic,
} from '../../exporter/cli.js';
import { FLAGS } from '../../exporter/config/config.js';
import { usageError } from '../fakes/usage-error.js';

const PREFLIGHT_DEFAULTS = new Map([
  ['url', 'http://autopilot-healthchecks.autopilot.svc:3333'],
  ['max-age', '1h'],
  ['checks', 'pciebw,remapped,gpupower'],
  ['fail-on', 'warn'],
  ['on-unreachable', 'fail'],
]);

describe('preflight command line', () => {
  test('every option given', () => {
    const line = parseCommandLine([
      'preflight',
      '--url',
      'http://x:3333',
      '--max-age',
      '30m',
      '--checks',
      'a,b',
      '--fail-on',
      'evict',
    ]);
    expect(line.command).toEqual({
      kind: 'preflight',
      options: new Map([
        ['url', 'http://x:3333'],
        ['max-age', '30m'],
        ['checks', 'a,b'],
        ['fail-on', 'evict'],
        ['on-unreachable', 'fail'],
      ]),
    });
    expect(line.flags).toEqual(new Map());
  });

  test('--on-unreachable=pass is an option of preflight alone', () => {
    const line = parseCommandLine(['preflight', '--on-unreachable=pass']);
    expect(line.command).toEqual({
      kind: 'preflight',
      options: new Map([...PREFLIGHT_DEFAULTS, ['on-unreachable', 'pass']]),
    });
    expect(usageError(['serve', '--on-unreachable', 'pass']).message).toMatch(
      /^unknown flag --on-unreachable;/,
    );
  });

  test('no options: the defaults', () => {
    const line = parseCommandLine(['preflight']);
    expect(line.command).toEqual({ kind: 'preflight', options: PREFLIGHT_DEFAULTS });
    expect(line.flags).toEqual(new Map());
  });

  test('one option given, the others defaulted, in the Go forms', () => {
    const line = parseCommandLine(['-fail-on=error', 'preflight', '-max-age', '5m']);
    expect(line.command).toEqual({
      kind: 'preflight',
      options: new Map([...PREFLIGHT_DEFAULTS, ['fail-on', 'error'], ['max-age', '5m']]),
    });
  });

  test("the exporter's own flags still work and stay out of the options", () => {
    const line = parseCommandLine(['preflight', '--loglevel', 'debug', '--checks=pciebw']);
    expect(line.command).toEqual({
      kind: 'preflight',
      options: new Map([...PREFLIGHT_DEFAULTS, ['checks', 'pciebw']]),
    });
    expect(line.flags).toEqual(new Map([['loglevel', 'debug']]));
  });

  test("deepcheck's --report-file is an unknown flag for preflight", () => {
    expect(usageError(['preflight', '--report-file', '/tmp/r']).message).toMatch(
      /^unknown flag --report-file; /,
    );
  });

  test('preflight options are unknown flags for other commands', () => {
    expect(usageError(['serve', '--url', 'http://x:3333']).message).toMatch(/^unknown flag --url;/);
    expect(usageError(['--max-age', '1h']).message).toMatch(/^unknown flag --max-age;/);
    expect(usageError(['check', 'ping', '--fail-on', 'warn']).message).toMatch(
      /^unknown flag --fail-on;/,
    );
    expect(usageError(['deepcheck', '--checks', 'a']).message).toMatch(/^unknown flag --checks;/);
  });

  test.each<[string, string[], string]>([
    [
      'a positional argument',
      ['preflight', 'gpu-node-1'],
      'preflight takes no arguments, got gpu-node-1',
    ],
    ['an option without value', ['preflight', '--url'], 'flag --url needs a value'],
    [
      'an option given twice',
      ['preflight', '--max-age', '1h', '--max-age=2h'],
      'flag --max-age is given more than once',
    ],
  ])('%s is an error', (_name, argv, message) => {
    expect(usageError(argv).message).toBe(message);
  });
});

describe('deepcheck command line', () => {
  test('--report-file', () => {
    const line = parseCommandLine(['deepcheck', '--report-file', '/tmp/r']);
    expect(line.command).toEqual({
      kind: 'deepcheck',
      options: new Map([['report-file', '/tmp/r']]),
    });
    expect(line.flags).toEqual(new Map());
  });

  test('defaults to the container termination log, and keeps exporter flags apart', () => {
    const line = parseCommandLine(['--bw=10', 'deepcheck']);
    expect(line.command).toEqual({
      kind: 'deepcheck',
      options: new Map([['report-file', '/dev/termination-log']]),
    });
    expect(line.flags).toEqual(new Map([['bw', '10']]));
  });

  test('takes no arguments', () => {
    expect(usageError(['deepcheck', 'dcgm']).message).toBe(
      'deepcheck takes no arguments, got dcgm',
    );
  });
});

describe('help for preflight and deepcheck', () => {
  test.each<[string, string[], HelpTopic]>([
    ['preflight --help', ['preflight', '--help'], 'preflight'],
    ['--help preflight', ['--help', 'preflight'], 'preflight'],
    ['help preflight', ['help', 'preflight'], 'preflight'],
    ['preflight -h with options', ['preflight', '--url', 'http://x', '-h'], 'preflight'],
    ['deepcheck --help', ['deepcheck', '--help'], 'deepcheck'],
    ['help deepcheck', ['help', 'deepcheck'], 'deepcheck'],
  ])('%s', (_name, argv, topic) => {
    expect(parseCommandLine(argv).command).toEqual({ kind: 'help', topic });
  });

  const context: HelpContext = { checks: [{ name: 'pciebw', summary: 'PCIe bandwidth' }] };

  test.each<['preflight' | 'deepcheck']>([['preflight'], ['deepcheck']])(
    '%s help lists its own flags with defaults, and not the exporter flags',
    (topic) => {
      const text = helpText(topic, context);
      expect(text.startsWith(`Usage: autopilot ${topic} [flags]\n`)).toBe(true);
      for (const flag of COMMAND_FLAGS[topic]) {
        expect(text).toContain(
          `  --${flag.name.padEnd(22)} ${flag.help} (default ${flag.defaultValue})\n`,
        );
      }
      for (const flag of FLAGS) expect(text).not.toContain(`  --${flag.name} `);
      expect(text).toContain('(autopilot serve --help)');
    },
  );

  test('preflight help says what the exit codes mean', () => {
    expect(helpText('preflight', context)).toContain(
      'exits 0 when the node may run the job, 1 when',
    );
  });

  test('the main help names both commands', () => {
    const text = helpText('main', context);
    expect(text).toContain('  autopilot preflight [flags]');
    expect(text).toContain('  autopilot deepcheck [flags]');
  });

  test('the help of another command does not list the preflight options', () => {
    expect(helpText('serve', context)).not.toContain('--fail-on');
    expect(helpText('deepcheck', context)).not.toContain('--fail-on');
    expect(helpText('preflight', context)).not.toContain('--report-file');
  });
});
