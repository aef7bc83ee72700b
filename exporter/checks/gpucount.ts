/**
 * gpucount: does NVML see the GPUs this node should have? Every other GPU check judges the GPUs
 * NVML lists, so a GPU that fell off the bus before NVML started, or a pod that cannot reach the
 * driver at all, would otherwise leave nothing failing (SKIP is no evidence, and a reachable ping
 * peer then made the node PASS).
 *
 * The expected count comes from AUTOPILOT_EXPECTED_GPUS, else (Kubernetes mode) from the node, read
 * by the caller (exporter/cluster/expected-gpus.ts): this module only receives the answer.
 *
 * Fewer GPUs than expected is a fatal FAIL (node EVICT): a lost GPU is a hardware fault. NVML that
 * cannot load on a node that should have GPUs is a FAIL that is not fatal (node WARN): the cause is
 * as likely the pod's own setup, shared by every node at once, and evicting the whole cluster for it
 * would do more harm than the fault.
 */

import { NvmlError, type GpuDevice, type Nvml, type NvmlLoad } from '../native/ports.js';
import type { Check, CheckOutcome, CheckRun, DeviceResult, Evidence, Sample } from './check.js';
import { formatCheckLevelText } from './text.js';
import type { CheckExtras, CheckModule } from './module.js';

/** How many GPUs the node should have, or why that is not known. */
export interface ExpectedGpus {
  /** undefined: nothing trustworthy says (see `source`). */
  readonly count: number | undefined;
  /** Where the count came from ("AUTOPILOT_EXPECTED_GPUS", a node label), or why there is none. */
  readonly source: string;
}

export interface GpuCountCheckDeps {
  readonly nvml: NvmlLoad;
  /** AUTOPILOT_EXPECTED_GPUS: wins over what Kubernetes says. */
  readonly configured: number | undefined;
  /** Kubernetes mode: the node's own expectation; absent in standalone mode. */
  readonly fromCluster?: (() => Promise<ExpectedGpus>) | undefined;
  readonly timeoutMs?: number;
}

export const GPUCOUNT_SUMMARY = 'GPUs visible to NVML against the count the node should have';

/** What NVML shows now. */
export interface VisibleGpus {
  /** undefined when NVML cannot load; the reason is then in `nvmlProblem`. */
  readonly devices: readonly GpuDevice[] | undefined;
  readonly nvmlProblem?: string;
  /** Bus ids earlier runs of this process saw that NVML no longer lists. */
  readonly missingBusIds: readonly string[];
}

/** A GPU NVML lists but that cannot tell its identity (lost, or no permission) is not visible. */
function answering(devices: readonly GpuDevice[]): GpuDevice[] {
  return devices.filter((d) => d.uuid !== '');
}

function evidenceOf(expected: ExpectedGpus, visible: VisibleGpus): Evidence {
  const devices = visible.devices ?? [];
  const silent = devices.filter((d) => d.uuid === '').map((d) => d.index);
  return {
    expected: expected.count ?? null,
    expectedSource: expected.source,
    visible: answering(devices).length,
    nvmlLoaded: visible.devices !== undefined,
    missingBusIds: visible.missingBusIds.join(','),
    notAnswering: silent.join(','),
  };
}

function shortfall(visible: VisibleGpus): string {
  const silent = (visible.devices ?? [])
    .filter((d) => d.uuid === '')
    .map((d) => (d.pciBusId === '' ? `${d.index}` : `${d.index} (${d.pciBusId})`));
  const parts = [
    ...(visible.missingBusIds.length > 0 ? [`missing: ${visible.missingBusIds.join(', ')}`] : []),
    ...(silent.length > 0 ? [`listed but not answering: GPU ${silent.join(', ')}`] : []),
  ];
  return parts.length === 0 ? '' : ` (${parts.join('; ')})`;
}

/** Pure: the node-level verdict. */
export function judgeGpuCount(expected: ExpectedGpus, visible: VisibleGpus): DeviceResult {
  const evidence = evidenceOf(expected, visible);
  const result = (
    verdict: DeviceResult['verdict'],
    reason: string,
    fatal?: boolean,
  ): DeviceResult => ({ id: '', verdict, reason, evidence, ...(fatal ? { fatal } : {}) });
  const want = expected.count;
  if (visible.devices === undefined) {
    const why = visible.nvmlProblem ?? 'NVML is not loaded';
    if (want !== undefined && want > 0) {
      return result('FAIL', `expected ${want} GPUs (${expected.source}), NVML cannot load: ${why}`);
    }
    return result('SKIP', `${why}; ${noneExpected(expected)}`);
  }
  const seen = answering(visible.devices).length;
  const lost = shortfall(visible);
  if (want === undefined) {
    if (visible.missingBusIds.length > 0) {
      return result(
        'FAIL',
        `NVML sees ${seen} GPUs, fewer than earlier in this process${lost}`,
        true,
      );
    }
    // Nothing was compared: no evidence of health, which would make a node PASS on its own.
    return result(
      'SKIP',
      `NVML sees ${seen === 0 ? 'no GPU' : `${seen} GPUs`}; ${noneExpected(expected)}`,
    );
  }
  if (seen === 0 && want > 0) {
    // No GPU at all is, like NVML that cannot load, as likely the pod's setup on every node at once
    // (NVIDIA_VISIBLE_DEVICES unset or ignored, no device nodes) as a node that lost all eight.
    return result('FAIL', `expected ${want} GPUs (${expected.source}), NVML sees none${lost}`);
  }
  if (seen < want) {
    return result(
      'FAIL',
      `expected ${want} GPUs (${expected.source}), NVML sees ${seen}${lost}`,
      true,
    );
  }
  if (want === 0 && seen === 0)
    return result('SKIP', `no GPU expected (${expected.source}), none visible`);
  if (seen > want) {
    return result(
      'WARN',
      `expected ${want} GPUs (${expected.source}), NVML sees ${seen}: more than expected`,
    );
  }
  return result('PASS', `NVML sees ${seen} GPUs, as expected (${expected.source})`);
}

