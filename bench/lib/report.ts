/** The printed form of the load and soak benchmarks: one figure a line, with its target. */

export function row(label: string, value: string, note = ''): void {
  console.log(`  ${label.padEnd(40)} ${value.padStart(16)}   ${note}`);
}

/** The figure against its design target, as every benchmark here prints it. */
export function against(value: number, target: number, unit: string): string {
  const ratio = value / target;
  const verdict = ratio <= 1 ? 'within target' : 'OVER TARGET';
  return `target ≤ ${target}${unit}: ratio ${ratio.toFixed(2)}, ${verdict}`;
}
