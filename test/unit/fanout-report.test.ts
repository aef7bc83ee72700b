import { describe, test, expect } from '@jest/globals';
import {
  nodeReportToJson,
  nodeStatus,
  pformatStatusDict,
  pyRepr,
  renderHeader,
  renderNdjsonLine,
  renderNodeBlock,
  renderSummary,
  summaryToJson,
} from '../../exporter/cluster/fanout-report.js';
import type { NodeReport, RemoteRun } from '../../exporter/cluster/fanout-report.js';

const PCIEBW_TEXT =
  '[[ PCIEBW ]] Briefings completed. Continue with PCIe Bandwidth evaluation.\n' +
  'SUCCESS\n' +
  'Host  node-a\n' +
  '12.3 12.3 12.3 12.3 5.3 12.3 12.3 12.3\n';

function run(check: string, verdict: RemoteRun['verdict'], text = ''): RemoteRun {
  return { check, verdict, reason: `${check} ${verdict.toLowerCase()}`, text };
}

function report(overrides: Partial<NodeReport> = {}): NodeReport {
  return {
    node: 'node-a',
    endpoint: '10.128.6.187:3333',
    url: 'http://10.128.6.187:3333/status?host=node-a&check=pciebw',
    outcome: 'answered',
    httpStatus: 200,
    detail: '',
    health: { state: 'PASS', reasons: [] },
    runs: [run('pciebw', 'PASS', PCIEBW_TEXT)],
    durationSeconds: 1.25,
    ...overrides,
  };
}

/** A node that gave no answer: no HTTP status, no health, no runs. */
function unanswered(overrides: Partial<NodeReport>): NodeReport {
  return report({ httpStatus: undefined, health: undefined, runs: [], ...overrides });
}

/** node-c, which has no Autopilot pod and so no endpoint to ask. */
const NO_ENDPOINT: Partial<NodeReport> = {
  node: 'node-c',
  endpoint: undefined,
  url: undefined,
  outcome: 'no-endpoint',
  detail: 'no Autopilot pod on this node',
};

function failedOn(node: string, ...checks: string[]): NodeReport {
  return report({ node, runs: checks.map((check) => run(check, 'FAIL')) });
}

describe('nodeStatus', () => {
  test.each([
    ['pciebw', 'PCIE Failed'],
    ['remapped', 'REMAPPED ROWS Failed'],
    ['dcgm', 'DCGM Failed'],
    ['gpupower', 'GPU POWER Failed'],
    ['ping', 'PING Failed'],
    ['gpumem', 'GPU MEM Test Failed'],
    ['pvc', 'PVC Create-Delete Test Failed'],
    ['iperf', 'IPERF Failed'],
    ['xid', 'XID Failed'],
    ['ecc', 'ECC Failed'],
    ['constructor', 'CONSTRUCTOR Failed'],
  ])('a FAIL of %s is %s', (check, expected) => {
    expect(nodeStatus(report({ runs: [run(check, 'FAIL')] }))).toEqual([expected]);
  });

  test.each([
    ['pciebw', 'PCIE Error'],
    ['gpumem', 'GPU MEM Test Error'],
    ['pvc', 'PVC Create-Delete Test Error'],
    ['xid', 'XID Error'],
  ])('an ERROR of %s is %s, not Failed', (check, expected) => {
    expect(nodeStatus(report({ runs: [run(check, 'ERROR')] }))).toEqual([expected]);
  });

  test('PASS, WARN and SKIP are OK', () => {
    const runs = [run('pciebw', 'PASS'), run('remapped', 'WARN'), run('dcgm', 'SKIP')];
    expect(nodeStatus(report({ runs }))).toEqual(['OK']);
  });

  test('an answer with no runs is OK', () => {
    expect(nodeStatus(report({ runs: [] }))).toEqual(['OK']);
  });

  test('one entry per failing check, in run order, each listed once', () => {
    const runs = [
      run('remapped', 'PASS'),
      run('dcgm', 'ERROR'),
      run('pciebw', 'FAIL'),
      run('pciebw', 'FAIL'),
      run('gpupower', 'WARN'),
      run('ping', 'FAIL'),
    ];
    expect(nodeStatus(report({ runs }))).toEqual(['DCGM Error', 'PCIE Failed', 'PING Failed']);
  });

  test.each([
    ['unreachable', 200, ['Connection to Server Failed']],
    ['not-ready', undefined, ['Not Ready']],
    ['no-endpoint', undefined, ['No Autopilot Endpoint']],
    ['refused', 401, ['Request Refused (401)']],
    ['refused', 500, ['Request Refused (500)']],
    ['refused', undefined, ['Request Refused']],
  ] as const)(
    'outcome %s (HTTP %s) is %j whatever the runs say',
    (outcome, httpStatus, expected) => {
      const runs = [run('pciebw', 'FAIL')];
      expect(nodeStatus(report({ outcome, httpStatus, runs }))).toEqual(expected);
    },
  );
});

