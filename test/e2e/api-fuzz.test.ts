/**
 * Fuzzes the HTTP API of the built exporter, a real process in standalone mode with fake tools:
 * random paths, methods, headers and parameters (valid names mixed with random ones, huge values,
 * malformed percent-encoding, unicode, NUL, CR/LF and shell payloads everywhere). Each answer is
 * judged against a model of docs/api.md computed from what the server decodes, so a bad input must
 * get a 400 that names it, a good one must not, and nothing may answer 5xx. The fake ping, dcgmi
 * and iperf3 record their argv: no caller text may reach them except as a validated value, and no
 * shell payload may ever run (the canary files stay absent).
 *
 * Reproduce a failure with the seed it prints: FUZZ_SEED=<seed>, and FUZZ_RUNS=<n> for another
 * number of requests; FUZZ_DUMP=<file> appends each failing request to <file> as a JSON line.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { Agent, request } from 'node:http';
import { isIP } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { isRunning, waitUntilGone } from '../fakes/processes.js';
import { waitForListening } from '../fakes/exporter-ports.js';
import { waitFor } from '../fakes/wait-for.js';
import { CHECK_NAMES } from '../../exporter/checks/index.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'exporter', 'main.js');
const FAKES = join(ROOT, 'test', 'fakes', 'bin');
const FAKE_NVML = join(ROOT, 'build', 'fakes', 'nvml', 'libnvidia-ml.so.1');
const PING_REPLY = join(ROOT, 'test', 'fixtures', 'ping', 'iputils-20221126', 'reply.txt');

const SEED = Number(process.env.FUZZ_SEED ?? '42');
const RUNS = Number(process.env.FUZZ_RUNS ?? '10000');
const CONCURRENCY = 16;
const REQUEST_TIMEOUT_MS = 20_000;

const NODE = 'fuzz-node';
const PEER = '127.0.0.1';
const TOKEN = 'fuzz-token-7f3a9c';
const KNOWN_CHECKS = CHECK_NAMES;
const PERIODIC_CHECKS = ['pciebw', 'remapped', 'dcgm', 'ping', 'gpupower'] as const;
/** What the exporter binds iperf3 servers to and accepts as bindip: non-loopback IPv4. */
const LOCAL_IPV4 = Object.values(networkInterfaces())
  .flatMap((addresses) => addresses ?? [])
  .filter((a) => !a.internal && a.family === 'IPv4')
  .map((a) => a.address);
/** A shell payload's relative target: it would land in the exporter's working directory. */
const RELATIVE_CANARY = 'canary-relative';

/** koa-router's own method list: for these an unmatched path is 404 and a wrong method 405. */
const ROUTER_METHODS: ReadonlySet<string> = new Set([
  'HEAD',
  'OPTIONS',
  'GET',
  'PUT',
  'PATCH',
  'POST',
  'DELETE',
]);
/** Methods Node's HTTP parser knows but koa-router does not list. */
const OTHER_HTTP_METHODS = ['TRACE', 'PROPFIND', 'MKCOL', 'PURGE'] as const;
/** Not an HTTP method Node's parser knows: the request never reaches the app. */
const UNKNOWN_METHOD = 'FUZZ';

const ROUTES = [
  // The index of endpoints (any method, like Autopilot's paths).
  '/',
  '/status',
  '/results',
  '/pciebw',
  '/remapped',
  '/dcgm',
  '/gpupower',
  '/ecc',
  '/xid',
  '/gpumem',
  '/nvlink',
  '/p2pbw',
  '/ping',
  '/pvc',
  '/iperf',
  '/iperfservers',
  '/iperfclients',
  '/iperfstopservers',
  '/invasive',
  '/acknowledge',
] as const;
type Route = (typeof ROUTES)[number];

/** Every parameter name docs/api.md lists. */
const PARAM_NAMES = [
  'host',
  'check',
  'r',
  'job',
  'nodelabel',
  'batch',
  'maxage',
  'format',
  'pingnodes',
  'workload',
  'pclients',
  'startport',
  'duration',
  'src',
  'dst',
  'nodes',
  'cleanup',
  'numservers',
  'lifetime',
  'dstip',
  'dstport',
  'numclients',
  'bindip',
  'mib',
] as const;

interface FuzzRequest {
  readonly method: string;
  /** The request target exactly as sent: path and query, already encoded (or mis-encoded). */
  readonly target: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Whether the Authorization header carries the token in a form the API must accept. */
  readonly presentsToken: boolean;
  readonly body: string | undefined;
}

type Answer =
  | {
      readonly kind: 'response';
      readonly status: number;
      readonly headers: Readonly<Record<string, string | string[] | undefined>>;
      readonly body: string;
    }
  | { readonly kind: 'error'; readonly code: string }
  | { readonly kind: 'timeout' };

/** What the API must answer, from docs/api.md and the standalone configuration below. */
type Expectation =
  /** The app answers this status; a 400 must name one of `names`. */
  | {
      readonly kind: 'exact';
      readonly status: number;
      readonly names?: readonly string[];
      readonly json: boolean;
    }
  /**
   * Rejected by Node's HTTP parser before the app sees it (a byte that is not visible ASCII in the
   * request target, an unknown method): 400, with the server's `error: malformed HTTP request …`.
   */
  | { readonly kind: 'malformed'; readonly oversize: boolean }
  /** Request head over Node's 16 KiB limit: 431 (or the connection closed while still sending). */
  | { readonly kind: 'oversize' }
  /** Near the limit, or a percent-encoded path the router may decode: only the generic rules. */
  | { readonly kind: 'generic' };

// ---------------------------------------------------------------------------------------------
// Generation

function shellPayloads(canary: string): string[] {
  return [
    `;touch ${canary}`,
    `$(touch ${canary})`,
    `\`touch ${canary}\``,
    `| touch ${canary}`,
    `&& touch ${canary}`,
    `> ${canary}`,
    `\ntouch ${canary}`,
    `';touch ${canary};'`,
    `";touch ${canary};"`,
    `;touch ${RELATIVE_CANARY}`,
    `$(touch ${RELATIVE_CANARY})`,
  ];
}

