/**
 * NVML cost per GPU per check, through the real koffi binding (every call off the event loop) and
 * the C fake libnvidia-ml (build/fakes/nvml, built by `make -C test/fakes/native/nvml`). On a GPU
 * host, AUTOPILOT_NVML_LIBRARY=libnvidia-ml.so.1 measures the real driver instead. Target: ≤ 50 µs
 * per GPU per check; Autopilot spawned nvidia-smi, about 124 ms per call on an H200. nvlink reads
 * 18 links × (state + 4 error counters) and the fabric per GPU on the fake's H200s, about 93 calls
 * against 1 to 3 for the others: its target is ≤ 1 ms per GPU (issue 18). The binding reads a
 * link's four counters only when one of the GPU's error totals moved, so nvlink is timed twice:
 * counters still (the usual round), and on the fake every GPU's counters rising every round.
 */

import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import koffi from 'koffi';
import type { Check } from '../exporter/checks/check.js';
import { createEccCheck } from '../exporter/checks/ecc.js';
import { createGpuPowerCheck } from '../exporter/checks/gpupower.js';
import { createNvLinkCheck } from '../exporter/checks/nvlink.js';
import { createRemappedCheck } from '../exporter/checks/remapped.js';
import { silentLogger } from '../exporter/log.js';
import { loadNvml } from '../exporter/native/nvml.js';

const ROOT = join(import.meta.dirname, '..', '..');
const LIBRARY =
  process.env.AUTOPILOT_NVML_LIBRARY ?? join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const RUNS = 300;
const TARGET_US: Readonly<Record<string, number>> = { nvlink: 1000 };
const DEFAULT_TARGET_US = 50;

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
    createNvLinkCheck({ nvml: load }),
  ];
  console.log('Autopilot NVML cost benchmark');
  console.log('=============================');
  console.log(
    `  library ${LIBRARY}, ${gpus} GPUs, ${RUNS} runs of each check after 20 warm-up runs`,
  );
  for (const check of checks) await time(check, check.name, gpus);
  if (process.env.AUTOPILOT_NVML_LIBRARY === undefined) {
    // Every GPU's link 0 gains a replay error per round: every total moves, every link is read.
    const apply = koffi.load(LIBRARY).func('int fakenvml_apply(const char *scenario)');
    const rising = Array.from({ length: gpus }, (_, i) => `nvlinkerr=${i}:0:replay:1`);
    if (apply(rising.join(';')) !== 0) throw new Error('the fake NVML refused the scenario');
    await time(checks.at(-1)!, 'nvlink, counters rising', gpus);
  }
  await load.nvml.close();
}

const ctx = { signal: new AbortController().signal, logger: silentLogger, params: {} };

async function time(check: Check, label: string, gpus: number): Promise<void> {
  for (let i = 0; i < 20; i++) await check.run(ctx);
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await check.run(ctx);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const perGpuUs = (times[Math.floor(times.length / 2)]! * 1000) / gpus;
  const target = TARGET_US[check.name] ?? DEFAULT_TARGET_US;
  const ratio = perGpuUs / target;
  console.log(
    `  ${label.padEnd(10)} ${perGpuUs.toFixed(1).padStart(8)} µs per GPU (median run ${times[Math.floor(times.length / 2)]!.toFixed(3)} ms for ${gpus} GPUs)   target ≤ ${target} µs: ratio ${ratio.toFixed(2)}, ${ratio <= 1 ? 'within target' : 'OVER TARGET'}`,
  );
}

await main();
