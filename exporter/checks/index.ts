/**
 * The checks this build has: one module per file, in the order --help, /status and /metrics list
 * them. Adding a check means adding its file and one line here; every list of check names the
 * exporter uses (the default periodic round, post-flight, the protected checks, the timeout
 * settings, the cluster summary) is derived from this array by checks/table.ts.
 */

import type { Config } from '../config/config.js';
import type { Check } from './check.js';
import { dcgmModule } from './dcgm.js';
import { eccModule } from './ecc.js';
import { gpucountModule } from './gpucount.js';
import { gpumemModule } from './gpumem.js';
import { gpupowerModule } from './gpupower.js';
import { iperfModule } from './iperf.js';
import { nvlinkModule } from './nvlink.js';
import type { CheckExtras, CheckModule, CommonPorts } from './module.js';
import { p2pbwModule } from './p2pbw.js';
import { pciebwModule } from './pciebw.js';
import { pingModule } from './ping.js';
import { pvcModule } from './pvc.js';
import { remappedModule } from './remapped.js';
import { createCheckTable } from './table.js';
import { xidModule } from './xid.js';

export const CHECK_MODULES: readonly CheckModule[] = [
  pciebwModule,
  remappedModule,
  dcgmModule,
  gpupowerModule,
  gpucountModule,
  eccModule,
  xidModule,
  nvlinkModule,
  gpumemModule,
  p2pbwModule,
  pingModule,
  pvcModule,
  iperfModule,
];

export const CHECK_TABLE = createCheckTable(CHECK_MODULES);

/** Names in table order; config validation needs them before any port exists. */
export const CHECK_NAMES: readonly string[] = CHECK_TABLE.names;

/** The checks of this build over the given ports, without their listeners (tests, the CLI). */
export function createChecks(
  config: Config,
  ports: CommonPorts,
  extras: CheckExtras,
): ReadonlyMap<string, Check> {
  return CHECK_TABLE.create(config, ports, extras).checks;
}
