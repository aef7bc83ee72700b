/**
 * GET over node:http for the fan-out, shaped like fetch so that tests can pass a fake fetch.
 *
 * Not the global fetch: its connection pool keeps an idle keep-alive socket to every node asked
 * (about 30 MB of heap for 1,000 nodes, held between fan-outs), while a fan-out asks each node
 * once. Here every request has its own connection, closed when the answer is read, and an
 * answer larger than `maxBytes` is cut off instead of filling the heap.
 */

import { request } from 'node:http';

/** What callers read of an answer: a fetch Response is one, so tests may pass fetch's. */
export interface HttpAnswer {
  readonly status: number;
  readonly ok: boolean;
  text(): Promise<string>;
}

export type HttpGet = (
  url: string,
  init: { readonly headers: Readonly<Record<string, string>>; readonly signal: AbortSignal },
) => Promise<HttpAnswer>;

export function createHttpGet(maxBytes: number): HttpGet {
  return (url, init) =>
    new Promise<HttpAnswer>((resolve, reject) => {
      const req = request(
        url,
        { method: 'GET', headers: init.headers, signal: init.signal, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > maxBytes) {
              res.destroy(new Error(`the answer is larger than ${maxBytes} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', reject);
          // A plain object, not a Response: its web-stream body is garbage for every node asked,
          // and at 10,000 nodes that garbage is most of the fan-out's heap.
          res.on('end', () => {
            const status = res.statusCode ?? 500;
            const body = Buffer.concat(chunks).toString('utf8');
            resolve({
              status,
              ok: status >= 200 && status < 300,
              text: () => Promise.resolve(body),
            });
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
}
