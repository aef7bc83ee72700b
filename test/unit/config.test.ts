import { describe, test, expect } from '@jest/globals';
import {
  AUTOPILOT_PERIODIC_CHECKS,
  ConfigError,
  ENV_SETTINGS,
  FLAGS,
  parseConfig,
  type Config,
  type ConfigInputs,
  type Env,
} from '../../exporter/config/config.js';
import { SCHEDULE_ACCEPTED } from '../../exporter/config/schedule.js';
import { FATAL_ERROR_NAMES_HELP } from '../../exporter/checks/dcgm-report.js';
import { pingSettings, type PingSettingValues } from '../../exporter/checks/ping.js';
import { thrownBy } from '../fakes/errors.js';

interface Inputs {
  readonly flags?: Readonly<Record<string, string>>;
  readonly env?: Env;
  readonly hostname?: string;
  readonly knownChecks?: readonly string[];
}

function inputs(given: Inputs = {}): ConfigInputs {
  return {
    flags: new Map(Object.entries(given.flags ?? {})),
    env: given.env ?? {},
    hostname: given.hostname ?? 'gpu-node-1',
    knownChecks: given.knownChecks ?? ['ping'],
  };
}

const configError = (given: Inputs): ConfigError =>
  thrownBy(ConfigError, () => parseConfig(inputs(given)), 'parseConfig accepted the configuration');

const ALL_CHECKS = ['pciebw', 'remapped', 'dcgm', 'ping', 'gpupower', 'pvc'];
/** Autopilot's default periodic list as ALL_CHECKS limits it: pvc is not periodic by default. */
const DEFAULT_PERIODIC = ['pciebw', 'remapped', 'dcgm', 'ping', 'gpupower'];

describe('parseConfig port 0', () => {
  test('0 means any free port, and several listeners may all ask for it', () => {
    const config = parseConfig(
      inputs({
        flags: { port: '0' },
        env: { AUTOPILOT_METRICS_PORT: '0', AUTOPILOT_READINESS_PORT: '0' },
      }),
    );
    expect([config.apiPort, config.metricsPort, config.readinessPort]).toEqual([0, 0, 0]);
  });
});

