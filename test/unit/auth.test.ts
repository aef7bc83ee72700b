import { describe, test, expect } from '@jest/globals';
import {
  ALWAYS_PROTECTED_CHECKS,
  PROTECTED_ACCESS,
  accessGroupOf,
  withApiAccess,
  type Authorizer,
  accessAttributes,
  createKubernetesAuthorizer,
  createStaticTokenAuthorizer,
  parseBearer,
  requiresAuthorization,
} from '../../exporter/api/auth.js';
import type { AuthDecision, ProtectedAction } from '../../exporter/api/auth.js';
import {
  EXPORTER_REVIEW_RBAC_RULES,
  OPERATOR_RBAC_RULES,
  RBAC_API_GROUP,
  type PolicyRule,
} from '../../exporter/k8s/rbac-rules.js';
import { KubeError } from '../../exporter/k8s/ports.js';
import type {
  AccessReview,
  KubeApi,
  ResourceAttributes,
  ReviewedUser,
  TokenReview,
} from '../../exporter/k8s/ports.js';
import type { LogFields, Logger } from '../../exporter/log.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.secret-operator-token.sig';
const ALICE: ReviewedUser = { username: 'alice', uid: 'u-1', groups: ['ops'] };
const RUN_DCGM: ProtectedAction = { kind: 'run-check', check: 'dcgm' };
const ACK_NODE: ProtectedAction = { kind: 'acknowledge', node: 'gpu-node-7' };

type Answer<T> = T | KubeError | Promise<T>;

/** Only the two review calls exist; anything else the authoriser touched would be a bug. */
class FakeKube {
  readonly tokenCalls: string[] = [];
  readonly accessCalls: { user: ReviewedUser; attributes: ResourceAttributes }[] = [];
  tokenAnswer: (token: string) => Answer<TokenReview> = (token) =>
    token === TOKEN ? { authenticated: true, user: ALICE } : { authenticated: false, error: 'bad' };
  accessAnswer: (attributes: ResourceAttributes) => Answer<AccessReview> = () => ({
    allowed: true,
    reason: '',
  });

  api(): KubeApi {
    const unexpected = (name: string) => () => {
      throw new Error(`unexpected KubeApi.${name} call`);
    };
    return {
      getNode: unexpected('getNode'),
      patchNodeMetadata: unexpected('patchNodeMetadata'),
      listNodes: unexpected('listNodes'),
      listPods: unexpected('listPods'),
      listEndpointSlices: unexpected('listEndpointSlices'),
      watchEndpointSlices: unexpected('watchEndpointSlices'),
      readStorageClass: unexpected('readStorageClass'),
      createPvc: unexpected('createPvc'),
      readPvc: unexpected('readPvc'),
      deletePvc: unexpected('deletePvc'),
      listPodsOnNode: unexpected('listPodsOnNode'),
      listJobPods: unexpected('listJobPods'),
      listJobs: unexpected('listJobs'),
      createJob: unexpected('createJob'),
      readJob: unexpected('readJob'),
      deleteJob: unexpected('deleteJob'),
      patchNodeTaints: unexpected('patchNodeTaints'),
      readLease: unexpected('readLease'),
      createLease: unexpected('createLease'),
      replaceLease: unexpected('replaceLease'),
      watchNode: unexpected('watchNode'),
      patchNodeStatus: unexpected('patchNodeStatus'),
      createEvent: unexpected('createEvent'),
      patchEvent: unexpected('patchEvent'),
      reviewToken: (token) => {
        this.tokenCalls.push(token);
        return settle(this.tokenAnswer(token));
      },
      reviewAccess: (user, attributes) => {
        this.accessCalls.push({ user, attributes });
        return settle(this.accessAnswer(attributes));
      },
    };
  }
}

