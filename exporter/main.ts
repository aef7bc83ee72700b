#!/usr/bin/env node
/**
 * Composition root and the only module that touches the process: argv, environment, exit code,
 * signals, stdout and stderr. Everything else receives what it needs as arguments.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import { healthToJson, renderTable, runToJson } from './api/render.js';
import { DEEP_CHECKS, deepCheckReport } from './deep-check-report.js';
import {
  describeError,
  judgePreflight,
  judgeUnreachable,
  parsePreflightOptions,
  preflightUrl,
  type PreflightRequest,
} from './preflight-client.js';
import { CHECK_MODULES, CHECK_NAMES } from './checks/index.js';
import type { Check, CheckRun } from './checks/check.js';
import {
  checkExitCode,
  helpText,
  parseCommandLine,
  PROGRESS_EVERY_MS,
  progressFields,
  UsageError,
  type Command,
} from './cli.js';
import { createSystemClock } from './clock.js';
import { ConfigError, DEFAULT_NVML_LIBRARY, parseConfig, type Config } from './config/config.js';
import { describeSchedule } from './config/schedule.js';
import { createRunCommand } from './exec/run-command.js';
import { buildExporter, type Exporter } from './exporter.js';
import { parseCpuModel } from './host-info.js';
import { createJsonLogger, openLogFile, type LogFile, type Logger } from './log.js';
import { describeListenError, listen, type Listening } from './server.js';
import type { KubeConnected } from './k8s/kube-api.js';
import { createStartProcess } from './exec/start-process.js';
import { localAddresses } from './network/interfaces.js';
import { loadCudaProbe } from './native/cuda-probe.js';
import { loadNvml } from './native/nvml.js';
import type { CudaProbeLoad, NvmlLoad } from './native/ports.js';
import { fileURLToPath } from 'node:url';

const EXIT_USAGE = 2;
const SHUTDOWN_GRACE_MS = 10_000;
const NATIVE_START_MS = 30_000;
/** Quick checks finish in seconds; a pre-flight that cannot get an answer in this long says so. */
const PREFLIGHT_TIMEOUT_MS = 5 * 60_000;

