/**
 * The GPU checks against the real libraries on a GPU host, with the figures the design targets:
 * pciebw against a native copy loop in the same run (target ≥ 0.98), pciebw time per GPU with
 * allocation (target ≤ 0.5 s), NVML cost per GPU per check (target ≤ 50 µs). Run by
 * test/device/run.sh; not part of npm test (this machine has no GPU).
 */

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Check } from '../../exporter/checks/check.js';
import { createEccCheck } from '../../exporter/checks/ecc.js';
import { createGpuMemCheck } from '../../exporter/checks/gpumem.js';
import { busIdKey, cudaOrdinals } from '../../exporter/checks/gpu-common.js';
import { createGpuPowerCheck } from '../../exporter/checks/gpupower.js';
import { createPcieBwCheck } from '../../exporter/checks/pciebw.js';
import { createRemappedCheck } from '../../exporter/checks/remapped.js';
import { silentLogger } from '../../exporter/log.js';
import { loadCudaProbe } from '../../exporter/native/cuda-probe.js';
import { loadNvml } from '../../exporter/native/nvml.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const NVML = process.env.AUTOPILOT_NVML_LIBRARY ?? 'libnvidia-ml.so.1';
const PROBE =
  process.env.AUTOPILOT_CUDA_PROBE_LIBRARY ?? join(ROOT, 'build', 'cuda', 'libautopilot-probe.so');
const REFERENCE = join(ROOT, 'build', 'cuda', 'copy-reference');
const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };

async function main(): Promise<void> {
  const nvml = await loadNvml(NVML);
  const cuda = loadCudaProbe(PROBE);
  console.log(
    `NVML ${nvml.ok ? `loaded (driver ${await nvml.nvml.driverVersion()})` : `unavailable: ${nvml.reason}`}`,
  );
  console.log(`CUDA probe ${cuda.ok ? 'loaded' : `unavailable: ${cuda.reason}`}`);
  if (!nvml.ok || !cuda.ok) return;
  const gpus = await nvml.nvml.devices();
  console.log(`GPUs: ${gpus.map((g) => `${g.index} ${g.name} ${g.pciBusId}`).join('; ')}`);

  const checks: Check[] = [
    createRemappedCheck({ nvml }),
    createGpuPowerCheck({ nvml }),
    createEccCheck({ nvml }),
  ];
  for (const check of checks) {
    const outcome = await check.run(ctx);
    console.log(
      `\n${check.name}: ${outcome.devices.map((d) => `${d.id} ${d.verdict} (${d.reason})`).join('; ') || outcome.reason}`,
    );
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      await check.run(ctx);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const perGpuUs = (times[100]! * 1000) / gpus.length;
    console.log(
      `  NVML cost: ${perGpuUs.toFixed(1)} µs per GPU (target ≤ 50: ratio ${(perGpuUs / 50).toFixed(2)})`,
    );
  }

  const started = performance.now();
  const pcie = await createPcieBwCheck({ nvml, cuda, thresholdGBps: 4 }).run(ctx);
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `\npciebw: ${seconds.toFixed(2)} s for ${gpus.length} GPUs, ${(seconds / gpus.length).toFixed(3)} s per GPU (target ≤ 0.5: ratio ${(seconds / gpus.length / 0.5).toFixed(2)})`,
  );
  const ordinals = await cudaOrdinals(cuda.probe);
  for (const device of pcie.devices) {
    const gpu = gpus.find((g) => String(g.index) === device.id)!;
    const ordinal = ordinals.get(busIdKey(gpu.pciBusId) ?? '');
    let line = `  GPU ${device.id}: ${device.verdict} ${device.reason}`;
    if (ordinal !== undefined && existsSync(REFERENCE)) {
      for (const direction of ['h2d', 'd2h'] as const) {
        const probe = device.evidence[`${direction}GBps`] as number;
        try {
          const output = execFileSync(REFERENCE, [String(ordinal), direction], {
            encoding: 'utf8',
            stdio: 'pipe',
          });
          const native = Number(output.trim());
          line += `; ${direction} probe ${probe} / native ${native.toFixed(2)} GB/s = ${(probe / native).toFixed(3)} (target ≥ 0.98)`;
        } catch (error) {
          const stderr = (error as { stderr?: string }).stderr?.trim() ?? String(error);
          line += `; ${direction} native reference failed: ${stderr}`;
        }
      }
    }
    console.log(line);
  }

  // The kernels (pattern fill and check, FMA loops) have only run in emulation elsewhere.
  const memStarted = performance.now();
  const gpumem = await createGpuMemCheck({ nvml, cuda }).run(ctx);
  console.log(
    `\ngpumem: ${((performance.now() - memStarted) / 1000).toFixed(1)} s${gpumem.reason === undefined ? '' : `: ${gpumem.verdict} ${gpumem.reason}`}`,
  );
  for (const device of gpumem.devices) {
    console.log(
      `  GPU ${device.id}: ${device.verdict} ${device.reason} ${JSON.stringify(device.evidence)}`,
    );
  }
  await nvml.nvml.close();
}

await main();
