/**
 * Go's time.ParseDuration grammar, which Autopilot's --w and --invasive-check-timer use:
 * a sequence of decimal numbers, each with an optional fraction and a unit (ns, us, µs, ms, s,
 * m, h), such as "1h30m" or "1.5h"; "0" alone is zero. A bare number like "123" is invalid in Go
 * and stays invalid here. Negative durations are rejected: no interval can be negative.
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const COMPONENT = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/** Milliseconds, or undefined when the text is not a Go duration. */
export function parseGoDuration(text: string): number | undefined {
  const source = text.startsWith('+') ? text.slice(1) : text;
  if (source === '0') return 0;
  if (source === '') return undefined;
  COMPONENT.lastIndex = 0;
  let total = 0;
  while (COMPONENT.lastIndex < source.length) {
    const start = COMPONENT.lastIndex;
    const match = COMPONENT.exec(source);
    if (match === null || match.index !== start) return undefined;
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
  }
  return total;
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
