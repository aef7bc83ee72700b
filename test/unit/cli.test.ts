import { describe, test, expect } from '@jest/globals';
import {
  checkExitCode,
  UsageError,
  helpText,
  parseCommandLine,
  progressFields,
  type Command,
  type HelpContext,
} from '../../exporter/cli.js';
import { ENV_SETTINGS, FLAGS } from '../../exporter/config/config.js';
import { usageError } from '../fakes/usage-error.js';

const FLAG_LIST = '--port, --bw, --w, --invasive-check-timer, --loglevel, --logfile';

describe('check options and --version', () => {
  test('--output json and --level 3 are check options, not exporter flags', () => {
    const line = parseCommandLine(['check', 'dcgm', '--output', 'json', '--level=3', '--bw=5']);
    expect(line.command).toEqual({ kind: 'check', checks: ['dcgm'], output: 'json', level: 3 });
    expect(line.flags).toEqual(new Map([['bw', '5']]));
  });

  test.each<[string[], string]>([
    [['check', 'ping', '--output', 'yaml'], 'invalid --output "yaml": expected table or json'],
    [['check', 'dcgm', '--level', '5'], 'invalid --level "5": expected 1, 2, 3 or 4'],
    [['check', 'dcgm', '--level', 'high'], 'invalid --level "high": expected 1, 2, 3 or 4'],
    [
      ['check', 'ping', '--level', '3'],
      '--level is the level of dcgm: name dcgm (or all) among the checks',
    ],
  ])('%j is bad usage', (argv, message) => {
    expect(() => parseCommandLine(argv)).toThrow(new UsageError(message));
  });

  test('--output is not a flag of serve', () => {
    expect(() => parseCommandLine(['--output', 'json'])).toThrow(/^unknown flag --output;/);
  });

  test.each([['--version'], ['-version'], ['check', '--version']])('%s', (...argv) => {
    expect(parseCommandLine(argv).command).toEqual({ kind: 'version' });
  });

  test('check --help lists its own flags', () => {
    const text = helpText('check', { checks: [] });
    expect(text).toContain(`  --${'output'.padEnd(22)} table: one row per device`);
    expect(text).toContain(`  --${'level'.padEnd(22)} dcgm's diagnostic level, 1 to 4`);
  });
});

describe('progressFields: the "check still running" line', () => {
  test('a GPU check names the GPUs it covers (all of them), the check, params and elapsed time', () => {
    const fields = progressFields({ name: 'dcgm', deviceKind: 'gpu' }, { r: '3' }, 65_400);
    expect(fields).toEqual({
      check: 'dcgm',
      params: { r: '3' },
      gpus: 'all GPUs',
      elapsedSeconds: 65,
    });
  });

  test('a peer or node check names no GPU', () => {
    for (const deviceKind of ['peer', 'node'] as const) {
      const fields = progressFields({ name: 'ping', deviceKind }, {}, 5_000);
      expect(fields).toEqual({ check: 'ping', params: {}, elapsedSeconds: 5 });
    }
  });

  test('elapsed seconds round to the nearest second', () => {
    const at = (ms: number): unknown =>
      progressFields({ name: 'gpumem', deviceKind: 'gpu' }, {}, ms).elapsedSeconds;
    expect([at(4_499), at(4_500), at(10_001)]).toEqual([4, 5, 10]);
  });
});

describe('parseCommandLine commands', () => {
  test.each<[string, string[], Command]>([
    ['no arguments', [], { kind: 'serve' }],
    ['serve', ['serve'], { kind: 'serve' }],
    ['check ping', ['check', 'ping'], { kind: 'check', checks: ['ping'], output: 'table' }],
    [
      'check ping,ping2 x',
      ['check', 'ping,ping2', 'x'],
      { kind: 'check', checks: ['ping', 'ping2', 'x'], output: 'table' },
    ],
    ['check all', ['check', 'all'], { kind: 'check', checks: ['all'], output: 'table' }],
    [
      'check with empty items',
      ['check', ',ping,,', 'x,'],
      { kind: 'check', checks: ['ping', 'x'], output: 'table' },
    ],
  ])('%s', (_name, argv, command) => {
    const line = parseCommandLine(argv);
    expect(line.command).toEqual(command);
    expect(line.flags).toEqual(new Map());
  });
});

