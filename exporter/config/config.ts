/**
 * Configuration: Autopilot's flags and environment variables with their meaning kept, new settings
 * under AUTOPILOT_*. parseConfig is pure and validates everything at once, so a bad setting stops
 * the program before anything starts, with one message naming the setting, the value and what is
 * accepted.
 */

import { isIP } from 'node:net';
import { DNS_NAME, LABEL_SELECTOR_CHARACTERS, isHostOrAddress } from '../net-names.js';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import { boundedInteger } from '../params.js';
import { parseGoDuration } from './duration.js';
import { SCHEDULE_ACCEPTED, parseSchedule, type Schedule } from './schedule.js';
import { CHECK_TABLE } from '../checks/index.js';
import { FATAL_ERROR_NAMES_HELP, unknownFatalErrors } from '../checks/dcgm-report.js';
import { DEFAULT_EVICT_ON, EVICT_MODES, type EvictOn } from '../node-health.js';
import {
  ConfigError,
  duration,
  integer,
  parseInteger,
  setting,
  text,
  type ConfigInputs,
  type Env,
  type Setting,
  type SettingRow,
  type SettingValues,
} from './setting.js';

export { ConfigError, type ConfigInputs, type Env, type Setting, type SettingRow };

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
  /**
   * The settings check modules declare for themselves (CheckModule.settings), parsed, by module
   * name; the table hands each module its own in create().
   */
  readonly checkSettings: ReadonlyMap<string, unknown>;
  /** The iperf3 executable. */
  readonly iperfCommand: string;
  /** The dcgmi executable. */
  readonly dcgmiCommand: string;
  /** The deep-check Job's image; undefined: no deep check (it needs the exporter's own image). */
  readonly deepcheckImage: string | undefined;
  readonly deepcheckCommand: readonly string[];
  readonly deepcheckPriorityClass: string | undefined;
  readonly deepcheckRuntimeClass: string | undefined;
  readonly deepcheckPullSecrets: readonly string[];
  /** Checks run after a pod that held GPUs ends; empty disables post-flight. */
  readonly postflightChecks: readonly string[];
  /** Label selector of the Autopilot pods in NAMESPACE (their interfaces are what ping and iperf reach). */
  readonly podSelector: string;
  readonly historySize: number;
  readonly dcgmFatalErrors: readonly string[];
  /** INVASIVE_JOB_TTLSEC: ttlSecondsAfterFinished of the deep-check Job. */
  readonly deepCheckJobTtlSeconds: number;
  readonly pvcStorageClass: string | undefined;
  /** Deadline of the checks that only read NVML (their policy says nvmlOnly). */
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
  /** AUTOPILOT_FANOUT_CONCURRENCY: the most nodes a cluster-wide /status asks at once. */
  readonly fanoutConcurrency: number;
  /** Standalone mode's bearer token for protected actions; undefined disables them. */
  readonly apiToken: string | undefined;
  /** AUTOPILOT_API_ACCESS and AUTOPILOT_API_ACCESS_<GROUP>: how each group of protected calls is let in. */
  readonly apiAccess: ApiAccess;
  /** AUTOPILOT_EVICT_ON: which fatal findings evict the node. */
  readonly evictOn: EvictOn;
  /** AUTOPILOT_TAINT_*: the optional taint of an EVICT node and its cluster-wide breaker. */
  readonly taint: TaintConfig;
  /** AUTOPILOT_NODE_CONDITION: the NodeCondition type written; undefined: none is written. */
  readonly nodeCondition: string | undefined;
  /** AUTOPILOT_NODE_CONDITION_HEARTBEAT: how often an unchanged condition is re-sent. */
  readonly nodeConditionHeartbeatMs: number;
  readonly pvc: {
    readonly accessMode: string;
    readonly size: string;
    readonly bindTimeoutMs: number;
  };
}

/** none: no taint (the default); otherwise the effect of autopilot.ibm.com/gpuhealth=EVICT. */
export const TAINT_EFFECTS = ['none', 'NoSchedule', 'NoExecute'] as const;
export type TaintEffectSetting = (typeof TAINT_EFFECTS)[number];

