import { describe, expect, test } from '@jest/globals';
import type { CheckRun } from '../../exporter/checks/check.js';
import {
  DEEP_CHECKS,
  TERMINATION_MESSAGE_BYTES,
  deepCheckReport,
  readDeepCheckReport,
} from '../../exporter/deep-check-report.js';
import {
  describeError,
  judgePreflight,
  judgeUnreachable,
  parsePreflightOptions,
  preflightUrl,
  type FailOn,
  type PreflightRequest,
} from '../../exporter/preflight-client.js';
import { device, makeRun } from '../fakes/runs.js';

const NODE = 'gpu-node-1';

/** dcgm and gpumem over `gpus` GPUs, each reason `reasonLength` long. */
function deepRuns(gpus: number, reasonLength: number, letter = 'x'): CheckRun[] {
  const devices = Array.from({ length: gpus }, (_, i) =>
    device(String(i), i === 0 ? 'FAIL' : 'PASS', {
      reason: `${i}:${letter.repeat(reasonLength)}`.slice(0, reasonLength),
      ...(i === 0 ? { fatal: true } : {}),
    }),
  );
  return [
    makeRun('dcgm', 0, devices, { reason: 'r'.repeat(reasonLength) }),
    makeRun('gpumem', 0, devices, { reason: 'm'.repeat(reasonLength) }),
  ];
}

describe('deepCheckReport and readDeepCheckReport', () => {
  test('DEEP_CHECKS is DCGM level 3 then gpumem', () => {
    expect(DEEP_CHECKS).toEqual([
      ['dcgm', { r: '3' }],
      ['gpumem', {}],
    ]);
  });

  test('a small report round-trips whole', () => {
    const runs = [
      makeRun('dcgm', 0, [device('0', 'PASS'), device('1', 'FAIL', { fatal: true })]),
      makeRun('gpumem', 0, [device('0', 'WARN'), device('1', 'ERROR')]),
    ];
    expect(readDeepCheckReport(deepCheckReport(runs))).toEqual([
      {
        check: 'dcgm',
        verdict: 'FAIL',
        reason: 'FAIL run',
        devices: [
          { id: '0', verdict: 'PASS', reason: 'pass reason', fatal: false },
          { id: '1', verdict: 'FAIL', reason: 'fail reason', fatal: true },
        ],
      },
      {
        check: 'gpumem',
        verdict: 'ERROR',
        reason: 'ERROR run',
        devices: [
          { id: '0', verdict: 'WARN', reason: 'warn reason', fatal: false },
          { id: '1', verdict: 'ERROR', reason: 'error reason', fatal: false },
        ],
      },
    ]);
  });

  test('reasons that fit are kept whole', () => {
    const text = deepCheckReport(deepRuns(8, 150));
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_BYTES);
    const report = readDeepCheckReport(text)!;
    expect(report[0]?.reason).toHaveLength(150);
    expect(report[0]?.devices[5]?.reason).toHaveLength(150);
  });

  test.each<[string, number, number, string, number]>([
    ['8 GPUs, 300-character reasons', 8, 300, 'x', 80],
    ['8 GPUs, 150 two-byte characters', 8, 150, 'µ', 80],
    ['16 GPUs, 300-character reasons', 16, 300, 'x', 20],
  ])(
    '%s: reasons shortened to fit 4,096 bytes, verdicts and devices kept',
    (_name, gpus, length, letter, kept) => {
      const runs = deepRuns(gpus, length, letter);
      const text = deepCheckReport(runs);
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_BYTES);
      const report = readDeepCheckReport(text)!;
      expect(report.map((r) => [r.check, r.verdict])).toEqual([
        ['dcgm', 'FAIL'],
        ['gpumem', 'FAIL'],
      ]);
      for (const [i, entry] of report.entries()) {
        const run = runs[i]!;
        expect(entry.reason).toBe(run.reason.slice(0, kept));
        expect(entry.devices).toHaveLength(gpus);
        for (const [j, d] of entry.devices.entries()) {
          expect(d.reason).toBe(run.devices[j]!.reason.slice(0, kept));
        }
        expect(entry.devices[0]).toMatchObject({ id: '0', verdict: 'FAIL', fatal: true });
      }
    },
  );

  test('too many devices even without reasons: the verdicts per check and the failing devices remain', () => {
    const text = deepCheckReport(deepRuns(64, 300));
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_BYTES);
    // GPU 0 failed fatally: its flag must survive, or the node would not be evicted.
    const failing = [{ id: '0', verdict: 'FAIL', reason: '', fatal: true }];
    expect(readDeepCheckReport(text)).toEqual([
      { check: 'dcgm', verdict: 'FAIL', reason: '', devices: failing },
      { check: 'gpumem', verdict: 'FAIL', reason: '', devices: failing },
    ]);
  });

  test.each<[string, string | undefined]>([
    ['undefined (no message)', undefined],
    ['empty', ''],
    ['a crash log tail', 'panic: runtime error: index out of range [3] with length 2'],
    ['JSON without runs', '{"checks":[]}'],
    ['runs that are not a list', '{"runs":{"dcgm":"PASS"}}'],
    ['a JSON list', '[{"check":"dcgm","verdict":"PASS"}]'],
    ['a JSON string', '"PASS"'],
    ['truncated JSON', deepCheckReport(deepRuns(2, 10)).slice(0, 40)],
  ])('readDeepCheckReport of %s is undefined', (_name, message) => {
    expect(readDeepCheckReport(message)).toBeUndefined();
  });

  test('readDeepCheckReport keeps what it can read and drops the rest', () => {
    const message = JSON.stringify({
      runs: [
        { check: 'dcgm', verdict: 'PASS', devices: [{ id: '0', verdict: 'PASS' }] },
        { check: 'gpumem', verdict: 'GREAT' },
        { verdict: 'PASS' },
        {
          check: 'gpumem',
          verdict: 'FAIL',
          reason: 7,
          devices: [
            { id: 1, verdict: 'FAIL' },
            { id: '2', verdict: 'NOPE' },
            { id: '3', verdict: 'FAIL', reason: 'bad', fatal: 'yes' },
          ],
        },
      ],
    });
    expect(readDeepCheckReport(message)).toEqual([
      {
        check: 'dcgm',
        verdict: 'PASS',
        reason: '',
        devices: [{ id: '0', verdict: 'PASS', reason: '', fatal: false }],
      },
      {
        check: 'gpumem',
        verdict: 'FAIL',
        reason: '',
        devices: [{ id: '3', verdict: 'FAIL', reason: 'bad', fatal: false }],
      },
    ]);
  });
});

