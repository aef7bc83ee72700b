/**
 * Configuration: Autopilot's flags and environment variables with their meaning kept, new settings
 * under AUTOPILOT_*. parseConfig is pure and validates everything at once, so a bad setting stops
 * the program before anything starts, with one message naming the setting, the value and what is
 * accepted.
 */

import { isIP } from 'node:net';
import { DNS_NAME, LABEL_SELECTOR_CHARACTERS, isHostOrAddress } from '../net-names.js';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import { boundedInteger, wholeNumberRange } from '../params.js';
import { formatDuration, parseGoDuration } from './duration.js';
import { SCHEDULE_ACCEPTED, parseSchedule, type Schedule } from './schedule.js';
import { DEFAULT_XID_FATAL } from '../checks/xid.js';
import { DEFAULT_EVICT_ON, EVICT_MODES, type EvictOn } from '../node-health.js';

export interface PingSettings {
  readonly command: string;
  readonly count: number;
  readonly replyTimeoutMs: number;
  readonly concurrency: number;
  /** Peers pinged per round; 0 pings every peer every round. */
  readonly sampleSize?: number;
}

export interface Config {
  readonly nodeName: string;
  readonly namespace: string | undefined;
  readonly podName: string | undefined;
  readonly listenAddress: string | undefined;
  readonly apiPort: number;
  readonly metricsPort: number;
  readonly readinessPort: number;
  /** --bw: PCIe bandwidth threshold in GB/s. */
  readonly bandwidthThresholdGBps: number;
  /** --w: the periodic round. */
  readonly periodic: Schedule;
  /** --invasive-check-timer: when the deep check (a Job on idle GPUs) runs. */
  readonly deepCheckSchedule: Schedule;
  readonly logLevel: LogLevel;
  /** --logfile: a file the log lines are also appended to; undefined: stderr only. */
  readonly logFile?: string;
  readonly periodicChecks: readonly string[];
  readonly peers: readonly string[];
  readonly ping: PingSettings;
  /** The iperf3 executable. */
  readonly iperfCommand: string;
  /** The dcgmi executable. */
  readonly dcgmiCommand: string;
  /** The deep-check Job's image; undefined: no deep check (it needs the exporter's own image). */
  readonly deepcheckImage: string | undefined;
  readonly deepcheckCommand: readonly string[];
  readonly deepcheckPriorityClass: string | undefined;
  /** Checks run after a pod that held GPUs ends; empty disables post-flight. */
  readonly postflightChecks: readonly string[];
  /** Label selector of the Autopilot pods in NAMESPACE (their interfaces are what ping and iperf reach). */
  readonly podSelector: string;
  readonly historySize: number;
  readonly dcgmFatalErrors: readonly string[];
  /** AUTOPILOT_XID_FATAL: the XIDs that fail the xid check as fatal (the node is evicted). */
  readonly xidFatal: readonly number[];
  /** INVASIVE_JOB_TTLSEC: ttlSecondsAfterFinished of the deep-check Job. */
  readonly deepCheckJobTtlSeconds: number;
  readonly pvcStorageClass: string | undefined;
  /** Deadline of the checks that only read NVML (remapped, gpupower, ecc, xid). */
  readonly nvmlCheckTimeoutMs: number;
  /** AUTOPILOT_CHECK_TIMEOUTS: deadlines that replace a long-running check's default, by name. */
  readonly checkTimeoutsMs: ReadonlyMap<CheckTimeoutName, number>;
  /** Path or name of libnvidia-ml. */
  readonly nvmlLibrary: string;
  /** Path of the CUDA probe library; undefined means the one built into build/cuda/. */
  readonly cudaProbeLibrary: string | undefined;
  /** AUTOPILOT_EXPECTED_GPUS: GPUs this node should have; wins over what Kubernetes says. */
  readonly expectedGpus: number | undefined;
  /** auto: Kubernetes mode when in a cluster or KUBECONFIG is set; off: standalone. */
  readonly kubernetes: 'auto' | 'on' | 'off';
  /** KUBECONFIG: a kubeconfig file instead of the in-cluster service account. */
  readonly kubeconfigPath: string | undefined;
  /** The Service whose EndpointSlices list the Autopilot pods. */
  readonly serviceName: string;
  /** Deadline of each Kubernetes API call. */
  readonly kubeRequestTimeoutMs: number;
  /** Standalone mode's bearer token for protected actions; undefined disables them. */
  readonly apiToken: string | undefined;
  /** AUTOPILOT_API_ACCESS and AUTOPILOT_API_ACCESS_<GROUP>: how each group of protected calls is let in. */
  readonly apiAccess: ApiAccess;
  /** AUTOPILOT_EVICT_ON: which fatal findings evict the node. */
  readonly evictOn: EvictOn;
  readonly pvc: {
    readonly accessMode: string;
    readonly size: string;
    readonly bindTimeoutMs: number;
  };
}

