/**
 * The built exporter with the C fakes standing in for the GPU libraries: the fake libnvidia-ml
 * (FAKE_NVML_SCENARIO) and the probe library built against the fake CUDA runtime
 * (FAKE_CUDA_SCENARIO). jest's global setup builds both.
 */

import { spawn } from 'node:child_process';
import { afterEach, describe, expect, test } from '@jest/globals';
import {
  buildExporter,
  FAKE_NVML,
  FAKE_PROBE,
  killAllExporters,
  MAIN,
  startExporter as startBuiltExporter,
  type StartedExporter,
} from '../fakes/exporter-process.js';
import { waitFor } from '../fakes/wait-for.js';

afterEach(killAllExporters);

buildExporter();

function startExporter(env: Record<string, string>): Promise<StartedExporter> {
  return startBuiltExporter({
    env: {
      NODE_NAME: 'gpu-node',
      AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
      AUTOPILOT_CUDA_PROBE_LIBRARY: FAKE_PROBE,
      ...env,
    },
  });
}

interface Results {
  health: { state: string; reasons: string[] };
  results: {
    check: string;
    trigger?: string;
    verdict: string;
    reason: string;
    devices: { id: string; verdict: string; reason: string }[];
  }[];
}

async function resultsOf(api: number): Promise<Results> {
  return (await (await fetch(`http://127.0.0.1:${api}/results?format=json`)).json()) as Results;
}

/** Waits for the start-up round: every named check has a result. */
async function startupRound(api: number, checks: readonly string[]): Promise<Results> {
  let last: Results | undefined;
  return waitFor(
    'the start-up round',
    async () => {
      last = await resultsOf(api);
      return checks.every((c) => last?.results.some((r) => r.check === c)) ? last : undefined;
    },
    60_000,
    50,
  ).catch((error: unknown) => {
    throw new Error(`${String(error)}: ${JSON.stringify(last)}`);
  });
}

