/** Binds the exporter's three apps to their ports and closes them again, without leaking sockets. */

import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type Koa from 'koa';
import type { Config } from './config/config.js';
import type { Exporter } from './exporter.js';

export interface Listening {
  /** Bound ports, which differ from the configured ones when those were 0. */
  readonly ports: { readonly api: number; readonly metrics: number; readonly readiness: number };
  close(): Promise<void>;
}

export async function listen(exporter: Exporter, config: Config): Promise<Listening> {
  const servers: Server[] = [];
  const bind = async (app: Koa, port: number, setting: ListenerSetting): Promise<number> => {
    const handle = app.callback();
    const server = createServer((request, response) => void handle(request, response));
    server.on('clientError', answerUnparsable);
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      // The error names the setting that chose the port, so the operator knows what to change.
      server.once('error', (error) => reject(Object.assign(error, { setting })));
      server.listen(port, config.listenAddress, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    return typeof address === 'object' && address !== null ? address.port : port;
  };
  const close = async (): Promise<void> => {
    await Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    );
  };
  try {
    const ports = {
      api: await bind(exporter.apiApp, config.apiPort, '--port'),
      metrics: await bind(exporter.metricsApp, config.metricsPort, 'AUTOPILOT_METRICS_PORT'),
      readiness: await bind(
        exporter.readinessApp,
        config.readinessPort,
        'AUTOPILOT_READINESS_PORT',
      ),
    };
    return { ports, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The setting that chooses each listener's port (config.ts SETTINGS). */
export type ListenerSetting = '--port' | 'AUTOPILOT_METRICS_PORT' | 'AUTOPILOT_READINESS_PORT';

/**
 * Pure: one line for an error of listen() that the operator can fix by changing a setting, naming
 * that setting; undefined for any other error. Node's own message ("listen EADDRINUSE: address
 * already in use :::8081") names neither the listener nor what to change.
 */
export function describeListenError(
  error: unknown,
  listenAddress: string | undefined,
): string | undefined {
  const { code, port, setting } = (error ?? {}) as {
    code?: string;
    port?: number;
    setting?: ListenerSetting;
  };
  const where = `port ${port ?? '?'}`;
  const which = setting ?? 'the port settings';
  if (code === 'EADDRINUSE') return `${where} is in use: set ${which} to a free port`;
  if (code === 'EACCES') {
    return `${where} may not be bound (permission denied): set ${which} to a port above 1023`;
  }
  if (code === 'EADDRNOTAVAIL') {
    return `cannot listen on ${listenAddress ?? 'the address'}, ${where}: it is not an address of this host: set AUTOPILOT_LISTEN_ADDRESS`;
  }
  return undefined;
}

/**
 * A request Node's parser refuses never reaches the app; Node would answer it with an empty 400.
 * This says what was wrong, in the app's `error: …` form.
 */
function answerUnparsable(error: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable || error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request';
  const body = tooLarge
    ? 'error: the request line and headers are over 16 KiB\n'
    : `error: malformed HTTP request (${error.code ?? error.message})\n`;
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