describe('renderHeader', () => {
  test('defaulted host and no selectors print all and None', () => {
    const text = renderHeader({
      host: undefined,
      nodelabel: undefined,
      job: undefined,
      urls: [
        'http://10.128.6.187:3333/status?host=node-a&check=pciebw',
        'http://10.131.4.93:3333/status?host=node-b&check=pciebw',
      ],
    });
    expect(text).toBe(
      'Asking to run on remote node(s) all or with node label None\n' +
        '\n' +
        "Initiated connection to ['http://10.128.6.187:3333/status?host=node-a&check=pciebw'].\n" +
        "Initiated connection to ['http://10.131.4.93:3333/status?host=node-b&check=pciebw'].\n" +
        '\n',
    );
  });

  test('host list, node label and job as the script printed them', () => {
    const text = renderHeader({
      host: 'node-a,node-b',
      nodelabel: 'gpu=h100',
      job: 'default:job-name=my-job',
      urls: ['http://10.0.0.5:3333/status?host=node-a&check=ping&job=default:job-name=my-job'],
    });
    expect(text).toBe(
      'Asking to run on remote node(s) node-a,node-b or with node label gpu=h100\n' +
        '\n' +
        'Workload: default: job-name=my-job\n' +
        "Initiated connection to ['http://10.0.0.5:3333/status?host=node-a&check=ping&job=default:job-name=my-job'].\n" +
        '\n',
    );
  });

  test('nobody asked still ends with the blank line', () => {
    expect(renderHeader({ host: 'all', nodelabel: undefined, job: undefined, urls: [] })).toBe(
      'Asking to run on remote node(s) all or with node label None\n\n\n',
    );
  });

  test('a URL with a quote is quoted as Python prints it', () => {
    const text = renderHeader({
      host: undefined,
      nodelabel: undefined,
      job: undefined,
      urls: ["http://10.0.0.5:3333/status?host=it's"],
    });
    expect(text.split('\n')[2]).toBe(
      'Initiated connection to ["http://10.0.0.5:3333/status?host=it\'s"].',
    );
  });
});

