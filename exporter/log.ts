/**
 * Structured logs: one JSON object per line, so that log pipelines parse them without regexes.
 * The sink is injected; only main.ts decides that it is stderr (and --logfile).
 */

import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type LogFields = Readonly<Record<string, unknown>>;

export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line it writes. */
  child(fields: LogFields): Logger;
}

export interface JsonLoggerOptions {
  readonly level: LogLevel;
  readonly write: (line: string) => void;
  readonly now: () => number;
}

export function createJsonLogger(options: JsonLoggerOptions, base: LogFields = {}): Logger {
  const threshold = LOG_LEVELS.indexOf(options.level);
  const emit = (level: LogLevel, message: string, fields: LogFields = {}): void => {
    if (LOG_LEVELS.indexOf(level) > threshold) return;
    const line = {
      time: new Date(options.now()).toISOString(),
      level,
      msg: message,
      ...base,
      ...serialisable(fields),
    };
    options.write(`${JSON.stringify(line)}\n`);
  };
  return {
    error: (message, fields) => emit('error', message, fields),
    warn: (message, fields) => emit('warn', message, fields),
    info: (message, fields) => emit('info', message, fields),
    debug: (message, fields) => emit('debug', message, fields),
    child: (fields) => createJsonLogger(options, { ...base, ...fields }),
  };
}

/** Errors serialise to `{}` by default, which would lose exactly the information a log line is for. */
function serialisable(fields: LogFields): LogFields {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    out[key] = value instanceof Error ? { name: value.name, message: value.message } : value;
  }
  return out;
}

export const silentLogger: Logger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  child: () => silentLogger,
};

/** --logfile: an append-only copy of the log lines. */
export interface LogFile {
  readonly path: string;
  write(line: string): void;
  close(): void;
}

/**
 * Opens (or creates) `path` for appending, as klog did with Autopilot's --logfile, and throws at
 * once when it cannot: a setting that cannot work must stop the start, not lose logs silently.
 * Writes are synchronous, like stderr's here, so a line written is on disk whatever way the process
 * ends. A failing write (disk full) is reported on `report` (once until a write succeeds again) and the exporter keeps running.
 */
export function openLogFile(
  path: string,
  report: (message: string) => void = (message) => process.stderr.write(message),
): LogFile {
  let fd: number | undefined = openSync(path, 'a');
  let failed = false;
  return {
    path,
    write(line) {
      if (fd === undefined) return;
      try {
        writeSync(fd, line);
        failed = false;
      } catch (error) {
        if (!failed) {
          report(`autopilot: cannot write to --logfile ${path}: ${messageOf(error)}\n`);
        }
        failed = true;
      }
    },
    close() {
      if (fd === undefined) return;
      const closing = fd;
      fd = undefined;
      try {
        fsyncSync(closing);
      } catch {
        // Some files (pipes, /dev/stdout) cannot be synced; the lines are written all the same.
      }
      closeSync(closing);
    },
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