describe('parsePreflightOptions', () => {
  const KNOWN = ['pciebw', 'remapped', 'gpupower', 'dcgm'];
  const VALID: Record<string, string> = {
    url: 'http://autopilot-healthchecks.autopilot.svc:3333',
    'max-age': '1h',
    checks: 'pciebw,remapped,gpupower',
    'fail-on': 'warn',
  };
  const parse = (changes: Record<string, string | undefined>): PreflightRequest => {
    const options = new Map<string, string>();
    for (const [name, value] of Object.entries({ ...VALID, ...changes })) {
      if (value !== undefined) options.set(name, value);
    }
    return parsePreflightOptions(options, NODE, KNOWN);
  };

  test('the defaults make a request for this node', () => {
    expect(parse({})).toEqual({
      url: 'http://autopilot-healthchecks.autopilot.svc:3333',
      node: NODE,
      maxAge: '1h',
      checks: ['pciebw', 'remapped', 'gpupower'],
      failOn: 'warn',
      onUnreachable: 'fail',
    });
  });

  test('--on-unreachable takes fail or pass', () => {
    expect(parse({ 'on-unreachable': 'pass' }).onUnreachable).toBe('pass');
    expect(() => parse({ 'on-unreachable': 'open' })).toThrow(
      new Error('invalid --on-unreachable "open": expected fail or pass'),
    );
  });

  test('trailing slashes leave the URL, blanks and empty items the check list', () => {
    const request = parse({ url: 'https://x:3333//', checks: ' pciebw , ,remapped,' });
    expect(request.url).toBe('https://x:3333');
    expect(request.checks).toEqual(['pciebw', 'remapped']);
  });

  test.each<[string, Record<string, string | undefined>, string]>([
    ['no url', { url: undefined }, 'invalid --url "": expected http://host:port'],
    [
      'a url without scheme',
      { url: 'x:3333' },
      'invalid --url "x:3333": expected http://host:port',
    ],
    ['another scheme', { url: 'ftp://x' }, 'invalid --url "ftp://x": expected http://host:port'],
    [
      'a url without host',
      { url: 'http:///status' },
      'invalid --url "http:///status": expected http://host:port',
    ],
    [
      'a bad max-age',
      { 'max-age': 'soon' },
      'invalid --max-age "soon": expected a duration such as 1h',
    ],
    ['an empty max-age', { 'max-age': '' }, 'invalid --max-age "": expected a duration such as 1h'],
    [
      'a max-age without unit',
      { 'max-age': '30' },
      'invalid --max-age "30": expected a duration such as 1h',
    ],
    ['no checks', { checks: ' , ,' }, 'invalid --checks: name at least one check'],
    [
      'an unknown check',
      { checks: 'pciebw,remaped' },
      'invalid --checks: unknown check "remaped"; known checks: pciebw, remapped, gpupower, dcgm',
    ],
    [
      'an unknown fail-on',
      { 'fail-on': 'fail' },
      'invalid --fail-on "fail": expected warn, evict or error',
    ],
    [
      'an upper-case fail-on',
      { 'fail-on': 'EVICT' },
      'invalid --fail-on "EVICT": expected warn, evict or error',
    ],
  ])('%s', (_name, changes, message) => {
    expect(() => parse(changes)).toThrow(new Error(message));
  });
});

