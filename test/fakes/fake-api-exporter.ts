/**
 * A whole exporter (buildExporter) in the test process, with in-memory GPUs, talking through the
 * real client-node adapter to the fake Kubernetes API server over HTTP: the rig of the integration
 * tests of the node label, condition, Events, taint and acknowledgements.
 */

import { KubeConfig } from '@kubernetes/client-node';
import { CHECK_NAMES } from '../../exporter/checks/index.js';
import { createSystemClock, type Clock } from '../../exporter/clock.js';
import { parseConfig } from '../../exporter/config/config.js';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import { buildExporter, type Exporter } from '../../exporter/exporter.js';
import { createKubeApi } from '../../exporter/k8s/kube-api.js';
import { silentLogger, type Logger } from '../../exporter/log.js';
import { fakeNvml, type FakeGpu } from './gpu.js';
import type { FakeKubeApi } from './kube-api-server.js';

/** A client configuration for the fake API server, as the exporter's service account has it. */
export function kubeConfigFor(url: string, token = 'exporter-sa-token'): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
    users: [{ name: 'autopilot', token }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'autopilot' }],
    currentContext: 'fake',
  });
  return kc;
}

export interface FakeApiExporterOptions {
  /** The fake API server's address. */
  readonly url: string;
  readonly node: string;
  readonly gpus: FakeGpu[];
  /** The exporter's environment beside NODE_NAME (NAMESPACE, PERIODIC_CHECKS, AUTOPILOT_*). */
  readonly env: Readonly<Record<string, string>>;
  /** The environment of the commands it runs (fake dcgmi scenarios); process.env by default. */
  readonly commandEnv?: NodeJS.ProcessEnv;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** Built, not started: each test starts the parts it exercises, as main.ts would. */
export function exporterOnFakeApi(options: FakeApiExporterOptions): Exporter {
  const config = parseConfig({
    flags: new Map([['w', '0']]),
    env: { NODE_NAME: options.node, ...options.env },
    hostname: options.node,
    knownChecks: CHECK_NAMES,
  });
  return buildExporter(config, {
    runCommand: createRunCommand({ baseEnv: options.commandEnv ?? { ...process.env } }),
    nvml: { ok: true, nvml: fakeNvml(options.gpus) },
    cuda: { ok: false, reason: 'no CUDA in this test' },
    clock: options.clock ?? createSystemClock(),
    logger: options.logger ?? silentLogger,
    cpuModel: 'test-cpu',
    gpuModel: 'NVIDIA H100',
    build: { version: 'test', nodejs: process.versions.node },
    kube: createKubeApi(kubeConfigFor(options.url), 2000),
  });
}

/** The condition the kubelet keeps on a node, which the exporter's own must never disturb. */
export const KUBELET_READY = {
  type: 'Ready',
  status: 'True',
  reason: 'KubeletReady',
  message: 'kubelet is posting ready status',
  lastHeartbeatTime: '2026-01-01T00:00:00Z',
  lastTransitionTime: '2025-12-01T00:00:00Z',
};

export function addKubeletReady(api: FakeKubeApi, node: string): void {
  api.editNode(node, (object) => {
    object.status = { ...(object.status as object), conditions: [KUBELET_READY] };
  });
}

/** A person (alice, group sre) allowed to acknowledge an EVICT through the API, with `token`. */
export function addOperator(api: FakeKubeApi, token: string): void {
  api.addToken(token, { username: 'alice', groups: ['sre'] });
  api.allow({
    group: 'sre',
    verb: 'update',
    resource: 'nodehealth',
    apiGroup: 'autopilot.ibm.com',
  });
}
