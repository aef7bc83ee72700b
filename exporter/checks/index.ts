/**
 * The check catalogue: every check this build has, as a table of factories. Adding a check means
 * adding its file and one entry here.
 */

import type { Config } from '../config/config.js';
import type { RunCommand } from '../exec/run-command.js';
import type { Check } from './check.js';
import { PING_SUMMARY, createPingCheck } from './ping.js';

/** Names in catalogue order; config validation needs them before any port exists. */
export const CHECK_NAMES = ['ping'] as const;
export type CheckName = (typeof CHECK_NAMES)[number];

/** One line per check for --help, which must work before any configuration is read. */
export const CHECK_SUMMARIES: Readonly<Record<CheckName, string>> = { ping: PING_SUMMARY };

export interface CheckPorts {
  readonly runCommand: RunCommand;
  readonly peers: () => readonly string[];
}

export function createChecks(config: Config, ports: CheckPorts): ReadonlyMap<string, Check> {
  const factories: Record<CheckName, () => Check> = {
    ping: () =>
      createPingCheck({ settings: config.ping, peers: ports.peers, run: ports.runCommand }),
  };
  return new Map(CHECK_NAMES.map((name) => [name, factories[name]()]));
}