/** The checks whose deadline AUTOPILOT_CHECK_TIMEOUTS sets: the long ones, dcgm per level. */
export const CHECK_TIMEOUT_NAMES = [
  'pciebw',
  'gpumem',
  'dcgm.1',
  'dcgm.2',
  'dcgm.3',
  'dcgm.4',
] as const;
export type CheckTimeoutName = (typeof CHECK_TIMEOUT_NAMES)[number];

/**
 * The groups of protected API calls whose access is set apart. invasive: what takes the GPUs, the
 * exclusive checks (dcgm r>=2, gpumem) and the deep check (/invasive), Autopilot's "invasive
 * checks"; iperf: the iperf check and the iperf3 server endpoints; pvc: the pvc check;
 * acknowledge: POST /acknowledge.
 */
export const API_ACCESS_GROUPS = ['invasive', 'iperf', 'pvc', 'acknowledge'] as const;
export type ApiAccessGroup = (typeof API_ACCESS_GROUPS)[number];
/** kubernetes: an authenticated, authorised caller (standalone: AUTOPILOT_API_TOKEN); open: anyone. */
export const API_ACCESS_MODES = ['kubernetes', 'open'] as const;
export type ApiAccessMode = (typeof API_ACCESS_MODES)[number];
export type ApiAccess = Readonly<Record<ApiAccessGroup, ApiAccessMode>>;
export const API_ACCESS_VARIABLE = 'AUTOPILOT_API_ACCESS';
export const apiAccessVariable = (group: ApiAccessGroup): string =>
  `${API_ACCESS_VARIABLE}_${group.toUpperCase()}`;