describe('parseConfig defaults', () => {
  test('no flags and no environment give the documented defaults', () => {
    const expected: Config = {
      nodeName: 'gpu-node-1',
      namespace: undefined,
      podName: undefined,
      listenAddress: undefined,
      apiPort: 3333,
      metricsPort: 8081,
      readinessPort: 8080,
      bandwidthThresholdGBps: 4,
      periodic: { kind: 'interval', everyMs: 3_600_000 },
      deepCheckSchedule: { kind: 'interval', everyMs: 14_400_000 },
      logLevel: 'info',
      periodicChecks: ['ping'],
      peers: [],
      checkSettings: new Map<string, unknown>([
        ['pciebw', { AUTOPILOT_PCIEBW_WARN_SHARE: 0.8, AUTOPILOT_PCIEBW_SIBLING_SHARE: 0.75 }],
        [
          'xid',
          {
            AUTOPILOT_XID_FATAL: [
              46, 48, 62, 64, 74, 79, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158, 160,
              162,
            ],
            AUTOPILOT_XID_WARN: 'all',
          },
        ],
        ['nvlink', { AUTOPILOT_NVLINK_ERROR_RATE: 100, AUTOPILOT_NVLINK_EXPECTED_LINKS: 'auto' }],
        [
          'gpumem',
          {
            AUTOPILOT_GPUMEM_FAIL_SHARE: 0.5,
            AUTOPILOT_GPUMEM_WARN_SHARE: 0.6,
            AUTOPILOT_GPUMEM_SIBLING_SHARE: 0.85,
          },
        ],
        [
          'p2pbw',
          {
            AUTOPILOT_P2PBW_FAIL_SHARE: 0.5,
            AUTOPILOT_P2PBW_WARN_SHARE: 0.8,
          },
        ],
        [
          'ping',
          {
            AUTOPILOT_PING_COUNT: 3,
            AUTOPILOT_PING_REPLY_TIMEOUT: 1000,
            AUTOPILOT_PING_CONCURRENCY: 64,
            AUTOPILOT_PING_COMMAND: 'ping',
            AUTOPILOT_PING_SAMPLE: 'auto',
            AUTOPILOT_PING_COVERAGE: 7_200_000,
            AUTOPILOT_PING_TOPK: 20,
            AUTOPILOT_PING_COMPAT_MAX_PEERS: 500,
          },
        ],
      ]),
      podSelector: 'app=autopilot',
      iperfCommand: 'iperf3',
      dcgmiCommand: 'dcgmi',
      deepcheckImage: undefined,
      deepcheckCommand: ['autopilot', 'deepcheck'],
      deepcheckPriorityClass: undefined,
      deepcheckRuntimeClass: undefined,
      deepcheckPullSecrets: [],
      postflightChecks: [],
      historySize: 20,
      dcgmFatalErrors: ['PCIe', 'NVLink', 'ECC', 'GPU Memory'],
      deepCheckJobTtlSeconds: 30,
      pvcStorageClass: undefined,
      nvmlCheckTimeoutMs: 30_000,
      checkTimeoutsMs: new Map(),
      nvmlLibrary: 'libnvidia-ml.so.1',
      cudaProbeLibrary: undefined,
      expectedGpus: undefined,
      kubernetes: 'auto',
      kubeconfigPath: undefined,
      serviceName: 'autopilot-healthchecks',
      kubeRequestTimeoutMs: 10_000,
      fanoutConcurrency: 128,
      apiToken: undefined,
      apiAccess: {
        invasive: 'kubernetes',
        iperf: 'kubernetes',
        pvc: 'kubernetes',
        acknowledge: 'kubernetes',
      },
      evictOn: 'all',
      taint: { effect: 'none', maxFraction: 0.2, dryRun: false },
      nodeCondition: 'GPUHealthy',
      nodeConditionHeartbeatMs: 300_000,
      pvc: { accessMode: 'ReadWriteMany', size: '100Mi', bindTimeoutMs: 90_000 },
    };
    expect(parseConfig(inputs())).toEqual(expected);
  });

  test('the flag table holds the defaults of Autopilot', () => {
    expect(FLAGS.map((f) => [f.name, f.defaultValue])).toEqual([
      ['port', '3333'],
      ['bw', '4'],
      ['w', '1h'],
      ['invasive-check-timer', '4h'],
      ['loglevel', '2'],
      ['logfile', ''],
    ]);
  });

  test('empty or blank environment variables count as unset', () => {
    const env: Env = Object.fromEntries(ENV_SETTINGS.map(([name]) => [name, '  ']));
    expect(parseConfig(inputs({ env }))).toEqual(parseConfig(inputs()));
  });

  test('the default periodic list is Autopilot’s, in its order, then gpucount and nvlink, limited to known checks', () => {
    expect(AUTOPILOT_PERIODIC_CHECKS).toEqual([...DEFAULT_PERIODIC, 'gpucount', 'nvlink']);
    expect(parseConfig(inputs({ knownChecks: ALL_CHECKS })).periodicChecks).toEqual(
      DEFAULT_PERIODIC,
    );
    expect(parseConfig(inputs({ knownChecks: ['pvc'] })).periodicChecks).toEqual([]);
    expect(parseConfig(inputs({ knownChecks: ['gpucount', 'ping'] })).periodicChecks).toEqual([
      'ping',
      'gpucount',
    ]);
  });

  test.each([
    ['8', 8],
    [' 0 ', 0],
    ['64', 64],
  ])('AUTOPILOT_EXPECTED_GPUS %j is %d', (value, count) => {
    expect(parseConfig(inputs({ env: { AUTOPILOT_EXPECTED_GPUS: value } })).expectedGpus).toBe(
      count,
    );
  });

  test.each(['65', '-1', '8.5', 'eight'])('AUTOPILOT_EXPECTED_GPUS %j is refused', (value) => {
    expect(() => parseConfig(inputs({ env: { AUTOPILOT_EXPECTED_GPUS: value } }))).toThrow(
      `invalid AUTOPILOT_EXPECTED_GPUS ${JSON.stringify(value)}: expected a whole number of GPUs from 0 to 64, or unset to ask Kubernetes`,
    );
  });

  test('parseConfig reads exactly the environment variables that ENV_SETTINGS documents', () => {
    const read = new Set<string>();
    const env = new Proxy<Record<string, string | undefined>>(
      {},
      {
        get(_target, key) {
          if (typeof key === 'string') read.add(key);
          return undefined;
        },
      },
    );
    parseConfig(inputs({ env }));
    expect([...read].sort()).toEqual(ENV_SETTINGS.map(([name]) => name).sort());
  });
});

