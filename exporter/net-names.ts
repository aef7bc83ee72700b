/** Syntax of host names and addresses that settings and callers may name. Pure. */

import { isIP, isIPv6 } from 'node:net';

export const DNS_NAME =
  /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/i;

/** True for a DNS name, an IPv4 or an IPv6 address; never for something that could be an option. */
export function isHostOrAddress(text: string): boolean {
  return isIP(text) !== 0 || DNS_NAME.test(text);
}

/** An address as a URL's host: IPv6 in brackets. */
export function urlHost(address: string): string {
  return isIPv6(address) ? `[${address}]` : address;
}

/** The characters a Kubernetes label selector is made of; the API server judges its grammar. */
export const LABEL_SELECTOR_CHARACTERS = /^[A-Za-z0-9_.\-/=!,() ]+$/;
