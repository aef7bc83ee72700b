/**
 * The per-GPU verdicts a check's devices are compared with, as `${gpu}:${verdict}` for GPUs 0 to
 * n-1, written by the few GPUs that are not PASS: the one that differs stands out.
 */
export function gpuVerdicts(
  gpus: number,
  notPass: Readonly<Record<number, string>> = {},
): string[] {
  return Array.from({ length: gpus }, (_, gpu) => `${gpu}:${notPass[gpu] ?? 'PASS'}`);
}
