/**
 * The status page's pure renderers (issue 22): every untrusted value escaped, the filters, the
 * counts, the states and the ages, the run form's parsing and cross-site rule, and the NDJSON of
 * /status turned into result rows.
 */

import { describe, expect, test } from '@jest/globals';
import {
  parseFilter,
  renderClusterPage,
  renderRow,
} from '../../exporter/api/status-page-cluster.js';
import { readSummary, type NodeSummary } from '../../exporter/api/status-page-data.js';
import { ageText, esc, pageState } from '../../exporter/api/status-page-html.js';
import { renderNodePage } from '../../exporter/api/status-page-node.js';
import {
  crossSiteRefusal,
  ndjsonToHtml,
  parseRunForm,
  renderLocalAnswer,
} from '../../exporter/api/status-page-run.js';

const EVIL = '<script>alert(1)</script>"\'&';
const ESCAPED = '&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;';

function summary(node: string, state: NodeSummary['state'], reason = 'ok'): NodeSummary {
  return {
    node,
    state,
    reasons: [],
    detail: '',
    gpu: { model: 'H100', count: 8 },
    checks: [
      { check: 'ping', verdict: state === 'WARN' ? 'FAIL' : 'PASS', reason, ageSeconds: 125 },
    ],
  };
}

/** The page must contain the escaped form and never the raw one. */
function expectEscaped(html: string): void {
  expect(html).not.toContain('<script>alert');
  expect(html).toContain(ESCAPED.slice(0, 20));
}

describe('escaping', () => {
  test('esc escapes the five characters that matter in text and attributes', () => {
    expect(esc(EVIL)).toBe(ESCAPED);
  });

  test('cluster row: node name, reason, GPU model and the unanswered detail', () => {
    const row = renderRow(
      {
        ...summary(EVIL, 'WARN', EVIL),
        detail: EVIL,
        gpu: { model: EVIL, count: 2 },
      },
      ['ping'],
    );
    expectEscaped(row);
    expect(row).toContain(`data-node="${ESCAPED}"`);
    expect(row).toContain(`href="/node/${esc(encodeURIComponent(EVIL))}"`);
    expect(row).toContain(`title="${ESCAPED}"`);
  });

  test('the filter form echoes the node filter escaped', () => {
    const page = renderClusterPage('me', [], { state: '', check: '', node: EVIL }, ['ping'], []);
    expectEscaped(page);
    expect(page).toContain(`name="node" value="${ESCAPED}"`);
  });

  test('node view: reasons, devices, evidence, history, labels, taints, condition', () => {
    const html = renderNodePage(
      EVIL,
      EVIL,
      {
        ok: true,
        value: {
          summary: { ...summary(EVIL, 'EVICT', EVIL), reasons: [EVIL] },
          since: EVIL,
          results: [
            {
              check: EVIL,
              verdict: 'FAIL',
              reason: EVIL,
              trigger: EVIL,
              params: {},
              startedAt: '',
              finishedAt: '',
              durationSeconds: 1,
              ageSeconds: 5,
              devices: [
                {
                  id: EVIL,
                  verdict: 'FAIL',
                  reason: EVIL,
                  fatal: true,
                  evidence: { [EVIL]: EVIL },
                },
              ],
            },
          ],
          history: [
            {
              check: EVIL,
              verdict: 'FAIL',
              reason: EVIL,
              ageSeconds: 1,
              trigger: EVIL,
              durationSeconds: 1,
            },
          ],
          kubernetes: { nodeCondition: { type: 'GPUHealthy' } },
        },
      },
      {
        name: EVIL,
        labels: { [EVIL]: EVIL },
        annotations: {},
        allocatableGpus: 8,
        taints: [{ key: EVIL, value: EVIL, effect: 'NoSchedule' }],
        conditions: [
          {
            type: 'GPUHealthy',
            status: 'False',
            reason: EVIL,
            message: EVIL,
            lastTransitionTime: EVIL,
            lastHeartbeatTime: '',
          },
        ],
      },
    );
    expectEscaped(html);
    expect(html.split(ESCAPED).length - 1).toBeGreaterThanOrEqual(18);
  });

  test('run results: NDJSON lines and a local answer', async () => {
    const lines = [
      { type: 'node', node: EVIL, runs: [{ check: EVIL, verdict: 'FAIL', reason: EVIL }] },
      { type: 'node', node: EVIL, outcome: 'unreachable', detail: EVIL, runs: [] },
      { type: 'note', note: EVIL },
      { type: 'error', error: EVIL },
    ];
    const stream = ndjsonToHtml('<top>');
    const out: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => out.push(chunk));
    const text = lines.map((line) => JSON.stringify(line)).join('\n');
    // Split inside a line, and inside the UTF-8 of a multi-byte character (the é).
    const bytes = Buffer.from(`${text}\n{"type":"note","note":"é"}`);
    stream.write(bytes.subarray(0, 37));
    stream.write(bytes.subarray(37, bytes.length - 3));
    stream.end(bytes.subarray(bytes.length - 3));
    await new Promise((resolve) => stream.on('end', resolve));
    const html = Buffer.concat(out).toString('utf8');
    expectEscaped(html);
    expect(html.match(/<tr data-node=/g)).toHaveLength(2);
    expect(html).toContain('data-run="failed"');
    expect(html).toContain('<td colspan=4>é');
    expectEscaped(renderLocalAnswer({ node: EVIL, results: [{ check: EVIL, verdict: EVIL }] }));
  });
});