export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    readonly value: string,
    readonly accepted: string,
  ) {
    super(`invalid ${setting} ${JSON.stringify(value)}: expected ${accepted}`);
    this.name = 'ConfigError';
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface ConfigInputs {
  /** Flag values by name without dashes ("port", "w"), as the command line gave them. */
  readonly flags: ReadonlyMap<string, string>;
  readonly env: Env;
  readonly hostname: string;
  /** Names of the checks this build has, in catalogue order. */
  readonly knownChecks: readonly string[];
}

/** Autopilot's flags: name, default, what it means. Order is the order of --help. */
export const FLAGS = [
  { name: 'port', defaultValue: '3333', help: 'port of the health-check API' },
  { name: 'bw', defaultValue: '4', help: 'PCIe bandwidth threshold in GB/s (pciebw)' },
  { name: 'w', defaultValue: '1h', help: `periodic round: ${SCHEDULE_ACCEPTED}` },
  {
    name: 'invasive-check-timer',
    defaultValue: '4h',
    help: 'deep check on idle GPUs: a Go duration, whole hours as Autopilot 2.1 took them (0 disables), or a cron expression',
  },
  {
    name: 'loglevel',
    defaultValue: '2',
    help: 'error, warn, info or debug, or a klog verbosity number (0-2 info, 3 and above debug)',
  },
  {
    name: 'logfile',
    defaultValue: '',
    help: "a file the log lines are appended to as well as stderr (Autopilot's klog log_file)",
  },
] as const;

export const FLAG_NAMES: ReadonlySet<string> = new Set(FLAGS.map((f) => f.name));

/**
 * Autopilot's default periodic list, and gpucount (one cheap count that keeps a node whose GPUs
 * NVML cannot see from passing), limited to the checks this build has.
 */
export const AUTOPILOT_PERIODIC_CHECKS = [
  'pciebw',
  'remapped',
  'dcgm',
  'ping',
  'gpupower',
  'gpucount',
] as const;
export const DEFAULT_NVML_LIBRARY = 'libnvidia-ml.so.1';
/** The check every periodic round runs, whatever PERIODIC_CHECKS lists. */
const ALWAYS_PERIODIC = 'gpucount';
/** More than any one host holds: a larger AUTOPILOT_EXPECTED_GPUS is a typo. */
const MAX_EXPECTED_GPUS = 64;
const DEFAULT_DCGM_FATAL_ERRORS = ['PCIe', 'NVLink', 'ECC', 'GPU Memory'];

export function parseConfig(inputs: ConfigInputs): Config {
  const { env } = inputs;
  const flag = (name: (typeof FLAGS)[number]['name']): string =>
    inputs.flags.get(name) ?? FLAGS.find((f) => f.name === name)!.defaultValue;
  const setting = (name: string): string | undefined => {
    const value = env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };

  const apiPort = parsePort('--port', flag('port'));
  const metricsPort = parsePort(
    'AUTOPILOT_METRICS_PORT',
    setting('AUTOPILOT_METRICS_PORT') ?? '8081',
  );
  const readinessPort = parsePort(
    'AUTOPILOT_READINESS_PORT',
    setting('AUTOPILOT_READINESS_PORT') ?? '8080',
  );
  rejectSharedPorts({
    '--port': apiPort,
    AUTOPILOT_METRICS_PORT: metricsPort,
    AUTOPILOT_READINESS_PORT: readinessPort,
  });

  const nodeName = setting('NODE_NAME') ?? inputs.hostname;
  checkName('NODE_NAME', nodeName);

  return {
    nodeName,
    namespace: setting('NAMESPACE'),
    podName: setting('POD_NAME'),
    listenAddress: parseListenAddress(setting('AUTOPILOT_LISTEN_ADDRESS')),
    apiPort,
    metricsPort,
    readinessPort,
    bandwidthThresholdGBps: parsePositiveNumber(
      '--bw',
      flag('bw'),
      'a number of GB/s above 0, such as 4 or 12.5',
    ),
    periodic: parseScheduleSetting('--w', flag('w')),
    deepCheckSchedule: parseScheduleSetting('--invasive-check-timer', flag('invasive-check-timer')),
    logLevel: parseLogLevel(flag('loglevel')),
    ...(flag('logfile') === '' ? {} : { logFile: flag('logfile') }),
    periodicChecks: parseCheckList(setting('PERIODIC_CHECKS'), inputs.knownChecks),
    peers: parsePeers(setting('AUTOPILOT_PEERS')),
    ping: {
      command: setting('AUTOPILOT_PING_COMMAND') ?? 'ping',
      count: parseInteger('AUTOPILOT_PING_COUNT', setting('AUTOPILOT_PING_COUNT') ?? '3', 1, 100),
      replyTimeoutMs: parseDurationSetting(
        'AUTOPILOT_PING_REPLY_TIMEOUT',
        setting('AUTOPILOT_PING_REPLY_TIMEOUT') ?? '1s',
        100,
        60_000,
      ),
      concurrency: parseInteger(
        'AUTOPILOT_PING_CONCURRENCY',
        setting('AUTOPILOT_PING_CONCURRENCY') ?? '64',
        1,
        1024,
      ),
      sampleSize: parseInteger(
        'AUTOPILOT_PING_SAMPLE',
        setting('AUTOPILOT_PING_SAMPLE') ?? '0',
        0,
        100_000,
      ),
    },
    iperfCommand: setting('AUTOPILOT_IPERF_COMMAND') ?? 'iperf3',
    dcgmiCommand: setting('AUTOPILOT_DCGMI_COMMAND') ?? 'dcgmi',
    deepcheckImage: setting('AUTOPILOT_DEEPCHECK_IMAGE'),
    deepcheckCommand: (setting('AUTOPILOT_DEEPCHECK_COMMAND') ?? 'autopilot deepcheck').split(
      /\s+/,
    ),
    deepcheckPriorityClass: parseOptionalName(
      'AUTOPILOT_DEEPCHECK_PRIORITY_CLASS',
      setting('AUTOPILOT_DEEPCHECK_PRIORITY_CLASS'),
    ),
    postflightChecks: parsePostflight(setting('AUTOPILOT_POSTFLIGHT_CHECKS'), inputs.knownChecks),
    podSelector: parseSelectorSetting(
      'AUTOPILOT_POD_SELECTOR',
      setting('AUTOPILOT_POD_SELECTOR') ?? 'app=autopilot',
    ),
    historySize: parseInteger(
      'AUTOPILOT_HISTORY_SIZE',
      setting('AUTOPILOT_HISTORY_SIZE') ?? '20',
      1,
      1000,
    ),
    dcgmFatalErrors: parseFatalErrors(setting('DCGM_FATAL_ERRORS')),
    xidFatal: parseXidList(setting('AUTOPILOT_XID_FATAL')),
    deepCheckJobTtlSeconds: parseInteger(
      'INVASIVE_JOB_TTLSEC',
      setting('INVASIVE_JOB_TTLSEC') ?? '30',
      0,
      7 * 24 * 3600,
    ),
    pvcStorageClass: parseStorageClass(env.PVC_TEST_STORAGE_CLASS),
    nvmlCheckTimeoutMs: parseDurationSetting(
      'AUTOPILOT_NVML_CHECK_TIMEOUT',
      setting('AUTOPILOT_NVML_CHECK_TIMEOUT') ?? '30s',
      1000,
      600_000,
    ),
    checkTimeoutsMs: parseCheckTimeouts(setting('AUTOPILOT_CHECK_TIMEOUTS')),
    nvmlLibrary: setting('AUTOPILOT_NVML_LIBRARY') ?? DEFAULT_NVML_LIBRARY,
    cudaProbeLibrary: setting('AUTOPILOT_CUDA_PROBE_LIBRARY'),
    expectedGpus: parseExpectedGpus(setting('AUTOPILOT_EXPECTED_GPUS')),
    kubernetes: parseChoice('AUTOPILOT_KUBERNETES', setting('AUTOPILOT_KUBERNETES') ?? 'auto', [
      'auto',
      'on',
      'off',
    ]),
    kubeconfigPath: setting('KUBECONFIG'),
    serviceName: parseServiceName(setting('AUTOPILOT_SERVICE') ?? 'autopilot-healthchecks'),
    kubeRequestTimeoutMs: parseDurationSetting(
      'AUTOPILOT_KUBE_TIMEOUT',
      setting('AUTOPILOT_KUBE_TIMEOUT') ?? '10s',
      500,
      300_000,
    ),
    apiToken: setting('AUTOPILOT_API_TOKEN'),
    apiAccess: parseApiAccess(env),
    evictOn: parseChoice(
      'AUTOPILOT_EVICT_ON',
      setting('AUTOPILOT_EVICT_ON') ?? DEFAULT_EVICT_ON,
      EVICT_MODES,
    ),
    pvc: {
      accessMode: parseChoice(
        'AUTOPILOT_PVC_ACCESS_MODE',
        setting('AUTOPILOT_PVC_ACCESS_MODE') ?? 'ReadWriteMany',
        ['ReadWriteMany', 'ReadWriteOnce', 'ReadWriteOncePod', 'ReadOnlyMany'],
      ),
      size: parseQuantity('AUTOPILOT_PVC_SIZE', setting('AUTOPILOT_PVC_SIZE') ?? '100Mi'),
      bindTimeoutMs: parseDurationSetting(
        'AUTOPILOT_PVC_BIND_TIMEOUT',
        setting('AUTOPILOT_PVC_BIND_TIMEOUT') ?? '90s',
        1000,
        3_600_000,
      ),
    },
  };
}

function parseChoice<T extends string>(name: string, value: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new ConfigError(name, value, `one of ${choices.join(', ')}`);
}

/**
 * AUTOPILOT_API_ACCESS sets every group, AUTOPILOT_API_ACCESS_<GROUP> one group and wins. A
 * misspelt group is refused: on a setting that opens the API, a silently ignored typo misleads.
 */
function parseApiAccess(env: Env): ApiAccess {
  const accepted = `one of ${API_ACCESS_MODES.join(', ')} (kubernetes: authenticated callers only; open: anyone who reaches the API, as in IBM Autopilot)`;
  const read = (name: string, fallback: ApiAccessMode): ApiAccessMode => {
    const value = env[name]?.trim() ?? '';
    if (value === '') return fallback;
    const mode = value.toLowerCase();
    if (!(API_ACCESS_MODES as readonly string[]).includes(mode)) {
      throw new ConfigError(name, env[name] ?? '', accepted);
    }
    return mode as ApiAccessMode;
  };
  const known = new Set(API_ACCESS_GROUPS.map(apiAccessVariable));
  for (const name of Object.keys(env)) {
    if (name.startsWith(`${API_ACCESS_VARIABLE}_`) && !known.has(name)) {
      throw new ConfigError(
        name,
        env[name] ?? '',
        `no such setting: the groups are ${[...known].join(', ')}; ${API_ACCESS_VARIABLE} sets them all`,
      );
    }
  }
  const all = read(API_ACCESS_VARIABLE, 'kubernetes');
  const access = {} as Record<ApiAccessGroup, ApiAccessMode>;
  for (const group of API_ACCESS_GROUPS) access[group] = read(apiAccessVariable(group), all);
  return access;
}

function parseSelectorSetting(name: string, value: string): string {
  if (!LABEL_SELECTOR_CHARACTERS.test(value)) {
    throw new ConfigError(name, value, 'a label selector such as app=autopilot');
  }
  return value;
}

function parseOptionalName(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!DNS_NAME.test(value) || value !== value.toLowerCase()) {
    throw new ConfigError(name, value, 'a lower-case DNS name');
  }
  return value;
}

