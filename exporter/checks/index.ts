/**
 * The check catalogue: every check this build has, as a table of factories. Adding a check means
 * adding its file and one entry here.
 */

import type { Config } from '../config/config.js';
import type { RunCommand } from '../exec/run-command.js';
import type { CudaProbeLoad, NvmlLoad } from '../native/ports.js';
import type { Check } from './check.js';
import { gpusNotKnownIdle, notIdleSubject } from './gpu-common.js';
import {
  DCGM_LEVELS,
  DCGM_SUMMARY,
  createDcgmCheck,
  type DcgmLevel,
  dcgmIsExclusive,
  dcgmTimeoutMs,
  parseDcgmLevel,
} from './dcgm.js';
import { ECC_SUMMARY, createEccCheck } from './ecc.js';
import { GPUMEM_SUMMARY, createGpuMemCheck } from './gpumem.js';
import { GPUPOWER_SUMMARY, createGpuPowerCheck } from './gpupower.js';
import { GPUCOUNT_SUMMARY, createGpuCountCheck, type ExpectedGpus } from './gpucount.js';
import { PCIEBW_SUMMARY, createPcieBwCheck } from './pciebw.js';
import type { KubeApi } from '../k8s/ports.js';
import { PING_SUMMARY, createPingCheck, type PingPeer, type PingTarget } from './ping.js';
import { PVC_SUMMARY, createPvcCheck } from './pvc.js';
import { IPERF_SUMMARY, createIperfCheck, type IperfPorts } from './iperf.js';
import { REMAPPED_SUMMARY, createRemappedCheck } from './remapped.js';
import { XID_SUMMARY, createXidCheck, type XidLedger } from './xid.js';

/** Names in catalogue order; config validation needs them before any port exists. */
export const CHECK_NAMES = [
  'pciebw',
  'remapped',
  'dcgm',
  'gpupower',
  'gpucount',
  'ecc',
  'xid',
  'gpumem',
  'ping',
  'pvc',
  'iperf',
] as const;
export type CheckName = (typeof CHECK_NAMES)[number];

/** One line per check for --help, which must work before any configuration is read. */
export const CHECK_SUMMARIES: Readonly<Record<CheckName, string>> = {
  pciebw: PCIEBW_SUMMARY,
  dcgm: DCGM_SUMMARY,
  remapped: REMAPPED_SUMMARY,
  gpupower: GPUPOWER_SUMMARY,
  gpucount: GPUCOUNT_SUMMARY,
  ecc: ECC_SUMMARY,
  xid: XID_SUMMARY,
  gpumem: GPUMEM_SUMMARY,
  ping: PING_SUMMARY,
  pvc: PVC_SUMMARY,
  iperf: IPERF_SUMMARY,
};

export interface CheckPorts {
  readonly runCommand: RunCommand;
  readonly peers: () => readonly PingPeer[];
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  readonly xidLedger: XidLedger;
  readonly now: () => number;
  /** undefined in standalone mode. */
  readonly kube: KubeApi | undefined;
  /** Kubernetes mode: every address of these peers' pods. */
  readonly targetsOf?: (peers: readonly string[]) => Promise<readonly PingTarget[]>;
  /** Kubernetes mode: the nodes a job or node label selector picks. */
  readonly selectNodes?: (selection: {
    readonly job: string | undefined;
    readonly nodelabel: string | undefined;
  }) => Promise<readonly string[]>;
  /** Resolves after `ms`, rejects when `signal` aborts. */
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** A conclusive DCGM run, for the dcgm.level.N label and annotation (Kubernetes mode). */
  readonly onDcgmResult?: (result: {
    readonly level: number;
    readonly passed: boolean;
    readonly output: string;
    readonly at: number;
  }) => void;
  /** Kubernetes mode: how many GPUs the node should have, as the node says (gpucount). */
  readonly expectedGpus?: (() => Promise<ExpectedGpus>) | undefined;
  /** How the iperf check reaches the nodes (Kubernetes mode); absent, it says SKIP. */
  readonly iperf?: IperfPorts;
}