describe('filters, counts and states', () => {
  const nodes = [
    summary('gpu-a', 'PASS'),
    summary('gpu-b', 'WARN'),
    summary('gpu-c', 'EVICT'),
    summary('cpu-d', 'TESTING'),
    summary('gpu-e', 'UNKNOWN'),
  ];
  const rows = (html: string): string[] =>
    [...html.matchAll(/<tr data-node="([^"]+)" data-state=(\w+)>/g)].map((m) => `${m[1]}:${m[2]}`);
  const count = (html: string, state: string): number =>
    Number(new RegExp(`data-state=${state} data-count=(\\d+)`).exec(html)?.[1]);

  test('every state in colour (its class) and in words; counts per state', () => {
    const html = renderClusterPage('me', nodes, parseFilter({}, ['ping']), ['ping'], ['ping']);
    expect(rows(html)).toEqual([
      'gpu-a:PASS',
      'gpu-b:WARN',
      'gpu-c:EVICT',
      'cpu-d:TESTING',
      'gpu-e:UNKNOWN',
    ]);
    for (const state of ['PASS', 'WARN', 'EVICT', 'TESTING', 'UNKNOWN']) {
      expect(html).toContain(`<td class=${state}>${state}<td>`);
      expect(count(html, state)).toBe(1);
    }
    expect(html).toContain('<td class=FAIL title="ok">FAIL 2m');
  });

  test('state filters rows but not counts; node filters both; check picks the column', () => {
    const evicted = renderClusterPage(
      'me',
      nodes,
      parseFilter({ state: 'evict' }, ['ping']),
      ['ping'],
      ['ping'],
    );
    expect(rows(evicted)).toEqual(['gpu-c:EVICT']);
    expect(count(evicted, 'PASS')).toBe(1);
    const named = renderClusterPage(
      'me',
      nodes,
      parseFilter({ node: 'GPU-' }, ['ping']),
      ['ping'],
      ['ping'],
    );
    expect(rows(named)).toHaveLength(4);
    expect(count(named, 'TESTING')).toBe(0);
    const columns = renderClusterPage(
      'me',
      nodes,
      parseFilter({ check: 'xid' }, ['ping', 'xid']),
      ['ping', 'xid'],
      ['ping'],
    );
    expect([...columns.matchAll(/data-check="(\w+)"/g)].map((m) => m[1])).toEqual(['xid']);
    expect(columns).toContain('<td>—');
  });

  test('an unknown state or check is an error naming it', () => {
    expect(() => parseFilter({ state: 'GOOD' }, ['ping'])).toThrow(/state "GOOD" is not one of/);
    expect(() => parseFilter({ check: 'nope' }, ['ping'])).toThrow(/check "nope" is not a check/);
  });

  test('a state a node answers that the page does not know shows as UNKNOWN', () => {
    expect(pageState('EVICT')).toBe('EVICT');
    expect(pageState('<b>')).toBe('UNKNOWN');
    expect(readSummary({ node: 'n', state: 'weird', checks: [] })?.state).toBe('UNKNOWN');
    expect(readSummary({ node: 'n', checks: [{ check: 'x', verdict: '<i>' }] })).toBeUndefined();
  });

  test('ages are short', () => {
    expect(
      [0, 999, 1000, 59_999, 60_000, 3_599_999, 3_600_000, 86_400_000 * 3].map(ageText),
    ).toEqual(['now', 'now', '1s', '59s', '1m', '59m', '1h', '3d']);
  });
});

describe('the run form', () => {
  test('its fields, repeated nodes and checks; no check is an error', () => {
    expect(parseRunForm('node=a&node=b&check=ping&check=dcgm&level=3&token=t%2Bk')).toEqual({
      nodes: ['a', 'b'],
      checks: ['ping', 'dcgm'],
      level: '3',
      token: 't+k',
    });
    expect(parseRunForm('check=ping&token=')).toMatchObject({ token: undefined, level: undefined });
    expect(() => parseRunForm('node=a')).toThrow('choose one or more checks');
  });

  test('same-origin and header-less requests pass; cross-site ones are refused', () => {
    const ok = { secFetchSite: '', origin: '', host: 'n:3333' };
    expect(crossSiteRefusal(ok)).toBeUndefined();
    expect(
      crossSiteRefusal({ ...ok, secFetchSite: 'same-origin', origin: 'http://n:3333' }),
    ).toBeUndefined();
    expect(crossSiteRefusal({ ...ok, secFetchSite: 'none' })).toBeUndefined();
    expect(crossSiteRefusal({ ...ok, secFetchSite: 'cross-site' })).toMatch(
      /Sec-Fetch-Site: cross-site/,
    );
    expect(crossSiteRefusal({ ...ok, secFetchSite: 'same-site' })).toMatch(/same-site/);
    expect(crossSiteRefusal({ ...ok, origin: 'http://evil:3333' })).toMatch(/is not n:3333/);
    expect(crossSiteRefusal({ ...ok, origin: 'null' })).toMatch(/Origin is not a URL/);
  });
});