describe('parseCommandLine flags', () => {
  test.each<[string, string[]]>([
    ['--port 1', ['--port', '1']],
    ['--port=1', ['--port=1']],
    ['-port 1', ['-port', '1']],
    ['-port=1', ['-port=1']],
  ])('Go form %s', (_name, argv) => {
    const line = parseCommandLine(argv);
    expect(line.command).toEqual({ kind: 'serve' });
    expect(line.flags).toEqual(new Map([['port', '1']]));
  });

  test('every flag, in every form', () => {
    const line = parseCommandLine([
      '--port',
      '4000',
      '-bw=12.5',
      '--w=1h30m',
      '-invasive-check-timer',
      '0 3 * * *',
      '--loglevel=debug',
    ]);
    expect(line.flags).toEqual(
      new Map([
        ['port', '4000'],
        ['bw', '12.5'],
        ['w', '1h30m'],
        ['invasive-check-timer', '0 3 * * *'],
        ['loglevel', 'debug'],
      ]),
    );
  });

  test('a value after = is kept whole, even with = or spaces in it', () => {
    expect(parseCommandLine(['--w=*/15 * * * *']).flags.get('w')).toBe('*/15 * * * *');
    expect(parseCommandLine(['--w=a=b']).flags.get('w')).toBe('a=b');
    expect(parseCommandLine(['--port=']).flags.get('port')).toBe('');
  });

  test('flags before the command', () => {
    const line = parseCommandLine(['--port', '4000', '-w=0', 'serve']);
    expect(line.command).toEqual({ kind: 'serve' });
    expect(line.flags).toEqual(
      new Map([
        ['port', '4000'],
        ['w', '0'],
      ]),
    );
  });

  test('flags after the command', () => {
    const line = parseCommandLine(['serve', '--port', '4000', '-w=0']);
    expect(line.command).toEqual({ kind: 'serve' });
    expect(line.flags).toEqual(
      new Map([
        ['port', '4000'],
        ['w', '0'],
      ]),
    );
  });

  test('flags before, between and after check names', () => {
    const line = parseCommandLine([
      '--loglevel',
      'debug',
      'check',
      'ping',
      '--bw=5',
      'pciebw,dcgm',
      '-port',
      '4000',
    ]);
    expect(line.command).toEqual({
      kind: 'check',
      checks: ['ping', 'pciebw', 'dcgm'],
      output: 'table',
    });
    expect(line.flags).toEqual(
      new Map([
        ['loglevel', 'debug'],
        ['bw', '5'],
        ['port', '4000'],
      ]),
    );
  });

  test('the value of a flag is never taken for a command or a check name', () => {
    const line = parseCommandLine(['check', '--w', 'serve', 'ping']);
    expect(line.command).toEqual({ kind: 'check', checks: ['ping'], output: 'table' });
    expect(line.flags).toEqual(new Map([['w', 'serve']]));
  });
});