export interface TaintConfig {
  readonly effect: TaintEffectSetting;
  /** Share of the GPU nodes that may carry the taint at once (the breaker), in (0, 1]. */
  readonly maxFraction: number;
  /** Log and report what would be done; write nothing. */
  readonly dryRun: boolean;
}

/** The names AUTOPILOT_CHECK_TIMEOUTS accepts: each check module's timeoutSettings. */
export const CHECK_TIMEOUT_NAMES: readonly string[] = CHECK_TABLE.timeoutSettings;
export type CheckTimeoutName = string;

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

/**
 * The default periodic round: the modules with a periodic place (checks/module.ts), in Autopilot's
 * order, then parseConfig limits it to the checks this build has.
 */
export const AUTOPILOT_PERIODIC_CHECKS: readonly string[] = CHECK_TABLE.periodic;
export const DEFAULT_NVML_LIBRARY = 'libnvidia-ml.so.1';
/** More than any one host holds: a larger AUTOPILOT_EXPECTED_GPUS is a typo. */
const MAX_EXPECTED_GPUS = 64;
const DEFAULT_DCGM_FATAL_ERRORS = ['PCIe', 'NVLink', 'ECC', 'GPU Memory'];

/** The settings of SETTINGS put where the rest of the exporter reads them. */
export function parseConfig(inputs: ConfigInputs): Config {
  const v = readSettings(inputs);
  rejectSharedPorts({
    '--port': v['--port'],
    AUTOPILOT_METRICS_PORT: v.AUTOPILOT_METRICS_PORT,
    AUTOPILOT_READINESS_PORT: v.AUTOPILOT_READINESS_PORT,
  });
  return {
    nodeName: v.NODE_NAME,
    namespace: v.NAMESPACE,
    podName: v.POD_NAME,
    listenAddress: v.AUTOPILOT_LISTEN_ADDRESS,
    apiPort: v['--port'],
    metricsPort: v.AUTOPILOT_METRICS_PORT,
    readinessPort: v.AUTOPILOT_READINESS_PORT,
    bandwidthThresholdGBps: v['--bw'],
    periodic: v['--w'],
    deepCheckSchedule: v['--invasive-check-timer'],
    logLevel: v['--loglevel'],
    ...(v['--logfile'] === undefined ? {} : { logFile: v['--logfile'] }),
    periodicChecks: v.PERIODIC_CHECKS,
    peers: v.AUTOPILOT_PEERS,
    checkSettings: moduleSettings(v),
    iperfCommand: v.AUTOPILOT_IPERF_COMMAND,
    dcgmiCommand: v.AUTOPILOT_DCGMI_COMMAND,
    deepcheckImage: v.AUTOPILOT_DEEPCHECK_IMAGE,
    deepcheckCommand: v.AUTOPILOT_DEEPCHECK_COMMAND,
    deepcheckPriorityClass: v.AUTOPILOT_DEEPCHECK_PRIORITY_CLASS,
    deepcheckRuntimeClass: v.AUTOPILOT_DEEPCHECK_RUNTIME_CLASS,
    deepcheckPullSecrets: v.AUTOPILOT_DEEPCHECK_PULL_SECRETS,
    postflightChecks: v.AUTOPILOT_POSTFLIGHT_CHECKS,
    podSelector: v.AUTOPILOT_POD_SELECTOR,
    historySize: v.AUTOPILOT_HISTORY_SIZE,
    dcgmFatalErrors: v.DCGM_FATAL_ERRORS,
    deepCheckJobTtlSeconds: v.INVASIVE_JOB_TTLSEC,
    pvcStorageClass: v.PVC_TEST_STORAGE_CLASS,
    nvmlCheckTimeoutMs: v.AUTOPILOT_NVML_CHECK_TIMEOUT,
    checkTimeoutsMs: v.AUTOPILOT_CHECK_TIMEOUTS,
    nvmlLibrary: v.AUTOPILOT_NVML_LIBRARY,
    cudaProbeLibrary: v.AUTOPILOT_CUDA_PROBE_LIBRARY,
    expectedGpus: v.AUTOPILOT_EXPECTED_GPUS,
    kubernetes: v.AUTOPILOT_KUBERNETES,
    kubeconfigPath: v.KUBECONFIG,
    serviceName: v.AUTOPILOT_SERVICE,
    kubeRequestTimeoutMs: v.AUTOPILOT_KUBE_TIMEOUT,
    fanoutConcurrency: v.AUTOPILOT_FANOUT_CONCURRENCY,
    apiToken: v.AUTOPILOT_API_TOKEN,
    apiAccess: v.AUTOPILOT_API_ACCESS,
    evictOn: v.AUTOPILOT_EVICT_ON,
    taint: {
      effect: v.AUTOPILOT_TAINT_EFFECT,
      maxFraction: v.AUTOPILOT_TAINT_MAX_FRACTION,
      dryRun: v.AUTOPILOT_TAINT_DRY_RUN,
    },
    nodeCondition: v.AUTOPILOT_NODE_CONDITION,
    nodeConditionHeartbeatMs: v.AUTOPILOT_NODE_CONDITION_HEARTBEAT,
    pvc: {
      accessMode: v.AUTOPILOT_PVC_ACCESS_MODE,
      size: v.AUTOPILOT_PVC_SIZE,
      bindTimeoutMs: v.AUTOPILOT_PVC_BIND_TIMEOUT,
    },
  };
}

