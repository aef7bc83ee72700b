/**
 * Structured logs: one JSON object per line, so that log pipelines parse them without regexes.
 * The sink is injected; only main.ts decides that it is stderr.
 */

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