/** Default: the quick checks and DCGM level 1, those this build has; "none" disables post-flight. */
function parsePostflight(value: string | undefined, known: readonly string[]): string[] {
  const defaults = ['pciebw', 'remapped', 'gpupower', 'ecc', 'dcgm'].filter((n) =>
    known.includes(n),
  );
  if (value === undefined) return defaults;
  if (value === 'none') return [];
  const names = value
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  for (const name of names) {
    if (!known.includes(name)) {
      throw new ConfigError(
        'AUTOPILOT_POSTFLIGHT_CHECKS',
        value,
        `a comma-separated list of ${known.join(', ')}, or none (unknown check "${name}")`,
      );
    }
  }
  return [...new Set(names)];
}

function parseServiceName(value: string): string {
  if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(value)) {
    throw new ConfigError('AUTOPILOT_SERVICE', value, 'a Service name (lower-case DNS label)');
  }
  return value;
}

function parseQuantity(name: string, value: string): string {
  if (!/^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$/.test(value)) {
    throw new ConfigError(name, value, 'a Kubernetes quantity such as 100Mi or 1Gi');
  }
  return value;
}

function parsePort(name: string, value: string): number {
  return parseInteger(name, value, 0, 65535, 'a TCP port number from 0 (any free port) to 65535');
}