describe('preflightUrl', () => {
  test("asks /status for this node's checks, as JSON, with the maximum age", () => {
    const url = preflightUrl({
      url: 'http://x:3333',
      node: NODE,
      maxAge: '30m',
      checks: ['pciebw', 'remapped'],
      failOn: 'warn',
      onUnreachable: 'fail',
    });
    expect(url).toBe(
      'http://x:3333/status?host=gpu-node-1&check=pciebw%2Cremapped&maxage=30m&format=json',
    );
    const parsed = new URL(url);
    expect(parsed.pathname).toBe('/status');
    expect(Object.fromEntries(parsed.searchParams)).toEqual({
      host: NODE,
      check: 'pciebw,remapped',
      maxage: '30m',
      format: 'json',
    });
  });

  test('a URL with a path keeps it', () => {
    expect(
      preflightUrl({
        url: 'http://x/autopilot',
        node: 'n',
        maxAge: '1h',
        checks: ['a'],
        failOn: 'warn',
        onUnreachable: 'fail',
      }),
    ).toBe('http://x/autopilot/status?host=n&check=a&maxage=1h&format=json');
  });
});

describe('an exporter that cannot be asked', () => {
  const request = (onUnreachable: 'fail' | 'pass'): PreflightRequest => ({
    url: 'http://x:3333',
    node: NODE,
    maxAge: '1h',
    checks: ['pciebw'],
    failOn: 'warn',
    onUnreachable,
  });
  // What undici throws for a refused connection: the useful words are in the cause.
  const refused = new TypeError('fetch failed', {
    cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:3333'), { code: 'ECONNREFUSED' }),
  });

  test('"fetch failed" is followed by its cause', () => {
    expect(describeError(refused)).toBe('fetch failed: connect ECONNREFUSED 10.0.0.5:3333');
  });

  test('an AggregateError without a message (several addresses) gives each address', () => {
    const both = new TypeError('fetch failed', {
      cause: new AggregateError(
        [new Error('connect ECONNREFUSED ::1:1'), new Error('connect ECONNREFUSED 127.0.0.1:1')],
        '',
      ),
    });
    expect(describeError(both)).toBe(
      'fetch failed: connect ECONNREFUSED ::1:1; connect ECONNREFUSED 127.0.0.1:1',
    );
  });

  test('fail (the default) blocks the job, pass lets it start; both print the reason', () => {
    const reason = `preflight ${NODE}: cannot ask http://u: fetch failed: connect ECONNREFUSED 10.0.0.5:3333\n`;
    expect(judgeUnreachable('http://u', refused, request('fail'))).toEqual({
      exitCode: 1,
      report: `${reason}NOT READY\n`,
    });
    expect(judgeUnreachable('http://u', refused, request('pass'))).toEqual({
      exitCode: 0,
      report: `${reason}READY: the exporters could not be asked and --on-unreachable is pass\n`,
    });
  });
});