describe('parseConfig settings', () => {
  test('flags set ports, bandwidth, schedules and log level', () => {
    const config = parseConfig(
      inputs({
        flags: {
          port: '4000',
          bw: '12.5',
          w: '30m',
          'invasive-check-timer': '0 3 * * *',
          loglevel: 'warn',
        },
      }),
    );
    expect(config.apiPort).toBe(4000);
    expect(config.bandwidthThresholdGBps).toBe(12.5);
    expect(config.periodic).toEqual({ kind: 'interval', everyMs: 1_800_000 });
    expect(config.deepCheckSchedule).toEqual({ kind: 'cron', expression: '0 3 * * *' });
    expect(config.logLevel).toBe('warn');
  });

  test('environment sets the other ports and the listen address', () => {
    const config = parseConfig(
      inputs({
        env: {
          AUTOPILOT_METRICS_PORT: '9100',
          AUTOPILOT_READINESS_PORT: ' 9101 ',
          AUTOPILOT_LISTEN_ADDRESS: '::',
        },
      }),
    );
    expect([config.apiPort, config.metricsPort, config.readinessPort]).toEqual([3333, 9100, 9101]);
    expect(config.listenAddress).toBe('::');
    expect(
      parseConfig(inputs({ env: { AUTOPILOT_LISTEN_ADDRESS: '0.0.0.0' } })).listenAddress,
    ).toBe('0.0.0.0');
  });

  // Autopilot 2.1.3's chart renders `repeat: 1` as `--w 1`, a Go int counted in hours.
  test.each<[Record<string, string>, 'periodic' | 'deepCheckSchedule', number]>([
    [{ w: '1' }, 'periodic', 3_600_000],
    [{ w: '24' }, 'periodic', 86_400_000],
    [{ 'invasive-check-timer': '4' }, 'deepCheckSchedule', 14_400_000],
  ])('whole hours as Autopilot 2.1.3 took them: %j', (flags, field, everyMs) => {
    expect(parseConfig(inputs({ flags }))[field]).toEqual({ kind: 'interval', everyMs });
  });

  test('--logfile is kept; empty or absent means none', () => {
    expect(parseConfig(inputs({ flags: { logfile: '/var/log/autopilot.log' } })).logFile).toBe(
      '/var/log/autopilot.log',
    );
    expect(parseConfig(inputs({ flags: { logfile: '' } })).logFile).toBeUndefined();
    expect(parseConfig(inputs()).logFile).toBeUndefined();
  });

  test('--w 0 disables the periodic round', () => {
    expect(parseConfig(inputs({ flags: { w: '0' } })).periodic).toEqual({ kind: 'disabled' });
  });

  test('--w takes a cron expression', () => {
    expect(parseConfig(inputs({ flags: { w: '*/15 * * * *' } })).periodic).toEqual({
      kind: 'cron',
      expression: '*/15 * * * *',
    });
  });

  test('--invasive-check-timer 0 disables the deep check', () => {
    expect(
      parseConfig(inputs({ flags: { 'invasive-check-timer': '0' } })).deepCheckSchedule,
    ).toEqual({
      kind: 'disabled',
    });
  });

  test.each<[string, Config['logLevel']]>([
    ['0', 'info'],
    ['2', 'info'],
    ['3', 'debug'],
    ['4', 'debug'],
    ['10', 'debug'],
    ['debug', 'debug'],
    ['DEBUG', 'debug'],
    ['info', 'info'],
    ['warn', 'warn'],
    ['error', 'error'],
  ])('--loglevel %j is %s', (value, level) => {
    expect(parseConfig(inputs({ flags: { loglevel: value } })).logLevel).toBe(level);
  });

  test('the node name comes from the host name, and NODE_NAME overrides it', () => {
    expect(parseConfig(inputs({ hostname: 'worker-7.cluster.local' })).nodeName).toBe(
      'worker-7.cluster.local',
    );
    expect(
      parseConfig(inputs({ hostname: 'worker-7', env: { NODE_NAME: 'gpu-node-42' } })).nodeName,
    ).toBe('gpu-node-42');
  });

  test('NODE_NAME is used even when the host name would be invalid', () => {
    expect(
      parseConfig(inputs({ hostname: 'not_valid', env: { NODE_NAME: 'gpu-node-42' } })).nodeName,
    ).toBe('gpu-node-42');
  });

  test('NAMESPACE and POD_NAME are passed through', () => {
    const config = parseConfig(
      inputs({ env: { NAMESPACE: 'autopilot', POD_NAME: 'autopilot-abc12' } }),
    );
    expect(config.namespace).toBe('autopilot');
    expect(config.podName).toBe('autopilot-abc12');
  });

  test.each<[string, string[]]>([
    ['a', ['a']],
    ['a,b', ['a', 'b']],
    ['a, b , c', ['a', 'b', 'c']],
    ['a b\tc', ['a', 'b', 'c']],
    [',a,,b,', ['a', 'b']],
    ['a,b,a, b', ['a', 'b']],
    ['10.0.0.1,10.0.0.2 fd00::1', ['10.0.0.1', '10.0.0.2', 'fd00::1']],
    ['node-1.example.com,NODE-2', ['node-1.example.com', 'NODE-2']],
  ])('AUTOPILOT_PEERS %j', (value, peers) => {
    expect(parseConfig(inputs({ env: { AUTOPILOT_PEERS: value } })).peers).toEqual(peers);
  });

  test("the deep-check Job's RuntimeClass and pull Secrets: names, trimmed, empty items dropped", () => {
    const config = parseConfig(
      inputs({
        env: {
          AUTOPILOT_DEEPCHECK_RUNTIME_CLASS: 'nvidia',
          AUTOPILOT_DEEPCHECK_PULL_SECRETS: ' registry-a, ,registry-b ',
        },
      }),
    );
    expect(config.deepcheckRuntimeClass).toBe('nvidia');
    expect(config.deepcheckPullSecrets).toEqual(['registry-a', 'registry-b']);
  });

  test('PERIODIC_CHECKS picks checks, trims, drops empty items and duplicates', () => {
    const parse = (value: string): readonly string[] =>
      parseConfig(inputs({ env: { PERIODIC_CHECKS: value }, knownChecks: ALL_CHECKS }))
        .periodicChecks;
    expect(parse('ping')).toEqual(['ping']);
    expect(parse(' pvc , ping ,')).toEqual(['pvc', 'ping']);
    expect(parse('ping,ping,dcgm')).toEqual(['ping', 'dcgm']);
  });

  test('gpucount joins every periodic list, IBM chart’s own included', () => {
    const known = [...ALL_CHECKS, 'gpucount'];
    const parse = (value: string): readonly string[] =>
      parseConfig(inputs({ env: { PERIODIC_CHECKS: value }, knownChecks: known })).periodicChecks;
    expect(parse(DEFAULT_PERIODIC.join(','))).toEqual([...DEFAULT_PERIODIC, 'gpucount']);
    expect(parse('gpucount,ping')).toEqual(['gpucount', 'ping']);
  });

  test('PERIODIC_CHECKS=all expands to the default list', () => {
    expect(
      parseConfig(inputs({ env: { PERIODIC_CHECKS: 'all' }, knownChecks: ALL_CHECKS }))
        .periodicChecks,
    ).toEqual(DEFAULT_PERIODIC);
    expect(parseConfig(inputs({ env: { PERIODIC_CHECKS: 'all' } })).periodicChecks).toEqual([
      'ping',
    ]);
    expect(
      parseConfig(inputs({ env: { PERIODIC_CHECKS: 'pvc,all,ping' }, knownChecks: ALL_CHECKS }))
        .periodicChecks,
    ).toEqual(['pvc', ...DEFAULT_PERIODIC]);
  });

  test('ping settings', () => {
    const config = parseConfig(
      inputs({
        env: {
          AUTOPILOT_PING_COMMAND: '/usr/bin/ping',
          AUTOPILOT_PING_COUNT: '100',
          AUTOPILOT_PING_REPLY_TIMEOUT: '500ms',
          AUTOPILOT_PING_CONCURRENCY: '1024',
          AUTOPILOT_PING_SAMPLE: '0',
          AUTOPILOT_PING_COVERAGE: '30m',
          AUTOPILOT_PING_TOPK: '5',
          AUTOPILOT_PING_COMPAT_MAX_PEERS: '0',
        },
      }),
    );
    expect(pingSettings(config.checkSettings.get('ping') as PingSettingValues)).toEqual({
      command: '/usr/bin/ping',
      count: 100,
      replyTimeoutMs: 500,
      concurrency: 1024,
      sampleSize: 0,
      coverageMs: 1_800_000,
      topK: 5,
      compatMaxPeers: 0,
    });
    expect(() => parseConfig(inputs({ env: { AUTOPILOT_PING_SAMPLE: 'some' } }))).toThrow(
      'invalid AUTOPILOT_PING_SAMPLE "some": expected auto, or a whole number of peers from 0 (every peer) to 100000',
    );
  });

  test.each<[string, number]>([
    ['100ms', 100],
    ['1m', 60_000],
    ['2.5s', 2500],
  ])('AUTOPILOT_PING_REPLY_TIMEOUT %j at the limits', (value, ms) => {
    expect(
      parseConfig(inputs({ env: { AUTOPILOT_PING_REPLY_TIMEOUT: value } })).checkSettings.get(
        'ping',
      ),
    ).toMatchObject({ AUTOPILOT_PING_REPLY_TIMEOUT: ms });
  });

  test('AUTOPILOT_HISTORY_SIZE', () => {
    expect(parseConfig(inputs({ env: { AUTOPILOT_HISTORY_SIZE: '1' } })).historySize).toBe(1);
    expect(parseConfig(inputs({ env: { AUTOPILOT_HISTORY_SIZE: '1000' } })).historySize).toBe(1000);
  });

  test.each<[string, string[]]>([
    ['PCIe', ['PCIe']],
    ['PCIe,NVLink', ['PCIe', 'NVLink']],
    [' PCIe , GPU Memory ,', ['PCIe', 'GPU Memory']],
    [
      'ECC,memory_bandwidth,Targeted Stress,eud',
      ['ECC', 'memory_bandwidth', 'Targeted Stress', 'eud'],
    ],
  ])('DCGM_FATAL_ERRORS %j is a comma-separated list', (value, names) => {
    expect(parseConfig(inputs({ env: { DCGM_FATAL_ERRORS: value } })).dcgmFatalErrors).toEqual(
      names,
    );
  });

  test.each<[string, number[]]>([
    ['79', [79]],
    [' 48 , 79,79, 94 ,', [48, 79, 94]],
    ['999', [999]],
    ['none', []],
  ])('AUTOPILOT_XID_FATAL %j', (value, codes) => {
    expect(
      parseConfig(inputs({ env: { AUTOPILOT_XID_FATAL: value } })).checkSettings.get('xid'),
    ).toEqual({ AUTOPILOT_XID_FATAL: codes, AUTOPILOT_XID_WARN: 'all' });
  });

  test.each<[string, [string, number][]]>([
    ['', []],
    ['pciebw=5m', [['pciebw', 300_000]]],
    [
      ' gpumem=30m , dcgm.1=90s,dcgm.3=2h ',
      [
        ['gpumem', 1_800_000],
        ['dcgm.1', 90_000],
        ['dcgm.3', 7_200_000],
      ],
    ],
  ])('AUTOPILOT_CHECK_TIMEOUTS %j', (value, entries) => {
    const config = parseConfig(inputs({ env: { AUTOPILOT_CHECK_TIMEOUTS: value } }));
    expect([...config.checkTimeoutsMs]).toEqual(entries);
  });

  test.each(['ping=5m', 'pciebw', 'pciebw=0', 'dcgm=1h', 'gpumem=25h', 'pciebw=5 minutes'])(
    'AUTOPILOT_CHECK_TIMEOUTS %j is refused, naming the setting',
    (value) => {
      const error = configError({ env: { AUTOPILOT_CHECK_TIMEOUTS: value } });
      expect(error.message).toBe(
        `invalid AUTOPILOT_CHECK_TIMEOUTS ${JSON.stringify(value)}: expected comma-separated name=duration pairs, names pciebw, gpumem, p2pbw, dcgm.1, dcgm.2, dcgm.3, dcgm.4, durations from 1s to 24h, such as pciebw=5m,dcgm.3=2h`,
      );
    },
  );

  test.each<[string, number]>([
    ['0', 0],
    ['30', 30],
    ['3600', 3600],
    ['604800', 604_800],
  ])('INVASIVE_JOB_TTLSEC %j', (value, seconds) => {
    expect(
      parseConfig(inputs({ env: { INVASIVE_JOB_TTLSEC: value } })).deepCheckJobTtlSeconds,
    ).toBe(seconds);
  });

  test.each<[string, string | undefined]>([
    ['', undefined],
    ['  ', undefined],
    ['standard', 'standard'],
    ['fast-ssd.example.com', 'fast-ssd.example.com'],
    [' ceph-rbd ', 'ceph-rbd'],
  ])('PVC_TEST_STORAGE_CLASS %j', (value, storageClass) => {
    expect(parseConfig(inputs({ env: { PVC_TEST_STORAGE_CLASS: value } })).pvcStorageClass).toBe(
      storageClass,
    );
  });
});

