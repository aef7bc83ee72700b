/**
 * Every metric the exporter can emit: the single source of names, types, help texts and label
 * names. docs/metrics.md is checked against this table by a test.
 */

export interface MetricSpec {
  readonly type: 'gauge' | 'counter';
  readonly help: string;
  readonly labelNames: readonly string[];
}

/** Metrics derived by the exporter itself from the stored results. */
export const CORE_METRICS = {
  autopilot_health_checks: {
    type: 'gauge',
    help: 'Summary of the health checks measurements on compute nodes. Gauge Vector version',
    labelNames: ['health', 'node', 'cpumodel', 'gpumodel', 'deviceid'],
  },
  autopilot_check_success: {
    type: 'gauge',
    help: 'Whether the last run of the check found nothing failing (1: PASS, WARN or SKIP; 0: FAIL or ERROR). Set when a run ends.',
    labelNames: ['check'],
  },
  autopilot_check_verdict: {
    type: 'gauge',
    help: 'Verdict of the last run of the check, one series per verdict (1 for the current one). Set when a run ends.',
    labelNames: ['check', 'verdict'],
  },
  autopilot_check_duration_seconds: {
    type: 'gauge',
    help: 'Wall-clock duration of the last run of the check. Set when a run ends.',
    labelNames: ['check'],
  },
  autopilot_check_last_run_timestamp_seconds: {
    type: 'gauge',
    help: 'Unix time at which the last run of the check ended, whatever its verdict.',
    labelNames: ['check'],
  },
  autopilot_check_last_success_timestamp_seconds: {
    type: 'gauge',
    help: 'Unix time at which the last run of the check that found nothing failing ended. Absent until one has.',
    labelNames: ['check'],
  },
  autopilot_check_runs_total: {
    type: 'counter',
    help: 'Runs of the check since the exporter started, by verdict. Incremented when a run ends.',
    labelNames: ['check', 'verdict'],
  },
  autopilot_gpu_verdict: {
    type: 'gauge',
    help: 'Verdict of the last conclusive run of a GPU check for one GPU, one series per verdict (1 for the current one). GPUs that vanished disappear.',
    labelNames: ['check', 'gpu', 'verdict'],
  },
  autopilot_check_peers: {
    type: 'gauge',
    help: 'Number of peers per verdict in the last run of a peer check (ping). Set when a run ends.',
    labelNames: ['check', 'verdict'],
  },
  autopilot_node_health_state: {
    type: 'gauge',
    help: 'Health state of this node (the autopilot.ibm.com/gpuhealth label), one series per state (1 for the current one). Updated when a run ends.',
    labelNames: ['state'],
  },
  autopilot_build_info: {
    type: 'gauge',
    help: 'Always 1; the labels name the exporter version and the Node.js runtime.',
    labelNames: ['version', 'nodejs'],
  },
} as const satisfies Record<string, MetricSpec>;

/** Metrics whose values checks return as samples in their outcome. */
export const SAMPLE_METRICS = {
  autopilot_peer_rtt_median_seconds: {
    type: 'gauge',
    help: 'Median over reachable peers of the average ICMP round-trip time, from the last conclusive run of the peer check.',
    labelNames: ['check'],
  },
  autopilot_peer_rtt_max_seconds: {
    type: 'gauge',
    help: 'Largest ICMP round-trip time to any peer in the last conclusive run of the peer check.',
    labelNames: ['check'],
  },
  autopilot_peer_loss_ratio: {
    type: 'gauge',
    help: 'Share of echo requests without a reply, over all peers, in the last conclusive run of the peer check.',
    labelNames: ['check'],
  },
} as const satisfies Record<string, MetricSpec>;

export type CoreMetricName = keyof typeof CORE_METRICS;
export type SampleMetricName = keyof typeof SAMPLE_METRICS;

export const ALL_METRICS: Readonly<Record<string, MetricSpec>> = {
  ...CORE_METRICS,
  ...SAMPLE_METRICS,
};