describe('renderNodeBlock', () => {
  test('an answered node is the script block with its reply and a blank line after it', () => {
    expect(renderNodeBlock(report())).toBe(
      'Autopilot Endpoint: 10.128.6.187\n' +
        'Node: node-a\n' +
        'url(s): http://10.128.6.187:3333/status?host=node-a&check=pciebw\n' +
        'Response:\n' +
        '[[ PCIEBW ]] Briefings completed. Continue with PCIe Bandwidth evaluation.\n' +
        'SUCCESS\n' +
        'Host  node-a\n' +
        '12.3 12.3 12.3 12.3 5.3 12.3 12.3 12.3\n' +
        '\n' +
        'Node Status: OK\n' +
        '-------------------------------------\n' +
        '\n',
    );
  });

  test('several checks are concatenated, each ending its own line, statuses joined by commas', () => {
    const block = renderNodeBlock(
      report({
        runs: [
          run('remapped', 'FAIL', '[[ REMAPPED ROWS ]] FAIL\nHost  node-a\n0 0 0 2\n'),
          run('dcgm', 'ERROR', '[[ DCGM ]] ERROR: dcgmi timed out'),
          run('gpupower', 'PASS', '[[GPU POWER]] SUCCESS\n'),
        ],
      }),
    );
    expect(block).toBe(
      'Autopilot Endpoint: 10.128.6.187\n' +
        'Node: node-a\n' +
        'url(s): http://10.128.6.187:3333/status?host=node-a&check=pciebw\n' +
        'Response:\n' +
        '[[ REMAPPED ROWS ]] FAIL\n' +
        'Host  node-a\n' +
        '0 0 0 2\n' +
        '[[ DCGM ]] ERROR: dcgmi timed out\n' +
        '[[GPU POWER]] SUCCESS\n' +
        '\n' +
        'Node Status: REMAPPED ROWS Failed, DCGM Error\n' +
        '-------------------------------------\n' +
        '\n',
    );
  });

  test('an unreachable node explains itself in one line, without a blank line after it', () => {
    const block = renderNodeBlock(
      unanswered({
        node: 'node-b',
        endpoint: '10.0.0.5:3333',
        url: 'http://10.0.0.5:3333/status?host=node-b',
        outcome: 'unreachable',
        detail: 'connect ECONNREFUSED 10.0.0.5:3333',
      }),
    );
    expect(block).toBe(
      'Autopilot Endpoint: 10.0.0.5\n' +
        'Node: node-b\n' +
        'url(s): http://10.0.0.5:3333/status?host=node-b\n' +
        'Response:\n' +
        'Connection to Server Failed: connect ECONNREFUSED 10.0.0.5:3333\n' +
        'Node Status: Connection to Server Failed\n' +
        '-------------------------------------\n' +
        '\n',
    );
  });

  test('a node without an endpoint prints None for the endpoint and the URL', () => {
    const block = renderNodeBlock(unanswered(NO_ENDPOINT));
    expect(block).toBe(
      'Autopilot Endpoint: None\n' +
        'Node: node-c\n' +
        'url(s): None\n' +
        'Response:\n' +
        'No Autopilot Endpoint: no Autopilot pod on this node\n' +
        'Node Status: No Autopilot Endpoint\n' +
        '-------------------------------------\n' +
        '\n',
    );
  });

  test.each([
    [
      'not-ready',
      undefined,
      'pod autopilot-x is not ready',
      'Not Ready: pod autopilot-x is not ready',
    ],
    [
      'refused',
      401,
      '401: bearer token required',
      'Request Refused (401): 401: bearer token required',
    ],
    ['refused', 403, '', 'Request Refused (403)'],
  ] as const)('a %s node (HTTP %s) explains itself', (outcome, httpStatus, detail, line) => {
    const lines = renderNodeBlock(report({ outcome, httpStatus, detail, runs: [] })).split('\n');
    expect(lines.slice(3, 6)).toEqual(['Response:', line, `Node Status: ${line.split(':')[0]}`]);
  });

  test.each([
    ['[fd00::5]:3333', 'fd00::5'],
    ['fd00::5', 'fd00::5'],
    ['10.0.0.5', '10.0.0.5'],
    ['', 'None'],
  ])('endpoint %j prints as %j', (endpoint, shown) => {
    expect(renderNodeBlock(report({ endpoint })).split('\n')[0]).toBe(
      `Autopilot Endpoint: ${shown}`,
    );
  });
});