interface ErrorCase extends Inputs {
  readonly name: string;
  /** ConfigError.setting */
  readonly setting: string;
  /** The bad value as the message quotes it. */
  readonly value: string;
  /** What the message says is accepted. */
  readonly accepted: string;
}

const PORT = 'a TCP port number from 0 (any free port) to 65535';
const BW = 'a number of GB/s above 0, such as 4 or 12.5';
const LOGLEVEL = 'one of error, warn, info, debug, or a klog verbosity from 0 to 10';
const NODE = 'a node name made of letters, digits, "-" and "."';
const REPLY_TIMEOUT = 'a Go duration from 100ms to 1m, such as 1s or 500ms';
const STORAGE_CLASS = 'a StorageClass name (lower-case DNS subdomain)';

/** A flag given a bad value; the case is named "--flag value" unless `name` says more. */
function badFlag(
  flag: string,
  value: string,
  accepted: string,
  name = `--${flag} ${value}`,
): ErrorCase {
  return { name, flags: { [flag]: value }, setting: `--${flag}`, value, accepted };
}

/** An environment variable given a bad value; named "VARIABLE value" unless `name` says more. */
function badEnv(
  variable: string,
  value: string,
  accepted: string,
  name = `${variable} ${value}`,
): ErrorCase {
  return { name, env: { [variable]: value }, setting: variable, value, accepted };
}