function rejectSharedPorts(ports: Readonly<Record<string, number>>): void {
  const seen = new Map<number, string>();
  for (const [name, port] of Object.entries(ports)) {
    if (port === 0) continue; // each listener gets its own free port
    const other = seen.get(port);
    if (other !== undefined) {
      throw new ConfigError(name, String(port), `a port different from ${other} (${port})`);
    }
    seen.set(port, name);
  }
}

function parseInteger(
  name: string,
  value: string,
  min: number,
  max: number,
  accepted?: string,
): number {
  const number = boundedInteger(value.trim(), min, max);
  if (number === undefined)
    throw new ConfigError(name, value, accepted ?? wholeNumberRange(min, max));
  return number;
}

function parsePositiveNumber(name: string, value: string, accepted: string): number {
  const number = Number(value.trim());
  if (!/^\d*\.?\d+$/.test(value.trim()) || !Number.isFinite(number) || number <= 0) {
    throw new ConfigError(name, value, accepted);
  }
  return number;
}

function parseScheduleSetting(name: string, value: string): Schedule {
  const schedule = parseSchedule(value);
  if (schedule === undefined) throw new ConfigError(name, value, SCHEDULE_ACCEPTED);
  return schedule;
}

function parseDurationSetting(name: string, value: string, minMs: number, maxMs: number): number {
  const ms = parseGoDuration(value);
  if (ms === undefined || ms < minMs || ms > maxMs) {
    throw new ConfigError(
      name,
      value,
      `a Go duration from ${formatDuration(minMs)} to ${formatDuration(maxMs)}, such as 1s or 500ms`,
    );
  }
  return ms;
}