/** Every setting parsed, in the table's order; the first bad one stops here. */
function readSettings(
  inputs: ConfigInputs,
): Readonly<Record<string, unknown>> & SettingValues<typeof SETTINGS> {
  const values: Record<string, unknown> = {};
  for (const [name, entry] of TABLE) {
    values[name] = entry.parse(given(name, inputs) ?? entry.fallback, inputs);
  }
  return values as Readonly<Record<string, unknown>> & SettingValues<typeof SETTINGS>;
}

/** Each module's own settings, by setting name, under the module's name. */
function moduleSettings(values: Readonly<Record<string, unknown>>): Map<string, unknown> {
  return new Map(
    CHECK_TABLE.modules.flatMap((module) =>
      module.settings === undefined
        ? []
        : [
            [
              module.name,
              Object.fromEntries(Object.keys(module.settings.specs).map((n) => [n, values[n]])),
            ],
          ],
    ),
  );
}

/**
 * A flag as the command line gave it (--logfile= is given, and empty); an environment variable
 * trimmed, and unset when blank, as manifests often leave them.
 */
function given(name: string, inputs: ConfigInputs): string | undefined {
  if (name.startsWith('--')) return inputs.flags.get(name.slice(2));
  const value = inputs.env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
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

function parseNameList(name: string, value: string | undefined): string[] {
  const names = (value ?? '')
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
  for (const part of names) parseOptionalName(name, part);
  return names;
}

/** Default: the quick checks and DCGM level 1, those this build has; "none" disables post-flight. */
function parsePostflight(value: string | undefined, known: readonly string[]): string[] {
  const defaults = CHECK_TABLE.postflight.filter((n) => known.includes(n));
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

function parsePositiveNumber(name: string, value: string, accepted: string): number {
  const number = Number(value.trim());
  if (!/^\d*\.?\d+$/.test(value.trim()) || !Number.isFinite(number) || number <= 0) {
    throw new ConfigError(name, value, accepted);
  }
  return number;
}

function parseFraction(name: string, value: string): number {
  const accepted = 'a share of the GPU nodes above 0 and at most 1, such as 0.2';
  const number = parsePositiveNumber(name, value, accepted);
  if (number > 1) throw new ConfigError(name, value, accepted);
  return number;
}

function parseScheduleSetting(name: string, value: string): Schedule {
  const schedule = parseSchedule(value);
  if (schedule === undefined) throw new ConfigError(name, value, SCHEDULE_ACCEPTED);
  return schedule;
}

function parseCheckTimeouts(value: string | undefined): Map<CheckTimeoutName, number> {
  const timeouts = new Map<CheckTimeoutName, number>();
  const accepted = `comma-separated name=duration pairs, names ${CHECK_TIMEOUT_NAMES.join(', ')}, durations from 1s to 24h, such as pciebw=5m,dcgm.3=2h`;
  for (const item of (value ?? '').split(',').filter((part) => part.trim() !== '')) {
    const [name = '', duration = ''] = item.split('=').map((part) => part.trim());
    const ms = parseGoDuration(duration);
    if (
      !CHECK_TIMEOUT_NAMES.includes(name) ||
      ms === undefined ||
      ms < 1000 ||
      ms > 24 * 3600_000
    ) {
      throw new ConfigError('AUTOPILOT_CHECK_TIMEOUTS', value ?? '', accepted);
    }
    timeouts.set(name, ms);
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
  // IBM's values files and chart set PERIODIC_CHECKS without the checks every round needs (the
  // module's policy says why).
  result.push(...CHECK_TABLE.alwaysPeriodic.filter((name) => known.includes(name)));
  return [...new Set(result)];
}

function parseNodeName(value: string): string {
  if (!DNS_NAME.test(value)) {
    throw new ConfigError('NODE_NAME', value, 'a node name made of letters, digits, "-" and "."');
  }
  return value;
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
  const unknown = unknownFatalErrors(names);
  if (unknown.length > 0) {
    throw new ConfigError(
      'DCGM_FATAL_ERRORS',
      value,
      `a comma-separated list of DCGM test names or error kinds (${unknown.map((name) => JSON.stringify(name)).join(', ')} ${unknown.length === 1 ? 'is' : 'are'} not): ${FATAL_ERROR_NAMES_HELP}`,
    );
  }
  return names;
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

const optional = (value: string | undefined): string | undefined => value;

/** A condition type: CamelCase as the kubelet's (Ready), optionally prefixed (example.com/Name). */
function parseConditionType(value: string): string | undefined {
  if (value === 'none') return undefined;
  if (/^(?:[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z][A-Za-z0-9]{0,62}$/.test(value)) {
    return value;
  }
  throw new ConfigError(
    'AUTOPILOT_NODE_CONDITION',
    value,
    'a condition type such as GPUHealthy (letters and digits, optionally prefixed by a DNS name and /), or none',
  );
}

/**
 * Every flag (Autopilot's, first) and environment variable, in the order of --help. parseConfig
 * parses each in this order, and the first bad one stops the program.
 */
export const SETTINGS = {
  '--port': setting({
    fallback: '3333',
    help: 'port of the health-check API',
    parse: (value) => parsePort('--port', value),
  }),
  '--bw': setting({
    fallback: '4',
    help: 'PCIe bandwidth threshold in GB/s (pciebw)',
    parse: (value) =>
      parsePositiveNumber('--bw', value, 'a number of GB/s above 0, such as 4 or 12.5'),
  }),
  '--w': setting({
    fallback: '1h',
    help: `periodic round: ${SCHEDULE_ACCEPTED}`,
    parse: (value) => parseScheduleSetting('--w', value),
  }),
  '--invasive-check-timer': setting({
    fallback: '4h',
    help: 'deep check on idle GPUs: a Go duration, whole hours as Autopilot 2.1 took them (0 disables), or a cron expression',
    parse: (value) => parseScheduleSetting('--invasive-check-timer', value),
  }),
  '--loglevel': setting({
    fallback: '2',
    help: 'error, warn, info or debug, or a klog verbosity number (0-2 info, 3 and above debug)',
    parse: parseLogLevel,
  }),
  '--logfile': setting({
    fallback: '',
    help: "a file the log lines are appended to as well as stderr (Autopilot's klog log_file)",
    parse: (value) => (value === '' ? undefined : value),
  }),
  NODE_NAME: setting({
    shown: 'the host name',
    help: 'name of this node (Kubernetes downward API)',
    parse: (value, inputs) => parseNodeName(value ?? inputs.hostname),
  }),
  NAMESPACE: setting({ help: 'namespace of the exporter pod', parse: optional }),
  POD_NAME: setting({ help: 'name of the exporter pod', parse: optional }),
  PERIODIC_CHECKS: setting({
    shown: `${AUTOPILOT_PERIODIC_CHECKS.join(',')} (those this build has)`,
    help: 'checks of the periodic round; all = the default list',
    parse: (value, inputs) => parseCheckList(value, inputs.knownChecks),
  }),
  PVC_TEST_STORAGE_CLASS: setting({
    help: 'StorageClass of the pvc check',
    // Its own reading of blank: the message quotes the value as it was set.
    parse: (_value, inputs) => parseStorageClass(inputs.env.PVC_TEST_STORAGE_CLASS),
  }),
  DCGM_FATAL_ERRORS: setting({
    shown: DEFAULT_DCGM_FATAL_ERRORS.join(','),
    help: 'DCGM tests whose failure evicts the node',
    parse: parseFatalErrors,
  }),
  INVASIVE_JOB_TTLSEC: setting({
    fallback: '30',
    help: 'ttlSecondsAfterFinished of the deep-check Job',
    parse: integer('INVASIVE_JOB_TTLSEC', 0, 7 * 24 * 3600),
  }),
  AUTOPILOT_PEERS: setting({
    help: 'ping targets in standalone mode: host names or addresses, comma-separated',
    parse: parsePeers,
  }),
  AUTOPILOT_IPERF_COMMAND: setting({
    fallback: 'iperf3',
    help: 'the iperf3 executable',
    parse: text,
  }),
  AUTOPILOT_DCGMI_COMMAND: setting({
    fallback: 'dcgmi',
    help: 'the dcgmi executable (DCGM diagnostics)',
    parse: text,
  }),
  AUTOPILOT_DEEPCHECK_IMAGE: setting({
    help: "image of the deep-check Job (the exporter's own); unset, no deep check runs",
    parse: optional,
  }),
  AUTOPILOT_DEEPCHECK_COMMAND: setting({
    fallback: 'autopilot deepcheck',
    help: 'command of the deep-check Job container',
    parse: (value) => value.split(/\s+/),
  }),
  AUTOPILOT_DEEPCHECK_PRIORITY_CLASS: setting({
    help: 'PriorityClass of the deep-check Job (a low one)',
    parse: (value) => parseOptionalName('AUTOPILOT_DEEPCHECK_PRIORITY_CLASS', value),
  }),
  // The Job's pod must reach the GPUs and pull its image as the exporter's pod does; the chart
  // sets both from its runtimeClassName and pullSecrets values.
  AUTOPILOT_DEEPCHECK_RUNTIME_CLASS: setting({
    help: "RuntimeClass of the deep-check Job (the exporter's own, e.g. nvidia)",
    parse: (value) => parseOptionalName('AUTOPILOT_DEEPCHECK_RUNTIME_CLASS', value),
  }),
  AUTOPILOT_DEEPCHECK_PULL_SECRETS: setting({
    shown: 'none',
    help: 'comma-separated image pull Secrets of the deep-check Job',
    parse: (value) => parseNameList('AUTOPILOT_DEEPCHECK_PULL_SECRETS', value),
  }),
  AUTOPILOT_POSTFLIGHT_CHECKS: setting({
    shown: `${CHECK_TABLE.postflight.join(',')} (those this build has)`,
    help: 'checks run when a pod that held GPUs ends (dcgm at level 1); none disables post-flight',
    parse: (value, inputs) => parsePostflight(value, inputs.knownChecks),
  }),
  AUTOPILOT_POD_SELECTOR: setting({
    fallback: 'app=autopilot',
    help: 'Kubernetes mode: label selector of the Autopilot pods, whose interfaces ping and iperf reach',
    parse: (value) => parseSelectorSetting('AUTOPILOT_POD_SELECTOR', value),
  }),
  AUTOPILOT_METRICS_PORT: setting({
    fallback: '8081',
    help: 'port of /metrics',
    parse: (value) => parsePort('AUTOPILOT_METRICS_PORT', value),
  }),
  AUTOPILOT_READINESS_PORT: setting({
    fallback: '8080',
    help: 'port of /readinessprobe',
    parse: (value) => parsePort('AUTOPILOT_READINESS_PORT', value),
  }),
  AUTOPILOT_LISTEN_ADDRESS: setting({
    shown: 'all addresses',
    help: 'address the three listeners bind to',
    parse: parseListenAddress,
  }),
  AUTOPILOT_HISTORY_SIZE: setting({
    fallback: '20',
    help: 'runs kept per check for the API',
    parse: integer('AUTOPILOT_HISTORY_SIZE', 1, 1000),
  }),
  AUTOPILOT_NVML_CHECK_TIMEOUT: setting({
    fallback: '30s',
    help: `deadline of ${inWords(CHECK_TABLE.nvmlOnly)}, which only read NVML (1s to 10m)`,
    parse: duration('AUTOPILOT_NVML_CHECK_TIMEOUT', 1000, 600_000),
  }),
  AUTOPILOT_CHECK_TIMEOUTS: setting({
    shown: 'pciebw=2m,gpumem=15m,dcgm.1=5m,dcgm.2=20m,dcgm.3=1h30m,dcgm.4=4h',
    help: 'deadlines of the long checks, name=duration pairs that replace those defaults',
    parse: parseCheckTimeouts,
  }),
  AUTOPILOT_NVML_LIBRARY: setting({
    fallback: DEFAULT_NVML_LIBRARY,
    help: 'NVML library: a name the loader finds, or a path',
    parse: text,
  }),
  AUTOPILOT_EXPECTED_GPUS: setting({
    shown: 'unset: the node label nvidia.com/gpu.count or capacity (Kubernetes mode)',
    help: 'GPUs this node should have (0 to 64); fewer visible to NVML fails gpucount',
    parse: parseExpectedGpus,
  }),
  AUTOPILOT_CUDA_PROBE_LIBRARY: setting({
    shown: 'build/cuda/libautopilot-probe.so of this installation',
    help: 'the CUDA probe library built from cuda/',
    parse: optional,
  }),
  AUTOPILOT_KUBERNETES: setting({
    fallback: 'auto',
    help: 'auto (Kubernetes mode in a pod or with KUBECONFIG), on, or off (standalone)',
    parse: (value) => parseChoice('AUTOPILOT_KUBERNETES', value, ['auto', 'on', 'off'] as const),
  }),
  KUBECONFIG: setting({
    help: 'kubeconfig file to use instead of the in-cluster service account',
    parse: optional,
  }),
  AUTOPILOT_SERVICE: setting({
    fallback: 'autopilot-healthchecks',
    help: 'Service whose EndpointSlices list the peers',
    parse: parseServiceName,
  }),
  AUTOPILOT_KUBE_TIMEOUT: setting({
    fallback: '10s',
    help: 'deadline of each Kubernetes API call (500ms to 5m)',
    parse: duration('AUTOPILOT_KUBE_TIMEOUT', 500, 300_000),
  }),
  AUTOPILOT_FANOUT_CONCURRENCY: setting({
    fallback: '128',
    help: 'cluster-wide /status: the most nodes asked at once (1 to 10000); batch may ask for fewer',
    parse: integer('AUTOPILOT_FANOUT_CONCURRENCY', 1, 10_000),
  }),
  AUTOPILOT_API_TOKEN: setting({
    help: 'standalone mode: bearer token for protected actions (unset disables them)',
    parse: optional,
  }),
  AUTOPILOT_API_ACCESS: setting({
    shown: 'kubernetes',
    help: 'protected API calls: kubernetes (authenticated, authorised callers only) or open (anyone; IBM Autopilot)',
    parse: (_value, inputs) => parseApiAccess(inputs.env),
    reads: API_ACCESS_GROUPS.map(
      (group) =>
        [
          apiAccessVariable(group),
          API_ACCESS_VARIABLE,
          `kubernetes or open, for the ${group} calls alone (docs/api.md#authorisation)`,
        ] as const,
    ),
  }),
  AUTOPILOT_EVICT_ON: setting({
    fallback: DEFAULT_EVICT_ON,
    help: 'which fatal findings evict: all (every check) or dcgm (DCGM_FATAL_ERRORS tests only, IBM Autopilot)',
    parse: (value) => parseChoice('AUTOPILOT_EVICT_ON', value, EVICT_MODES),
  }),
  AUTOPILOT_TAINT_EFFECT: setting({
    fallback: 'none',
    help: 'taint an EVICT node autopilot.ibm.com/gpuhealth=EVICT with this effect: none, NoSchedule or NoExecute',
    parse: (value) => parseChoice('AUTOPILOT_TAINT_EFFECT', value, TAINT_EFFECTS),
  }),
  AUTOPILOT_TAINT_MAX_FRACTION: setting({
    fallback: '0.2',
    help: 'breaker: no new taint once max(1, floor(this share x GPU nodes)) nodes carry it (0 to 1)',
    parse: (value) => parseFraction('AUTOPILOT_TAINT_MAX_FRACTION', value),
  }),
  AUTOPILOT_TAINT_DRY_RUN: setting({
    fallback: 'false',
    help: 'true: log and report (/status) what the taint would do, and write nothing',
    parse: (value) => parseChoice('AUTOPILOT_TAINT_DRY_RUN', value, ['true', 'false']) === 'true',
  }),
  AUTOPILOT_NODE_CONDITION: setting({
    fallback: 'GPUHealthy',
    help: 'Kubernetes mode: the NodeCondition type that carries the node health; none writes none',
    parse: parseConditionType,
  }),
  AUTOPILOT_NODE_CONDITION_HEARTBEAT: setting({
    fallback: '5m',
    help: "how often an unchanged node condition's lastHeartbeatTime is renewed (10s to 1h)",
    parse: duration('AUTOPILOT_NODE_CONDITION_HEARTBEAT', 10_000, 3_600_000),
  }),
  AUTOPILOT_PVC_ACCESS_MODE: setting({
    fallback: 'ReadWriteMany',
    help: 'access mode of the pvc check claim: ReadWriteMany, ReadWriteOnce, ReadWriteOncePod, ReadOnlyMany',
    parse: (value) =>
      parseChoice('AUTOPILOT_PVC_ACCESS_MODE', value, [
        'ReadWriteMany',
        'ReadWriteOnce',
        'ReadWriteOncePod',
        'ReadOnlyMany',
      ]),
  }),
  AUTOPILOT_PVC_SIZE: setting({
    fallback: '100Mi',
    help: 'size of the pvc check claim',
    parse: (value) => parseQuantity('AUTOPILOT_PVC_SIZE', value),
  }),
  AUTOPILOT_PVC_BIND_TIMEOUT: setting({
    fallback: '90s',
    help: 'how long the pvc check claim may stay Pending (1s to 1h)',
    parse: duration('AUTOPILOT_PVC_BIND_TIMEOUT', 1000, 3_600_000),
  }),
};

const rowsOf = ([name, entry]: [string, Setting<unknown>]): SettingRow[] => [
  [name, entry.shown ?? entry.fallback ?? '', entry.help],
  ...(entry.reads ?? []),
];
const TABLE = withModuleSettings(Object.entries(SETTINGS));

/** The settings with each module's own (CheckModule.settings) after the one it names. */
function withModuleSettings(
  table: readonly [string, Setting<unknown>][],
): [string, Setting<unknown>][] {
  const result = [...table];
  for (const module of CHECK_TABLE.modules) {
    if (module.settings === undefined) continue;
    const { after, specs } = module.settings;
    const at = result.findIndex(([name]) => name === after);
    if (at < 0) throw new Error(`the ${module.name} module's settings follow ${after}, no setting`);
    result.splice(at + 1, 0, ...Object.entries<Setting<unknown>>(specs));
  }
  return result;
}

/** "a, b and c". */
function inWords(names: readonly string[]): string {
  return names.length < 2
    ? names.join('')
    : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1] ?? ''}`;
}

/** Autopilot's flags: name without dashes, default, what it means. Order is the order of --help. */
export const FLAGS: readonly {
  readonly name: string;
  readonly defaultValue: string;
  readonly help: string;
}[] = TABLE.filter(([name]) => name.startsWith('--')).map(([name, entry]) => ({
  name: name.slice(2),
  defaultValue: entry.fallback ?? '',
  help: entry.help,
}));

export const FLAG_NAMES: ReadonlySet<string> = new Set(FLAGS.map((f) => f.name));

/** Environment variables, for --help and docs/configuration.md. */
export const ENV_SETTINGS: readonly SettingRow[] = TABLE.filter(
  ([name]) => !name.startsWith('--'),
).flatMap(rowsOf);
