#!/usr/bin/env node
/**
 * Composition root and the only module that touches the process: argv, environment, exit code,
 * signals, stdout and stderr. Everything else receives what it needs as arguments.
 */

import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { renderTable } from './api/render.js';
import { CHECK_NAMES, CHECK_SUMMARIES } from './checks/index.js';
import type { CheckRun } from './checks/check.js';
import { helpText, parseCommandLine, UsageError, type Command, type CommandLine } from './cli.js';
import { createSystemClock } from './clock.js';
import { ConfigError, parseConfig, type Config } from './config/config.js';
import { createRunCommand } from './exec/run-command.js';
import { buildExporter, type Exporter } from './exporter.js';
import { parseCpuModel } from './host-info.js';
import { createJsonLogger, type Logger } from './log.js';
import { listen, type Listening } from './server.js';
import { loadCudaProbe } from './native/cuda-probe.js';
import { loadNvml } from './native/nvml.js';
import type { NvmlLoad } from './native/ports.js';
import { fileURLToPath } from 'node:url';

const EXIT_USAGE = 2;
const SHUTDOWN_GRACE_MS = 10_000;

async function main(argv: readonly string[]): Promise<number> {
  // NVML and CUDA calls run on libuv's thread pool (4 threads by default), which file and DNS
  // operations share; a hung driver call must not starve them. Read when the pool first starts.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  let commandLine: CommandLine;
  let config: Config;
  try {
    commandLine = parseCommandLine(argv);
    if (commandLine.command.kind === 'help') {
      const checks = CHECK_NAMES.map((name) => ({ name, summary: CHECK_SUMMARIES[name] }));
      process.stdout.write(helpText(commandLine.command.topic, { checks }));
      return 0;
    }
    config = parseConfig({
      flags: commandLine.flags,
      env: process.env,
      hostname: hostname(),
      knownChecks: CHECK_NAMES,
    });
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`autopilot: ${error.message}\nRun "autopilot --help" for usage.\n`);
      return EXIT_USAGE;
    }
    throw error;
  }

  const logger = createJsonLogger({
    level: config.logLevel,
    write: (line) => process.stderr.write(line),
    now: Date.now,
  }).child({ node: config.nodeName });
  const nvml = await loadNvml(config.nvmlLibrary);
  const cuda = loadCudaProbe(config.cudaProbeLibrary ?? defaultCudaProbeLibrary());
  if (!nvml.ok) logger.info('NVML unavailable: GPU checks will say SKIP', { reason: nvml.reason });
  if (!cuda.ok)
    logger.info('CUDA probe unavailable: pciebw and gpumem will say SKIP', { reason: cuda.reason });
  const exporter = buildExporter(config, {
    runCommand: createRunCommand({ baseEnv: process.env }),
    nvml,
    cuda,
    clock: createSystemClock(),
    logger,
    cpuModel: readCpuModel(),
    gpuModel: await gpuModelOf(nvml),
    build: { version: packageVersion(), nodejs: process.versions.node },
  });

  try {
    return await runCommandLine(commandLine.command, exporter, config, logger);
  } finally {
    if (nvml.ok) await nvml.nvml.close();
  }
}

async function runCommandLine(
  command: Exclude<Command, { kind: 'help' }>,
  exporter: Exporter,
  config: Config,
  logger: Logger,
): Promise<number> {
  switch (command.kind) {
    case 'check':
      return checkOnce(exporter, config, command.checks, logger);
    case 'serve':
      return serve(exporter, config, logger);
  }
}

async function checkOnce(
  exporter: Exporter,
  config: Config,
  requested: readonly string[],
  logger: Logger,
): Promise<number> {
  const names = requested.flatMap((name) => (name === 'all' ? config.periodicChecks : [name]));
  const unknown = names.filter((name) => !exporter.checks.has(name));
  if (unknown.length > 0) {
    process.stderr.write(
      `autopilot: unknown check ${JSON.stringify(unknown[0])}; known checks: ${[...exporter.checks.keys(), 'all'].join(', ')}\n`,
    );
    return EXIT_USAGE;
  }
  const runs: CheckRun[] = [];
  const stop = (): void => void exporter.runner.shutdown(SHUTDOWN_GRACE_MS);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  for (const name of new Set(names)) runs.push(await exporter.runner.run(name, {}, 'cli'));
  process.stdout.write(renderTable(runs));
  logger.debug('checks done', { checks: names });
  return runs.some((run) => run.verdict === 'FAIL' || run.verdict === 'ERROR') ? 1 : 0;
}

async function serve(exporter: Exporter, config: Config, logger: Logger): Promise<number> {
  let listening: Listening;
  try {
    listening = await listen(exporter, config);
  } catch (error) {
    const { code, port } = error as { code?: string; port?: number };
    if (code !== 'EADDRINUSE' && code !== 'EACCES' && code !== 'EADDRNOTAVAIL') throw error;
    const why = {
      EADDRINUSE: 'it is in use',
      EACCES: 'permission denied',
      EADDRNOTAVAIL: 'no such address here',
    }[code];
    process.stderr.write(`autopilot: cannot listen on port ${port ?? '?'}: ${why}\n`);
    return 1;
  }
  logger.info('exporter listening', {
    api: listening.ports.api,
    metrics: listening.ports.metrics,
    readiness: listening.ports.readiness,
    periodicChecks: config.periodicChecks,
    peers: config.peers.length,
  });
  exporter.scheduler.start();
  exporter.xidWatcher.start();
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  logger.info('shutting down', { signal });
  exporter.scheduler.stop();
  await exporter.xidWatcher.stop();
  await exporter.runner.shutdown(SHUTDOWN_GRACE_MS);
  await listening.close();
  return 0;
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

// Exit explicitly: a driver call that hangs past the shutdown grace keeps a native thread, and the
// process with it, alive; everything worth finishing has finished by now (stdio is synchronous).
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(
      `autopilot: fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
