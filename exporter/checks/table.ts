/**
 * The check table: every list of check names the exporter uses, derived from one array of
 * CheckModules, and the factory that builds a Check per module. Pure over the array, so a test
 * can build a table with a module of its own.
 */

import type { ApiAccessGroup, Config } from '../config/config.js';
import type { Check, CheckParams } from './check.js';
import type { CheckExtras, CheckModule, CommonPorts, Listener } from './module.js';

export interface CheckTable {
  readonly modules: readonly CheckModule[];
  /** Names in table order: --help, /status and the metrics list checks in this order. */
  readonly names: readonly string[];
  /** The default periodic round, in Autopilot's order. */
  readonly periodic: readonly string[];
  /** The checks every periodic round runs, whatever PERIODIC_CHECKS lists. */
  readonly alwaysPeriodic: readonly string[];
  /** The default post-flight checks, in their order. */
  readonly postflight: readonly string[];
  /** `autopilot preflight`'s default --checks. */
  readonly preflight: readonly string[];
  /** The checks that only read NVML (AUTOPILOT_NVML_CHECK_TIMEOUT's deadline). */
  readonly nvmlOnly: readonly string[];
  /** The names AUTOPILOT_CHECK_TIMEOUTS accepts. */
  readonly timeoutSettings: readonly string[];
  /** Checks protected whatever their parameters, with their access group. */
  readonly protectedAs: ReadonlyMap<string, ApiAccessGroup>;
  /** The parameters a check runs with post-flight. */
  postflightParams(name: string): CheckParams;
  /** A check's word in the cluster summary: its statusName, or its name in capitals. */
  statusName(name: string): string;
  /** One Check per module, in table order, and the listeners that feed them. */
  create(config: Config, ports: CommonPorts, extras: CheckExtras): CreatedChecks;
}

export interface CreatedChecks {
  readonly checks: ReadonlyMap<string, Check>;
  /** Every module's listener as one: started and stopped with the exporter. */
  readonly listener: Listener;
}

/** Names of the modules with `rank` defined, by rank, table order between equals. */
function ranked(
  modules: readonly CheckModule[],
  rank: (module: CheckModule) => number | undefined,
): string[] {
  return modules
    .flatMap((module, index) => {
      const at = rank(module);
      return at === undefined ? [] : [{ name: module.name, at, index }];
    })
    .sort((a, b) => a.at - b.at || a.index - b.index)
    .map((entry) => entry.name);
}

/** Whole-check settings first, then those per parameter (dcgm.1), each in table order. */
function settingsOrder(names: readonly string[]): string[] {
  return [...names.filter((n) => !n.includes('.')), ...names.filter((n) => n.includes('.'))];
}

function allOf(listeners: readonly Listener[]): Listener {
  return {
    start: () => listeners.forEach((listener) => listener.start()),
    stop: async () => {
      await Promise.all(listeners.map((listener) => listener.stop()));
    },
  };
}

/** The module is the one source of a check's name, summary, text and exclusivity. */
function instantiate(
  module: CheckModule,
  config: Config,
  ports: CommonPorts,
  extras: CheckExtras,
): { check: Check; listener?: Listener } {
  // parseConfig parsed the module's own settings into checkSettings under its name.
  const created = module.create(config, ports, extras, config.checkSettings.get(module.name));
  const [check, listener] = 'listener' in created ? [created.check, created.listener] : [created];
  return {
    check: {
      ...check,
      name: module.name,
      summary: module.summary,
      exclusive: module.policy.exclusive === true,
      formatText: module.formatText,
    },
    ...(listener === undefined ? {} : { listener }),
  };
}

export function createCheckTable(modules: readonly CheckModule[]): CheckTable {
  const names = modules.map((module) => module.name);
  const duplicate = names.find((name, index) => names.indexOf(name) !== index);
  if (duplicate !== undefined) throw new Error(`two check modules are named ${duplicate}`);
  const byName = new Map(modules.map((module) => [module.name, module]));
  return {
    modules,
    names,
    periodic: ranked(modules, (module) => module.policy.periodic),
    alwaysPeriodic: modules.filter((m) => m.policy.alwaysPeriodic === true).map((m) => m.name),
    postflight: ranked(modules, (module) => module.policy.postflight?.order),
    preflight: modules.filter((m) => m.policy.preflight === true).map((m) => m.name),
    nvmlOnly: modules.filter((m) => m.policy.nvmlOnly === true).map((m) => m.name),
    timeoutSettings: settingsOrder(
      modules.flatMap((module) => module.policy.timeoutSettings ?? []),
    ),
    protectedAs: new Map(
      modules.flatMap((module) =>
        module.policy.protectedAs === undefined ? [] : [[module.name, module.policy.protectedAs]],
      ),
    ),
    postflightParams: (name) => byName.get(name)?.policy.postflight?.params ?? {},
    statusName: (name) => byName.get(name)?.statusName ?? name.toUpperCase(),
    create(config, ports, extras) {
      const created = modules.map((module) => instantiate(module, config, ports, extras));
      return {
        checks: new Map(created.map(({ check }) => [check.name, check])),
        listener: allOf(created.flatMap(({ listener }) => listener ?? [])),
      };
    },
  };
}
