/**
 * A new check for test/unit/check-table.test.ts, made as a check author makes one: a module file of
 * its own, added to the table. Its work is gpupower's (a test needs a check that really runs over
 * the fake NVML and exports samples), under its own name, summary and cluster word; it borrows
 * gpupower's module rather than copying 360 lines of it.
 */

import { gpupowerModule } from '../../../exporter/checks/gpupower.js';
import type { Check } from '../../../exporter/checks/check.js';
import type { CheckModule } from '../../../exporter/checks/module.js';

export const GPUPOWERCOPY_SUMMARY = 'a copy of gpupower, for the test of the check table';

export const gpupowercopyModule: CheckModule = {
  ...gpupowerModule,
  name: 'gpupowercopy',
  summary: GPUPOWERCOPY_SUMMARY,
  statusName: 'GPU POWER COPY',
  create: (config, ports, extras, settings) => {
    const check = gpupowerModule.create(config, ports, extras, settings) as Check;
    return { ...check, name: 'gpupowercopy', summary: GPUPOWERCOPY_SUMMARY };
  },
};
