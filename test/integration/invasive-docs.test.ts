/**
 * docs/api.md's /invasive answers against what the API answers in standalone mode. The doc once
 * promised a 400 to every standalone caller while the code authorises first (401 or 403), so the
 * claims are read from the doc, not copied here: a change on either side fails this test.
 */

import { afterEach, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { createApiApp } from '../../exporter/api/app.js';
import { createStaticTokenAuthorizer, PROTECTED_ACCESS } from '../../exporter/api/auth.js';
import type { ApiAccess } from '../../exporter/config/config.js';
import { silentLogger } from '../../exporter/log.js';
import { createFakeCheck, createRealRunner } from '../fakes/checks.js';
import { listItems } from '../unit/docs-check.js';

const API_MD = join(import.meta.dirname, '..', '..', 'docs', 'api.md');
const TOKEN = 'invasive-docs-token';

interface Claim {
  readonly status: number;
  readonly when: string;
}

/** The items of the list under "## `/invasive`": `- \`status\`: when`, wrapped lines joined. */
function invasiveClaims(): Claim[] {
  const text = readFileSync(API_MD, 'utf8');
  const start = text.indexOf('## `/invasive`');
  const section = text.slice(start, text.indexOf('\n## ', start + 1));
  return listItems(section).flatMap((item) => {
    const match = /^`(\d{3})`: (.*)$/.exec(item);
    return match === null ? [] : [{ status: Number(match[1]), when: match[2]! }];
  });
}

/** The claimed message of a row: its last code span, up to an elided tail ("; …"). */
function claimedMessage(claim: Claim): string {
  const spans = [...claim.when.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  return spans[spans.length - 1]!.replace(/; …$/, '');
}

function standaloneClaim(status: number): Claim {
  const claim = invasiveClaims().find((c) => c.status === status && c.when.includes('standalone'));
  if (claim === undefined) throw new Error(`docs/api.md /invasive has no standalone ${status} row`);
  return claim;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** A standalone API (no cluster, so no deep check) with the given token and access. */
function standaloneApp(token: string | undefined, access: ApiAccess = PROTECTED_ACCESS) {
  const real = createRealRunner([createFakeCheck({ name: 'alpha', tag: 'ALPHA' })]);
  cleanups.push(() => real.runner.shutdown(5_000));
  return createApiApp({
    nodeName: 'node-a',
    checks: real.checks,
    periodicChecks: ['alpha'],
    runner: real.runner,
    store: real.store,
    logger: silentLogger,
    authorizer: createStaticTokenAuthorizer(token),
    access,
    now: () => Date.now(),
    cluster: undefined,
  });
}

const errorOf = (text: string): string => text.replace(/^error: /, '').trimEnd();

describe('docs/api.md /invasive in standalone mode', () => {
  test('the table has the standalone rows this test reads', () => {
    expect(invasiveClaims().map((c) => c.status)).toEqual(
      expect.arrayContaining([200, 400, 401, 403]),
    );
  });

  test('400 with the documented message to a caller with the token', async () => {
    const claim = standaloneClaim(400);
    expect(claim.when).toContain('a valid `AUTOPILOT_API_TOKEN`');
    const response = await request(standaloneApp(TOKEN).callback())
      .get('/invasive')
      .set('Authorization', `Bearer ${TOKEN}`);
    expect(response.status).toBe(400);
    expect(errorOf(response.text)).toBe(claimedMessage(claim));
  });

  test('400 with the documented message when the invasive group is open', async () => {
    const claim = standaloneClaim(400);
    expect(claim.when).toContain('the `invasive` group opened');
    const app = standaloneApp(undefined, { ...PROTECTED_ACCESS, invasive: 'open' });
    const response = await request(app.callback()).get('/invasive');
    expect(response.status).toBe(400);
    expect(errorOf(response.text)).toBe(claimedMessage(claim));
  });

  test('403 with the documented message without AUTOPILOT_API_TOKEN', async () => {
    const claim = standaloneClaim(403);
    expect(claim.when).toContain('without `AUTOPILOT_API_TOKEN`');
    const response = await request(standaloneApp(undefined).callback()).get('/invasive');
    expect(response.status).toBe(403);
    expect(errorOf(response.text).startsWith(`${claimedMessage(claim)}; `)).toBe(true);
  });

  test('401 when a token is configured and none is sent', async () => {
    expect(invasiveClaims().some((c) => c.status === 401)).toBe(true);
    const response = await request(standaloneApp(TOKEN).callback()).get('/invasive');
    expect(response.status).toBe(401);
  });
});
