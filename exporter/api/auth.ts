/**
 * Who may do what through the API. Autopilot let anyone who could reach :3333 start an exclusive
 * GPU check or an iperf flood; here reading status and light checks stay open, and the protected
 * actions need a caller that Kubernetes authenticates (TokenReview) and RBAC authorises
 * (SubjectAccessReview), or, without Kubernetes, a static bearer token.
 *
 * Every failure closes: an error from the Kubernetes API refuses with 503, never allows. The token
 * is never logged, echoed or kept: caches are keyed by its SHA-256.
 *
 * Each group of protected actions can be opened instead (AUTOPILOT_API_ACCESS[_<GROUP>]=open), for
 * the clusters whose scripts call Autopilot's API without a token; a refusal names the setting.
 */

import { createHash, timingSafeEqual } from 'node:crypto';
import {
  API_ACCESS_GROUPS,
  API_ACCESS_VARIABLE,
  apiAccessVariable,
  type ApiAccess,
  type ApiAccessGroup,
} from '../config/config.js';
import type { KubeApi, ResourceAttributes, ReviewedUser, TokenReview } from '../k8s/ports.js';
import { KubeError } from '../k8s/ports.js';
import { CHECK_TABLE } from '../checks/index.js';
import { RBAC_API_GROUP } from '../k8s/rbac-rules.js';
import { silentLogger, type Logger } from '../log.js';

export type ProtectedAction =
  | { readonly kind: 'run-check'; readonly check: string }
  | { readonly kind: 'acknowledge'; readonly node: string };

export type AuthDecision =
  | {
      readonly allowed: true;
      /** The username, or 'static-token' in standalone mode. */ readonly caller: string;
    }
  | { readonly allowed: false; readonly status: 401 | 403 | 503; readonly message: string };

export interface Authorizer {
  authorize(
    authorizationHeader: string | undefined,
    action: ProtectedAction,
  ): Promise<AuthDecision>;
}

/**
 * Checks protected whatever their exclusivity, because they reach beyond this node: each module
 * whose policy names an access group (checks/module.ts, protectedAs).
 */
export const ALWAYS_PROTECTED_CHECKS: ReadonlySet<string> = new Set(CHECK_TABLE.protectedAs.keys());

/** Exclusive checks take the GPUs from running workloads, so they are protected too. */
export function requiresAuthorization(check: {
  readonly name: string;
  readonly exclusive: boolean;
}): boolean {
  return check.exclusive || ALWAYS_PROTECTED_CHECKS.has(check.name);
}

/** The SubjectAccessReview attributes an action needs; cluster-scoped, so a ClusterRole grants them. */
export function accessAttributes(action: ProtectedAction): ResourceAttributes {
  switch (action.kind) {
    case 'run-check':
      return {
        group: RBAC_API_GROUP,
        resource: 'healthchecks',
        verb: 'create',
        name: action.check,
      };
    case 'acknowledge':
      return { group: RBAC_API_GROUP, resource: 'nodehealth', verb: 'update', name: action.node };
  }
}

/** The group whose access setting governs an action (config.ts, API_ACCESS_GROUPS). */
export function accessGroupOf(action: ProtectedAction): ApiAccessGroup {
  if (action.kind === 'acknowledge') return 'acknowledge';
  // Exclusive checks and /invasive: what takes the GPUs.
  return CHECK_TABLE.protectedAs.get(action.check) ?? 'invasive';
}

/** Today's behaviour for every group, and the default. */
export const PROTECTED_ACCESS: ApiAccess = Object.fromEntries(
  API_ACCESS_GROUPS.map((group) => [group, 'kubernetes']),
) as Record<ApiAccessGroup, 'kubernetes'>;

/** The Helm value that sets a group's access (deploy/helm/autopilot/values.yaml, api.access). */
export const helmAccessValue = (group: ApiAccessGroup): string => `api.access.${group}`;