describe('parseCommandLine help', () => {
  test.each<[string, string[], 'serve' | 'check' | 'main']>([
    ['--help', ['--help'], 'main'],
    ['-help', ['-help'], 'main'],
    ['-h', ['-h'], 'main'],
    ['--h (Go accepts -h and -help with one or two dashes)', ['--h'], 'main'],
    ['help', ['help'], 'main'],
    ['help with an unknown topic', ['help', 'nothing'], 'main'],
    ['serve --help', ['serve', '--help'], 'serve'],
    ['--help serve', ['--help', 'serve'], 'serve'],
    ['help serve', ['help', 'serve'], 'serve'],
    ['check --help', ['check', '--help'], 'check'],
    ['--help check', ['--help', 'check'], 'check'],
    ['check ping -h', ['check', 'ping', '-h'], 'check'],
    ['help check', ['help', 'check'], 'check'],
    ['check --help with flags', ['--port', '1', 'check', '--help'], 'check'],
  ])('%s', (_name, argv, topic) => {
    expect(parseCommandLine(argv).command).toEqual({ kind: 'help', topic });
  });

  test('help keeps the flags it was given', () => {
    expect(parseCommandLine(['check', '--help', '--port=1']).flags).toEqual(
      new Map([['port', '1']]),
    );
  });
});

describe('parseCommandLine errors', () => {
  test.each<[string, string[], string]>([
    ['unknown flag', ['--verbose'], `unknown flag --verbose; flags: ${FLAG_LIST}`],
    ['unknown single-dash flag', ['-x', '1'], `unknown flag -x; flags: ${FLAG_LIST}`],
    [
      'unknown flag with a value',
      ['serve', '--portt=1'],
      `unknown flag --portt=1; did you mean --port? flags: ${FLAG_LIST}`,
    ],
    [
      "a typo of a command's own flag",
      ['preflight', '--on-unreachble=pass'],
      `unknown flag --on-unreachble=pass; did you mean --on-unreachable? flags: --url, --max-age, --checks, --fail-on, --on-unreachable, ${FLAG_LIST}`,
    ],
    [
      'a typo of check --output',
      ['check', 'ping', '-ouptut', 'json'],
      `unknown flag -ouptut; did you mean --output? flags: --output, --level, ${FLAG_LIST}`,
    ],
    ['flag without value', ['--port'], 'flag --port needs a value'],
    ['flag without value after a command', ['serve', '-w'], 'flag --w needs a value'],
    [
      'flag without value after check names',
      ['check', 'ping', '--loglevel'],
      'flag --loglevel needs a value',
    ],
    ['repeated flag', ['--port', '1', '--port', '2'], 'flag --port is given more than once'],
    [
      'repeated flag in different forms',
      ['-bw=1', 'serve', '--bw', '1'],
      'flag --bw is given more than once',
    ],
    [
      'unknown command',
      ['run'],
      'unknown command "run"; commands: serve, check, preflight, deepcheck, ack, help',
    ],
    [
      'a lone dash',
      ['-'],
      'unknown command "-"; commands: serve, check, preflight, deepcheck, ack, help',
    ],
    ['check with no names', ['check'], 'check needs the names of the checks to run, or all'],
    [
      'check with only commas',
      ['check', ',', ',,'],
      'check needs the names of the checks to run, or all',
    ],
    [
      'check with only flags',
      ['check', '--port', '1'],
      'check needs the names of the checks to run, or all',
    ],
    ['serve extra', ['serve', 'extra'], 'serve takes no arguments, got extra'],
    ['serve with two extras', ['serve', 'a', 'b'], 'serve takes no arguments, got a b'],
  ])('%s', (_name, argv, message) => {
    const error = usageError(argv);
    expect(error.name).toBe('UsageError');
    expect(error.message).toBe(message);
  });
});

