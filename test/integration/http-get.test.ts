/** The fan-out's GET over node:http, against a real local server. */

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, expect, test } from '@jest/globals';
import { createHttpGet } from '../../exporter/cluster/http-get.js';

let server: Server | undefined;

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  server = createServer(handler);
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const signal = (): AbortSignal => new AbortController().signal;

test('answers status and body, sends the headers, and closes the connection', async () => {
  let seen: Record<string, unknown> = {};
  const url = await serve((req, res) => {
    seen = { ...req.headers };
    res.writeHead(403, { 'content-type': 'application/json' });
    res.end('{"error":"no"}');
  });
  const response = await createHttpGet(1024)(`${url}/status?x=1`, {
    headers: { accept: 'application/json', 'x-autopilot-fanout-from': 'node-a' },
    signal: signal(),
  });
  expect(response.status).toBe(403);
  expect(await response.text()).toBe('{"error":"no"}');
  expect(seen).toMatchObject({
    accept: 'application/json',
    'x-autopilot-fanout-from': 'node-a',
    connection: 'close',
  });
});

test('an answer larger than the limit is an error, not a full heap', async () => {
  const url = await serve((_req, res) => res.end('x'.repeat(10_000)));
  await expect(createHttpGet(1000)(url, { headers: {}, signal: signal() })).rejects.toThrow(
    'the answer is larger than 1000 bytes',
  );
});

test('a refused connection says so', async () => {
  const url = await serve((_req, res) => res.end());
  await new Promise<void>((resolve) => server!.close(() => resolve()));
  server = undefined;
  await expect(createHttpGet(1000)(url, { headers: {}, signal: signal() })).rejects.toThrow(
    /connect ECONNREFUSED 127\.0\.0\.1:\d+/,
  );
});

test('an abort ends a request that hangs', async () => {
  const url = await serve(() => undefined);
  const controller = new AbortController();
  const pending = createHttpGet(1000)(url, { headers: {}, signal: controller.signal });
  setTimeout(() => controller.abort(), 20);
  await expect(pending).rejects.toThrow(/aborted/i);
  server!.closeAllConnections();
});