function settle<T>(answer: Answer<T>): Promise<T> {
  return answer instanceof KubeError ? Promise.reject(answer) : Promise.resolve(answer);
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function recordingLogger(lines: string[]): Logger {
  const write = (message: string, fields?: LogFields) =>
    lines.push(`${message} ${JSON.stringify(fields ?? {})}`);
  const logger: Logger = {
    error: write,
    warn: write,
    info: write,
    debug: write,
    child: () => logger,
  };
  return logger;
}

function setup(options: { cacheTtlMs?: number; maxCacheEntries?: number } = {}) {
  const kube = new FakeKube();
  const clock = { time: 1_000_000 };
  const logLines: string[] = [];
  const authorizer = createKubernetesAuthorizer({
    kube: kube.api(),
    now: () => clock.time,
    logger: recordingLogger(logLines),
    ...options,
  });
  return { kube, clock, authorizer, logLines };
}

const bearer = (token: string) => `Bearer ${token}`;

describe('parseBearer', () => {
  test.each([
    ['Bearer abc', 'abc'],
    ['bearer abc', 'abc'],
    ['BEARER abc', 'abc'],
    ['Bearer    abc', 'abc'],
    ['  Bearer abc  ', 'abc'],
  ])('accepts %j', (header, token) => {
    expect(parseBearer(header)).toEqual({ ok: true, token });
  });

  test.each([
    [undefined, 'this action needs a bearer token (Authorization: Bearer <token>)'],
    ['', 'this action needs a bearer token (Authorization: Bearer <token>)'],
    ['   ', 'this action needs a bearer token (Authorization: Bearer <token>)'],
    [
      'Basic YWxpY2U6cHc=',
      'the Authorization header does not use the Bearer scheme; this action needs Authorization: Bearer <token>',
    ],
    [
      'abc',
      'the Authorization header does not use the Bearer scheme; this action needs Authorization: Bearer <token>',
    ],
    [
      'Bearer\tabc',
      'the Authorization header does not use the Bearer scheme; this action needs Authorization: Bearer <token>',
    ],
    ['Bearer', 'the bearer token is empty'],
    ['Bearer    ', 'the bearer token is empty'],
    ['Bearer abc def', 'the bearer token contains whitespace'],
  ])('refuses %j', (header, message) => {
    expect(parseBearer(header)).toEqual({ ok: false, message });
  });

  test('a token sent without its scheme is not echoed', () => {
    const parsed = parseBearer(TOKEN);
    expect(parsed.ok).toBe(false);
    expect(JSON.stringify(parsed)).not.toContain(TOKEN);
  });
});

describe('which checks are protected', () => {
  test.each([
    [{ name: 'dcgm', exclusive: true }, true],
    [{ name: 'gpumem', exclusive: true }, true],
    [{ name: 'iperf', exclusive: false }, true],
    [{ name: 'pvc', exclusive: false }, true],
    [{ name: 'ping', exclusive: false }, false],
    [{ name: 'pciebw', exclusive: false }, false],
  ])('%j → %s', (check, expected) => {
    expect(requiresAuthorization(check)).toBe(expected);
  });

  test('the always-protected set is exactly iperf and pvc', () => {
    expect([...ALWAYS_PROTECTED_CHECKS].sort()).toEqual(['iperf', 'pvc']);
  });
});

describe('accessAttributes and the documented RBAC rules', () => {
  test('running a check is create on healthchecks named after the check', () => {
    expect(accessAttributes(RUN_DCGM)).toEqual({
      group: 'autopilot.ibm.com',
      resource: 'healthchecks',
      verb: 'create',
      name: 'dcgm',
    });
  });

  test('acknowledging is update on nodehealth named after the node', () => {
    expect(accessAttributes(ACK_NODE)).toEqual({
      group: 'autopilot.ibm.com',
      resource: 'nodehealth',
      verb: 'update',
      name: 'gpu-node-7',
    });
  });

  test('the API group constant is the one the attributes use', () => {
    expect(RBAC_API_GROUP).toBe('autopilot.ibm.com');
  });

  /** The subset of RBAC's rule matching these cluster-scoped attributes need. */
  const grants = (rules: readonly PolicyRule[], attributes: ResourceAttributes) =>
    rules.some(
      (rule) =>
        rule.apiGroups.includes(attributes.group) &&
        rule.resources.includes(attributes.resource) &&
        rule.verbs.includes(attributes.verb) &&
        (rule.resourceNames === undefined ||
          (attributes.name !== undefined && rule.resourceNames.includes(attributes.name))),
    );

  test('the operator rules grant every protected action and nothing the attributes do not name', () => {
    expect(grants(OPERATOR_RBAC_RULES, accessAttributes(RUN_DCGM))).toBe(true);
    expect(grants(OPERATOR_RBAC_RULES, accessAttributes(ACK_NODE))).toBe(true);
    expect(grants(OPERATOR_RBAC_RULES, { ...accessAttributes(RUN_DCGM), verb: 'delete' })).toBe(
      false,
    );
    expect(OPERATOR_RBAC_RULES).toEqual([
      { apiGroups: ['autopilot.ibm.com'], resources: ['healthchecks'], verbs: ['create'] },
      { apiGroups: ['autopilot.ibm.com'], resources: ['nodehealth'], verbs: ['update'] },
    ]);
  });

  test('the exporter needs to create token and access reviews', () => {
    expect(EXPORTER_REVIEW_RBAC_RULES).toEqual([
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      {
        apiGroups: ['authorization.k8s.io'],
        resources: ['subjectaccessreviews'],
        verbs: ['create'],
      },
    ]);
  });
});

describe('createKubernetesAuthorizer', () => {
  test('allows an authenticated, authorised caller and names them', async () => {
    const { kube, authorizer } = setup();
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: true,
      caller: 'alice',
    });
    expect(kube.tokenCalls).toEqual([TOKEN]);
    expect(kube.accessCalls).toEqual([
      {
        user: ALICE,
        attributes: {
          group: 'autopilot.ibm.com',
          resource: 'healthchecks',
          verb: 'create',
          name: 'dcgm',
        },
      },
    ]);
  });

  test('sends the acknowledge attributes for acknowledge', async () => {
    const { kube, authorizer } = setup();
    await authorizer.authorize(bearer(TOKEN), ACK_NODE);
    expect(kube.accessCalls.map((call) => call.attributes)).toEqual([
      { group: 'autopilot.ibm.com', resource: 'nodehealth', verb: 'update', name: 'gpu-node-7' },
    ]);
  });

  test('a missing header is 401 without asking Kubernetes', async () => {
    const { kube, authorizer } = setup();
    await expect(authorizer.authorize(undefined, RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 401,
      message: 'this action needs a bearer token (Authorization: Bearer <token>)',
    });
    await expect(authorizer.authorize('Basic YWxpY2U6cHc=', RUN_DCGM)).resolves.toMatchObject({
      allowed: false,
      status: 401,
    });
    expect(kube.tokenCalls).toEqual([]);
  });

  test('a token the TokenReview rejects is 401 with its error', async () => {
    const { kube, authorizer } = setup();
    kube.tokenAnswer = () => ({ authenticated: false, error: 'token has expired' });
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 401,
      message: 'token rejected by the Kubernetes TokenReview: token has expired',
    });
    expect(kube.accessCalls).toEqual([]);
  });

  test('a rejection without an error still says why', async () => {
    const { kube, authorizer } = setup();
    kube.tokenAnswer = () => ({ authenticated: false, error: '' });
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 401,
      message: 'token rejected by the Kubernetes TokenReview: not authenticated',
    });
  });

  test('a user RBAC does not allow is 403 naming the verb, resource and fix', async () => {
    const { kube, authorizer } = setup();
    kube.accessAnswer = () => ({ allowed: false, reason: '' });
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 403,
      message:
        'user alice may not create healthchecks/dcgm in API group autopilot.ibm.com (grant it with a ClusterRole; see docs/kubernetes.md)',
    });
  });

  test("the 403 carries the authoriser's reason when it gives one", async () => {
    const { kube, authorizer } = setup();
    kube.accessAnswer = () => ({ allowed: false, reason: 'no RBAC policy matched' });
    await expect(authorizer.authorize(bearer(TOKEN), ACK_NODE)).resolves.toEqual({
      allowed: false,
      status: 403,
      message:
        'user alice may not update nodehealth/gpu-node-7 in API group autopilot.ibm.com (grant it with a ClusterRole; see docs/kubernetes.md); the authoriser said: no RBAC policy matched',
    });
  });

  test('fails closed with 503 when the TokenReview errors', async () => {
    const { kube, authorizer, logLines } = setup();
    kube.tokenAnswer = () => new KubeError('create TokenReview', 500, 'etcd unavailable');
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 503,
      message:
        'cannot verify the caller: the Kubernetes API answered create TokenReview: 500 etcd unavailable',
    });
    expect(logLines).toHaveLength(1);
    expect(logLines[0]).toContain('etcd unavailable');
  });

  test('fails closed with 503 when the SubjectAccessReview errors', async () => {
    const { kube, authorizer } = setup();
    kube.accessAnswer = () =>
      new KubeError('create SubjectAccessReview', undefined, 'connect ECONNREFUSED');
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 503,
      message:
        'cannot verify the caller: the Kubernetes API answered create SubjectAccessReview: connect ECONNREFUSED',
    });
  });

  test('errors are not cached: the next request asks again and can succeed', async () => {
    const { kube, authorizer } = setup();
    kube.tokenAnswer = () => new KubeError('create TokenReview', 503, 'overloaded');
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toMatchObject({
      status: 503,
    });
    kube.tokenAnswer = () => ({ authenticated: true, user: ALICE });
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
      allowed: true,
      caller: 'alice',
    });
    expect(kube.tokenCalls).toHaveLength(2);
  });

  test('errors other than KubeError propagate rather than allow', async () => {
    const { kube, authorizer } = setup();
    kube.tokenAnswer = () => Promise.reject(new TypeError('adapter bug'));
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).rejects.toThrow('adapter bug');
  });

  test('the token never appears in any message or log line, even when the server quotes it', async () => {
    const { kube, authorizer, logLines } = setup();
    const decisions: AuthDecision[] = [];
    kube.tokenAnswer = (token) => ({ authenticated: false, error: `invalid token ${token}` });
    decisions.push(await authorizer.authorize(bearer(TOKEN), RUN_DCGM));
    kube.tokenAnswer = (token) => new KubeError('create TokenReview', 400, `bad token ${token}`);
    decisions.push(await authorizer.authorize(bearer(`${TOKEN}2`), RUN_DCGM));
    decisions.push(await authorizer.authorize(TOKEN, RUN_DCGM));
    expect(decisions.map((d) => (d.allowed ? '' : d.message))).toEqual([
      'token rejected by the Kubernetes TokenReview: invalid token <redacted>',
      'cannot verify the caller: the Kubernetes API answered create TokenReview: 400 bad token <redacted>',
      'the Authorization header does not use the Bearer scheme; this action needs Authorization: Bearer <token>',
    ]);
    expect(logLines.join('\n')).not.toContain(TOKEN);
  });

  describe('cache', () => {
    test('reuses a positive answer within the TTL and asks again after it', async () => {
      const { kube, clock, authorizer } = setup({ cacheTtlMs: 10_000 });
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      clock.time += 9_999;
      await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual({
        allowed: true,
        caller: 'alice',
      });
      expect(kube.tokenCalls).toHaveLength(1);
      expect(kube.accessCalls).toHaveLength(1);
      clock.time += 1;
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      expect(kube.tokenCalls).toHaveLength(2);
      expect(kube.accessCalls).toHaveLength(2);
    });

    test('defaults to a 10 s TTL', async () => {
      const { kube, clock, authorizer } = setup();
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      clock.time += 9_999;
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      expect(kube.tokenCalls).toHaveLength(1);
      clock.time += 1;
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      expect(kube.tokenCalls).toHaveLength(2);
    });

    test('caches negative answers too', async () => {
      const { kube, authorizer } = setup();
      kube.accessAnswer = () => ({ allowed: false, reason: '' });
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      await authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      await authorizer.authorize(bearer('wrong'), RUN_DCGM);
      await expect(authorizer.authorize(bearer('wrong'), RUN_DCGM)).resolves.toMatchObject({
        status: 401,
      });
      expect(kube.tokenCalls).toEqual([TOKEN, 'wrong']);
      expect(kube.accessCalls).toHaveLength(1);
    });

    test('access answers are per action: another check or node is asked separately', async () => {
      const { kube, authorizer } = setup();
      kube.accessAnswer = (attributes) => ({ allowed: attributes.name === 'dcgm', reason: '' });
      await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toMatchObject({
        allowed: true,
      });
      await expect(
        authorizer.authorize(bearer(TOKEN), { kind: 'run-check', check: 'iperf' }),
      ).resolves.toMatchObject({ allowed: false, status: 403 });
      expect(kube.tokenCalls).toHaveLength(1);
      expect(kube.accessCalls.map((call) => call.attributes.name)).toEqual(['dcgm', 'iperf']);
    });

    test('is bounded: the oldest entry is evicted once the limit is passed', async () => {
      const { kube, authorizer } = setup({ maxCacheEntries: 3 });
      for (const token of ['t1', 't2', 't3', 't4'])
        await authorizer.authorize(bearer(token), RUN_DCGM);
      expect(kube.tokenCalls).toEqual(['t1', 't2', 't3', 't4']);
      await authorizer.authorize(bearer('t4'), RUN_DCGM);
      await authorizer.authorize(bearer('t2'), RUN_DCGM);
      expect(kube.tokenCalls).toHaveLength(4);
      await authorizer.authorize(bearer('t1'), RUN_DCGM);
      expect(kube.tokenCalls).toEqual(['t1', 't2', 't3', 't4', 't1']);
    });

    test('holds 1,000 entries by default', async () => {
      const { kube, authorizer } = setup();
      const tokens = Array.from({ length: 1_001 }, (_, i) => `flood-${i}`);
      for (const token of tokens) await authorizer.authorize(bearer(token), RUN_DCGM);
      await authorizer.authorize(bearer('flood-1'), RUN_DCGM);
      await authorizer.authorize(bearer('flood-1000'), RUN_DCGM);
      expect(kube.tokenCalls).toHaveLength(1_001);
      await authorizer.authorize(bearer('flood-0'), RUN_DCGM);
      expect(kube.tokenCalls).toHaveLength(1_002);
    });

    test('concurrent identical requests share one review of each kind', async () => {
      const { kube, authorizer } = setup();
      const tokenReview = deferred<TokenReview>();
      kube.tokenAnswer = () => tokenReview.promise;
      const first = authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      const second = authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      tokenReview.resolve({ authenticated: true, user: ALICE });
      await expect(Promise.all([first, second])).resolves.toEqual([
        { allowed: true, caller: 'alice' },
        { allowed: true, caller: 'alice' },
      ]);
      expect(kube.tokenCalls).toHaveLength(1);
      expect(kube.accessCalls).toHaveLength(1);
    });

    test('a shared review that errors fails every waiter closed, and is not kept', async () => {
      const { kube, authorizer } = setup();
      let reject!: (error: unknown) => void;
      kube.tokenAnswer = () => new Promise<TokenReview>((_, r) => (reject = r));
      const first = authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      const second = authorizer.authorize(bearer(TOKEN), RUN_DCGM);
      reject(new KubeError('create TokenReview', undefined, 'timed out'));
      const decisions = await Promise.all([first, second]);
      expect(decisions.map((d) => (d.allowed ? 0 : d.status))).toEqual([503, 503]);
      expect(kube.tokenCalls).toHaveLength(1);
      kube.tokenAnswer = () => ({ authenticated: true, user: ALICE });
      await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toMatchObject({
        allowed: true,
      });
      expect(kube.tokenCalls).toHaveLength(2);
    });
  });
});