async function metricsOf(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

const GPU_CHECKS = ['pciebw', 'remapped', 'gpupower', 'ecc', 'xid'];

describe('GPU checks end to end on the fake libraries', () => {
  test('power brake on GPU 1, pending remap on GPU 2, Gen3 x8 link on GPU 3: metrics and WARN', async () => {
    const { ports } = await startExporter({
      PERIODIC_CHECKS: GPU_CHECKS.join(','),
      FAKE_NVML_SCENARIO: 'powerbrake=1;pending=2;link=3:3x8',
      FAKE_CUDA_SCENARIO: 'h2d=3:6.5;d2h=3:6.6',
    });
    const results = await startupRound(ports.api, GPU_CHECKS);
    expect(results.health.state).toBe('WARN');
    const metrics = await metricsOf(ports.metrics);
    const compat = (health: string, device: string): string =>
      `autopilot_health_checks{health="${health}",node="gpu-node",cpumodel="${cpuModelIn(metrics)}",gpumodel="NVIDIA H200",deviceid="${device}"}`;
    expect(metrics).toContain(`${compat('power-slowdown', '1')} 1\n`);
    expect(metrics).toContain(`${compat('power-slowdown', '0')} 0\n`);
    expect(metrics).toContain(`${compat('remapped', '2')} 1\n`);
    expect(metrics).toContain(`${compat('remapped', '3')} 0\n`);
    for (let gpu = 0; gpu < 8; gpu++)
      expect(metrics).toMatch(
        new RegExp(`${escape(compat('pciebw', String(gpu)))} \\d+(\\.\\d+)?\\n`),
      );
    expect(metrics).toContain(`${compat('pciebw', '3')} 6.5\n`);
    expect(metrics).toMatch(
      /^autopilot_gpu_pcie_link_width\{gpu="3",uuid="[^"]+",state="current",gpumodel="NVIDIA H200"\} 8$/m,
    );
    expect(metrics).toMatch(
      /^autopilot_gpu_pcie_link_width\{gpu="3",uuid="[^"]+",state="max",gpumodel="NVIDIA H200"\} 16$/m,
    );
    expect(metrics).toMatch(
      /^autopilot_gpu_pcie_link_generation\{gpu="3",uuid="[^"]+",state="current",gpumodel="NVIDIA H200"\} 3$/m,
    );
    expect(metrics).toContain(
      'autopilot_gpu_verdict{check="pciebw",gpu="3",verdict="FAIL",gpumodel="NVIDIA H200"} 1\n',
    );
    expect(metrics).toContain('autopilot_node_health_state{state="WARN"} 1\n');
    const pciebw = results.results.find((r) => r.check === 'pciebw');
    expect(pciebw?.devices[3]?.reason).toBe(
      'degraded (width): x8 of x16; degraded (generation): Gen3 of Gen5 under load: h2d 6.5 GB/s, d2h 6.6 GB/s',
    );
  });

  test('without a usable CUDA probe pciebw still reads every link: GPU 3 and busy GPU 5 at x8 of x16 FAIL', async () => {
    const { ports } = await startExporter({
      PERIODIC_CHECKS: 'pciebw',
      FAKE_NVML_SCENARIO: 'link=3:3x8;procs=5:2;link=5:5x8',
      // The default probe path: absent, or on this machine without a GPU, a probe that sees none.
      AUTOPILOT_CUDA_PROBE_LIBRARY: '',
    });
    const results = await startupRound(ports.api, ['pciebw']);
    const pciebw = results.results.find((r) => r.check === 'pciebw');
    expect(pciebw?.devices.map((d) => d.verdict)).toEqual([
      'SKIP',
      'SKIP',
      'SKIP',
      'FAIL',
      'SKIP',
      'FAIL',
      'SKIP',
      'SKIP',
    ]);
    expect(pciebw?.devices[3]?.reason).toMatch(
      /^degraded \(width\): x8 of x16; bandwidth not measured: /,
    );
    expect(pciebw?.devices[5]?.reason).toMatch(
      /^degraded \(width\): x8 of x16; bandwidth not measured: /,
    );
    const metrics = await metricsOf(ports.metrics);
    for (const [metric, state, value] of [
      ['width', 'current', 8],
      ['width', 'max', 16],
      ['generation', 'current', 3],
      ['generation', 'max', 5],
    ] as const) {
      expect(metrics).toMatch(
        new RegExp(
          `^autopilot_gpu_pcie_link_${metric}\\{gpu="3",uuid="[^"]+",state="${state}",gpumodel="NVIDIA H200"\\} ${value}$`,
          'm',
        ),
      );
    }
    expect(metrics).toContain(
      'autopilot_gpu_verdict{check="pciebw",gpu="3",verdict="FAIL",gpumodel="NVIDIA H200"} 1\n',
    );
    expect(metrics).not.toContain('autopilot_gpu_pcie_bandwidth_bytes_per_second{');
  });

  test('a remapping failure evicts the node, and passing rounds do not lift it', async () => {
    const { ports } = await startExporter({
      PERIODIC_CHECKS: GPU_CHECKS.join(','),
      FAKE_NVML_SCENARIO: 'remapfail=4',
    });
    const results = await startupRound(ports.api, GPU_CHECKS);
    expect(results.health.state).toBe('EVICT');
    expect(results.health.reasons).toEqual(['remapped 4: a row remapping failed: replace the GPU']);
    for (let round = 0; round < 2; round++) {
      await (await fetch(`http://127.0.0.1:${ports.api}/status?check=gpupower,ecc,xid`)).text();
    }
    expect((await resultsOf(ports.api)).health.state).toBe('EVICT');
    expect(await metricsOf(ports.metrics)).toContain(
      'autopilot_node_health_state{state="EVICT"} 1\n',
    );
  });

  test('a driver call that hangs for 30 s: ERROR at the deadline, readiness keeps answering', async () => {
    const { ports } = await startExporter({
      PERIODIC_CHECKS: 'remapped',
      AUTOPILOT_NVML_CHECK_TIMEOUT: '2s',
      FAKE_NVML_SCENARIO: 'hang=nvmlDeviceGetRemappedRows:30000',
    });
    const latencies: number[] = [];
    const started = Date.now();
    while (Date.now() - started < 3000) {
      const t0 = performance.now();
      const response = await fetch(`http://127.0.0.1:${ports.readiness}/readinessprobe`);
      expect(response.status).toBe(201);
      latencies.push(performance.now() - t0);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    // The round began when the exporter listened; its 2 s deadline may pass after the 3 s above
    // on a loaded machine, so the verdict is waited for (the hung call lasts 30 s).
    const results = await waitFor(
      'the remapped verdict',
      async () => {
        const now = await resultsOf(ports.api);
        return now.results.length > 0 ? now : undefined;
      },
      20_000,
      50,
    );
    expect(results.results).toMatchObject([
      { check: 'remapped', verdict: 'ERROR', reason: 'timed out after 2s' },
    ]);
    latencies.sort((a, b) => a - b);
    const median = latencies[Math.floor(latencies.length / 2)]!;
    // A blocked event loop would hold every answer for the 30 s of the hung call.
    expect(median).toBeLessThan(50);
    expect(latencies.at(-1)).toBeLessThan(1000);
    // While the call still hangs, asking again answers at once instead of queueing behind it.
    const again = (await (
      await fetch(`http://127.0.0.1:${ports.api}/status?check=remapped&format=json`)
    ).json()) as Results;
    expect(again.results[0]?.reason).toMatch(
      /^the previous run has not ended [\d.]+s after its deadline$/,
    );
  });

  test('a fatal XID reaches the node verdict through the watcher, without waiting for a round', async () => {
    const { ports } = await startExporter({
      PERIODIC_CHECKS: 'remapped',
      FAKE_NVML_SCENARIO: 'xid=2:79',
    });
    const results = await startupRound(ports.api, ['remapped', 'xid']);
    const xid = results.results.find((r) => r.check === 'xid');
    expect(xid).toMatchObject({ verdict: 'FAIL', trigger: 'event' });
    expect(xid?.devices[2]?.reason).toMatch(/^XID 79 \(GPU has fallen off the bus\) ×1, last /);
    expect(results.health.state).toBe('EVICT');
    expect(await metricsOf(ports.metrics)).toMatch(
      /^autopilot_gpu_xid_events_total\{gpu="2",uuid="[^"]+",xid="79",gpumodel="NVIDIA H200"\} 1$/m,
    );
  });

  test('gpumem runs on idle GPUs and refuses busy ones, for an authorised caller only', async () => {
    // gpumem takes the GPUs from running work: a protected action (the static token, standalone).
    const auth = { Authorization: 'Bearer e2e-token' };
    const idle = await startExporter({
      PERIODIC_CHECKS: 'remapped',
      AUTOPILOT_API_TOKEN: 'e2e-token',
    });
    const anonymous = await fetch(`http://127.0.0.1:${idle.ports.api}/gpumem`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.text()).toBe(
      'error: this action needs a bearer token (Authorization: Bearer <token>); set AUTOPILOT_API_ACCESS_INVASIVE=open (Helm: api.access.invasive: open) to allow it without authentication, or AUTOPILOT_API_ACCESS=open (Helm: api.access.all: open) for every protected call; docs/upgrading.md says what that risks\n',
    );
    const answer = (await (
      await fetch(`http://127.0.0.1:${idle.ports.api}/gpumem?format=json`, { headers: auth })
    ).json()) as Results;
    expect(answer.results[0]?.devices.map((d) => d.verdict)).toEqual(Array(8).fill('PASS'));
    const text = await (
      await fetch(`http://127.0.0.1:${idle.ports.api}/gpumem`, { headers: auth })
    ).text();
    expect(text.split('\n').slice(0, 5)).toEqual([
      'GPU Memory DGEMM+DAXPY test',
      '[[ GPU-MEM ]] Briefings completed. Continue with memory evaluation.',
      '[[ GPU-MEM ]] SUCCESS',
      'Host  gpu-node',
      '0 0 0 0 0 0 0 0',
    ]);
    const busy = await startExporter({
      PERIODIC_CHECKS: 'remapped',
      FAKE_NVML_SCENARIO: 'procs=5:2',
      AUTOPILOT_API_TOKEN: 'e2e-token',
    });
    const refused = (await (
      await fetch(`http://127.0.0.1:${busy.ports.api}/gpumem?format=json`, { headers: auth })
    ).json()) as Results;
    expect(refused.results[0]).toMatchObject({
      verdict: 'SKIP',
      reason: 'GPUs in use, not tested: GPU 5 (2 compute processes)',
    });
  });

  test('without an NVML library the exporter runs and the GPU checks say SKIP with the reason', async () => {
    // Empty means the default, libnvidia-ml.so.1, which this machine (no NVIDIA driver) lacks.
    const { ports } = await startExporter({
      PERIODIC_CHECKS: 'remapped,pciebw',
      AUTOPILOT_NVML_LIBRARY: '',
    });
    const results = await startupRound(ports.api, ['remapped', 'pciebw']);
    for (const result of results.results) {
      expect(result.verdict).toBe('SKIP');
      expect(result.reason).toMatch(/^cannot load libnvidia-ml\.so\.1: /);
    }
    expect(results.health.state).toBe('UNKNOWN');
    expect((await fetch(`http://127.0.0.1:${ports.readiness}/readinessprobe`)).status).toBe(201);
  });
});

describe('GPU library settings', () => {
  test.each([
    ['AUTOPILOT_NVML_LIBRARY', '/nonexistent/libnvidia-ml.so.1'],
    ['AUTOPILOT_CUDA_PROBE_LIBRARY', '/nonexistent/libautopilot-probe.so'],
  ])(
    '%s naming a library that cannot be loaded stops start-up with exit code 2',
    async (setting, path) => {
      const child = spawn(process.execPath, [MAIN], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', [setting]: path },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const code = await new Promise((resolve) => child.on('close', resolve));
      expect(code).toBe(2);
      expect(stderr).toContain(`autopilot: invalid ${setting}: cannot load ${path}`);
    },
  );
});

function cpuModelIn(metrics: string): string {
  return /cpumodel="([^"]*)"/.exec(metrics)?.[1] ?? '';
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('autopilot preflight against a real exporter', () => {
  async function preflight(
    port: number,
    extra: string[] = [],
  ): Promise<{ code: number | null; out: string }> {
    const child = spawn(
      process.execPath,
      [
        MAIN,
        'preflight',
        '--url',
        `http://127.0.0.1:${port}`,
        '--checks',
        'remapped,gpupower',
        ...extra,
      ],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_NAME: 'gpu-node' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    return { code, out };
  }

  test('exits 0 against a healthy node and 1 against a WARN node', async () => {
    const healthy = await startExporter({ PERIODIC_CHECKS: 'remapped' });
    const ok = await preflight(healthy.ports.api);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^preflight gpu-node: health PASS\n/);
    expect(ok.out.trim().split('\n').pop()).toBe('READY');

    // A power brake on one GPU: gpupower fails, the node is WARN.
    const warn = await startExporter({
      PERIODIC_CHECKS: 'remapped',
      FAKE_NVML_SCENARIO: 'powerbrake=1',
    });
    const refused = await preflight(warn.ports.api);
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('gpupower   FAIL');
    expect(refused.out.trim().split('\n').pop()).toBe(
      'NOT READY: the node is WARN; gpupower failed',
    );

    // Only an EVICT blocks with --fail-on evict.
    expect((await preflight(warn.ports.api, ['--fail-on', 'evict'])).code).toBe(0);
  });

  test('an exporter that cannot be reached is NOT READY', async () => {
    const result = await preflight(1);
    expect(result.code).toBe(1);
    expect(result.out).toMatch(
      /cannot ask http:\/\/127\.0\.0\.1:1\/status\?host=gpu-node.*\nNOT READY\n$/s,
    );
  });
});
