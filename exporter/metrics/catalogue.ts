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
  autopilot_check_interval_seconds: {
    type: 'gauge',
    help: 'Seconds between scheduled runs of the check (the periodic round --w, the deep check --invasive-check-timer; the shorter where both run it; for a cron expression the gap between its next two fire times), so staleness alerts need not assume the defaults. Checks run only on demand, or on a disabled schedule, have no series.',
    labelNames: ['check'],
  },
  autopilot_check_runs_total: {
    type: 'counter',
    help: 'Runs of the check since the exporter started, by verdict. Incremented when a run ends.',
    labelNames: ['check', 'verdict'],
  },
  autopilot_check_trigger_runs_total: {
    type: 'counter',
    help: 'Runs of the check since the exporter started, by what started them (periodic, api, postflight, deepcheck, ...). Incremented when a run ends.',
    labelNames: ['check', 'trigger'],
  },
  autopilot_gpu_verdict: {
    type: 'gauge',
    help: 'Verdict of the last conclusive run of a GPU check for one GPU, one series per verdict (1 for the current one). GPUs that vanished disappear.',
    labelNames: ['check', 'gpu', 'verdict', 'gpumodel'],
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
  autopilot_node_state_since_seconds: {
    type: 'gauge',
    help: 'Unix time at which the node entered its current state (the state label, as in autopilot_node_health_state); the value changes only when the state does. UNKNOWN before any check concluded dates from the exporter start.',
    labelNames: ['state'],
  },
  autopilot_gpu_info: {
    type: 'gauge',
    help: "Always 1, one series per GPU some GPU check judged in its last conclusive run: the GPU's index (gpu), UUID, board serial (empty where NVML has none, as on consumer GPUs), PCI bus id and model (gpumodel, as in autopilot_health_checks). gpu, UUID and pci_bus_id are dcgm-exporter's label names and forms, so its series join on UUID.",
    labelNames: ['gpu', 'UUID', 'serial', 'pci_bus_id', 'gpumodel'],
  },
  autopilot_kubernetes_api_up: {
    type: 'gauge',
    help: 'Whether the last call to the Kubernetes API got an answer (1) or failed (0). Absent in standalone mode.',
    labelNames: [],
  },
  autopilot_kubernetes_api_errors_total: {
    type: 'counter',
    help: 'Failed calls to the Kubernetes API since the exporter started, by operation (refused, timed out, or a server error).',
    labelNames: ['operation'],
  },
  autopilot_peers: {
    type: 'gauge',
    help: 'Autopilot pods the autopilot-healthchecks Service lists, by readiness (state="ready" or "not_ready"). Absent in standalone mode.',
    labelNames: ['state'],
  },
  autopilot_isolation_breaker_open: {
    type: 'gauge',
    help: 'Whether the cluster-wide breaker refused this EVICT node the taint autopilot.ibm.com/gpuhealth=EVICT at its last count (1: max(1, floor(AUTOPILOT_TAINT_MAX_FRACTION x GPU nodes)) nodes carry it already; also in dry-run), 0 otherwise. Absent in standalone mode.',
    labelNames: [],
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
  autopilot_peer_interface_loss_ratio: {
    type: 'gauge',
    help: 'Share of echo requests without a reply to one interface of one peer, from the last run that pinged it; only interfaces that lost some appear, at most AUTOPILOT_PING_TOPK of them (the worst by loss, then round-trip time).',
    labelNames: ['check', 'peer', 'interface'],
  },
  autopilot_ping_peers_probed: {
    type: 'gauge',
    help: 'Peers pinged on one interface in the last conclusive run of the peer check.',
    labelNames: ['check', 'interface'],
  },
  autopilot_ping_peers_unreachable: {
    type: 'gauge',
    help: 'Peers that answered none of the echo requests on one interface (or had no route) in the last conclusive run of the peer check.',
    labelNames: ['check', 'interface'],
  },
  autopilot_ping_loss_ratio: {
    type: 'gauge',
    help: 'Quantile (stat: p50, p90, p99, max) over the peers pinged on one interface of their share of echo requests without a reply, in the last conclusive run of the peer check; nearest rank.',
    labelNames: ['check', 'interface', 'stat'],
  },
  autopilot_ping_rtt_seconds: {
    type: 'gauge',
    help: 'Quantile (stat: p50, p90, p99, max) over the peers that replied on one interface of their average ICMP round-trip time, in the last conclusive run of the peer check; nearest rank.',
    labelNames: ['check', 'interface', 'stat'],
  },
  autopilot_ping_coverage_seconds: {
    type: 'gauge',
    help: 'The stated period within which every peer is pinged at least once: AUTOPILOT_PING_COVERAGE, or the periodic round interval where that is longer. Absent when no periodic round runs ping.',
    labelNames: ['check'],
  },
  autopilot_ping_oldest_probe_age_seconds: {
    type: 'gauge',
    help: 'Seconds since the peer pinged longest ago was last pinged (a peer never pinged: since it was first listed), among the current peers, at the end of the last conclusive run of the peer check.',
    labelNames: ['check'],
  },
  autopilot_iperf_bandwidth_bytes_per_second: {
    type: 'gauge',
    help: 'TCP throughput between nodes in the last iperf run this node asked for, per interface: the slowest pair, the median and the fastest (stat).',
    labelNames: ['interface', 'stat'],
  },
  autopilot_iperf_node_bandwidth_bytes_per_second: {
    type: 'gauge',
    help: 'Mean TCP throughput of the transfers a node sent in the last iperf run this node asked for, per interface.',
    labelNames: ['node', 'interface'],
  },
  autopilot_gpu_pcie_bandwidth_bytes_per_second: {
    type: 'gauge',
    help: 'Pinned copy bandwidth between host and GPU in the last conclusive pciebw run, by direction (h2d, d2h).',
    labelNames: ['gpu', 'uuid', 'direction', 'gpumodel'],
  },
  autopilot_gpu_pcie_link_generation: {
    type: 'gauge',
    help: 'PCIe link generation of every GPU from NVML in the last conclusive pciebw run: state="current" read while pciebw copied, or at idle where it could not copy (an idle link trains down its generation), state="max" the most the GPU and slot allow.',
    labelNames: ['gpu', 'uuid', 'state', 'gpumodel'],
  },
  autopilot_gpu_pcie_link_width: {
    type: 'gauge',
    help: 'PCIe link width in lanes of every GPU from NVML in the last conclusive pciebw run, busy GPUs and GPUs without the CUDA probe included: state="current" (width does not drop at idle) and state="max", the most the GPU and slot allow.',
    labelNames: ['gpu', 'uuid', 'state', 'gpumodel'],
  },
  autopilot_gpu_remapped_rows: {
    type: 'gauge',
    help: 'HBM rows remapped after correctable or uncorrectable errors (state), from the last conclusive remapped run.',
    labelNames: ['gpu', 'uuid', 'state', 'gpumodel'],
  },
  autopilot_gpu_row_remap_pending: {
    type: 'gauge',
    help: '1 when a row remap waits for a GPU reset, from the last conclusive remapped run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_row_remap_failure: {
    type: 'gauge',
    help: '1 when a row remapping has failed on the GPU (an RMA criterion), from the last conclusive remapped run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_clock_event_reason: {
    type: 'gauge',
    help: '1 when the clock event reason is active on the GPU, 0 when not, from the last conclusive gpupower run.',
    labelNames: ['gpu', 'uuid', 'reason', 'gpumodel'],
  },
  autopilot_gpu_slowdown_seconds_total: {
    type: 'counter',
    help: 'Time the GPU has spent in a hardware slowdown (reason: hw_thermal_slowdown, hw_power_brake_slowdown) since the driver loaded, as NVML accumulates it, from the last conclusive gpupower run; absent where the driver does not report it (before R575).',
    labelNames: ['gpu', 'uuid', 'reason', 'gpumodel'],
  },
  autopilot_gpus_expected: {
    type: 'gauge',
    help: 'GPUs this node should have (AUTOPILOT_EXPECTED_GPUS, else the node label nvidia.com/gpu.count or capacity nvidia.com/gpu), from the last conclusive gpucount run; absent when nothing trustworthy says.',
    labelNames: ['check'],
  },
  autopilot_gpus_visible: {
    type: 'gauge',
    help: 'GPUs NVML lists and that answer, from the last conclusive gpucount run; 0 when NVML cannot load.',
    labelNames: ['check'],
  },
  autopilot_gpu_ecc_volatile_uncorrected_errors: {
    type: 'gauge',
    help: 'Uncorrected (double-bit) ECC errors since the driver loaded, from the last conclusive ecc run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_ecc_aggregate_uncorrected_errors: {
    type: 'gauge',
    help: "Uncorrected (double-bit) ECC errors over the GPU's lifetime, from the last conclusive ecc run.",
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_retired_pages_pending: {
    type: 'gauge',
    help: '1 when memory pages wait to be retired at the next GPU reset, from the last conclusive ecc run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_nvlink_up: {
    type: 'gauge',
    help: '1 when the NVLink is active, 0 when inactive, from the last conclusive nvlink run; only the links the GPU has.',
    labelNames: ['gpu', 'uuid', 'link', 'gpumodel'],
  },
  autopilot_gpu_nvlink_errors_total: {
    type: 'counter',
    help: "NVML's raw count of one NVLink error counter (counter: replay, recovery, crc_flit, crc_data) of one link since the driver loaded or the counters were reset, from the last conclusive nvlink run; a counter at 0 has no series.",
    labelNames: ['gpu', 'uuid', 'link', 'counter', 'gpumodel'],
  },
  autopilot_gpu_fabric_ready: {
    type: 'gauge',
    help: '1 when the GPU completed its fabric registration (NVSwitch systems, through the Fabric Manager) with success, 0 otherwise, from the last conclusive nvlink run; absent where the GPU or driver has no fabric.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_fabric_state: {
    type: 'gauge',
    help: "NVML's fabric probe state of the GPU (0 not supported, 1 not started, 2 in progress, 3 completed), from the last conclusive nvlink run; absent where the GPU or driver has no fabric.",
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_xid_events_total: {
    type: 'counter',
    help: 'XID events seen since the exporter started, by code, debounced (a repeat within 10 s counts once); updated when the xid check runs.',
    labelNames: ['gpu', 'uuid', 'xid', 'gpumodel'],
  },
  autopilot_gpu_memory_bandwidth_bytes_per_second: {
    type: 'gauge',
    help: 'HBM device-to-device copy bandwidth (bytes read plus written) in the last conclusive gpumem run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_memory_pattern_mismatches: {
    type: 'gauge',
    help: 'Mismatched 64-bit words in the memory pattern test of the last conclusive gpumem run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_fp32_flops: {
    type: 'gauge',
    help: 'FP32 arithmetic throughput in floating-point operations per second, from the last conclusive gpumem run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_fp64_flops: {
    type: 'gauge',
    help: 'FP64 arithmetic throughput in floating-point operations per second, from the last conclusive gpumem run.',
    labelNames: ['gpu', 'uuid', 'gpumodel'],
  },
  autopilot_gpu_p2p_bandwidth_bytes_per_second: {
    type: 'gauge',
    help: 'Unidirectional peer copy bandwidth from GPU index src to GPU index dst, in bytes per second, from the last conclusive p2pbw run; only pairs with P2P access.',
    labelNames: ['src', 'dst', 'gpumodel'],
  },
  autopilot_dcgm_test_result: {
    type: 'gauge',
    help: 'Result of one DCGM diagnostic test (test, normalised as in Autopilot\'s failure string) on one GPU (gpu="" for results tied to no GPU), from the last conclusive dcgm run at any level (level); one series per test and GPU, always 1, the result label (pass, fail, warn, skip) says which.',
    labelNames: ['level', 'test', 'gpu', 'result', 'gpumodel'],
  },
} as const satisfies Record<string, MetricSpec>;

export type CoreMetricName = keyof typeof CORE_METRICS;
export type SampleMetricName = keyof typeof SAMPLE_METRICS;

export const ALL_METRICS: Readonly<Record<string, MetricSpec>> = {
  ...CORE_METRICS,
  ...SAMPLE_METRICS,
};