describe('helpText', () => {
  const context: HelpContext = {
    checks: [
      { name: 'ping', summary: 'reachability of the peers' },
      { name: 'pciebw', summary: 'host-to-GPU bandwidth' },
    ],
  };

  test.each(['main', 'serve'] as const)('%s lists every flag with its default', (topic) => {
    const text = helpText(topic, context);
    for (const flag of FLAGS) {
      const line = text.split('\n').find((l) => l.startsWith(`  --${flag.name} `));
      const shown = flag.defaultValue === '' ? '' : ` (default ${flag.defaultValue})`;
      expect(line).toBe(`  --${flag.name.padEnd(22)} ${flag.help}${shown}`);
    }
    expect(text).toContain('--logfile');
    expect(text).toContain('--port');
    expect(text).toContain('--bw');
    expect(text).toContain('--w ');
    expect(text).toContain('--invasive-check-timer');
    expect(text).toContain('--loglevel');
  });

  test('serve lists every environment variable', () => {
    const text = helpText('serve', context);
    for (const [name] of ENV_SETTINGS) {
      expect(text).toMatch(new RegExp(`^  ${name} `, 'm'));
    }
    expect(ENV_SETTINGS.map(([name]) => name).sort()).toEqual([
      'AUTOPILOT_API_ACCESS',
      'AUTOPILOT_API_ACCESS_ACKNOWLEDGE',
      'AUTOPILOT_API_ACCESS_INVASIVE',
      'AUTOPILOT_API_ACCESS_IPERF',
      'AUTOPILOT_API_ACCESS_PVC',
      'AUTOPILOT_API_TOKEN',
      'AUTOPILOT_CHECK_TIMEOUTS',
      'AUTOPILOT_CUDA_PROBE_LIBRARY',
      'AUTOPILOT_DCGMI_COMMAND',
      'AUTOPILOT_DEEPCHECK_COMMAND',
      'AUTOPILOT_DEEPCHECK_IMAGE',
      'AUTOPILOT_DEEPCHECK_PRIORITY_CLASS',
      'AUTOPILOT_DEEPCHECK_PULL_SECRETS',
      'AUTOPILOT_DEEPCHECK_RUNTIME_CLASS',
      'AUTOPILOT_EVICT_ON',
      'AUTOPILOT_EXPECTED_GPUS',
      'AUTOPILOT_FANOUT_CONCURRENCY',
      'AUTOPILOT_GPUMEM_FAIL_SHARE',
      'AUTOPILOT_GPUMEM_SIBLING_SHARE',
      'AUTOPILOT_GPUMEM_WARN_SHARE',
      'AUTOPILOT_HISTORY_SIZE',
      'AUTOPILOT_IPERF_COMMAND',
      'AUTOPILOT_KUBERNETES',
      'AUTOPILOT_KUBE_TIMEOUT',
      'AUTOPILOT_LISTEN_ADDRESS',
      'AUTOPILOT_METRICS_PORT',
      'AUTOPILOT_NODE_CONDITION',
      'AUTOPILOT_NODE_CONDITION_HEARTBEAT',
      'AUTOPILOT_NVLINK_ERROR_RATE',
      'AUTOPILOT_NVLINK_EXPECTED_LINKS',
      'AUTOPILOT_NVML_CHECK_TIMEOUT',
      'AUTOPILOT_NVML_LIBRARY',
      'AUTOPILOT_P2PBW_FAIL_SHARE',
      'AUTOPILOT_P2PBW_WARN_SHARE',
      'AUTOPILOT_PCIEBW_SIBLING_SHARE',
      'AUTOPILOT_PCIEBW_WARN_SHARE',
      'AUTOPILOT_PEERS',
      'AUTOPILOT_PING_COMMAND',
      'AUTOPILOT_PING_COMPAT_MAX_PEERS',
      'AUTOPILOT_PING_CONCURRENCY',
      'AUTOPILOT_PING_COUNT',
      'AUTOPILOT_PING_COVERAGE',
      'AUTOPILOT_PING_REPLY_TIMEOUT',
      'AUTOPILOT_PING_SAMPLE',
      'AUTOPILOT_PING_TOPK',
      'AUTOPILOT_POD_SELECTOR',
      'AUTOPILOT_POSTFLIGHT_CHECKS',
      'AUTOPILOT_PVC_ACCESS_MODE',
      'AUTOPILOT_PVC_BIND_TIMEOUT',
      'AUTOPILOT_PVC_SIZE',
      'AUTOPILOT_READINESS_PORT',
      'AUTOPILOT_SERVICE',
      'AUTOPILOT_TAINT_DRY_RUN',
      'AUTOPILOT_TAINT_EFFECT',
      'AUTOPILOT_TAINT_MAX_FRACTION',
      'AUTOPILOT_XID_FATAL',
      'AUTOPILOT_XID_WARN',
      'DCGM_FATAL_ERRORS',
      'INVASIVE_JOB_TTLSEC',
      'KUBECONFIG',
      'NAMESPACE',
      'NODE_NAME',
      'PERIODIC_CHECKS',
      'POD_NAME',
      'PVC_TEST_STORAGE_CLASS',
    ]);
  });

  test('serve shows environment defaults, and none for those without one', () => {
    const text = helpText('serve', context);
    expect(text).toContain('(default: 8081)');
    expect(text).toContain('(default: PCIe,NVLink,ECC,GPU Memory)');
    const namespace = text.split('\n').find((l) => l.startsWith('  NAMESPACE '));
    expect(namespace).toBe(`  ${'NAMESPACE'.padEnd(30)} namespace of the exporter pod`);
  });

  test('check gives the exit codes', () => {
    const text = helpText('check', context);
    expect(text).toContain('Usage: autopilot check <check>[,<check>…] [flags]');
    expect(text).toContain('Exit status: 0 when no check reported FAIL or ERROR');
    expect(text).toContain('1 when one reported\nFAIL, 3 when none failed but one reported ERROR');
    expect(text).toContain('2 on bad usage');
  });

  test.each<[string[], number]>([
    [[], 0],
    [['PASS', 'WARN', 'SKIP'], 0],
    [['PASS', 'FAIL'], 1],
    [['ERROR', 'PASS'], 3],
    [['ERROR', 'FAIL'], 1],
  ])('check exits, for verdicts %j, with %d', (verdicts, code) => {
    expect(checkExitCode(verdicts)).toBe(code);
  });

  test.each(['main', 'check'] as const)('%s lists the checks', (topic) => {
    const text = helpText(topic, context);
    expect(text).toContain(`  ${'ping'.padEnd(10)} reachability of the peers`);
    expect(text).toContain(`  ${'pciebw'.padEnd(10)} host-to-GPU bandwidth`);
  });

  test('main names the commands', () => {
    const text = helpText('main', context);
    expect(text).toContain('autopilot [serve] [flags]');
    expect(text).toContain('autopilot check <checks…> [flags]');
    expect(text).toContain('autopilot <command> --help');
  });
});