const PEERS = (bad: string): string =>
  `a comma-separated list of host names or IP addresses (${JSON.stringify(bad)} is neither)`;

const ERROR_CASES: readonly ErrorCase[] = [
  ...['70000', 'abc', '-1', '80.5'].map((value) => badFlag('port', value, PORT)),
  badFlag('port', '', PORT, '--port empty'),
  badEnv('AUTOPILOT_METRICS_PORT', 'http', PORT),
  badEnv('AUTOPILOT_READINESS_PORT', '65536', PORT),
  {
    name: '--port equal to AUTOPILOT_METRICS_PORT',
    flags: { port: '9000' },
    env: { AUTOPILOT_METRICS_PORT: '9000' },
    setting: 'AUTOPILOT_METRICS_PORT',
    value: '9000',
    accepted: 'a port different from --port (9000)',
  },
  {
    name: '--port equal to the default metrics port',
    flags: { port: '8081' },
    setting: 'AUTOPILOT_METRICS_PORT',
    value: '8081',
    accepted: 'a port different from --port (8081)',
  },
  {
    name: '--port equal to the default readiness port',
    flags: { port: '8080' },
    setting: 'AUTOPILOT_READINESS_PORT',
    value: '8080',
    accepted: 'a port different from --port (8080)',
  },
  {
    name: 'AUTOPILOT_READINESS_PORT equal to AUTOPILOT_METRICS_PORT',
    env: { AUTOPILOT_METRICS_PORT: '9100', AUTOPILOT_READINESS_PORT: '9100' },
    setting: 'AUTOPILOT_READINESS_PORT',
    value: '9100',
    accepted: 'a port different from AUTOPILOT_METRICS_PORT (9100)',
  },
  ...['0', '-1', 'fast', '0.0', '1e3'].map((value) => badFlag('bw', value, BW)),
  badFlag('w', '2562048', SCHEDULE_ACCEPTED, '--w 2562048, more hours than a Go duration holds'),
  badFlag('w', '-1', SCHEDULE_ACCEPTED),
  badFlag(
    'invasive-check-timer',
    '1.5',
    SCHEDULE_ACCEPTED,
    '--invasive-check-timer 1.5, hours that are not whole',
  ),
  badFlag('w', '1x', SCHEDULE_ACCEPTED),
  badFlag('w', '-1h', SCHEDULE_ACCEPTED),
  badFlag('w', '61 * * * *', SCHEDULE_ACCEPTED, '--w with a bad cron expression'),
  badFlag('invasive-check-timer', '1d', SCHEDULE_ACCEPTED),
  badFlag('invasive-check-timer', 'soon', SCHEDULE_ACCEPTED),
  ...['loud', '11', '-1'].map((value) => badFlag('loglevel', value, LOGLEVEL)),
  badEnv(
    'PERIODIC_CHECKS',
    'ping,pciebw',
    'a comma-separated list of ping, all (unknown check "pciebw")',
    'PERIODIC_CHECKS with a check this build lacks',
  ),
  badEnv('PERIODIC_CHECKS', ',', 'a comma-separated list of ping, all'),
  badEnv('AUTOPILOT_PEERS', '-rf', PEERS('-rf')),
  badEnv('AUTOPILOT_PEERS', 'a b;c', PEERS('b;c')),
  badEnv('NODE_NAME', 'bad_name!', NODE),
  badEnv('AUTOPILOT_DEEPCHECK_RUNTIME_CLASS', 'Nvidia', 'a lower-case DNS name'),
  {
    name: 'AUTOPILOT_DEEPCHECK_PULL_SECRETS with one bad name, which the error names',
    env: { AUTOPILOT_DEEPCHECK_PULL_SECRETS: 'registry-a, bad_secret' },
    setting: 'AUTOPILOT_DEEPCHECK_PULL_SECRETS',
    value: 'bad_secret',
    accepted: 'a lower-case DNS name',
  },
  {
    name: 'a host name that is no node name',
    hostname: 'bad_host',
    setting: 'NODE_NAME',
    value: 'bad_host',
    accepted: NODE,
  },
  ...['0', '101'].map((value) =>
    badEnv('AUTOPILOT_PING_COUNT', value, 'a whole number from 1 to 100'),
  ),
  ...['10ms', '2m', 'x'].map((value) =>
    badEnv('AUTOPILOT_PING_REPLY_TIMEOUT', value, REPLY_TIMEOUT),
  ),
  badEnv(
    'AUTOPILOT_PING_REPLY_TIMEOUT',
    '1',
    REPLY_TIMEOUT,
    'AUTOPILOT_PING_REPLY_TIMEOUT 1 (no unit)',
  ),
  ...['0', '1025'].map((value) =>
    badEnv('AUTOPILOT_PING_CONCURRENCY', value, 'a whole number from 1 to 1024'),
  ),
  ...['0', '1001', 'many'].map((value) =>
    badEnv('AUTOPILOT_HISTORY_SIZE', value, 'a whole number from 1 to 1000'),
  ),
  badEnv('AUTOPILOT_LISTEN_ADDRESS', 'localhost', 'an IPv4 or IPv6 address such as 0.0.0.0 or ::'),
  badEnv(
    'DCGM_FATAL_ERRORS',
    ',,',
    'a comma-separated list of DCGM test names, such as PCIe,NVLink',
  ),
  badEnv(
    'DCGM_FATAL_ERRORS',
    'PCIe,NVLnik',
    `a comma-separated list of DCGM test names or error kinds ("NVLnik" is not): ${FATAL_ERROR_NAMES_HELP}`,
    'DCGM_FATAL_ERRORS naming no test and no error kind',
  ),
  ...[
    [',,', ''],
    ['48,seventy-nine', ' ("seventy-nine" is not)'],
    ['0', ' ("0" is not)'],
    ['1000', ' ("1000" is not)'],
    ['-1', ' ("-1" is not)'],
    ['7.5', ' ("7.5" is not)'],
  ].map(([value, why]) =>
    badEnv(
      'AUTOPILOT_XID_FATAL',
      value!,
      `a comma-separated list of XID codes from 1 to 999, such as 48,79,95, or none${why}`,
    ),
  ),
  ...['-5', '604801'].map((value) =>
    badEnv('INVASIVE_JOB_TTLSEC', value, 'a whole number from 0 to 604800'),
  ),
  badEnv('PVC_TEST_STORAGE_CLASS', 'Bad_Class', STORAGE_CLASS),
  badEnv(
    'PVC_TEST_STORAGE_CLASS',
    'Fast-SSD',
    STORAGE_CLASS,
    'PVC_TEST_STORAGE_CLASS with upper case (Kubernetes names are lower-case)',
  ),
];