/** Said after every 401 and 403: the one setting that lets this call in without authentication. */
export function openAccessHint(group: ApiAccessGroup): string {
  return `set ${apiAccessVariable(group)}=open (Helm: ${helmAccessValue(group)}: open) to allow it without authentication, or ${API_ACCESS_VARIABLE}=open (Helm: api.access.all: open) for every protected call; docs/upgrading.md says what that risks`;
}

/**
 * The access settings over an authorizer: an open group lets every caller in, as Autopilot did;
 * a protected one asks `inner`, whose 401 and 403 then name the setting that would open the call.
 * A 503 (the caller could not be verified) does not: opening is no fix for an unreachable API.
 */
export function withApiAccess(inner: Authorizer, access: ApiAccess): Authorizer {
  return {
    async authorize(header, action) {
      const group = accessGroupOf(action);
      if (access[group] === 'open') {
        return { allowed: true, caller: `anonymous (${apiAccessVariable(group)}=open)` };
      }
      const decision = await inner.authorize(header, action);
      if (decision.allowed || decision.status === 503) return decision;
      return { ...decision, message: `${decision.message}; ${openAccessHint(group)}` };
    },
  };
}

export const MISSING_TOKEN_MESSAGE =
  'this action needs a bearer token (Authorization: Bearer <token>)';

export type BearerParse =
  { readonly ok: true; readonly token: string } | { readonly ok: false; readonly message: string };

/**
 * Pure. Accepts only `Bearer <token>`, the scheme in any case, one space or more before the token.
 * No message quotes the header: a token pasted without its scheme would otherwise be echoed.
 */
export function parseBearer(header: string | undefined): BearerParse {
  const trimmed = header?.trim() ?? '';
  if (trimmed === '') return { ok: false, message: MISSING_TOKEN_MESSAGE };
  const match = /^(\S+)(?: +(.*))?$/s.exec(trimmed);
  if (match === null || match[1]!.toLowerCase() !== 'bearer') {
    return {
      ok: false,
      message:
        'the Authorization header does not use the Bearer scheme; this action needs Authorization: Bearer <token>',
    };
  }
  const token = match[2] ?? '';
  if (token === '') return { ok: false, message: 'the bearer token is empty' };
  if (/\s/.test(token)) return { ok: false, message: 'the bearer token contains whitespace' };
  return { ok: true, token };
}

export const DISABLED_MESSAGE =
  'protected actions are disabled: set AUTOPILOT_API_TOKEN (standalone mode) or run in Kubernetes';

/** Standalone mode. An empty configured token counts as none: it could never be presented. */
export function createStaticTokenAuthorizer(token: string | undefined): Authorizer {
  if (token === undefined || token === '') {
    return {
      authorize: () => Promise.resolve({ allowed: false, status: 403, message: DISABLED_MESSAGE }),
    };
  }
  // Comparing fixed-length digests keeps the time independent of where, and whether the lengths, differ.
  const expected = sha256(token);
  return {
    authorize(header) {
      const parsed = parseBearer(header);
      if (!parsed.ok) return Promise.resolve(refuse(401, parsed.message));
      if (!timingSafeEqual(sha256(parsed.token), expected)) {
        return Promise.resolve(refuse(401, 'bearer token does not match AUTOPILOT_API_TOKEN'));
      }
      return Promise.resolve({ allowed: true, caller: 'static-token' });
    },
  };
}

export interface KubernetesAuthorizerDeps {
  readonly kube: KubeApi;
  readonly now: () => number;
  /** How long a review's answer, yes or no, is reused. Default 10 s. */
  readonly cacheTtlMs?: number;
  /** Entries per cache, oldest evicted first, so a flood of random tokens cannot grow memory. */
  readonly maxCacheEntries?: number;
  readonly logger?: Logger;
}

export const DEFAULT_CACHE_TTL_MS = 10_000;
export const DEFAULT_MAX_CACHE_ENTRIES = 1_000;

