/**
 * NVML cost per GPU per check, through the real koffi binding (every call off the event loop) and
 * the C fake libnvidia-ml (build/fakes/nvml, built by `make -C test/fakes/native/nvml`). On a GPU
 * host, AUTOPILOT_NVML_LIBRARY=libnvidia-ml.so.1 measures the real driver instead. Target: ≤ 50 µs
 * per GPU per check; Autopilot spawned nvidia-smi, about 124 ms per call on an H200.
 */

import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Check } from '../exporter/checks/check.js';
import { createEccCheck } from '../exporter/checks/ecc.js';
import { createGpuPowerCheck } from '../exporter/checks/gpupower.js';
import { createRemappedCheck } from '../exporter/checks/remapped.js';
import { silentLogger } from '../exporter/log.js';
import { loadNvml } from '../exporter/native/nvml.js';

const ROOT = join(import.meta.dirname, '..', '..');
const LIBRARY =
  process.env.AUTOPILOT_NVML_LIBRARY ?? join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const RUNS = 300;
const TARGET_US = 50;

async function main(): Promise<void> {
  const load = await loadNvml(LIBRARY);
  if (!load.ok) {
    console.log(`NVML cost benchmark: cannot load NVML: ${load.reason}`);
    return;
  }
  const gpus = (await load.nvml.devices()).length;
  const checks: Check[] = [
    createRemappedCheck({ nvml: load }),
    createGpuPowerCheck({ nvml: load }),
    createEccCheck({ nvml: load }),
  ];
  const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };
  console.log('Autopilot NVML cost benchmark');
  console.log('=============================');
  console.log(
    `  library ${LIBRARY}, ${gpus} GPUs, ${RUNS} runs of each check after 20 warm-up runs`,
  );
  for (const check of checks) {
    for (let i = 0; i < 20; i++) await check.run(ctx);
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      await check.run(ctx);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const perGpuUs = (times[Math.floor(times.length / 2)]! * 1000) / gpus;
    const ratio = perGpuUs / TARGET_US;
    console.log(
      `  ${check.name.padEnd(10)} ${perGpuUs.toFixed(1).padStart(8)} µs per GPU (median run ${times[Math.floor(times.length / 2)]!.toFixed(3)} ms for ${gpus} GPUs)   target ≤ ${TARGET_US} µs: ratio ${ratio.toFixed(2)}, ${ratio <= 1 ? 'within target' : 'OVER TARGET'}`,
    );
  }
  await load.nvml.close();
}

await main();