describe('createStaticTokenAuthorizer', () => {
  const disabled = {
    allowed: false,
    status: 403,
    message:
      'protected actions are disabled: set AUTOPILOT_API_TOKEN (standalone mode) or run in Kubernetes',
  };

  test('without a configured token refuses everything with 403, even a bearer token', async () => {
    const authorizer = createStaticTokenAuthorizer(undefined);
    await expect(authorizer.authorize(bearer(TOKEN), RUN_DCGM)).resolves.toEqual(disabled);
    await expect(authorizer.authorize(undefined, ACK_NODE)).resolves.toEqual(disabled);
  });

  test('an empty configured token counts as none', async () => {
    await expect(createStaticTokenAuthorizer('').authorize('Bearer x', RUN_DCGM)).resolves.toEqual(
      disabled,
    );
  });

  test('the right token is allowed as static-token', async () => {
    const authorizer = createStaticTokenAuthorizer(TOKEN);
    await expect(authorizer.authorize(`bearer  ${TOKEN}`, RUN_DCGM)).resolves.toEqual({
      allowed: true,
      caller: 'static-token',
    });
    await expect(authorizer.authorize(bearer(TOKEN), ACK_NODE)).resolves.toEqual({
      allowed: true,
      caller: 'static-token',
    });
  });

  test.each([
    ['a wrong token', bearer('nope')],
    ['a prefix of the token', bearer(TOKEN.slice(0, -1))],
    ['the token with more after it', bearer(`${TOKEN}x`)],
  ])('%s is 401', async (_, header) => {
    await expect(createStaticTokenAuthorizer(TOKEN).authorize(header, RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 401,
      message: 'bearer token does not match AUTOPILOT_API_TOKEN',
    });
  });

  test('a missing or malformed header is 401 naming the problem, without the token', async () => {
    const authorizer = createStaticTokenAuthorizer(TOKEN);
    await expect(authorizer.authorize(undefined, RUN_DCGM)).resolves.toEqual({
      allowed: false,
      status: 401,
      message: 'this action needs a bearer token (Authorization: Bearer <token>)',
    });
    const schemeless = await authorizer.authorize(TOKEN, RUN_DCGM);
    expect(schemeless).toMatchObject({ allowed: false, status: 401 });
    expect(JSON.stringify(schemeless)).not.toContain(TOKEN);
  });
});

