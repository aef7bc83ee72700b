/**
 * What one check file exports: a CheckModule, everything about its check in one object. The table
 * (checks/table.ts) derives every list of check names from an array of these, so adding a check is
 * its file and one line in checks/index.ts. Types and one pure helper: nothing here performs I/O.
 */

import type { Clock } from '../clock.js';
import type { ApiAccessGroup, Config } from '../config/config.js';
import type { Setting } from '../config/setting.js';
import type { RunCommand } from '../exec/run-command.js';
import type { KubeApi } from '../k8s/ports.js';
import type { Logger } from '../log.js';
import type { SampleMetricName } from '../metrics/catalogue.js';
import type { CudaProbeLoad, NvmlLoad } from '../native/ports.js';
import type { Check, CheckParams, CheckRun } from './check.js';
import type { ExpectedGpus } from './gpucount.js';
import type { IperfPorts } from './iperf.js';

/**
 * A peer: a host name or address, or in Kubernetes mode a node and its Autopilot pod's address
 * (reported under the node name, as Autopilot does since its #38, so a rescheduled pod's new IP
 * does not start a new series).
 */
export type Peer = string | { readonly name: string; readonly address: string };

/** One address of a peer: Kubernetes mode reaches every interface of every peer's pod. */
export interface PeerTarget {
  readonly peer: string;
  readonly interface: string;
  readonly address: string;
}

/** The ports every check may use; buildExporter builds them once, whatever checks there are. */
export interface CommonPorts {
  readonly nvml: NvmlLoad;
  readonly cuda: CudaProbeLoad;
  readonly run: RunCommand;
  readonly clock: Clock;
  readonly logger: Logger;
  /** undefined in standalone mode. */
  readonly kube: KubeApi | undefined;
}

/**
 * The wiring a few checks need beyond the common ports, built once by buildExporter from what the
 * cluster layer knows. A module's create() names the fields it reads in its own parameter type; a
 * check that needs none of them never makes this interface grow.
 */
export interface CheckExtras {
  /** The other nodes: the configured list standalone, one Autopilot pod per node in Kubernetes. */
  readonly peers: () => readonly Peer[];
  /** Kubernetes mode: every address of these peers' pods. */
  readonly targetsOf?: (peers: readonly string[]) => Promise<readonly PeerTarget[]>;
  /** Kubernetes mode: the nodes a job or node label selector picks. */
  readonly selectNodes?: (selection: {
    readonly job: string | undefined;
    readonly nodelabel: string | undefined;
  }) => Promise<readonly string[]>;
  /** Kubernetes mode: how many GPUs the node should have, as the node says. */
  readonly expectedGpus?: (() => Promise<ExpectedGpus>) | undefined;
  /** A conclusive DCGM run, for the dcgm.level.N label and annotation (Kubernetes mode). */
  readonly onDcgmResult?: (result: {
    readonly level: number;
    readonly passed: boolean;
    readonly output: string;
    readonly at: number;
  }) => void;
  /** How the iperf check reaches the nodes (Kubernetes mode); absent, it says SKIP. */
  readonly iperf?: IperfPorts;
  /** Runs the named check at once with trigger 'event' (a listener found something). */
  readonly runOnEvent: (check: string) => void;
}

/** Work a check does between its runs (xid: waits for driver events), for as long as the exporter serves. */
export interface Listener {
  start(): void;
  /** Resolves when the pending wait has returned. */
  stop(): Promise<void>;
}

/** What create() returns: the check, with the listener that feeds it when it has one. */
export type CreatedCheck = Check | { readonly check: Check; readonly listener: Listener };

/** When and under what protection a check runs, as the defaults and the API see it. */
export interface CheckPolicy {
  /** Place in the default periodic round (PERIODIC_CHECKS unset; Autopilot's order); absent: not in it. */
  readonly periodic?: number;
  /** Runs in every periodic round, whatever PERIODIC_CHECKS lists. */
  readonly alwaysPeriodic?: boolean;
  /** Place among the default post-flight checks, and its parameters there; absent: not by default. */
  readonly postflight?: { readonly order: number; readonly params?: CheckParams };
  /** Among the quick checks `autopilot preflight` requires by default. */
  readonly preflight?: boolean;
  /** Protected whatever its parameters, under this API access group; absent: protected only when exclusive. */
  readonly protectedAs?: ApiAccessGroup;
  /** Needs the GPUs to itself; 'by-params' when its parameters decide (exclusiveFor). */
  readonly exclusive: boolean | 'by-params';
  /** Its names in AUTOPILOT_CHECK_TIMEOUTS, when that setting can replace its deadline. */
  readonly timeoutSettings?: readonly string[];
  /** Only reads NVML: its deadline is AUTOPILOT_NVML_CHECK_TIMEOUT, whose help names it. */
  readonly nvmlOnly?: boolean;
}

/**
 * Settings that belong to one check, declared in its file with the spec type of config.ts's
 * SETTINGS: parseConfig parses them with the rest (--help, the docs and the first-bad-setting
 * error follow them), and the table hands the parsed values, by setting name, to create().
 */
export interface CheckSettings<Values> {
  /** The setting of config.ts's SETTINGS these follow in --help, the docs and the parse order. */
  readonly after: string;
  readonly specs: { readonly [Name in keyof Values]: Setting<Values[Name]> };
}

/** Values: what its own settings (CheckSettings) parse into; unknown when it has none. */
export interface CheckModule<Values = unknown> {
  readonly name: string;
  /** One line for --help and the API reference. */
  readonly summary: string;
  readonly policy: CheckPolicy;
  /** The catalogue metrics its runs return samples of. */
  readonly metrics: readonly SampleMetricName[];
  /** The Autopilot-compatible text block for one run (other tools grep these tokens). */
  readonly formatText: (run: CheckRun, nodeName: string) => string;
  /** Its word in the cluster summary's "<word> Failed" (runHealthchecks.py's); absent: NAME. */
  readonly statusName?: string;
  /** Settings of its own, beside config.ts's; create() receives them parsed. */
  readonly settings?: CheckSettings<Values>;
  create(config: Config, ports: CommonPorts, extras: CheckExtras, settings: Values): CreatedCheck;
}

/** A check with its default deadline replaced (AUTOPILOT_CHECK_TIMEOUTS), or as it is. */
export function withDeadline(check: Check, timeoutMs: number | undefined): Check {
  return timeoutMs === undefined ? check : { ...check, timeoutMs };
}