function parseCheckTimeouts(value: string | undefined): Map<CheckTimeoutName, number> {
  const timeouts = new Map<CheckTimeoutName, number>();
  const accepted = `comma-separated name=duration pairs, names ${CHECK_TIMEOUT_NAMES.join(', ')}, durations from 1s to 24h, such as pciebw=5m,dcgm.3=2h`;
  for (const item of (value ?? '').split(',').filter((part) => part.trim() !== '')) {
    const [name = '', duration = ''] = item.split('=').map((part) => part.trim());
    const ms = parseGoDuration(duration);
    if (
      !(CHECK_TIMEOUT_NAMES as readonly string[]).includes(name) ||
      ms === undefined ||
      ms < 1000 ||
      ms > 24 * 3600_000
    ) {
      throw new ConfigError('AUTOPILOT_CHECK_TIMEOUTS', value ?? '', accepted);
    }
    timeouts.set(name as CheckTimeoutName, ms);
  }
  return timeouts;
}

function parseExpectedGpus(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  return parseInteger(
    'AUTOPILOT_EXPECTED_GPUS',
    value,
    0,
    MAX_EXPECTED_GPUS,
    `a whole number of GPUs from 0 to ${MAX_EXPECTED_GPUS}, or unset to ask Kubernetes`,
  );
}

function parseLogLevel(value: string): LogLevel {
  const lower = value.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(lower)) return lower as LogLevel;
  const verbosity = boundedInteger(lower, 0, 10);
  if (verbosity !== undefined) return verbosity >= 3 ? 'debug' : 'info';
  throw new ConfigError(
    '--loglevel',
    value,
    `one of ${LOG_LEVELS.join(', ')}, or a klog verbosity from 0 to 10`,
  );
}

function parseCheckList(value: string | undefined, known: readonly string[]): string[] {
  const defaults = AUTOPILOT_PERIODIC_CHECKS.filter((name) => known.includes(name));
  if (value === undefined) return defaults;
  const names = value
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  const accepted = `a comma-separated list of ${[...known, 'all'].join(', ')}`;
  if (names.length === 0) throw new ConfigError('PERIODIC_CHECKS', value, accepted);
  const result: string[] = [];
  for (const name of names) {
    if (name === 'all') result.push(...defaults);
    else if (known.includes(name)) result.push(name);
    else throw new ConfigError('PERIODIC_CHECKS', value, `${accepted} (unknown check "${name}")`);
  }
  // IBM's values files and chart set PERIODIC_CHECKS without gpucount; without it a node whose pod
  // cannot see its GPUs passes on its ping alone. It is one count, and SKIP where no count is known.
  if (known.includes(ALWAYS_PERIODIC)) result.push(ALWAYS_PERIODIC);
  return [...new Set(result)];
}

function checkName(name: string, value: string): void {
  if (!DNS_NAME.test(value)) {
    throw new ConfigError(name, value, 'a node name made of letters, digits, "-" and "."');
  }
}

function parsePeers(value: string | undefined): string[] {
  if (value === undefined) return [];
  const peers = value.split(/[\s,]+/).filter((peer) => peer !== '');
  for (const peer of peers) {
    if (!isHostOrAddress(peer)) {
      throw new ConfigError(
        'AUTOPILOT_PEERS',
        value,
        `a comma-separated list of host names or IP addresses ("${peer}" is neither)`,
      );
    }
  }
  return [...new Set(peers)];
}

function parseListenAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (isIP(value) === 0)
    throw new ConfigError(
      'AUTOPILOT_LISTEN_ADDRESS',
      value,
      'an IPv4 or IPv6 address such as 0.0.0.0 or ::',
    );
  return value;
}

