/** The host labels of the compatibility gauge, computed once at start-up. */

/**
 * Pure. The first "model name" of /proc/cpuinfo with the first "(" and the first ")" removed,
 * exactly as Autopilot's `sed 's/(//; s/)//'` does ("Intel(R) Xeon(R) ..." becomes
 * "IntelR Xeon(R) ..."), so that dashboards and alerts keyed on cpumodel keep matching.
 */
export function parseCpuModel(cpuinfo: string): string {
  const match = /^model name\s*:\s*(.+)$/m.exec(cpuinfo);
  if (match === null) return 'N/A';
  return match[1]!.trim().replace('(', '').replace(')', '');
}
