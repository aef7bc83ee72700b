/**
 * Go's time.ParseDuration grammar, which Autopilot's --w and --invasive-check-timer use:
 * a sequence of decimal numbers, each with an optional fraction and a unit (ns, us, µs, ms, s,
 * m, h), such as "1h30m" or "1.5h"; "0" alone is zero. A bare number like "123" is invalid in Go
 * and stays invalid here. Negative durations are rejected: no interval can be negative.
 */

/** Nanoseconds per unit: Go sums whole nanoseconds, which keeps "1.15h" exactly 1h9m. */
const UNIT_NS: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  µs: 1_000n,
  μs: 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const COMPONENT = /(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/y;

/** Milliseconds, or undefined when the text is not a Go duration. */
export function parseGoDuration(text: string): number | undefined {
  const source = text.startsWith('+') ? text.slice(1) : text;
  if (source === '0') return 0;
  if (source === '') return undefined;
  COMPONENT.lastIndex = 0;
  let totalNs = 0n;
  while (COMPONENT.lastIndex < source.length) {
    const start = COMPONENT.lastIndex;
    const match = COMPONENT.exec(source);
    if (match === null || match.index !== start) return undefined;
    const whole = match[1]!;
    const fraction = match[2] ?? '';
    if (whole === '' && fraction === '') return undefined;
    const unit = UNIT_NS[match[3]!]!;
    totalNs += BigInt(whole === '' ? '0' : whole) * unit;
    if (fraction !== '') totalNs += (BigInt(fraction) * unit) / 10n ** BigInt(fraction.length);
  }
  return Number(totalNs) / 1e6;
}

/** Go's longest duration (2^63 - 1 ns) in whole hours; a longer interval overflowed in Autopilot. */
export const MAX_WHOLE_HOURS = 2_562_047;

/**
 * Autopilot up to 2.1.3 declared --w and --invasive-check-timer as Go integers counted in hours,
 * and IBM's chart passes `repeat: 1` from such values files as `--w 1`. Only plain decimals are
 * read: Go's flag.Int would take "010" as octal 8, which no one means. Milliseconds, or undefined
 * when the text is not a whole number of hours.
 */
export function parseWholeHours(text: string): number | undefined {
  const match = /^\+?(0|[1-9]\d*)$/.exec(text);
  if (match === null) return undefined;
  const hours = Number(match[1]);
  return hours <= MAX_WHOLE_HOURS ? hours * 3_600_000 : undefined;
}

/** 5400000 → "1h30m"; for messages and help texts. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    const whole = Math.floor(rest / size);
    if (whole > 0) parts.push(`${whole}${unit}`);
    rest -= whole * size;
  }
  if (rest > 0) parts.push(`${Number(rest.toFixed(3))}ms`);
  return parts.join('');
}