function parseFatalErrors(value: string | undefined): string[] {
  // Autopilot iterated a set value character by character; a comma-separated list is what it meant.
  if (value === undefined) return DEFAULT_DCGM_FATAL_ERRORS;
  const names = value
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (names.length === 0) {
    throw new ConfigError(
      'DCGM_FATAL_ERRORS',
      value,
      'a comma-separated list of DCGM test names, such as PCIe,NVLink',
    );
  }
  return names;
}

/** The largest XID code accepted; NVML reports an XID it cannot name as 999 (nvml.h). */
const MAX_XID = 999;

function parseXidList(value: string | undefined): number[] {
  if (value === undefined) return [...DEFAULT_XID_FATAL];
  if (value === 'none') return [];
  const accepted = `a comma-separated list of XID codes from 1 to ${MAX_XID}, such as 48,79,95, or none`;
  const items = value.split(',').map((item) => item.trim());
  if (items.every((item) => item === '')) {
    throw new ConfigError('AUTOPILOT_XID_FATAL', value, accepted);
  }
  const codes: number[] = [];
  for (const item of items.filter((part) => part !== '')) {
    const code = boundedInteger(item, 1, MAX_XID);
    if (code === undefined) {
      throw new ConfigError('AUTOPILOT_XID_FATAL', value, `${accepted} ("${item}" is not)`);
    }
    codes.push(code);
  }
  return [...new Set(codes)];
}

function parseStorageClass(value: string | undefined): string | undefined {
  // Autopilot's Helm chart sets this to "", which it then used as a class name; unset it is.
  if (value === undefined || value.trim() === '') return undefined;
  const name = value.trim();
  if (!DNS_NAME.test(name) || name !== name.toLowerCase()) {
    throw new ConfigError(
      'PVC_TEST_STORAGE_CLASS',
      value,
      'a StorageClass name (lower-case DNS subdomain)',
    );
  }
  return name;
}

