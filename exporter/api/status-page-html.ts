/**
 * What every view of the status page shares: escaping, the page's head and foot, its security
 * headers, and the short words for states, verdicts and ages. Pure except setPageHeaders.
 *
 * Everything shown comes from nodes and tools (node names, reasons, evidence, labels), so every
 * value goes through esc(); nothing is ever written into a script or style, which the CSP forbids
 * inline anyway.
 */

import type Koa from 'koa';

/** The states a row can show; UNKNOWN also for a node that did not answer. */
export const PAGE_STATES = ['PASS', 'WARN', 'TESTING', 'EVICT', 'UNKNOWN'] as const;
export type PageState = (typeof PAGE_STATES)[number];

/**
 * Scripts and styles come only from this exporter's own /assets: no inline code, nothing from
 * outside, and no framing (clickjacking of the run form) or posting elsewhere.
 */
export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text and attribute values alike: every value on the page passes through here. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** A state the page knows, UNKNOWN for anything else a node might answer. */
export function pageState(value: unknown): PageState {
  return (PAGE_STATES as readonly unknown[]).includes(value) ? (value as PageState) : 'UNKNOWN';
}

/** Compact, so 1,000 rows of ten checks stay small: 45s, 12m, 5h, 3d; "now" under a second. */
export function ageText(ms: number): string {
  if (!Number.isFinite(ms) || ms < 1000) return 'now';
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

/** Cut at `max` characters with an ellipsis: the cluster view's cell titles stay short. */
export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** A browser asks for HTML; curl (*\/*) and scripts get the API's text or JSON as before. */
export function wantsHtml(ctx: Koa.Context): boolean {
  if (ctx.query.format !== undefined) return false;
  return ctx.get('Accept').includes('text/html');
}

export function setPageHeaders(ctx: Koa.Context): void {
  ctx.set('Content-Security-Policy', CONTENT_SECURITY_POLICY);
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('Referrer-Policy', 'same-origin');
  ctx.set('Cache-Control', 'no-store');
  ctx.type = 'text/html; charset=utf-8';
}

/** The head and the page's own header; `main` is left open for the view's content. */
export function pageHead(title: string, nodeName: string): string {
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${esc(title)}</title><link rel="stylesheet" href="/assets/status.css">` +
    `<script src="/assets/status.js" defer></script></head>\n<body>` +
    `<header><a href="/">Autopilot</a> <span class="served">served by ${esc(nodeName)}</span></header>\n` +
    `<main id="page">\n`
  );
}

export function pageFoot(): string {
  return `</main>\n</body></html>\n`;
}

/** A whole error page, for a refused or malformed request from a browser. */
export function errorPage(nodeName: string, status: number, message: string): string {
  return `${pageHead(`Error ${status}`, nodeName)}<h1>Error ${status}</h1>\n<p id="error">${esc(message)}</p>\n${pageFoot()}`;
}

/** A query parameter given once (a list keeps its first): the page's filters never fail a view. */
export function queryValue(value: string | string[] | undefined): string {
  const first = Array.isArray(value) ? value[0] : value;
  return (first ?? '').trim();
}