const EDGE_VALUES = [
  '',
  ' ',
  'None',
  'all',
  '0',
  '-1',
  '+1',
  '1e3',
  '0x10',
  '1.0',
  '007',
  '99999999999999999999999',
  'NaN',
  'Infinity',
  '\u0663',
  '\uff15',
  '__proto__',
  'constructor',
  'toString',
  ',',
  ',,,',
  '\u0000',
  '\r\n',
  '%',
  '..',
  '../../../etc/passwd',
  '*',
  '${IFS}',
  '\ud800',
  '\u202e',
  '😀',
];

function goodValues(name: string): string[] {
  switch (name) {
    case 'check':
      return [...KNOWN_CHECKS, 'all', 'ping,dcgm', ' ping , remapped ', 'ecc,xid,all'];
    case 'host':
      return [NODE, 'all', `${NODE},all`, PEER];
    case 'r':
      return ['1', '2', '3', '4', ' 2 '];
    case 'format':
      return ['text', 'json', 'ndjson'];
    case 'maxage':
      return ['1h', '30m', '90s', '1h30m', '0', '.5h', '+1h'];
    case 'batch':
      return ['0', '256', '100000'];
    case 'pingnodes':
      return [PEER, 'all', `${PEER}, ${PEER}`];
    case 'workload':
      return ['ring', 'pairs', 'pair', 'RING'];
    case 'pclients':
    case 'numservers':
    case 'numclients':
      return ['1', '8', '64'];
    case 'startport':
      return ['1024', '5200', '65000'];
    case 'duration':
      return ['1', '5', '300'];
    case 'lifetime':
      return ['1', '600', '86400'];
    case 'dstip':
      return [PEER, '::1', '10.0.0.1'];
    case 'dstport':
      return ['1', '5201', '65535'];
    case 'bindip':
      return [...LOCAL_IPV4, PEER];
    case 'src':
    case 'dst':
      return ['node-a', 'node-b'];
    case 'job':
    case 'nodelabel':
      return ['', 'None', 'ml:app=trainer'];
    case 'nodes':
      return ['node-a,node-b', 'all'];
    default:
      return ['x', 'true'];
  }
}

function valueArb(name: string, payloads: readonly string[]): fc.Arbitrary<string> {
  const good = fc.constantFrom(...goodValues(name));
  const payload = fc.constantFrom(...payloads);
  return fc.oneof(
    { weight: 10, arbitrary: good },
    { weight: 6, arbitrary: fc.tuple(good, payload).map(([g, p]) => g + p) },
    { weight: 4, arbitrary: payload },
    { weight: 4, arbitrary: fc.constantFrom(...EDGE_VALUES) },
    { weight: 4, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          // Below Node's 16 KiB limit on the request head the app must answer; above it, Node.
          fc.oneof(
            fc.integer({ min: 10_000, max: 15_000 }),
            fc.integer({ min: 15_001, max: 60_000 }),
          ),
          fc.constantFrom('a', '%', ...payloads),
        )
        .map(([length, unit]) => unit.repeat(Math.ceil(length / unit.length)).slice(0, length)),
    },
  );
}

const nameArb = (payloads: readonly string[]): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 12, arbitrary: fc.constantFrom(...PARAM_NAMES) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        'Check',
        'HOST',
        'r ',
        'format[]',
        '__proto__',
        'constructor',
        'hasOwnProperty',
        '',
      ),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
    { weight: 1, arbitrary: fc.constantFrom(...payloads) },
  );

type Encoding = 'percent' | 'plus' | 'raw' | 'malformed' | 'latin1';

const encodingArb: fc.Arbitrary<Encoding> = fc.oneof(
  { weight: 20, arbitrary: fc.constant<Encoding>('percent') },
  { weight: 4, arbitrary: fc.constant<Encoding>('plus') },
  { weight: 8, arbitrary: fc.constant<Encoding>('raw') },
  { weight: 6, arbitrary: fc.constant<Encoding>('malformed') },
  { weight: 1, arbitrary: fc.constant<Encoding>('latin1') },
);

const MALFORMED = [
  '%',
  '%zz',
  '%e0%a4%a',
  '%c0%af',
  '%ff',
  '%0',
  '%%41',
  '%00',
  '%0d%0a',
  '%u0041',
];

