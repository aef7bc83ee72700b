/**
 * One setting's spec and the parsers its specs share: what config.ts's SETTINGS and a check
 * module's own settings (checks/module.ts, CheckSettings) are made of. Nothing here imports a
 * check or config.ts, so a check file may declare its settings without an import cycle.
 */

import { boundedInteger, wholeNumberRange } from '../params.js';
import { formatDuration, parseGoDuration } from './duration.js';

export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    readonly value: string,
    readonly accepted: string,
  ) {
    super(`invalid ${setting} ${JSON.stringify(value)}: expected ${accepted}`);
    this.name = 'ConfigError';
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface ConfigInputs {
  /** Flag values by name without dashes ("port", "w"), as the command line gave them. */
  readonly flags: ReadonlyMap<string, string>;
  readonly env: Env;
  readonly hostname: string;
  /** Names of the checks this build has, in catalogue order. */
  readonly knownChecks: readonly string[];
}

/**
 * One setting of the table: what parseConfig reads, --help lists and docs/configuration.md must
 * document. A flag's key is spelt with its dashes, an environment variable's as it is set.
 */
export interface Setting<T> {
  /** The value parsed when the setting is not given; absent, parse sees undefined. */
  readonly fallback?: string;
  /** The default as --help and the docs say it, where the fallback does not say it ('' for none). */
  readonly shown?: string;
  readonly help: string;
  readonly parse: (value: string | undefined, inputs: ConfigInputs) => T;
  /** Variables this setting's parser reads beside its own name, documented after it. */
  readonly reads?: readonly SettingRow[];
}

/** name, default as shown ('' for none), meaning. */
export type SettingRow = readonly [name: string, shown: string, help: string];

/** The values a record of settings parses into, by setting name. */
export type SettingValues<Specs> = {
  readonly [Name in keyof Specs]: Specs[Name] extends Setting<infer T> ? T : never;
};

export function setting<T>(
  entry: Omit<Setting<T>, 'fallback' | 'parse'> & {
    readonly fallback: string;
    readonly parse: (value: string, inputs: ConfigInputs) => T;
  },
): Setting<T>;
export function setting<T>(entry: Omit<Setting<T>, 'fallback'>): Setting<T>;
export function setting<T>(
  entry: Omit<Setting<T>, 'parse'> & { readonly parse: (value: never, inputs: ConfigInputs) => T },
): Setting<T> {
  // The first overload guarantees a fallback wherever parse needs a string.
  return entry as Setting<T>;
}

export function parseInteger(
  name: string,
  value: string,
  min: number,
  max: number,
  accepted?: string,
): number {
  const number = boundedInteger(value.trim(), min, max);
  if (number === undefined)
    throw new ConfigError(name, value, accepted ?? wholeNumberRange(min, max));
  return number;
}

export function parseDurationSetting(
  name: string,
  value: string,
  minMs: number,
  maxMs: number,
): number {
  const ms = parseGoDuration(value);
  if (ms === undefined || ms < minMs || ms > maxMs) {
    throw new ConfigError(
      name,
      value,
      `a Go duration from ${formatDuration(minMs)} to ${formatDuration(maxMs)}, such as 1s or 500ms`,
    );
  }
  return ms;
}

export const text = (value: string): string => value;
export const integer =
  (name: string, min: number, max: number) =>
  (value: string): number =>
    parseInteger(name, value, min, max);
export const duration =
  (name: string, minMs: number, maxMs: number) =>
  (value: string): number =>
    parseDurationSetting(name, value, minMs, maxMs);

/**
 * A share of an expected figure, in (0, 1]: 0 would judge nothing, above 1 would warn on a GPU
 * that does better than expected.
 */
export function parseShare(name: string, value: string, example: string): number {
  const share = /^(?:\d+(?:\.\d+)?|\.\d+)$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!(share > 0 && share <= 1)) {
    throw new ConfigError(name, value, `a share greater than 0 and at most 1, such as ${example}`);
  }
  return share;
}

export const share =
  (name: string, example: string) =>
  (value: string): number =>
    parseShare(name, value, example);

/**
 * An environment variable as parseConfig reads it (trimmed, unset when blank), for a setting whose
 * parser checks it against another.
 */
export function givenEnv(inputs: ConfigInputs, name: string): string | undefined {
  const value = inputs.env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/**
 * A FAIL share and a WARN share of one check, as two settings: the WARN share must lie above the
 * FAIL share (parsed before it), otherwise nothing could ever WARN. The error names the one the
 * operator set. `help` says what each share is of; the names are `${prefix}_FAIL_SHARE` and
 * `${prefix}_WARN_SHARE`.
 */
export function failWarnShares<Prefix extends string>(
  prefix: Prefix,
  defaults: { readonly fail: number; readonly warn: number },
  help: { readonly fail: string; readonly warn: string },
): {
  readonly [Name in `${Prefix}_FAIL_SHARE` | `${Prefix}_WARN_SHARE`]: Setting<number>;
} {
  const failName = `${prefix}_FAIL_SHARE` as const;
  const warnName = `${prefix}_WARN_SHARE` as const;
  const parseWarn = (value: string, inputs: ConfigInputs): number => {
    const warn = parseShare(warnName, value, String(defaults.warn));
    const failGiven = givenEnv(inputs, failName);
    const fail = failGiven === undefined ? defaults.fail : Number(failGiven);
    if (fail < warn) return warn;
    if (givenEnv(inputs, warnName) === undefined) {
      throw new ConfigError(
        failName,
        failGiven ?? String(fail),
        `a share below ${warnName} (${warn}, its default), or ${warnName} set above it`,
      );
    }
    throw new ConfigError(warnName, value, `a share above ${failName} (${fail}) and at most 1`);
  };
  const specs = {
    [failName]: setting({
      fallback: String(defaults.fail),
      help: help.fail,
      parse: share(failName, String(defaults.fail)),
    }),
    [warnName]: setting({ fallback: String(defaults.warn), help: help.warn, parse: parseWarn }),
  };
  return specs as {
    readonly [Name in `${Prefix}_FAIL_SHARE` | `${Prefix}_WARN_SHARE`]: Setting<number>;
  };
}