describe('autopilot ack', () => {
  test('one node and its own flags, with their defaults', () => {
    const { command } = parseCommandLine(['ack', 'node-c', '--reason', 'GPU 0 replaced']);
    expect(command).toEqual({
      kind: 'ack',
      node: 'node-c',
      options: new Map([
        ['kubeconfig', ''],
        ['context', ''],
        ['reason', 'GPU 0 replaced'],
        ['timeout', '2m'],
      ]),
    });
  });

  test.each([
    [['ack'], 'ack needs exactly one node name (autopilot ack <node>), got none'],
    [['ack', 'a', 'b'], 'ack needs exactly one node name (autopilot ack <node>), got a b'],
    [
      ['ack', 'a', '--port', '1'],
      'ack takes only its own flags (autopilot ack --help), not --port',
    ],
  ])('%j is refused: %s', (argv, message) => {
    expect(() => parseCommandLine(argv)).toThrow(message);
  });

  test('--help is its own page, with the exit statuses and every flag', () => {
    const { command } = parseCommandLine(['ack', '--help']);
    expect(command).toEqual({ kind: 'help', topic: 'ack' });
    const text = helpText('ack', { checks: [] });
    expect(text).toContain('Exit status: 0 when the EVICT was lifted');
    for (const flag of ['kubeconfig', 'context', 'reason', 'timeout']) {
      expect(text).toContain(`--${flag}`);
    }
    expect(helpText('main', { checks: [] })).toContain('autopilot ack <node> [flags]');
  });
});
