/** The example Alertmanager configuration in deploy/examples/ is one Alertmanager accepts. */

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { loadAllYaml } from '@kubernetes/client-node';

const ROOT = join(import.meta.dirname, '..', '..');
const EXAMPLE = join(ROOT, 'deploy', 'examples', 'alertmanager-slack.yaml');
const RULES = join(ROOT, 'rules', 'autopilot.rules.yaml');

describe('deploy/examples/alertmanager-slack.yaml', () => {
  test('amtool check-config accepts it', () => {
    const output = execFileSync('amtool', ['check-config', EXAMPLE], { encoding: 'utf8' });
    expect(output).toContain('SUCCESS');
  });

  test('the critical route and the inhibition name alerts the shipped rules have', () => {
    const rules = loadAllYaml(readFileSync(RULES, 'utf8'))[0] as {
      groups: { rules: { alert?: string; labels?: { severity?: string } }[] }[];
    };
    const alerts = rules.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined);
    expect(alerts.map((a) => a.alert)).toContain('AutopilotNodeEvicted');
    expect(alerts.some((a) => a.labels?.severity === 'critical')).toBe(true);
    const inhibited = new RegExp('^(?:AutopilotGPU.*|AutopilotDCGMDiagnosticsFailed)$');
    expect(alerts.filter((a) => inhibited.test(a.alert!)).length).toBeGreaterThan(5);
  });
});
