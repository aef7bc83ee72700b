/**
 * gpucount in Kubernetes mode inside one process: a whole exporter (buildExporter) with in-memory
 * GPUs, reading its node through the real client-node adapter from the fake API server. Without
 * AUTOPILOT_EXPECTED_GPUS the node's own capacity or GPU feature discovery labels say how many GPUs
 * it should have, and the health label the server ends up holding is asserted.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import type { NvmlLoad } from '../../exporter/native/ports.js';
import { fakeNode, fakeNvml } from '../fakes/gpu.js';
import type { NodeInput } from '../fakes/kube-api-server.js';
import { startKubeExporter, type KubeExporter } from '../fakes/kube-exporter.js';

const NODE = 'gpu-node-1';
const LABEL = 'autopilot.ibm.com/gpuhealth';

let rig: KubeExporter | undefined;

afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

async function setup(node: Omit<NodeInput, 'name'>, nvml: NvmlLoad): Promise<KubeExporter> {
  rig = await startKubeExporter({
    node: { name: NODE, ...node },
    env: { NAMESPACE: 'autopilot' },
    nvml,
    gpuModel: 'NVIDIA H200',
  });
  return rig;
}

/** remapped and gpucount, as a periodic round would run them; the label the server then holds. */
async function round(r: KubeExporter): Promise<{ gpucount: string; label: string | undefined }> {
  await r.exporter.runner.run('remapped', {}, 'periodic');
  const run = await r.exporter.runner.run('gpucount', {}, 'periodic');
  await r.exporter.cluster!.labeler.idle();
  return {
    gpucount: `${run.verdict}: ${run.reason}`,
    label: r.node().labels[LABEL],
  };
}

describe('gpucount in Kubernetes mode', () => {
  test('capacity nvidia.com/gpu 8 and NVML sees 7: FAIL, and the node label is EVICT', async () => {
    const r = await setup({ allocatableGpus: 8 }, { ok: true, nvml: fakeNvml(fakeNode(7)) });
    expect(await round(r)).toEqual({
      gpucount: 'FAIL: expected 8 GPUs (node capacity nvidia.com/gpu), NVML sees 7',
      label: 'EVICT',
    });
  });

  test('capacity nvidia.com/gpu 8 and no NVML in the pod: FAIL, and the node label is WARN', async () => {
    const r = await setup({ allocatableGpus: 8 }, { ok: false, reason: 'cannot load NVML' });
    expect(await round(r)).toEqual({
      gpucount:
        'FAIL: expected 8 GPUs (node capacity nvidia.com/gpu), NVML cannot load: cannot load NVML',
      label: 'WARN',
    });
  });

  test('the GFD count label wins over a time-sliced capacity: 8 GPUs × 4 replicas, 8 visible, PASS', async () => {
    const r = await setup(
      {
        allocatableGpus: 32,
        labels: {
          'nvidia.com/gpu.count': '8',
          'nvidia.com/gpu.replicas': '4',
          'nvidia.com/gpu.sharing-strategy': 'time-slicing',
        },
      },
      { ok: true, nvml: fakeNvml(fakeNode(8)) },
    );
    expect(await round(r)).toEqual({
      gpucount: 'PASS: NVML sees 8 GPUs, as expected (node label nvidia.com/gpu.count)',
      label: 'PASS',
    });
  });

  test('MIG single strategy: nothing trustworthy says, so no verdict is drawn from Kubernetes', async () => {
    const r = await setup(
      {
        allocatableGpus: 56,
        labels: { 'nvidia.com/mig.strategy': 'single', 'nvidia.com/gpu.count': '56' },
      },
      { ok: false, reason: 'cannot load NVML' },
    );
    const { gpucount } = await round(r);
    expect(gpucount).toMatch(/^SKIP: cannot load NVML; no expected count: MIG strategy single/);
  });
});
