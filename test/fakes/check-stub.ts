import type { Check, DeviceKind } from '../../exporter/checks/check.js';

/** A check that only describes itself, for tests of what is built from the check table; never run. */
export function checkStub(name: string, deviceKind: DeviceKind, compatHealth = name): Check {
  return {
    name,
    summary: name,
    banner: name,
    compatHealth,
    deviceKind,
    usesGpu: deviceKind === 'gpu',
    exclusive: false,
    timeoutMs: 1000,
    parseParams: () => ({}),
    run: () => Promise.reject(new Error('not run in this test')),
    formatText: () => '',
  };
}