describe('renderSummary', () => {
  test('a short summary is one line, and runtime keeps three decimals', () => {
    const reports = [failedOn('node-b', 'pciebw'), report({ node: 'node-a' })];
    expect(renderSummary(reports, 31.845192193984985)).toBe(
      'Node Summary:\n' +
        '\n' +
        "{'node-a': ['OK'], 'node-b': ['PCIE Failed']}\n" +
        '\n' +
        'runtime: 31.845 sec\n',
    );
  });

  test('a long summary is one key per line, in sorted order', () => {
    const reports = [
      report({ node: 'node-d', outcome: 'not-ready', detail: 'pod is not ready' }),
      report({ node: 'node-c', outcome: 'unreachable', detail: 'timed out after 60 s' }),
      failedOn('node-b', 'pciebw'),
      report({ node: 'node-a' }),
    ];
    expect(renderSummary(reports, 2)).toBe(
      'Node Summary:\n' +
        '\n' +
        "{'node-a': ['OK'],\n" +
        " 'node-b': ['PCIE Failed'],\n" +
        " 'node-c': ['Connection to Server Failed'],\n" +
        " 'node-d': ['Not Ready']}\n" +
        '\n' +
        'runtime: 2.0 sec\n',
    );
  });

  test('a node reported twice appears once, with its last report', () => {
    const reports = [failedOn('node-a', 'dcgm'), report({ node: 'node-a' })];
    expect(renderSummary(reports, 0.0004)).toBe(
      "Node Summary:\n\n{'node-a': ['OK']}\n\nruntime: 0.0 sec\n",
    );
  });

  test('no node at all is an empty dict', () => {
    expect(renderSummary([], 1.5)).toBe('Node Summary:\n\n{}\n\nruntime: 1.5 sec\n');
  });
});

describe('pformatStatusDict (Python pprint, width 80)', () => {
  test('exactly 80 columns stays on one line', () => {
    const text = pformatStatusDict([
      ['h100-node-0017.rack-04.zone-b.example.net', ['PCIE Failed']],
      ['node-a', ['OK']],
    ]);
    expect(text).toBe(
      "{'h100-node-0017.rack-04.zone-b.example.net': ['PCIE Failed'], 'node-a': ['OK']}",
    );
    expect(text).toHaveLength(80);
  });

  test('81 columns breaks into one key per line', () => {
    expect(
      pformatStatusDict([
        ['h100-node-00017.rack-04.zone-b.example.net', ['PCIE Failed']],
        ['node-a', ['OK']],
      ]),
    ).toBe("{'h100-node-00017.rack-04.zone-b.example.net': ['PCIE Failed'],\n 'node-a': ['OK']}");
  });

  test('a list too wide after a long key puts one status per line under the first', () => {
    expect(
      pformatStatusDict([
        [
          'worker-gpu-node-0017.cluster.example.com',
          ['PCIE Failed', 'REMAPPED ROWS Failed', 'DCGM Failed', 'GPU POWER Failed'],
        ],
        ['worker-gpu-node-0018.cluster.example.com', ['OK']],
      ]),
    ).toBe(
      "{'worker-gpu-node-0017.cluster.example.com': ['PCIE Failed',\n" +
        "                                              'REMAPPED ROWS Failed',\n" +
        "                                              'DCGM Failed',\n" +
        "                                              'GPU POWER Failed'],\n" +
        " 'worker-gpu-node-0018.cluster.example.com': ['OK']}",
    );
  });

  test('a status too wide after a long key is split into adjacent literals at a space', () => {
    expect(
      pformatStatusDict([
        ['gke-prod-cluster-default-pool-1a2b3c4d-wxyz', ['PVC Create-Delete Test Failed']],
        ['node-b', ['OK']],
      ]),
    ).toBe(
      "{'gke-prod-cluster-default-pool-1a2b3c4d-wxyz': ['PVC Create-Delete Test '\n" +
        "                                                 'Failed'],\n" +
        " 'node-b': ['OK']}",
    );
  });
});

