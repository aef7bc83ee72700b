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
 * test's own diagnostics. Rejects at once if the exporter exits first (a port in use, a bad
 * setting), rather than after `withinMs`.
 */
export function waitForListening(
  exporter: ChildProcess,
  ports: ExporterPorts,
  onStderr: (stderr: string) => void = () => undefined,
  withinMs = 30_000,
): Promise<void> {
  let stderr = '';
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no "exporter listening" line: ${stderr}`)),
      withinMs,
    );
    const exited = (code: number | null, signal: string | null): void => {
      clearTimeout(timer);
      reject(new Error(`the exporter exited (${code ?? signal}) before listening: ${stderr}`));
    };
    exporter.once('exit', exited);
    exporter.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      onStderr(stderr);
      const line = stderr.split('\n').find((l) => l.includes('"exporter listening"'));
      if (line === undefined) return;
      const entry = JSON.parse(line) as ExporterPorts;
      Object.assign(ports, { api: entry.api, metrics: entry.metrics, readiness: entry.readiness });
      clearTimeout(timer);
      exporter.off('exit', exited);
      resolve();
    });
  });
}