export function createKubernetesAuthorizer(deps: KubernetesAuthorizerDeps): Authorizer {
  const ttlMs = deps.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS;
  const maxEntries = deps.maxCacheEntries ?? DEFAULT_MAX_CACHE_ENTRIES;
  const logger = deps.logger ?? silentLogger;
  const tokenReviews = createReviewCache<TokenReview>(deps.now, ttlMs, maxEntries);
  const accessReviews = createReviewCache<{ allowed: boolean; reason: string }>(
    deps.now,
    ttlMs,
    maxEntries,
  );

  return {
    async authorize(header, action) {
      const parsed = parseBearer(header);
      if (!parsed.ok) return refuse(401, parsed.message);
      const { token } = parsed;
      const tokenKey = sha256(token).toString('hex');
      const attributes = accessAttributes(action);
      try {
        const review = await tokenReviews.get(tokenKey, () => deps.kube.reviewToken(token));
        if (!review.authenticated) {
          const reason = redact(review.error, token) || 'not authenticated';
          return refuse(401, `token rejected by the Kubernetes TokenReview: ${reason}`);
        }
        const user: ReviewedUser = review.user;
        const access = await accessReviews.get(`${tokenKey} ${JSON.stringify(attributes)}`, () =>
          deps.kube.reviewAccess(user, attributes),
        );
        if (!access.allowed)
          return refuse(403, forbiddenMessage(user.username, attributes, access.reason));
        return { allowed: true, caller: user.username };
      } catch (error) {
        if (!(error instanceof KubeError)) throw error;
        const message = redact(error.message, token);
        logger.warn('cannot verify an API caller; refusing', {
          action: action.kind,
          error: message,
        });
        return refuse(503, `cannot verify the caller: the Kubernetes API answered ${message}`);
      }
    },
  };
}

function forbiddenMessage(user: string, attributes: ResourceAttributes, reason: string): string {
  const target =
    attributes.name === undefined
      ? attributes.resource
      : `${attributes.resource}/${attributes.name}`;
  const message = `user ${user} may not ${attributes.verb} ${target} in API group ${attributes.group} (grant it with a ClusterRole; see docs/kubernetes.md)`;
  return reason === '' ? message : `${message}; the authoriser said: ${reason}`;
}

function refuse(status: 401 | 403 | 503, message: string): AuthDecision {
  return { allowed: false, status, message };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Servers are not known to quote the token back, but the guarantee should not rest on that. */
function redact(text: string, token: string): string {
  return text.split(token).join('<redacted>');
}

interface ReviewCache<T> {
  /** The cached answer, the one already being fetched, or a new fetch. Failures are not kept. */
  get(key: string, fetch: () => Promise<T>): Promise<T>;
}

/**
 * Bounded TTL cache with in-flight sharing. Map iteration follows insertion order, and an entry is
 * re-inserted whenever it is stored, so the first key is always the oldest.
 */
function createReviewCache<T>(
  now: () => number,
  ttlMs: number,
  maxEntries: number,
): ReviewCache<T> {
  const answers = new Map<string, { readonly value: T; readonly expiresAt: number }>();
  const inFlight = new Map<string, Promise<T>>();

  const store = (key: string, value: T): void => {
    answers.delete(key);
    answers.set(key, { value, expiresAt: now() + ttlMs });
    while (answers.size > maxEntries) {
      const oldest = answers.keys().next();
      if (oldest.done === true) break;
      answers.delete(oldest.value);
    }
  };

  return {
    get(key, fetch) {
      const cached = answers.get(key);
      if (cached !== undefined) {
        if (now() < cached.expiresAt) return Promise.resolve(cached.value);
        answers.delete(key);
      }
      const pending = inFlight.get(key);
      if (pending !== undefined) return pending;
      const started = fetch().then(
        (value) => {
          inFlight.delete(key);
          store(key, value);
          return value;
        },
        (error: unknown) => {
          inFlight.delete(key);
          throw error;
        },
      );
      inFlight.set(key, started);
      return started;
    },
  };
}