describe('parseConfig errors', () => {
  test.each(ERROR_CASES)('$name', ({ setting, value, accepted, ...given }) => {
    const error = configError(given);
    expect(error.name).toBe('ConfigError');
    expect(error.setting).toBe(setting);
    expect(error.value).toBe(value);
    expect(error.message).toContain(setting);
    expect(error.message).toContain(JSON.stringify(value));
    expect(error.message).toContain(accepted);
    expect(error.message).toBe(`invalid ${setting} ${JSON.stringify(value)}: expected ${accepted}`);
  });
});

describe('API access and what may evict', () => {
  const parse = (env: Record<string, string>) => parseConfig(inputs({ env }));

  test('AUTOPILOT_API_ACCESS opens every group; a group of its own wins over it', () => {
    expect(parse({ AUTOPILOT_API_ACCESS: 'open' }).apiAccess).toEqual({
      invasive: 'open',
      iperf: 'open',
      pvc: 'open',
      acknowledge: 'open',
    });
    expect(
      parse({ AUTOPILOT_API_ACCESS: 'open', AUTOPILOT_API_ACCESS_ACKNOWLEDGE: 'kubernetes' })
        .apiAccess,
    ).toEqual({ invasive: 'open', iperf: 'open', pvc: 'open', acknowledge: 'kubernetes' });
    expect(parse({ AUTOPILOT_API_ACCESS_INVASIVE: ' Open ' }).apiAccess).toEqual({
      invasive: 'open',
      iperf: 'kubernetes',
      pvc: 'kubernetes',
      acknowledge: 'kubernetes',
    });
  });

  test.each([
    [
      { AUTOPILOT_API_ACCESS: 'yes' },
      'invalid AUTOPILOT_API_ACCESS "yes": expected one of kubernetes, open',
    ],
    [
      { AUTOPILOT_API_ACCESS_PVC: 'none' },
      'invalid AUTOPILOT_API_ACCESS_PVC "none": expected one of kubernetes, open',
    ],
    [
      { AUTOPILOT_API_ACCESS_INVASSIVE: 'open' },
      'invalid AUTOPILOT_API_ACCESS_INVASSIVE "open": expected no such setting: the groups are AUTOPILOT_API_ACCESS_INVASIVE, AUTOPILOT_API_ACCESS_IPERF, AUTOPILOT_API_ACCESS_PVC, AUTOPILOT_API_ACCESS_ACKNOWLEDGE',
    ],
  ])('%j is refused, naming the setting', (env, message) => {
    expect(() => parse(env)).toThrow(message);
  });

  test('AUTOPILOT_EVICT_ON is all by default, dcgm on request, and nothing else', () => {
    expect(parse({}).evictOn).toBe('all');
    expect(parse({ AUTOPILOT_EVICT_ON: 'dcgm' }).evictOn).toBe('dcgm');
    expect(() => parse({ AUTOPILOT_EVICT_ON: 'DCGM_ONLY' })).toThrow(
      'invalid AUTOPILOT_EVICT_ON "DCGM_ONLY": expected one of dcgm, all',
    );
  });
});