/** `promise`, or `fallback` if it has not settled within `ms`. */
function within<T>(ms: number, promise: Promise<T>, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** What main leaves for the last step, exiting, to know. */
interface ExitState {
  /** Driver or probe calls still running after shutdown: they are hung. */
  hungNativeCalls: number;
}

async function main(argv: readonly string[], exit: ExitState): Promise<number> {
  const read = readCommandLine(argv);
  if (typeof read === 'number') return read;
  const { command } = read;
  let { config } = read;
  if (command.kind === 'preflight') {
    return preflight(command.options, process.env.NODE_NAME ?? hostname());
  }
  if (command.kind === 'ack') return ack(command.node, command.options);
  const logFile = openLogFileOf(config);
  if (typeof logFile === 'number') return logFile;

  let kube: KubeConnected | undefined;
  try {
    // The deep-check Job reports through its termination message: it needs no API access.
    if (command.kind !== 'deepcheck') {
      ({ kube, config } = await connectIfConfigured(config));
    }
  } catch (error) {
    process.stderr.write(
      `autopilot: cannot use Kubernetes (AUTOPILOT_KUBERNETES=${config.kubernetes}): ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return EXIT_USAGE;
  }

  const logger = createJsonLogger({
    level: config.logLevel,
    write: (line) => {
      process.stderr.write(line);
      logFile?.write(line);
    },
    now: Date.now,
  }).child({ node: config.nodeName });
  const native = await loadGpuLibraries(config, logger);
  if (typeof native === 'number') return native;
  const { nvml, cuda } = native;
  const exporter = buildExporter(config, {
    runCommand: createRunCommand({ baseEnv: process.env }),
    nvml,
    cuda,
    clock: createSystemClock(),
    logger,
    cpuModel: readCpuModel(),
    gpuModel: await within(NATIVE_START_MS, gpuModelOf(nvml), 'N/A'),
    build: { version: packageVersion(), nodejs: process.versions.node },
    kube: kube?.api,
    ...(kube === undefined ? {} : { peerToken: kube.token }),
    startProcess: createStartProcess({ baseEnv: process.env }),
    localAddresses: () => localAddresses(networkInterfaces()),
  });

  try {
    return await runCommandLine(command, exporter, config, logger);
  } finally {
    if (nvml.ok) await within(SHUTDOWN_GRACE_MS, nvml.nvml.close(), undefined);
    exit.hungNativeCalls =
      (nvml.ok ? nvml.nvml.callsInFlight() : 0) + (cuda.ok ? cuda.probe.callsInFlight() : 0);
    if (exit.hungNativeCalls > 0) {
      logger.warn('driver calls still hung after shutdown; ending the process with SIGKILL', {
        calls: exit.hungNativeCalls,
      });
    }
  }
}

/**
 * The command line and the configuration, or the exit code when there is nothing more to do: help
 * was printed (0), or a usage or configuration error was (EXIT_USAGE).
 */
function readCommandLine(argv: readonly string[]):
  | {
      readonly command: Exclude<Command, { kind: 'help' | 'version' }>;
      readonly config: Config;
    }
  | number {
  try {
    const commandLine = parseCommandLine(argv);
    if (commandLine.command.kind === 'help') {
      process.stdout.write(helpText(commandLine.command.topic, { checks: CHECK_MODULES }));
      return 0;
    }
    if (commandLine.command.kind === 'version') {
      process.stdout.write(`autopilot ${packageVersion()}\n`);
      return 0;
    }
    const config = parseConfig({
      flags: commandLine.flags,
      env: process.env,
      hostname: hostname(),
      knownChecks: CHECK_NAMES,
    });
    return { command: commandLine.command, config };
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`autopilot: ${error.message}\nRun "autopilot --help" for usage.\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
}

/** The --logfile, opened, or EXIT_USAGE when it cannot be; undefined when none is set. */
function openLogFileOf(config: Config): LogFile | undefined | number {
  if (config.logFile === undefined) return undefined;
  let logFile: LogFile;
  try {
    logFile = openLogFile(config.logFile);
  } catch (error) {
    process.stderr.write(
      `autopilot: cannot open --logfile ${config.logFile}: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return EXIT_USAGE;
  }
  // Every way out (return, process.exit, an uncaught error) passes here; SIGKILL loses nothing
  // either, since each line is written before write() returns.
  process.once('exit', () => logFile.close());
  return logFile;
}

/** NVML and the CUDA probe, loaded or with the reason they are not; EXIT_USAGE for a bad setting. */
async function loadGpuLibraries(
  config: Config,
  logger: Logger,
): Promise<{ readonly nvml: NvmlLoad; readonly cuda: CudaProbeLoad } | number> {
  // nvmlInit can hang on a sick driver; the exporter must come up and say so all the same.
  const nvml = await within(NATIVE_START_MS, loadNvml(config.nvmlLibrary), {
    ok: false,
    reason: `${config.nvmlLibrary}: nvmlInit_v2 did not return within ${NATIVE_START_MS / 1000} s`,
  });
  const cuda = loadCudaProbe(config.cudaProbeLibrary ?? defaultCudaProbeLibrary());
  // A library named explicitly that cannot be loaded is a bad setting; a driver that is missing
  // or down is a fact about the node, which the checks report as SKIP.
  const unusable = [
    ['AUTOPILOT_NVML_LIBRARY', config.nvmlLibrary !== DEFAULT_NVML_LIBRARY, nvml],
    ['AUTOPILOT_CUDA_PROBE_LIBRARY', config.cudaProbeLibrary !== undefined, cuda],
  ] as const;
  for (const [setting, explicit, load] of unusable) {
    if (explicit && !load.ok && /^cannot load |is not a usable /.test(load.reason)) {
      process.stderr.write(`autopilot: invalid ${setting}: ${load.reason}\n`);
      return EXIT_USAGE;
    }
  }
  if (!nvml.ok) {
    const reason = nvml.reason;
    logger.info('NVML unavailable: GPU checks say SKIP, gpucount FAIL if GPUs are expected', {
      reason,
    });
  }
  if (!cuda.ok)
    logger.info('CUDA probe unavailable: pciebw and gpumem will say SKIP', { reason: cuda.reason });
  return { nvml, cuda };
}

async function runCommandLine(
  command: Exclude<Command, { kind: 'help' | 'version' }>,
  exporter: Exporter,
  config: Config,
  logger: Logger,
): Promise<number> {
  switch (command.kind) {
    case 'check':
      return checkOnce(exporter, config, command, logger);
    case 'serve':
      return serve(exporter, config, logger);
    case 'deepcheck':
      return deepCheck(exporter, command.options.get('report-file')!);
    case 'preflight':
    case 'ack':
      // Answered before any exporter is built (see main).
      return EXIT_USAGE;
  }
}

/** Inside the deep-check Job: the long checks, a table, and the report the exporter reads back. */
async function deepCheck(exporter: Exporter, reportFile: string): Promise<number> {
  const runs: CheckRun[] = [];
  for (const [name, params] of DEEP_CHECKS) {
    if (exporter.checks.has(name)) runs.push(await exporter.runner.run(name, params, 'cli'));
  }
  process.stdout.write(renderTable(runs));
  try {
    writeFileSync(reportFile, deepCheckReport(runs));
  } catch (error) {
    process.stderr.write(
      `autopilot: cannot write the report to ${reportFile}: ${error instanceof Error ? error.message : String(error)}\n`,
    );
  }
  return runs.some((run) => run.verdict === 'FAIL' || run.verdict === 'ERROR') ? 1 : 0;
}

async function checkOnce(
  exporter: Exporter,
  config: Config,
  command: Extract<Command, { kind: 'check' }>,
  logger: Logger,
): Promise<number> {
  const names = command.checks.flatMap((name) => (name === 'all' ? config.periodicChecks : [name]));
  const unknown = names.filter((name) => !exporter.checks.has(name));
  if (unknown.length > 0) {
    process.stderr.write(
      `autopilot: unknown check ${JSON.stringify(unknown[0])}; known checks: ${[...exporter.checks.keys(), 'all'].join(', ')}\n`,
    );
    return EXIT_USAGE;
  }
  const runs: { check: Check; run: CheckRun }[] = [];
  const stop = (): void => void exporter.runner.shutdown(SHUTDOWN_GRACE_MS);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  for (const name of new Set(names)) {
    const check = exporter.checks.get(name)!;
    // --level is dcgm's r, as /status?r=N; cli.ts made sure dcgm is among the checks.
    const raw = name === 'dcgm' && command.level !== undefined ? { r: String(command.level) } : {};
    const params = check.parseParams(raw);
    const run = await withProgress(exporter.runner.run(name, params, 'cli'), check, params, logger);
    runs.push({ check, run });
  }
  process.stdout.write(
    command.output === 'json'
      ? `${JSON.stringify(statusJson(config.nodeName, exporter, runs), null, 2)}\n`
      : renderTable(runs.map(({ run }) => run)),
  );
  logger.debug('checks done', { checks: names });
  return checkExitCode(runs.map(({ run }) => run.verdict));
}

/** `running`, with a log line every PROGRESS_EVERY_MS until it settles: a script is not left silent. */
async function withProgress<T>(
  running: Promise<T>,
  check: Check,
  params: Readonly<Record<string, string>>,
  logger: Logger,
): Promise<T> {
  const started = Date.now();
  const timer = setInterval(() => {
    logger.info('check still running', progressFields(check, params, Date.now() - started));
  }, PROGRESS_EVERY_MS);
  try {
    return await running;
  } finally {
    clearInterval(timer);
  }
}

/** The API's /status?format=json for this node (request.ts respond), so one parser reads both. */
function statusJson(
  node: string,
  exporter: Exporter,
  runs: readonly { check: Check; run: CheckRun }[],
): Record<string, unknown> {
  return {
    node,
    cached: false,
    health: healthToJson(exporter.store.health()),
    results: runs.map(({ check, run }) => ({
      ...runToJson(run),
      text: check.formatText(run, node),
    })),
  };
}

async function serve(exporter: Exporter, config: Config, logger: Logger): Promise<number> {
  let stopDeepChecks: (() => void) | undefined;
  let listening: Listening;
  try {
    listening = await listen(exporter, config);
  } catch (error) {
    const line = describeListenError(error, config.listenAddress);
    if (line === undefined) throw error;
    process.stderr.write(`autopilot: ${line}\n`);
    return 1;
  }
  logger.info('exporter listening', {
    api: listening.ports.api,
    metrics: listening.ports.metrics,
    readiness: listening.ports.readiness,
    periodicChecks: config.periodicChecks,
    periodic: describeSchedule(config.periodic),
    // Named for --invasive-check-timer, the setting operators set.
    invasive: describeSchedule(config.deepCheckSchedule),
    peers: config.peers.length,
  });
  if (exporter.cluster !== undefined) {
    logger.info('Kubernetes mode', { namespace: config.namespace, service: config.serviceName });
    exporter.cluster.peers.start();
    const { labeler, nodeWatch, reporting } = exporter.cluster;
    // The watch begins once the labeler has its first read, so an EVICT found at start is taken
    // over before any change to it is judged (and the condition says False, not Unknown).
    void labeler.start().then(() => {
      nodeWatch.start();
      void reporting.condition?.start();
    });
    exporter.cluster.postflight?.start();
    stopDeepChecks = exporter.cluster.scheduleDeepChecks();
  }
  exporter.scheduler.start();
  exporter.checkListener.start();
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  logger.info('shutting down', { signal });
  exporter.scheduler.stop();
  exporter.cluster?.peers.stop();
  exporter.cluster?.nodeWatch.stop();
  exporter.cluster?.labeler.stop();
  exporter.cluster?.tainter.stop();
  exporter.cluster?.reporting.condition?.stop();
  exporter.cluster?.postflight?.stop();
  exporter.cluster?.deepCheck.stop();
  stopDeepChecks?.();
  // A listener's wait (XID events) may be stuck in the driver; shutting down does not wait for it
  // beyond the grace.
  await within(SHUTDOWN_GRACE_MS, exporter.checkListener.stop(), undefined);
  await exporter.runner.shutdown(SHUTDOWN_GRACE_MS);
  await listening.close();
  return 0;
}

const SERVICE_ACCOUNT_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/**
 * Kubernetes mode when asked for, or (auto) when running in a pod or given a KUBECONFIG. The
 * namespace falls back to the service account's, then to "default" for a kubeconfig on a laptop.
 */
async function connectIfConfigured(
  config: Config,
): Promise<{ kube: KubeConnected | undefined; config: Config }> {
  const inCluster = process.env.KUBERNETES_SERVICE_HOST !== undefined;
  if (config.kubernetes === 'off') return { kube: undefined, config };
  if (config.kubernetes === 'auto' && !inCluster && config.kubeconfigPath === undefined) {
    return { kube: undefined, config };
  }
  if (!inCluster && config.kubeconfigPath === undefined) {
    throw new Error('neither KUBECONFIG nor an in-cluster service account is available');
  }
  // Loaded only in Kubernetes mode: client-node and its dependencies cost about 30 MB of heap.
  const { connectKubernetes } = await import('./k8s/kube-api.js');
  const kube = connectKubernetes({
    kubeconfigPath: config.kubeconfigPath,
    requestTimeoutMs: config.kubeRequestTimeoutMs,
  });
  let namespace = config.namespace;
  if (namespace === undefined) {
    try {
      namespace = readFileSync(SERVICE_ACCOUNT_NAMESPACE, 'utf8').trim() || undefined;
    } catch {
      namespace = undefined;
    }
  }
  return { kube, config: { ...config, namespace: namespace ?? 'default' } };
}

/** `autopilot ack <node>`: the caller's kubeconfig, an annotation on the Node, a bounded wait. */
async function ack(node: string, options: ReadonlyMap<string, string>): Promise<number> {
  const { ACK_EXIT, acknowledgeNode, parseAckOptions } = await import('./ack.js');
  let parsed;
  try {
    parsed = parseAckOptions(node, options);
  } catch (error) {
    process.stderr.write(`autopilot: ${error instanceof Error ? error.message : String(error)}\n`);
    return ACK_EXIT.usage;
  }
  const { connectAsCaller } = await import('./k8s/kube-api.js');
  let connected;
  try {
    connected = connectAsCaller({
      kubeconfigPath: options.get('kubeconfig') || undefined,
      context: options.get('context') || undefined,
      requestTimeoutMs: 30_000,
    });
  } catch (error) {
    process.stderr.write(
      `autopilot: cannot use the kubeconfig: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return ACK_EXIT.usage;
  }
  return acknowledgeNode(parsed, {
    kube: connected.api,
    whoAmI: () => connected.whoAmI(),
    now: Date.now,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    print: (line) => process.stdout.write(`${line}\n`),
  });
}

/** Before a job: one request to the exporters, a short report, 0 or 1. */
async function preflight(options: ReadonlyMap<string, string>, node: string): Promise<number> {
  let request: PreflightRequest;
  try {
    request = parsePreflightOptions(options, node, CHECK_NAMES);
  } catch (error) {
    process.stderr.write(`autopilot: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_USAGE;
  }
  const url = preflightUrl(request);
  let response: Response;
  try {
    response = await fetch(url, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS),
    });
  } catch (error) {
    // No answer at all (refused, no such host, timed out): --on-unreachable decides.
    const verdict = judgeUnreachable(url, error, request);
    process.stdout.write(verdict.report);
    return verdict.exitCode;
  }
  let body: unknown;
  try {
    // An exporter that answers, but not with a status, is not "unreachable": it blocks the job.
    const text = await response.text();
    if (!response.ok) throw new Error(`${response.status}: ${text.trim().slice(0, 300)}`);
    body = JSON.parse(text);
  } catch (error) {
    process.stdout.write(
      `preflight ${node}: cannot use the answer of ${url}: ${describeError(error)}\nNOT READY\n`,
    );
    return 1;
  }
  const verdict = judgePreflight(body, request);
  process.stdout.write(verdict.report);
  return verdict.exitCode;
}

/** Autopilot's gpumodel label: the first GPU's name, N/A without NVML or GPUs. */
async function gpuModelOf(nvml: NvmlLoad): Promise<string> {
  if (!nvml.ok) return 'N/A';
  try {
    return (await nvml.nvml.devices())[0]?.name ?? 'N/A';
  } catch {
    return 'N/A';
  }
}

/** The probe library `make -C cuda` builds, beside the compiled exporter (dist/exporter/main.js). */
function defaultCudaProbeLibrary(): string {
  return fileURLToPath(new URL('../../build/cuda/libautopilot-probe.so', import.meta.url));
}

function readCpuModel(): string {
  try {
    return parseCpuModel(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return 'N/A';
  }
}

function packageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    const parsed = JSON.parse(text) as { version?: unknown };
    return typeof parsed.version === 'string' ? parsed.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

// Exit explicitly: everything worth finishing has finished by now (stdio is synchronous). A driver
// call hung on a worker thread would hold even process.exit(), since libuv joins its threads as the
// process exits (for as long as the call hangs, minutes or forever): then SIGKILL ends it at once.
const exitState: ExitState = { hungNativeCalls: 0 };
main(process.argv.slice(2), exitState).then(
  (code) => {
    if (exitState.hungNativeCalls > 0) process.kill(process.pid, 'SIGKILL');
    else process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(
      `autopilot: fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
