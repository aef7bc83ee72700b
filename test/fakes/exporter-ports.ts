/** Reads the ports a spawned exporter bound from its `exporter listening` log line. */

import type { ChildProcess } from 'node:child_process';

export interface ExporterPorts {
  api: number;
  metrics: number;
  readiness: number;
}

/**
 * Resolves once the exporter has logged `exporter listening`, copying the ports into `ports`
 * (callers keep one object for the whole file). `onStderr` receives all of stderr so far, for the
 * test's own diagnostics.
 */
export function waitForListening(
  exporter: ChildProcess,
  ports: ExporterPorts,
  onStderr: (stderr: string) => void = () => undefined,
  withinMs = 15_000,
): Promise<void> {
  let stderr = '';
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no "exporter listening" line: ${stderr}`)),
      withinMs,
    );
    exporter.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      onStderr(stderr);
      const line = stderr.split('\n').find((l) => l.includes('"exporter listening"'));
      if (line === undefined) return;
      const entry = JSON.parse(line) as ExporterPorts;
      Object.assign(ports, { api: entry.api, metrics: entry.metrics, readiness: entry.readiness });
      clearTimeout(timer);
      resolve();
    });
  });
}