describe('pyRepr', () => {
  test.each([
    ['node-a', "'node-a'"],
    ['', "''"],
    ["it's", '"it\'s"'],
    ['it\'s "x"', "'it\\'s \"x\"'"],
    ['say "hi"', '\'say "hi"\''],
    ['back\\slash', "'back\\\\slash'"],
    ['tab\there\nnl\rcr', "'tab\\there\\nnl\\rcr'"],
    ['bell\x07', "'bell\\x07'"],
    ['del\x7f', "'del\\x7f'"],
    ['caf\u00e9', "'caf\u00e9'"],
    ['nb\u00a0sp', "'nb\\xa0sp'"],
    ['ls\u2028', "'ls\\u2028'"],
    ['zw\u200bsp', "'zw\\u200bsp'"],
    ['smile\u{1f600}', "'smile\u{1f600}'"],
  ])('%j is %s', (text, expected) => {
    expect(pyRepr(text)).toBe(expected);
  });

  test('summary keys are sorted by code point, as Python sorts str', () => {
    const reports = [report({ node: '\u{1f600}' }), report({ node: '\uff21' })];
    expect(renderSummary(reports, 1).split('\n')[2]).toBe(
      "{'\uff21': ['OK'], '\u{1f600}': ['OK']}",
    );
  });
});

describe('JSON and NDJSON', () => {
  test('an answered node carries statuses, health and runs without their text', () => {
    const json = nodeReportToJson(
      report({
        health: { state: 'WARN', reasons: ['pciebw: gpu 4 at 5.3 GB/s'] },
        runs: [run('pciebw', 'FAIL', PCIEBW_TEXT), run('remapped', 'PASS', 'text')],
      }),
    );
    expect(json).toEqual({
      type: 'node',
      node: 'node-a',
      endpoint: '10.128.6.187:3333',
      url: 'http://10.128.6.187:3333/status?host=node-a&check=pciebw',
      outcome: 'answered',
      httpStatus: 200,
      detail: '',
      status: ['PCIE Failed'],
      health: { state: 'WARN', reasons: ['pciebw: gpu 4 at 5.3 GB/s'] },
      runs: [
        { check: 'pciebw', verdict: 'FAIL', reason: 'pciebw fail' },
        { check: 'remapped', verdict: 'PASS', reason: 'remapped pass' },
      ],
      durationSeconds: 1.25,
    });
  });

  test('absent values are null, so every node line has the same keys', () => {
    const line = renderNdjsonLine(
      nodeReportToJson(unanswered({ ...NO_ENDPOINT, durationSeconds: 0 })),
    );
    expect(line).toBe(
      '{"type":"node","node":"node-c","endpoint":null,"url":null,"outcome":"no-endpoint",' +
        '"httpStatus":null,"detail":"no Autopilot pod on this node","status":["No Autopilot Endpoint"],' +
        '"health":null,"runs":[],"durationSeconds":0}\n',
    );
  });

  test('the summary counts nodes once each, in sorted order', () => {
    const reports = [
      failedOn('node-b', 'pciebw', 'dcgm'),
      report({ node: 'node-a' }),
      report({ node: 'node-c', outcome: 'refused', httpStatus: 403, detail: 'forbidden' }),
      report({ node: 'node-a' }),
    ];
    const line = renderNdjsonLine(summaryToJson(reports, 12.5));
    expect(line).toBe(
      '{"type":"summary","nodes":3,"ok":1,"notOk":2,"summary":{"node-a":["OK"],' +
        '"node-b":["PCIE Failed","DCGM Failed"],"node-c":["Request Refused (403)"]},' +
        '"runtimeSeconds":12.5}\n',
    );
  });

  test('a node named __proto__ is an ordinary key of the summary', () => {
    const summary = summaryToJson([report({ node: '__proto__' })], 1).summary;
    expect(Object.keys(summary)).toEqual(['__proto__']);
    expect(JSON.stringify(summary)).toBe('{"__proto__":["OK"]}');
  });
});