/** The command has its own deadline per level; the runner's comes a little later. */
const DCGM_RUNNER_SLACK_MS = 30_000;

/** A check with its default deadline replaced (AUTOPILOT_CHECK_TIMEOUTS), or as it is. */
function withDeadline(check: Check, timeoutMs: number | undefined): Check {
  return timeoutMs === undefined ? check : { ...check, timeoutMs };
}

function dcgmTimeoutOverrides(
  timeouts: Config['checkTimeoutsMs'],
): Partial<Record<DcgmLevel, number>> {
  const overrides: Partial<Record<DcgmLevel, number>> = {};
  for (const level of DCGM_LEVELS) {
    const ms = timeouts.get(`dcgm.${level}` as const);
    if (ms !== undefined) overrides[level] = ms;
  }
  return overrides;
}

export function createChecks(config: Config, ports: CheckPorts): ReadonlyMap<string, Check> {
  const { nvml, cuda } = ports;
  const factories: Record<CheckName, () => Check> = {
    pciebw: () =>
      withDeadline(
        createPcieBwCheck({ nvml, cuda, thresholdGBps: config.bandwidthThresholdGBps }),
        config.checkTimeoutsMs.get('pciebw'),
      ),
    remapped: () => createRemappedCheck({ nvml, timeoutMs: config.nvmlCheckTimeoutMs }),
    gpupower: () =>
      // The two reads are spaced in real time, not on the scheduler's clock: the interval is a
      // physical one that the driver's accumulated durations are compared with.
      createGpuPowerCheck({ nvml, timeoutMs: config.nvmlCheckTimeoutMs }),
    gpucount: () =>
      createGpuCountCheck({
        nvml,
        configured: config.expectedGpus,
        fromCluster: ports.expectedGpus,
        timeoutMs: config.nvmlCheckTimeoutMs,
      }),
    ecc: () => createEccCheck({ nvml, timeoutMs: config.nvmlCheckTimeoutMs, now: ports.now }),
    xid: () =>
      createXidCheck({
        nvml,
        ledger: ports.xidLedger,
        now: ports.now,
        timeoutMs: config.nvmlCheckTimeoutMs,
        fatalXids: config.xidFatal,
      }),
    gpumem: () =>
      withDeadline(createGpuMemCheck({ nvml, cuda }), config.checkTimeoutsMs.get('gpumem')),
    ping: () =>
      createPingCheck({
        settings: config.ping,
        peers: ports.peers,
        run: ports.runCommand,
        clusterMode: ports.kube !== undefined,
        rotationSeed: config.nodeName,
        ...(ports.targetsOf === undefined ? {} : { targetsOf: ports.targetsOf }),
        ...(ports.selectNodes === undefined ? {} : { selectNodes: ports.selectNodes }),
      }),
    dcgm: () => {
      const timeoutsMs = dcgmTimeoutOverrides(config.checkTimeoutsMs);
      const check = createDcgmCheck({
        run: ports.runCommand,
        command: config.dcgmiCommand,
        fatalErrors: config.dcgmFatalErrors,
        timeoutsMs,
        ...(ports.onDcgmResult === undefined ? {} : { onResult: ports.onDcgmResult }),
      });
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
    iperf: () =>
      createIperfCheck(
        ports.iperf ?? {
          nodes: undefined,
          ask: () => Promise.reject(new Error('not in Kubernetes mode')),
        },
        { defaultPclients: 8, defaultStartport: 5200, defaultDurationSeconds: 5 },
      ),
    pvc: () =>
      createPvcCheck({
        kube: ports.kube,
        settings: {
          storageClass: config.pvcStorageClass,
          accessMode: config.pvc.accessMode,
          size: config.pvc.size,
          bindTimeoutMs: config.pvc.bindTimeoutMs,
          namespace: config.namespace ?? 'default',
          // Autopilot named the claim after the pod; one pod runs one check at a time.
          claimName: config.podName ?? `autopilot-pvc-${config.nodeName}`,
        },
        sleep: ports.sleep,
        now: ports.now,
      }),
  };
  return new Map(CHECK_NAMES.map((name) => [name, factories[name]()]));
}