describe('judgePreflight', () => {
  const request = (failOn: FailOn): PreflightRequest => ({
    url: 'http://x:3333',
    node: NODE,
    maxAge: '1h',
    checks: ['pciebw', 'remapped', 'gpupower'],
    failOn,
    onUnreachable: 'fail',
  });

  interface Run {
    check: string;
    verdict: string;
    reason: string;
  }

  /** The answer of the node's own exporter (/status on it). */
  const single = (state: string, runs: Run[], reasons: string[] = []) => ({
    node: NODE,
    cached: false,
    health: { state, since: '2026-01-01T00:00:00.000Z', reasons },
    results: runs.map((run) => ({ ...run, trigger: 'api', params: {}, devices: [], text: '' })),
  });

  /** The answer of another exporter, which asked the node for us (a cluster report). */
  const cluster = (state: string, runs: Run[], reasons: string[] = []) => ({
    notes: [],
    nodes: [
      {
        type: 'node',
        node: 'gpu-node-0',
        outcome: 'answered',
        detail: '',
        health: { state: 'EVICT', reasons: ['not this one'] },
        runs: [{ check: 'remapped', verdict: 'FAIL', reason: 'other node' }],
      },
      {
        type: 'node',
        node: NODE,
        endpoint: '10.0.0.5:3333',
        outcome: 'answered',
        httpStatus: 200,
        detail: '',
        health: { state, reasons },
        runs,
      },
    ],
    summary: {},
  });

  const PASSING: Run[] = [
    { check: 'pciebw', verdict: 'PASS', reason: 'all links at 55 GB/s' },
    { check: 'remapped', verdict: 'PASS', reason: 'no remapped rows' },
  ];
  const FAILING: Run[] = [
    { check: 'pciebw', verdict: 'PASS', reason: 'all links at 55 GB/s' },
    { check: 'remapped', verdict: 'FAIL', reason: 'GPU 3: remapping failure' },
  ];
  const ERRORING: Run[] = [
    { check: 'pciebw', verdict: 'PASS', reason: 'all links at 55 GB/s' },
    { check: 'gpupower', verdict: 'ERROR', reason: 'NVML not loaded' },
  ];

  test('the exact report of a WARN node with a failed check', () => {
    const body = single('WARN', FAILING, ['remapped: GPU 3 remapping failure']);
    expect(judgePreflight(body, request('warn'))).toEqual({
      exitCode: 1,
      report:
        'preflight gpu-node-1: health WARN\n' +
        '  pciebw     PASS  all links at 55 GB/s\n' +
        '  remapped   FAIL  GPU 3: remapping failure\n' +
        '  reason: remapped: GPU 3 remapping failure\n' +
        'NOT READY: the node is WARN; remapped failed\n',
    });
  });

  test('the exact report of a ready node', () => {
    expect(judgePreflight(single('PASS', PASSING), request('warn'))).toEqual({
      exitCode: 0,
      report:
        'preflight gpu-node-1: health PASS\n' +
        '  pciebw     PASS  all links at 55 GB/s\n' +
        '  remapped   PASS  no remapped rows\n' +
        'READY\n',
    });
  });

  const lastLine = (report: string): string => report.trimEnd().split('\n').at(-1)!;

  describe.each([
    ['single-node answer', single],
    ['cluster answer', cluster],
  ])('%s', (_shape, answer) => {
    test.each<[string, string, Run[], FailOn, 0 | 1, string]>([
      ['healthy', 'PASS', PASSING, 'warn', 0, 'READY'],
      ['healthy, fail-on error', 'PASS', PASSING, 'error', 0, 'READY'],
      ['EVICT, fail-on evict', 'EVICT', PASSING, 'evict', 1, 'NOT READY: the node is EVICT'],
      ['EVICT, fail-on warn', 'EVICT', PASSING, 'warn', 1, 'NOT READY: the node is EVICT'],
      ['WARN, fail-on warn', 'WARN', PASSING, 'warn', 1, 'NOT READY: the node is WARN'],
      ['WARN, fail-on evict', 'WARN', FAILING, 'evict', 0, 'READY'],
      ['a failed check, fail-on warn', 'PASS', FAILING, 'warn', 1, 'NOT READY: remapped failed'],
      ['a failed check, fail-on error', 'PASS', FAILING, 'error', 1, 'NOT READY: remapped failed'],
      ['an ERROR, fail-on warn', 'PASS', ERRORING, 'warn', 0, 'READY'],
      ['an ERROR, fail-on evict', 'PASS', ERRORING, 'evict', 0, 'READY'],
      [
        'an ERROR, fail-on error',
        'PASS',
        ERRORING,
        'error',
        1,
        'NOT READY: gpupower could not run',
      ],
      [
        'EVICT with a failed check, fail-on error',
        'EVICT',
        [...FAILING, ...ERRORING.slice(1)],
        'error',
        1,
        'NOT READY: the node is EVICT; remapped failed; gpupower could not run',
      ],
    ])('%s', (_name, state, runs, failOn, exitCode, verdict) => {
      const judged = judgePreflight(answer(state, runs), request(failOn));
      expect(judged.exitCode).toBe(exitCode);
      expect(judged.report.startsWith(`preflight ${NODE}: health ${state}\n`)).toBe(true);
      expect(lastLine(judged.report)).toBe(verdict);
    });
  });

  test('the cluster answer is read for this node, not the others', () => {
    const judged = judgePreflight(cluster('PASS', PASSING), request('warn'));
    expect(judged.report).not.toContain('other node');
    expect(judged.exitCode).toBe(0);
  });

  test('a node that did not answer is NOT READY, with the detail', () => {
    const body = {
      nodes: [
        {
          node: NODE,
          outcome: 'unreachable',
          detail: 'connect ECONNREFUSED 10.0.0.5:3333',
          health: null,
          runs: [],
        },
      ],
    };
    expect(judgePreflight(body, request('evict'))).toEqual({
      exitCode: 1,
      report:
        'preflight gpu-node-1: node gpu-node-1 did not answer: connect ECONNREFUSED 10.0.0.5:3333\nNOT READY\n',
    });
  });

  test('a node without an endpoint is NOT READY', () => {
    const body = { nodes: [{ node: NODE, outcome: 'no-endpoint', detail: '', health: null }] };
    const judged = judgePreflight(body, request('warn'));
    expect(judged.exitCode).toBe(1);
    expect(judged.report).toContain('did not answer');
  });

  test('a cluster answer that does not mention the node is NOT READY', () => {
    const body = {
      nodes: [{ node: 'gpu-node-0', outcome: 'answered', health: { state: 'PASS' } }],
    };
    expect(judgePreflight(body, request('warn'))).toEqual({
      exitCode: 1,
      report: 'preflight gpu-node-1: the answer does not mention node gpu-node-1\nNOT READY\n',
    });
  });

  test.each<[string, unknown]>([
    ['an empty object', {}],
    ['a number', 42],
    ['a string', 'OK'],
    ['a list', []],
    ['health without results', { health: { state: 'PASS' } }],
    ['null', null],
  ])('%s is not an Autopilot status: NOT READY, no crash', (_name, body) => {
    expect(judgePreflight(body, request('evict'))).toEqual({
      exitCode: 1,
      report: 'preflight gpu-node-1: the answer is not an Autopilot status\nNOT READY\n',
    });
  });
});

describe('the dcgm failure string travels in the report', () => {
  test('Autopilot’s failure string from the node-level device reaches the exporter', () => {
    const dcgm = makeRun('dcgm', 0, [
      device('', 'FAIL', { evidence: { failures: 'pcie.2memory_bandwidth.0' } }),
      device('2', 'FAIL', { fatal: true }),
    ]);
    const report = readDeepCheckReport(deepCheckReport([dcgm]));
    expect(report?.[0]?.failures).toBe('pcie.2memory_bandwidth.0');
  });
});