function noneExpected(expected: ExpectedGpus): string {
  return expected.count === undefined
    ? `no expected count: ${expected.source}`
    : `no GPU expected (${expected.source})`;
}

function samplesOf(expected: ExpectedGpus, visible: VisibleGpus): Sample[] {
  const samples: Sample[] = [
    {
      metric: 'autopilot_gpus_visible',
      labels: { check: 'gpucount' },
      value: answering(visible.devices ?? []).length,
    },
  ];
  if (expected.count !== undefined) {
    samples.push({
      metric: 'autopilot_gpus_expected',
      labels: { check: 'gpucount' },
      value: expected.count,
    });
  }
  return samples;
}

/** NVML_ERROR_GPU_IS_LOST (nvml.h): the GPU stopped answering since NVML listed it. */
const NVML_ERROR_GPU_IS_LOST = 15;

/**
 * NVML lists the GPUs once, at init, so a GPU that falls off the bus later stays listed; one cheap
 * read per GPU finds it, and it then counts as missing, named by the bus id the list still has.
 */
async function stillThere(nvml: Nvml, devices: readonly GpuDevice[]): Promise<GpuDevice[]> {
  return Promise.all(
    devices.map(async (device) => {
      if (device.uuid === '') return device;
      try {
        await nvml.clockEventReasons(device.index);
        return device;
      } catch (error) {
        const lost = error instanceof NvmlError && error.code === NVML_ERROR_GPU_IS_LOST;
        // Another error (NOT_SUPPORTED on some parts) says nothing about the GPU being there.
        return lost ? { ...device, uuid: '' } : device;
      }
    }),
  );
}

const STANDALONE: ExpectedGpus = {
  count: undefined,
  source: 'AUTOPILOT_EXPECTED_GPUS is not set and there is no Kubernetes node to ask',
};

async function expectation(deps: GpuCountCheckDeps): Promise<ExpectedGpus> {
  if (deps.configured !== undefined) {
    return { count: deps.configured, source: 'AUTOPILOT_EXPECTED_GPUS' };
  }
  if (deps.fromCluster === undefined) return STANDALONE;
  try {
    return await deps.fromCluster();
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    return { count: undefined, source: `the node could not be read: ${why}` };
  }
}

const formatGpuCountText = (run: CheckRun): string => formatCheckLevelText('[[ GPU COUNT ]]', run);

export function createGpuCountCheck(deps: GpuCountCheckDeps): Check {
  // Every GPU an earlier run saw, by bus id: a GPU that later drops out of NVML's list is named.
  const seenBusIds = new Set<string>();
  const look = async (): Promise<VisibleGpus> => {
    if (!deps.nvml.ok)
      return { devices: undefined, nvmlProblem: deps.nvml.reason, missingBusIds: [] };
    let devices: readonly GpuDevice[];
    try {
      devices = await stillThere(deps.nvml.nvml, await deps.nvml.nvml.devices());
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      return {
        devices: undefined,
        nvmlProblem: `NVML cannot list the GPUs: ${why}`,
        missingBusIds: [],
      };
    }
    const now = new Set(answering(devices).map((d) => d.pciBusId));
    // A GPU still listed but silent is named with the listed ones, not twice.
    const listed = new Set(devices.map((d) => d.pciBusId));
    const missingBusIds = [...seenBusIds].filter((id) => !listed.has(id)).sort();
    for (const id of now) if (id !== '') seenBusIds.add(id);
    return { devices, missingBusIds };
  };
  return {
    name: 'gpucount',
    summary: GPUCOUNT_SUMMARY,
    banner: 'GPU count test',
    compatHealth: 'gpucount',
    deviceKind: 'node',
    usesGpu: false,
    exclusive: false,
    timeoutMs: deps.timeoutMs ?? 30_000,
    parseParams: () => ({}),
    formatText: formatGpuCountText,
    async run(): Promise<CheckOutcome> {
      const [expected, visible] = await Promise.all([expectation(deps), look()]);
      const device = judgeGpuCount(expected, visible);
      const samples = samplesOf(expected, visible);
      // SKIP concerns no device; otherwise the run's reason is the finding's, not "1 FAIL".
      return device.verdict === 'SKIP'
        ? { devices: [], verdict: 'SKIP', reason: device.reason, samples }
        : { devices: [device], reason: device.reason, samples };
    },
  };
}

export const gpucountModule: CheckModule = {
  name: 'gpucount',
  summary: GPUCOUNT_SUMMARY,
  // One cheap count in every round: without it a node whose pod cannot see its GPUs passes on its
  // ping alone, and IBM's values files set PERIODIC_CHECKS without it.
  policy: { periodic: 6, alwaysPeriodic: true, exclusive: false },
  metrics: ['autopilot_gpus_expected', 'autopilot_gpus_visible'],
  formatText: formatGpuCountText,
  create: (config, ports, extras: Pick<CheckExtras, 'expectedGpus'>) =>
    createGpuCountCheck({
      nvml: ports.nvml,
      configured: config.expectedGpus,
      fromCluster: extras.expectedGpus,
      timeoutMs: config.nvmlCheckTimeoutMs,
    }),
};
