/** Syntax of host names and addresses that settings and callers may name. Pure. */

import { isIP } from 'node:net';

export const DNS_NAME =
  /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/i;

/** True for a DNS name, an IPv4 or an IPv6 address; never for something that could be an option. */
export function isHostOrAddress(text: string): boolean {
  return isIP(text) !== 0 || DNS_NAME.test(text);
}