/** What the strict encoding escapes: all but the unreserved characters. */
const ESCAPE_ALL = /[^A-Za-z0-9\-._~]/gu;
/** What may not travel raw: it would end the target or change where parameters begin and end. */
const ESCAPE_STRUCTURE = /[^\x21-\x7e]|[%&=#+]/gu;

const escapes = new Map<string, string>();

function percentEncode(text: string, escaped: RegExp): string {
  return text.replace(escaped, (char) => {
    let escape = escapes.get(char);
    if (escape === undefined) {
      escape = [...Buffer.from(char, 'utf8')]
        .map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`)
        .join('');
      escapes.set(char, escape);
    }
    return escape;
  });
}

function encode(text: string, encoding: Encoding, junk: number): string {
  const fragment = MALFORMED[junk % MALFORMED.length]!;
  switch (encoding) {
    case 'percent':
      return percentEncode(text, ESCAPE_ALL);
    case 'plus':
      return percentEncode(text, ESCAPE_ALL).replaceAll('%20', '+');
    case 'raw':
      return percentEncode(text, ESCAPE_STRUCTURE);
    case 'malformed':
      return junk % 2 === 0
        ? fragment + percentEncode(text, ESCAPE_STRUCTURE)
        : percentEncode(text, ESCAPE_STRUCTURE) + fragment;
    case 'latin1':
      // A raw byte above 0x7f: Node's parser refuses it in the request target.
      return `${percentEncode(text, ESCAPE_STRUCTURE)}${String.fromCharCode(0x80 + (junk % 0x80))}`;
  }
}

const MAX_TARGET = 60_000;

interface ParamPart {
  readonly name: string;
  readonly value: string;
  readonly nameEncoding: Encoding;
  readonly valueEncoding: Encoding;
  readonly junk: number;
  /** `name` alone, without `=`. */
  readonly bare: boolean;
}

const CACHED: ParamPart = {
  name: 'maxage',
  value: '1h',
  nameEncoding: 'percent',
  valueEncoding: 'percent',
  junk: 0,
  bare: false,
};

function buildQuery(parts: readonly ParamPart[], separator: string, room: number): string {
  const pieces: string[] = [];
  let length = 0;
  for (const part of parts) {
    const name = encode(part.name, part.nameEncoding === 'latin1' ? 'raw' : part.nameEncoding, 0);
    // Encoding never shortens a value: what lies past the room need not be encoded.
    const value = encode(part.value.slice(0, room), part.valueEncoding, part.junk);
    let piece = part.bare ? name : `${name}=${value}`;
    if (length + piece.length + 1 > room) {
      if (pieces.length > 0) break;
      piece = piece.slice(0, room);
    }
    pieces.push(piece);
    length += piece.length + 1;
  }
  return pieces.join(separator);
}

const headerChar = fc.oneof(
  fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)),
  fc.constant('\t'),
);
const headerText = (maxLength: number): fc.Arbitrary<string> =>
  fc.array(headerChar, { maxLength }).map((chars) => chars.join(''));

/** Authorization values, and whether each presents the token as the API must accept it. */
function authorizationArb(canary: string): fc.Arbitrary<{ value?: string; ok: boolean }> {
  const tagged = (value: string, ok: boolean) => ({ value, ok });
  return fc.oneof(
    { weight: 12, arbitrary: fc.constant({ ok: false }) },
    {
      weight: 8,
      arbitrary: fc.constantFrom(
        tagged(`Bearer ${TOKEN}`, true),
        tagged(`bearer ${TOKEN}`, true),
        tagged(`BEARER   ${TOKEN}  `, true),
        tagged(`\tBearer ${TOKEN}`, true),
      ),
    },
    {
      weight: 6,
      arbitrary: fc.constantFrom(
        tagged(`Bearer ${TOKEN};touch ${canary}`, false),
        tagged(`Bearer $(touch ${canary})`, false),
        tagged(`Bearer ${TOKEN} x`, false),
        tagged(`Bearer  ${TOKEN.toUpperCase()}`, false),
        tagged('Bearer wrong', false),
        tagged('Bearer', false),
        tagged('Bearer ', false),
        tagged(`Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`, false),
        tagged(TOKEN, false),
        tagged(`Token ${TOKEN}`, false),
      ),
    },
    { weight: 4, arbitrary: headerText(60).map((value) => tagged(value, false)) },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 10_000, max: 40_000 })
        .map((length) => tagged(`Bearer ${'a'.repeat(length)}`, false)),
    },
  );
}

function pathArb(payloads: readonly string[]): fc.Arbitrary<string> {
  // /status reads the most parameters; each per-check path runs its check every time.
  const route = fc.oneof(
    { weight: 10, arbitrary: fc.constant<Route>('/status') },
    { weight: 3, arbitrary: fc.constantFrom<Route>('/results', '/acknowledge') },
    { weight: 1, arbitrary: fc.constantFrom(...ROUTES) },
  );
  const segment = fc
    .tuple(
      fc.oneof(
        fc.string({ unit: 'binary', maxLength: 12 }),
        fc.string({ unit: fc.constantFrom(...'abcxyz-_.~;:@!$()*,'), maxLength: 12 }),
        fc.constantFrom(...payloads, '..', '.', '', '%', '%zz', '%00', '%2F', 'status'),
      ),
      encodingArb,
      fc.nat(),
    )
    .map(([text, encoding, junk]) =>
      // Raw '?' would start the query: only the encoders' output is used.
      encode(text, encoding === 'plus' ? 'percent' : encoding, junk).replaceAll('?', '%3F'),
    );
  return fc.oneof(
    { weight: 30, arbitrary: route },
    {
      weight: 4,
      arbitrary: fc
        .tuple(route, fc.constantFrom('upper', 'slash', 'both'))
        .map(([r, how]) =>
          how === 'upper' ? r.toUpperCase() : how === 'slash' ? `${r}/` : `${r.toUpperCase()}/`,
        ),
    },
    { weight: 3, arbitrary: fc.tuple(route, segment).map(([r, s]) => `${r}/${s}`) },
    { weight: 1, arbitrary: fc.tuple(route, segment).map(([r, s]) => `${r}${s}`) },
    {
      weight: 3,
      arbitrary: fc
        .array(segment, { minLength: 1, maxLength: 4 })
        .map((segments) => `/${segments.join('/')}`),
    },
  );
}

const methodArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 40, arbitrary: fc.constant('GET') },
  { weight: 12, arbitrary: fc.constant('POST') },
  { weight: 20, arbitrary: fc.constantFrom('PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH') },
  { weight: 2, arbitrary: fc.constantFrom(...OTHER_HTTP_METHODS) },
  { weight: 1, arbitrary: fc.constant(UNKNOWN_METHOD) },
);

function requestArb(canary: string): fc.Arbitrary<FuzzRequest> {
  const payloads = shellPayloads(canary);
  const part = fc.record({
    name: nameArb(payloads),
    nameEncoding: encodingArb,
    junk: fc.nat(),
    bare: fc.nat({ max: 15 }).map((n) => n === 0),
  });
  // Built once per name: chain would otherwise build the value generators for every parameter.
  const values = new Map<string, fc.Arbitrary<string>>();
  const valuesFor = (name: string): fc.Arbitrary<string> => {
    const known = values.get(name) ?? valueArb(name, payloads);
    values.set(name, known);
    return known;
  };
  const partWithValue = part.chain((p) =>
    fc.tuple(valuesFor(p.name), encodingArb).map(([value, valueEncoding]) => ({
      ...p,
      value,
      valueEncoding,
    })),
  );
  return fc
    .record({
      method: methodArb,
      path: pathArb(payloads),
      parts: fc.array(partWithValue, { maxLength: 7 }),
      duplicate: fc.nat({ max: 9 }),
      separator: fc.constantFrom('&', '&', '&', '&', '&&'),
      withQuery: fc.nat({ max: 9 }),
      cached: fc.nat({ max: 9 }).map((n) => n !== 0),
      authorization: authorizationArb(canary),
      accept: fc.option(
        fc.oneof(
          fc.constantFrom(
            'application/json',
            'text/plain',
            '*/*',
            'application/json, text/plain;q=0.5',
            'text/html',
          ),
          headerText(40),
        ),
        { nil: undefined },
      ),
      extra: fc.option(
        fc.tuple(
          fc.constantFrom('x-fuzz', 'x-autopilot-fanout-from', 'content-type', 'x-forwarded-for'),
          fc.oneof(headerText(40), fc.constantFrom(...payloads.map((p) => p.replace('\n', ' ')))),
        ),
        { nil: undefined },
      ),
      body: fc.option(fc.oneof(fc.constantFrom(...payloads), headerText(200)), { nil: undefined }),
    })
    .map((g): FuzzRequest => {
      // One parameter given twice now and then: readQuery must refuse it by name.
      const twice = g.duplicate === 0 && g.parts.length > 0 ? [...g.parts, g.parts[0]!] : g.parts;
      // Most requests that would run checks take the stored results instead: the point is the
      // API, and every check run spawns the fake tools. A fuzzed maxage is left as it is.
      const parts =
        g.cached && !twice.some((p) => p.name === 'maxage') ? [...twice, CACHED] : twice;
      const room = MAX_TARGET - g.path.length - 1;
      const query = g.withQuery === 0 ? undefined : buildQuery(parts, g.separator, room);
      const headers: Record<string, string> = {};
      if (g.authorization.value !== undefined) headers.authorization = g.authorization.value;
      if (g.accept !== undefined) headers.accept = g.accept;
      if (g.extra !== undefined) headers[g.extra[0]] = g.extra[1];
      const sendsBody = ['POST', 'PUT', 'PATCH'].includes(g.method) && g.body !== undefined;
      return {
        method: g.method,
        target: query === undefined ? g.path : `${g.path}?${query}`,
        headers,
        presentsToken: g.authorization.ok,
        body: sendsBody ? g.body : undefined,
      };
    });
}

// ---------------------------------------------------------------------------------------------
// The model of docs/api.md, from the parameters as the server decodes them (WHATWG
// URLSearchParams, what Koa uses).

interface Query {
  /** undefined when absent; the only value when given once. */
  get(name: string): string | undefined;
  /** Names given more than once: any of them is a 400 on the paths that read parameters. */
  readonly duplicates: readonly string[];
  readonly formatParam: string | undefined | string[];
}

function readQuery(target: string): Query {
  const at = target.indexOf('?');
  const params = new URLSearchParams(at < 0 ? '' : target.slice(at + 1));
  const duplicates = [...new Set(params.keys())].filter((name) => params.getAll(name).length > 1);
  const format = params.getAll('format');
  return {
    get: (name) => params.get(name) ?? undefined,
    duplicates,
    formatParam: format.length > 1 ? format : format[0],
  };
}

function isWholeNumber(value: string, min: number, max: number): boolean {
  return /^\d+$/.test(value) && Number(value) >= min && Number(value) <= max;
}

/** A whole number in bounds; absent (and, where a default applies, empty) is fine. */
function numberOk(
  value: string | undefined,
  min: number,
  max: number,
  emptyIsDefault: boolean,
): boolean {
  if (value === undefined || (emptyIsDefault && value === '')) return true;
  return isWholeNumber(value, min, max);
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** The checks a `check` value names, or undefined when it is a 400. */
function checkNames(value: string | undefined): string[] | undefined {
  const requested = splitList(value ?? 'all');
  if (requested.length === 0) return undefined;
  const names: string[] = [];
  for (const name of requested) {
    if (name === 'all') names.push(...PERIODIC_CHECKS);
    else if (KNOWN_CHECKS.includes(name)) names.push(name);
    else return undefined;
  }
  return [...new Set(names)];
}

/** Go's duration grammar, without a sign other than '+'. */
const GO_DURATION = /^\+?(?:0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/;

function dcgmLevel(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return 1;
  const level = ['1', '2', '3', '4'].indexOf(value.trim());
  return level < 0 ? undefined : level + 1;
}

/** Bad ping parameters (job, nodelabel and the peers in `hosts`). */
function badPingParams(q: Query, hosts: string | undefined, hostNames: string[], bad: Bad): void {
  for (const name of ['job', 'nodelabel']) {
    const value = q.get(name);
    if (value !== undefined && value !== '' && value !== 'None') bad.add(name);
  }
  if (hosts === undefined || hosts === '' || hosts === 'all') return;
  if (splitList(hosts).some((peer) => peer !== PEER)) bad.add(...hostNames);
}

/** Bad iperf check parameters, read from `raw` as the iperf check's parseParams reads them. */
function badIperfParams(raw: (name: string) => string | undefined, bad: Bad): void {
  const workload = (raw('workload') ?? 'ring').toLowerCase();
  if (!['ring', 'pairs', 'pair'].includes(workload)) bad.add('workload');
  if (!numberOk(raw('pclients'), 1, 64, true)) bad.add('pclients');
  if (!numberOk(raw('startport'), 1024, 65000, true)) bad.add('startport');
  if (!numberOk(raw('duration'), 1, 300, true)) bad.add('duration');
  if (workload === 'pair') {
    const src = raw('src');
    const dst = raw('dst');
    if (src === undefined || dst === undefined || src === dst) bad.add('workload', 'src', 'dst');
  }
}

class Bad {
  readonly names = new Set<string>();
  add(...names: string[]): void {
    for (const name of names) this.names.add(name);
  }
  get any(): boolean {
    return this.names.size > 0;
  }
}

function formatOk(q: Query, ndjson: boolean): boolean {
  const format = q.formatParam;
  if (Array.isArray(format)) return true; // the duplicate is the error
  return (
    format === undefined ||
    format === 'text' ||
    format === 'json' ||
    (ndjson && format === 'ndjson')
  );
}

/** The app's answer for a request that reaches a route: 200, 400 (naming), 401 or 405. */
function modelRoute(
  route: Route,
  method: string,
  q: Query,
  token: boolean,
): { status: number; names?: string[] } {
  const bad = new Bad();
  const refuse = (): { status: number; names: string[] } => ({
    status: 400,
    names: [...bad.names],
  });
  const authorised = (needed: boolean) => ({ status: needed && !token ? 401 : 200 });
  const readsQuery = route !== '/invasive' && route !== '/iperfstopservers';
  if (route === '/acknowledge' && method !== 'POST') {
    if (method === 'OPTIONS') return { status: 200 };
    return { status: 405 };
  }
  if (readsQuery && q.duplicates.length > 0) {
    bad.add(...q.duplicates);
    return refuse();
  }
  switch (route) {
    case '/status': {
      if (!formatOk(q, true)) bad.add('format');
      const names = checkNames(q.get('check'));
      if (names === undefined) bad.add('check');
      const batch = q.get('batch');
      if (batch !== undefined && !isWholeNumber(batch, 0, 100_000)) bad.add('batch');
      const r = q.get('r');
      if (r !== undefined && !isWholeNumber(r, 1, 4)) bad.add('r');
      let needsToken = false;
      for (const name of names ?? []) {
        if (name === 'dcgm') {
          const level = dcgmLevel(r);
          if (level === undefined) bad.add('r');
          else if (level >= 2) needsToken = true;
        }
        // /status hands ping only pingnodes; the message calls the peer list host.
        if (name === 'ping') badPingParams(q, q.get('pingnodes'), ['pingnodes', 'host'], bad);
        if (name === 'iperf') badIperfParams((n) => q.get(n), bad);
        if (name === 'p2pbw' && !numberOk(q.get('mib'), 64, 256, true)) bad.add('mib');
        if (['iperf', 'pvc', 'gpumem', 'p2pbw'].includes(name)) needsToken = true;
      }
      if (splitList(q.get('host') ?? 'all').some((h) => h !== 'all' && h !== NODE)) bad.add('host');
      for (const name of ['job', 'nodelabel']) {
        const value = q.get(name);
        if (value !== undefined && value !== '' && value !== 'None') bad.add(name);
      }
      if (bad.any) return refuse();
      if (needsToken && !token) return { status: 401 };
      // maxage is read after authorisation: a refused caller learns nothing of it.
      const maxage = q.get('maxage');
      if (maxage !== undefined && maxage !== '' && !GO_DURATION.test(maxage)) bad.add('maxage');
      return bad.any ? refuse() : { status: 200 };
    }
    case '/':
      // The index reads only format; it runs nothing and needs no token.
      if (!formatOk(q, false)) bad.add('format');
      return bad.any ? refuse() : { status: 200 };
    case '/results': {
      if (!formatOk(q, false)) bad.add('format');
      if (q.get('check') !== undefined && checkNames(q.get('check')) === undefined)
        bad.add('check');
      return bad.any ? refuse() : { status: 200 };
    }
    case '/ping':
      if (!formatOk(q, false)) bad.add('format');
      badPingParams(q, q.get('host') ?? q.get('pingnodes'), ['host', 'pingnodes'], bad);
      return bad.any ? refuse() : { status: 200 };
    case '/dcgm': {
      if (!formatOk(q, false)) bad.add('format');
      const level = dcgmLevel(q.get('r'));
      if (level === undefined) bad.add('r');
      return bad.any ? refuse() : authorised((level ?? 1) >= 2);
    }
    case '/iperf':
      if (!formatOk(q, false)) bad.add('format');
      badIperfParams((n) => q.get(n), bad);
      return bad.any ? refuse() : authorised(true);
    case '/pvc':
    case '/gpumem':
      if (!formatOk(q, false)) bad.add('format');
      return bad.any ? refuse() : authorised(true);
    case '/p2pbw':
      if (!formatOk(q, false)) bad.add('format');
      if (!numberOk(q.get('mib'), 64, 256, true)) bad.add('mib');
      return bad.any ? refuse() : authorised(true);
    case '/pciebw':
    case '/remapped':
    case '/gpupower':
    case '/ecc':
    case '/xid':
    case '/nvlink':
      if (!formatOk(q, false)) bad.add('format');
      return bad.any ? refuse() : { status: 200 };
    case '/iperfservers': {
      if (!formatOk(q, false)) bad.add('format');
      const numservers = q.get('numservers');
      if (!numberOk(numservers, 1, 64, true)) bad.add('numservers');
      else {
        const count = numservers === undefined || numservers === '' ? 8 : Number(numservers);
        if (!numberOk(q.get('startport'), 1024, 65535 - count + 1, true)) bad.add('startport');
      }
      if (!numberOk(q.get('lifetime'), 1, 86_400, true)) bad.add('lifetime');
      return bad.any ? refuse() : authorised(true);
    }
    case '/iperfclients': {
      // Always JSON, as Autopilot answered: format is not read here.
      const dstip = q.get('dstip');
      if (dstip === undefined || dstip === '' || isIP(dstip) === 0) bad.add('dstip');
      const dstport = q.get('dstport');
      const numclients = q.get('numclients');
      const portOk = dstport !== undefined && isWholeNumber(dstport, 1, 65535);
      const clientsOk = numclients !== undefined && isWholeNumber(numclients, 1, 64);
      if (!portOk) bad.add('dstport');
      if (!clientsOk) bad.add('numclients');
      if (portOk && clientsOk && Number(dstport) + Number(numclients) - 1 > 65535)
        bad.add('dstport', 'numclients');
      if (!numberOk(q.get('duration'), 1, 300, true)) bad.add('duration');
      const bindip = q.get('bindip');
      if (bindip !== undefined && !LOCAL_IPV4.includes(bindip)) bad.add('bindip');
      return bad.any ? refuse() : authorised(true);
    }
    case '/iperfstopservers':
      // It reads no other parameter, so only a repeated format is refused.
      if (Array.isArray(q.formatParam) || !formatOk(q, false)) bad.add('format');
      return bad.any ? refuse() : authorised(true);
    case '/invasive':
      // Authorised first; then standalone mode refuses it.
      return token ? { status: 400, names: ['Kubernetes mode only'] } : { status: 401 };
    case '/acknowledge': {
      if (!formatOk(q, false)) bad.add('format');
      const host = q.get('host');
      if (host !== undefined && host !== NODE) bad.add('host');
      return bad.any ? refuse() : authorised(true);
    }
  }
}

/** Approximate bytes of the request head as Node's parser counts them. */
function headBytes(req: FuzzRequest): number {
  let bytes = req.method.length + req.target.length + 120;
  for (const [name, value] of Object.entries(req.headers)) bytes += name.length + value.length + 4;
  return bytes;
}

function expectationFor(req: FuzzRequest): Expectation {
  const size = headBytes(req);
  // Node's parser stops at whichever comes first, the bad byte or the size limit.
  if (req.method === UNKNOWN_METHOD || /[^\x21-\x7e]/.test(req.target)) {
    return { kind: 'malformed', oversize: size > 15_800 };
  }
  if (size > 16_800) return { kind: 'oversize' };
  if (size > 15_800) return { kind: 'generic' };
  const at = req.target.indexOf('?');
  const path = at < 0 ? req.target : req.target.slice(0, at);
  // koa-router matches without regard to case and with an optional trailing slash.
  const route = ROUTES.find((r) => r === path.toLowerCase().replace(/(.)\/$/, '$1'));
  const q = readQuery(req.target);
  const format = q.formatParam;
  const json =
    format === 'json' ||
    ((req.headers.accept ?? '').includes('application/json') && format !== 'text');
  if (route === undefined) {
    // The router may decode percent-escapes in paths; such paths get only the generic rules.
    if (path.includes('%')) return { kind: 'generic' };
    return { kind: 'exact', status: ROUTER_METHODS.has(req.method) ? 404 : 405, json };
  }
  // A browser's GET / is the status page (its own filters, an HTML answer): its tests are
  // test/unit/status-page.test.ts and test/integration/status-page.test.ts; here the generic rules.
  const page = (req.method === 'GET' || req.method === 'HEAD') && format === undefined;
  if (route === '/' && page && (req.headers.accept ?? '').includes('text/html')) {
    return { kind: 'generic' };
  }
  const outcome = modelRoute(route, req.method, q, req.presentsToken);
  return {
    kind: 'exact',
    status: outcome.status,
    json,
    ...(outcome.names === undefined ? {} : { names: outcome.names }),
  };
}

// ---------------------------------------------------------------------------------------------
// Judging an answer

/** The message of an error answer: `error: …\n` as text, `{"error": "…"}` as JSON. */
function errorMessage(body: string, json: boolean): string | undefined {
  if (json) {
    try {
      const parsed = JSON.parse(body) as unknown;
      if (typeof parsed === 'object' && parsed !== null && 'error' in parsed) {
        const { error } = parsed;
        return typeof error === 'string' ? error : undefined;
      }
    } catch {
      return undefined;
    }
    return undefined;
  }
  return body.startsWith('error: ') && body.endsWith('\n') ? body.slice(7, -1) : undefined;
}

function names(message: string, name: string): boolean {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![A-Za-z0-9_])${escaped}(?![A-Za-z0-9_])`).test(message);
}

/**
 * Statuses the API answers on purpose. A method koa-router does not list (TRACE, PROPFIND, …) is a
 * 405, never its 501.
 */
const KNOWN_STATUSES: ReadonlySet<number> = new Set([200, 400, 401, 404, 405, 431]);

function judge(req: FuzzRequest, expected: Expectation, answer: Answer): string | undefined {
  if (answer.kind === 'timeout') return undefined; // counted apart: see the readiness check
  if (answer.kind === 'error') {
    // A refused head can close the connection while the client is still writing it.
    const refused = expected.kind === 'oversize' || expected.kind === 'malformed';
    return refused ? undefined : `no answer: ${answer.code}`;
  }
  const { status, body } = answer;
  if (!KNOWN_STATUSES.has(status)) return `status ${status} is not one the API uses`;
  if (status >= 500) return `status ${status}`;
  switch (expected.kind) {
    case 'oversize':
      return status === 431 && body === 'error: the request line and headers are over 16 KiB\n'
        ? undefined
        : `expected 431 for an oversize head, got ${status}: ${JSON.stringify(body.slice(0, 200))}`;
    case 'malformed':
      return (status === 400 && /^error: malformed HTTP request \(\w+\)\n$/.test(body)) ||
        (expected.oversize && status === 431)
        ? undefined
        : `expected a 400 naming the parser's complaint, got ${status}: ${JSON.stringify(body)}`;
    case 'generic':
      break;
    case 'exact':
      if (status !== expected.status) {
        return `expected ${expected.status}${expected.names === undefined ? '' : ` naming ${expected.names.join(' or ')}`}, got ${status}: ${body.slice(0, 300)}`;
      }
      break;
  }
  if (req.method === 'HEAD') return undefined;
  if (status >= 400 && body.trim() === '') return `${status} with an empty body`;
  if (expected.kind === 'exact' && status === 400) {
    const message = errorMessage(body, expected.json);
    if (message === undefined || message.trim() === '') {
      return `400 without an error message in the ${expected.json ? 'JSON' : 'text'} form: ${body.slice(0, 300)}`;
    }
    const named = expected.names ?? [];
    if (named.length > 0 && !named.some((name) => names(message, name))) {
      return `400 does not name ${named.map((n) => JSON.stringify(n)).join(' or ')}: ${message.slice(0, 300)}`;
    }
  }
  if (status === 401 && answer.headers['www-authenticate'] !== 'Bearer') {
    return '401 without WWW-Authenticate: Bearer';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Sending

function send(agent: Agent | false, port: number, req: FuzzRequest): Promise<Answer> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (answer: Answer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(answer);
    };
    const headers: Record<string, string> = { ...req.headers };
    if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
    let outgoing: ReturnType<typeof request>;
    try {
      outgoing = request(
        { host: '127.0.0.1', port, method: req.method, path: req.target, headers, agent },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () =>
            settle({
              kind: 'response',
              status: response.statusCode ?? 0,
              headers: response.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          response.on('error', (error: NodeJS.ErrnoException) =>
            settle({ kind: 'error', code: error.code ?? error.message }),
          );
        },
      );
    } catch (error) {
      // The client itself refused the request: the generator made something unsendable.
      resolve({ kind: 'error', code: `client: ${(error as Error).message}` });
      return;
    }
    const timer = setTimeout(() => {
      outgoing.destroy();
      settle({ kind: 'timeout' });
    }, REQUEST_TIMEOUT_MS);
    outgoing.on('error', (error: NodeJS.ErrnoException) =>
      settle({ kind: 'error', code: error.code ?? error.message }),
    );
    outgoing.end(req.body);
  });
}

async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return results;
}

function describeRequest(req: FuzzRequest): string {
  const target =
    req.target.length > 400
      ? `${req.target.slice(0, 400)}… (${req.target.length} chars)`
      : req.target;
  const headers = Object.entries(req.headers).map(
    ([name, value]) =>
      `${name}: ${value.length > 100 ? `${value.slice(0, 100)}… (${value.length} chars)` : value}`,
  );
  return `${req.method} ${JSON.stringify(target)} ${JSON.stringify(headers)}${req.body === undefined ? '' : ` body ${JSON.stringify(req.body.slice(0, 100))}`}`;
}

// ---------------------------------------------------------------------------------------------
// What the fake tools were asked

interface Invocation {
  readonly tool: string;
  readonly argv: readonly string[];
}

function invocations(argvDir: string, except: ReadonlySet<string> = new Set()): Invocation[] {
  const files = readdirSync(argvDir).filter((file) => !except.has(file));
  return files.map((file) => {
    const fields = readFileSync(join(argvDir, file), 'latin1').split('\0');
    fields.pop(); // after the last NUL
    const [tool = '', ...argv] = fields;
    return { tool, argv };
  });
}

const port = (text: string | undefined): boolean =>
  text !== undefined && isWholeNumber(text, 1, 65535);

/** Undefined when the argv is one the exporter may build from validated values; else why not. */
function argvProblem({ tool, argv }: Invocation, payloads: readonly string[]): string | undefined {
  for (const arg of argv) {
    if (payloads.some((p) => arg.includes(p.trim())) || /touch|canary|[;|`$<>&\n]/.test(arg)) {
      return `argument ${JSON.stringify(arg)} carries caller text`;
    }
  }
  switch (tool) {
    case 'ping': {
      const options = ['-n', '-c', '3', '-i', '0.2', '-W', '1', '-w', '3', '--'];
      const ok =
        JSON.stringify(argv.slice(0, -1)) === JSON.stringify(options) && argv.at(-1) === PEER;
      return ok ? undefined : 'unexpected ping argv';
    }
    case 'dcgmi':
      return argv.length === 4 &&
        argv[0] === 'diag' &&
        argv[1] === '-r' &&
        ['1', '2', '3', '4'].includes(argv[2] ?? '') &&
        argv[3] === '-j'
        ? undefined
        : 'unexpected dcgmi argv';
    case 'iperf3': {
      if (argv[0] === '-s') {
        const ok =
          argv.length === 8 &&
          argv[1] === '-B' &&
          LOCAL_IPV4.includes(argv[2] ?? '') &&
          argv[3] === '-p' &&
          port(argv[4]) &&
          argv[5] === '--forceflush' &&
          argv[6] === '--rcv-timeout' &&
          /^\d+$/.test(argv[7] ?? '');
        return ok ? undefined : 'unexpected iperf3 server argv';
      }
      const bound = argv.length === 12;
      const ok =
        (argv.length === 10 || bound) &&
        argv[0] === '-c' &&
        isIP(argv[1] ?? '') !== 0 &&
        argv[2] === '-p' &&
        port(argv[3]) &&
        argv[4] === '-t' &&
        isWholeNumber(argv[5] ?? '', 1, 300) &&
        argv[6] === '-J' &&
        argv[7] === '-Z' &&
        argv[8] === '--connect-timeout' &&
        /^\d+$/.test(argv[9] ?? '') &&
        (!bound || (argv[10] === '-B' && LOCAL_IPV4.includes(argv[11] ?? '')));
      return ok ? undefined : 'unexpected iperf3 client argv';
    }
    default:
      return `unknown tool ${tool}`;
  }
}

/** Processes whose environment carries this run's marker: the exporter's children, at any depth. */
function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(marker)) {
        if (isRunning(Number(entry))) pids.push(Number(entry));
      }
    } catch {
      // Gone, or not ours to read.
    }
  }
  return pids;
}

// ---------------------------------------------------------------------------------------------

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}, 60_000);

describe('API fuzzing against the exporter process', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'autopilot-fuzz-'));
  const canary = join(scratch, 'canary');
  const workDir = join(scratch, 'work');
  const argvDir = join(scratch, 'argv');
  const toolsDir = join(scratch, 'tools');
  const marker = `FAKE_ARGV_DIR=${argvDir}`;
  let exporter: ChildProcess;
  const ports = { api: 0, metrics: 0, readiness: 0 };

  beforeAll(async () => {
    for (const dir of [workDir, argvDir, toolsDir]) mkdirSync(dir);
    // The fakes run under the tools' own names so that the recorder knows which one it stands for.
    for (const tool of ['ping', 'dcgmi', 'iperf3']) {
      symlinkSync(join(FAKES, 'record-argv'), join(toolsDir, tool));
    }
    exporter = spawn(
      process.execPath,
      [MAIN, '--port', '0', '--w', '0', '--invasive-check-timer', '0'],
      {
        cwd: workDir,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? '/root',
          NODE_NAME: NODE,
          AUTOPILOT_KUBERNETES: 'off',
          AUTOPILOT_PEERS: PEER,
          AUTOPILOT_API_TOKEN: TOKEN,
          AUTOPILOT_METRICS_PORT: '0',
          AUTOPILOT_READINESS_PORT: '0',
          AUTOPILOT_LISTEN_ADDRESS: '127.0.0.1',
          PERIODIC_CHECKS: PERIODIC_CHECKS.join(','),
          AUTOPILOT_NVML_LIBRARY: FAKE_NVML,
          AUTOPILOT_PING_COMMAND: join(toolsDir, 'ping'),
          AUTOPILOT_DCGMI_COMMAND: join(toolsDir, 'dcgmi'),
          AUTOPILOT_IPERF_COMMAND: join(toolsDir, 'iperf3'),
          FAKE_ARGV_DIR: argvDir,
          FAKE_ARGV_EXEC_PING: join(FAKES, 'fake-ping'),
          FAKE_PING_OUTPUT: PING_REPLY,
          FAKE_ARGV_EXEC_DCGMI: join(FAKES, 'fake-dcgmi'),
          // iperf3 stays unset: the recorder exits 1, a server that fails and a client that fails.
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    await waitForListening(exporter, ports);
    // The start-up round first, so that its ping and dcgmi calls are recorded before the fuzzing.
    await waitFor(
      'the start-up round',
      async () => {
        const text = await (
          await fetch(`http://127.0.0.1:${ports.api}/results?format=json`)
        ).text();
        return PERIODIC_CHECKS.every((check) => text.includes(`"check":"${check}"`))
          ? true
          : undefined;
      },
      60_000,
      50,
    );
  }, 120_000);

  afterAll(() => {
    if (exporter.exitCode === null && exporter.signalCode === null) exporter.kill('SIGKILL');
    rmSync(scratch, { recursive: true, force: true });
  });

  test(`${RUNS} random requests: no 5xx, a 400 that names every bad input, no shell, no crash`, async () => {
    const payloads = shellPayloads(canary);
    const bearer = { authorization: `Bearer ${TOKEN}` };
    const anchor = (target: string, headers: Record<string, string> = bearer): FuzzRequest => ({
      method: 'GET',
      target,
      headers,
      presentsToken: headers.authorization !== undefined,
      body: undefined,
    });
    // Fixed requests first: each tool is reached with caller-chosen values at least once.
    const anchors = [
      anchor(`/ping?host=${PEER}`, {}),
      anchor('/dcgm?r=2'),
      anchor('/status?check=dcgm,ping&r=3&maxage=1h&format=json'),
      anchor(`/iperfclients?dstip=${PEER}&dstport=5201&numclients=2&duration=1`),
      anchor(`/iperfclients?dstip=::1&dstport=65534&numclients=2&bindip=${LOCAL_IPV4[0] ?? ''}`),
      anchor('/iperfservers?numservers=2&startport=6000&lifetime=5'),
      anchor('/iperfstopservers'),
    ];
    const generating = performance.now();
    const requests = [...anchors, ...fc.sample(requestArb(canary), { seed: SEED, numRuns: RUNS })];
    const generated = ((performance.now() - generating) / 1000).toFixed(1);
    const kinds = new Map<string, number>();
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const statuses = new Map<string, number>();
    const failures: string[] = [];
    const timeouts: string[] = [];
    const started = performance.now();
    await mapBounded(requests, CONCURRENCY, async (req, index) => {
      const expected = expectationFor(req);
      const kind = expected.kind === 'exact' ? `model ${expected.status}` : expected.kind;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      let answer = await send(agent, ports.api, req);
      if (
        answer.kind === 'error' &&
        expected.kind !== 'oversize' &&
        expected.kind !== 'malformed'
      ) {
        // A kept-alive connection the server closed just as it was reused; a new one tells.
        answer = await send(false, ports.api, req);
      }
      const key =
        answer.kind === 'response'
          ? String(answer.status)
          : `${answer.kind}${answer.kind === 'error' ? ` ${answer.code}` : ''}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
      if (answer.kind === 'timeout') timeouts.push(`#${index} ${describeRequest(req)}`);
      const problem = judge(req, expected, answer);
      if (problem !== undefined) {
        failures.push(`#${index} (seed ${SEED}) ${describeRequest(req)}\n    → ${problem}`);
        if (process.env.FUZZ_DUMP !== undefined)
          appendFileSync(process.env.FUZZ_DUMP, JSON.stringify(req) + '\n');
      }
    });
    agent.destroy();
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const distribution = [...statuses.entries()].sort(([a], [b]) => a.localeCompare(b));
    console.log(
      `api fuzz: ${requests.length} requests (generated in ${generated} s) in ${seconds} s, seed ${SEED}; answers: ${distribution.map(([s, n]) => `${s}×${n}`).join(', ')}; expected: ${[...kinds.entries()].map(([k, n]) => `${k}×${n}`).join(', ')}${timeouts.length === 0 ? '' : `\ntimeouts:\n${timeouts.join('\n')}`}`,
    );

    // A timed-out request is a failure when the exporter stopped answering, not while it queues.
    expect(isRunning(exporter.pid!)).toBe(true);
    const readiness = await fetch(`http://127.0.0.1:${ports.readiness}/readinessprobe`);
    expect(readiness.status).toBe(201);
    expect(await readiness.text()).toBe('{"Name":"readinessProbe","Body":"ready"}\n');
    expect((await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).status).toBe(200);
    expect(failures.slice(0, 25).join('\n')).toBe('');

    // No shell ran a payload: the canaries, absolute and relative, do not exist.
    expect(existsSync(canary)).toBe(false);
    expect(readdirSync(workDir)).toEqual([]);

    const calls = invocations(argvDir);
    const byTool = (tool: string) => calls.filter((c) => c.tool === tool).length;
    expect(byTool('ping')).toBeGreaterThan(0);
    expect(byTool('dcgmi')).toBeGreaterThan(0);
    expect(byTool('iperf3')).toBeGreaterThan(0);
    console.log(
      `api fuzz: the fakes ran ping ${byTool('ping')}, dcgmi ${byTool('dcgmi')}, iperf3 ${byTool('iperf3')} times`,
    );
    const bad = calls.flatMap((call) => {
      const problem = argvProblem(call, payloads);
      return problem === undefined ? [] : [`${call.tool} ${JSON.stringify(call.argv)}: ${problem}`];
    });
    expect(bad.slice(0, 25)).toEqual([]);
  }, 300_000);

  // Found by this fuzzing: a peer list of only commas and blanks once ran ping with an empty target.
  test('a peer list of only commas is never pinged as an empty target', async () => {
    const earlier = new Set(readdirSync(argvDir));
    for (const target of ['/ping?host=,', '/status?check=ping&pingnodes=%20,%20']) {
      await (await fetch(`http://127.0.0.1:${ports.api}${target}`)).text();
    }
    const targets = invocations(argvDir, earlier)
      .filter((call) => call.tool === 'ping')
      .map((call) => call.argv.at(-1));
    expect(targets).not.toContain('');
  });

  test('SIGTERM stops it with exit code 0 and leaves no process behind', async () => {
    const exited = new Promise<number | null>((resolve) => {
      if (exporter.exitCode !== null) resolve(exporter.exitCode);
      else exporter.on('exit', (code) => resolve(code));
    });
    exporter.kill('SIGTERM');
    expect(await exited).toBe(0);
    const left = processesWith(marker);
    const stillThere = await Promise.all(left.map((pid) => waitUntilGone(pid)));
    expect(left.filter((_, i) => stillThere[i] === false)).toEqual([]);
  }, 30_000);
});
