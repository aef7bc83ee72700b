/**
 * A fake API server holding one node, and a whole exporter (buildExporter) for that node in
 * Kubernetes mode talking to it through the real client-node adapter, over whichever NVML the test
 * chooses: in-memory GPUs, the C fake library, or none. Its node labeler is started, as every test
 * of the label needs; each test starts the other parts it exercises, and close() stops them all.
 */

import { CHECK_NAMES } from '../../exporter/checks/index.js';
import { createSystemClock, type Clock } from '../../exporter/clock.js';
import { parseConfig } from '../../exporter/config/config.js';
import { createRunCommand } from '../../exporter/exec/run-command.js';
import { buildExporter, type Exporter } from '../../exporter/exporter.js';
import { createKubeApi } from '../../exporter/k8s/kube-api.js';
import { silentLogger, type Logger } from '../../exporter/log.js';
import type { NvmlLoad } from '../../exporter/native/ports.js';
import { kubeConfigFor } from './fake-api-exporter.js';
import { startFakeKubeApi, type FakeKubeApi, type NodeInput } from './kube-api-server.js';

export interface KubeExporterOptions {
  /** The node the fake server holds; the exporter runs as it (NODE_NAME and host name). */
  readonly node: NodeInput;
  /** The exporter's environment beside NODE_NAME (NAMESPACE, PERIODIC_CHECKS, AUTOPILOT_*). */
  readonly env: Readonly<Record<string, string>>;
  readonly nvml: NvmlLoad;
  /**
   * The environment of the commands it runs, read at each run, so a test may change the fake
   * dcgmi's scenario between runs; process.env by default.
   */
  readonly commandEnv?: NodeJS.ProcessEnv;
  readonly clock?: Clock;
  readonly logger?: Logger;
  readonly gpuModel?: string;
}

export interface KubeExporter {
  readonly api: FakeKubeApi;
  readonly exporter: Exporter;
  /** The node's labels and annotations as the fake server holds them now. */
  node(): { labels: Record<string, string>; annotations: Record<string, string> };
  /** Stops every loop a test may have started, then the runner and the server. */
  close(): Promise<void>;
}

export async function startKubeExporter(options: KubeExporterOptions): Promise<KubeExporter> {
  const name = options.node.name;
  const api = await startFakeKubeApi();
  api.addNode(options.node);
  const config = parseConfig({
    flags: new Map([['w', '0']]),
    env: { NODE_NAME: name, ...options.env },
    hostname: name,
    knownChecks: CHECK_NAMES,
  });
  const exporter = buildExporter(config, {
    runCommand: createRunCommand({ baseEnv: options.commandEnv ?? process.env }),
    nvml: options.nvml,
    cuda: { ok: false, reason: 'no CUDA in this test' },
    clock: options.clock ?? createSystemClock(),
    logger: options.logger ?? silentLogger,
    cpuModel: 'test-cpu',
    gpuModel: options.gpuModel ?? 'NVIDIA H100',
    build: { version: 'test', nodejs: process.versions.node },
    kube: createKubeApi(kubeConfigFor(api.url), 2000),
  });
  const close = async (): Promise<void> => {
    await exporter.checkListener.stop();
    exporter.scheduler.stop();
    exporter.cluster?.peers.stop();
    exporter.cluster?.postflight?.stop();
    exporter.cluster?.deepCheck.stop();
    exporter.cluster?.labeler.stop();
    await exporter.runner.shutdown(1000);
    await api.close();
  };
  try {
    await exporter.cluster!.labeler.start();
  } catch (error) {
    await close();
    throw error;
  }
  return {
    api,
    exporter,
    node: () => {
      const metadata = api.node(name)!.metadata;
      return { labels: metadata.labels ?? {}, annotations: metadata.annotations ?? {} };
    },
    close,
  };
}