describe('withApiAccess', () => {
  const refusing = (status: 401 | 403 | 503): Authorizer & { calls: number } => {
    const inner = {
      calls: 0,
      authorize: () => {
        inner.calls += 1;
        return Promise.resolve<AuthDecision>({ allowed: false, status, message: 'refused' });
      },
    };
    return inner;
  };
  const dcgm3: ProtectedAction = { kind: 'run-check', check: 'dcgm' };

  test.each<[ProtectedAction, string]>([
    [{ kind: 'run-check', check: 'dcgm' }, 'invasive'],
    [{ kind: 'run-check', check: 'gpumem' }, 'invasive'],
    [{ kind: 'run-check', check: 'invasive' }, 'invasive'],
    [{ kind: 'run-check', check: 'iperf' }, 'iperf'],
    [{ kind: 'run-check', check: 'pvc' }, 'pvc'],
    [{ kind: 'acknowledge', node: 'n1' }, 'acknowledge'],
  ])('%j belongs to the %s group', (action, group) => {
    expect(accessGroupOf(action)).toBe(group);
  });

  test.each([401, 403] as const)(
    'a %d names the exact setting and Helm value that open the call',
    async (status) => {
      const decision = await withApiAccess(refusing(status), PROTECTED_ACCESS).authorize(
        undefined,
        { kind: 'run-check', check: 'pvc' },
      );
      expect(decision).toEqual({
        allowed: false,
        status,
        message:
          'refused; set AUTOPILOT_API_ACCESS_PVC=open (Helm: api.access.pvc: open) to allow it without authentication, or AUTOPILOT_API_ACCESS=open (Helm: api.access.all: open) for every protected call; docs/upgrading.md says what that risks',
      });
    },
  );

  test('a 503 (the caller could not be verified) is passed on as it is', async () => {
    const decision = await withApiAccess(refusing(503), PROTECTED_ACCESS).authorize(
      undefined,
      dcgm3,
    );
    expect(decision).toEqual({ allowed: false, status: 503, message: 'refused' });
  });

  test('an open group lets anyone in without asking; the others still ask', async () => {
    const inner = refusing(401);
    const access = { ...PROTECTED_ACCESS, invasive: 'open' } as const;
    const authorizer = withApiAccess(inner, access);
    expect(await authorizer.authorize(undefined, dcgm3)).toEqual({
      allowed: true,
      caller: 'anonymous (AUTOPILOT_API_ACCESS_INVASIVE=open)',
    });
    expect(inner.calls).toBe(0);
    const ack = await authorizer.authorize(undefined, { kind: 'acknowledge', node: 'n1' });
    expect(ack.allowed).toBe(false);
    expect(inner.calls).toBe(1);
  });

  test('standalone without a token: the 403 names the token and the open setting', async () => {
    const decision = await withApiAccess(
      createStaticTokenAuthorizer(undefined),
      PROTECTED_ACCESS,
    ).authorize(undefined, dcgm3);
    expect(decision).toMatchObject({ allowed: false, status: 403 });
    expect(decision.allowed ? '' : decision.message).toContain(
      'set AUTOPILOT_API_TOKEN (standalone mode) or run in Kubernetes; set AUTOPILOT_API_ACCESS_INVASIVE=open',
    );
  });
});