/** Environment variables, for --help and docs/configuration.md. */
export const ENV_SETTINGS = [
  ['NODE_NAME', 'the host name', 'name of this node (Kubernetes downward API)'],
  ['NAMESPACE', '', 'namespace of the exporter pod'],
  ['POD_NAME', '', 'name of the exporter pod'],
  [
    'PERIODIC_CHECKS',
    'pciebw,remapped,dcgm,ping,gpupower,gpucount (those this build has)',
    'checks of the periodic round; all = the default list',
  ],
  ['PVC_TEST_STORAGE_CLASS', '', 'StorageClass of the pvc check'],
  ['DCGM_FATAL_ERRORS', 'PCIe,NVLink,ECC,GPU Memory', 'DCGM tests whose failure evicts the node'],
  [
    'AUTOPILOT_XID_FATAL',
    DEFAULT_XID_FATAL.join(','),
    'XIDs whose event fails the xid check as fatal, evicting the node (comma-separated; none: no XID)',
  ],
  ['INVASIVE_JOB_TTLSEC', '30', 'ttlSecondsAfterFinished of the deep-check Job'],
  [
    'AUTOPILOT_PEERS',
    '',
    'ping targets in standalone mode: host names or addresses, comma-separated',
  ],
  ['AUTOPILOT_PING_COUNT', '3', 'echo requests per peer'],
  ['AUTOPILOT_PING_REPLY_TIMEOUT', '1s', 'how long to wait for each reply (100ms to 1m)'],
  ['AUTOPILOT_PING_CONCURRENCY', '64', 'peers pinged at once'],
  ['AUTOPILOT_PING_COMMAND', 'ping', 'the iputils ping executable'],
  [
    'AUTOPILOT_PING_SAMPLE',
    '0',
    'peers pinged per round, in turns so each is reached every ceil(peers/sample) rounds; 0 = all',
  ],
  ['AUTOPILOT_IPERF_COMMAND', 'iperf3', 'the iperf3 executable'],
  ['AUTOPILOT_DCGMI_COMMAND', 'dcgmi', 'the dcgmi executable (DCGM diagnostics)'],
  [
    'AUTOPILOT_DEEPCHECK_IMAGE',
    '',
    "image of the deep-check Job (the exporter's own); unset, no deep check runs",
  ],
  ['AUTOPILOT_DEEPCHECK_COMMAND', 'autopilot deepcheck', 'command of the deep-check Job container'],
  ['AUTOPILOT_DEEPCHECK_PRIORITY_CLASS', '', 'PriorityClass of the deep-check Job (a low one)'],
  [
    'AUTOPILOT_POSTFLIGHT_CHECKS',
    'pciebw,remapped,gpupower,ecc,dcgm (those this build has)',
    'checks run when a pod that held GPUs ends (dcgm at level 1); none disables post-flight',
  ],
  [
    'AUTOPILOT_POD_SELECTOR',
    'app=autopilot',
    'Kubernetes mode: label selector of the Autopilot pods, whose interfaces ping and iperf reach',
  ],
  ['AUTOPILOT_METRICS_PORT', '8081', 'port of /metrics'],
  ['AUTOPILOT_READINESS_PORT', '8080', 'port of /readinessprobe'],
  ['AUTOPILOT_LISTEN_ADDRESS', 'all addresses', 'address the three listeners bind to'],
  ['AUTOPILOT_HISTORY_SIZE', '20', 'runs kept per check for the API'],
  [
    'AUTOPILOT_NVML_CHECK_TIMEOUT',
    '30s',
    'deadline of remapped, gpupower, ecc and xid, which only read NVML (1s to 10m)',
  ],
  [
    'AUTOPILOT_CHECK_TIMEOUTS',
    'pciebw=2m,gpumem=15m,dcgm.1=5m,dcgm.2=20m,dcgm.3=1h30m,dcgm.4=4h',
    'deadlines of the long checks, name=duration pairs that replace those defaults',
  ],
  [
    'AUTOPILOT_NVML_LIBRARY',
    'libnvidia-ml.so.1',
    'NVML library: a name the loader finds, or a path',
  ],
  [
    'AUTOPILOT_EXPECTED_GPUS',
    'unset: the node label nvidia.com/gpu.count or capacity (Kubernetes mode)',
    'GPUs this node should have (0 to 64); fewer visible to NVML fails gpucount',
  ],
  [
    'AUTOPILOT_CUDA_PROBE_LIBRARY',
    'build/cuda/libautopilot-probe.so of this installation',
    'the CUDA probe library built from cuda/',
  ],
  [
    'AUTOPILOT_KUBERNETES',
    'auto',
    'auto (Kubernetes mode in a pod or with KUBECONFIG), on, or off (standalone)',
  ],
  ['KUBECONFIG', '', 'kubeconfig file to use instead of the in-cluster service account'],
  ['AUTOPILOT_SERVICE', 'autopilot-healthchecks', 'Service whose EndpointSlices list the peers'],
  ['AUTOPILOT_KUBE_TIMEOUT', '10s', 'deadline of each Kubernetes API call (500ms to 5m)'],
  [
    'AUTOPILOT_API_TOKEN',
    '',
    'standalone mode: bearer token for protected actions (unset disables them)',
  ],
  [
    'AUTOPILOT_API_ACCESS',
    'kubernetes',
    'protected API calls: kubernetes (authenticated, authorised callers only) or open (anyone; IBM Autopilot)',
  ],
  ...API_ACCESS_GROUPS.map(
    (group) =>
      [
        apiAccessVariable(group),
        'AUTOPILOT_API_ACCESS',
        `kubernetes or open, for the ${group} calls alone (docs/api.md#authorisation)`,
      ] as const,
  ),
  [
    'AUTOPILOT_EVICT_ON',
    DEFAULT_EVICT_ON,
    'which fatal findings evict: all (every check) or dcgm (DCGM_FATAL_ERRORS tests only, IBM Autopilot)',
  ],
  [
    'AUTOPILOT_PVC_ACCESS_MODE',
    'ReadWriteMany',
    'access mode of the pvc check claim: ReadWriteMany, ReadWriteOnce, ReadWriteOncePod, ReadOnlyMany',
  ],
  ['AUTOPILOT_PVC_SIZE', '100Mi', 'size of the pvc check claim'],
  ['AUTOPILOT_PVC_BIND_TIMEOUT', '90s', 'how long the pvc check claim may stay Pending (1s to 1h)'],
] as const;
