/**
 * Pure checkers of the claims the docs make, shared by test/unit/docs.test.ts and
 * test/unit/docs-links.test.ts. Each takes the doc's text (and what the code says) and returns the
 * problems it finds, one line each, so a test can feed it a deliberately wrong snippet and expect
 * a problem, and a real doc and expect none.
 */

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');

/** The widest a markdown table row may be: a 120-column terminal or editor pane shows it whole. */
export const MAX_TABLE_ROW = 120;

/** README.md and every docs/*.md, as paths relative to the repository root. */
export function markdownFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`);
  return ['README.md', ...docs];
}

export const readDoc = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** The text with fenced code blocks blanked (line numbers kept), so their contents claim nothing. */
export function withoutFences(text: string): string {
  let fenced = false;
  return text
    .split('\n')
    .map((line) => {
      if (/^\s*(```|~~~)/.test(line)) {
        fenced = !fenced;
        return '';
      }
      return fenced ? '' : line;
    })
    .join('\n');
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slugOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Every anchor a page has, duplicates numbered as GitHub numbers them (-1, -2, …). */
export function anchorsOf(text: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const match of withoutFences(text).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const slug = slugOf(match[1]!);
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

export interface Link {
  readonly line: number;
  readonly target: string;
}

/** Inline links outside code whose target is neither a URL with a scheme nor mail. */
export function relativeLinks(text: string): Link[] {
  const links: Link[] = [];
  withoutFences(text)
    .split('\n')
    .forEach((line, index) => {
      const prose = line.replace(/`[^`]*`/g, '');
      for (const match of prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
        const target = match[1]!;
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        links.push({ line: index + 1, target });
      }
    });
  return links;
}

/**
 * Links of `file` (relative to the root) that reach nothing: a missing file or folder, or an
 * `#anchor` that the target page (or the page itself) has no heading for.
 */
export function brokenLinks(
  file: string,
  text: string,
  read: (path: string) => string | undefined = (path) =>
    existsSync(join(ROOT, path)) ? readFileSync(join(ROOT, path), 'utf8') : undefined,
  exists: (path: string) => boolean = (path) => existsSync(join(ROOT, path)),
): string[] {
  const problems: string[] = [];
  for (const { line, target } of relativeLinks(text)) {
    const [pathPart = '', anchor] = target.split('#', 2);
    const path =
      pathPart === '' ? file : relative(ROOT, join(ROOT, dirname(file), decodeURI(pathPart)));
    if (path.startsWith('..') || !exists(path)) {
      problems.push(`${file}:${line}: ${target}: no such file`);
      continue;
    }
    if (anchor === undefined || anchor === '' || !path.endsWith('.md')) continue;
    const targetText = path === file ? text : read(path);
    if (targetText === undefined || !anchorsOf(targetText).has(anchor)) {
      problems.push(`${file}:${line}: ${target}: ${path} has no heading #${anchor}`);
    }
  }
  return problems;
}

/** docs/*.md pages (other than the index itself) that the index does not link to. */
export function unindexedPages(indexText: string, pages: readonly string[]): string[] {
  const linked = new Set(relativeLinks(indexText).map((link) => link.target.split('#')[0]));
  return pages.filter((page) => page !== 'README.md' && !linked.has(page));
}

/** Table rows wider than `limit` characters, as `file:line: N characters`. */
export function wideTableRows(file: string, text: string, limit = MAX_TABLE_ROW): string[] {
  return withoutFences(text)
    .split('\n')
    .flatMap((line, index) =>
      /^\s*\|/.test(line) && [...line].length > limit
        ? [`${file}:${index + 1}: ${[...line].length} characters`]
        : [],
    );
}

/** The part of `text` from the heading line starting with `heading` to the next one of its level or above. */
export function section(text: string, heading: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((line) => line.startsWith(heading));
  if (start < 0) throw new Error(`no heading ${JSON.stringify(heading)}`);
  const level = /^#+/.exec(heading)?.[0].length ?? 6;
  const end = lines.findIndex(
    (line, index) => index > start && (/^(#+)\s/.exec(line)?.[1]?.length ?? 99) <= level,
  );
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

/** Rows `| \`N\` | when |` of an exit-status table: status → the words of its row. */
export function exitTable(text: string): Map<number, string> {
  const rows = new Map<number, string>();
  for (const match of text.matchAll(/^\|\s*`(\d+)`\s*\|\s*(.*?)\s*\|\s*$/gm)) {
    rows.set(Number(match[1]), match[2]!);
  }
  return rows;
}

/**
 * The items of the markdown lists in `text` (outside code blocks), each with its wrapped lines
 * joined by one space: the wide tables became lists, so the claims they hold are read here.
 */
export function listItems(text: string): string[] {
  const items: string[] = [];
  let current: string[] | undefined;
  for (const line of withoutFences(text).split('\n')) {
    if (line.startsWith('- ')) {
      current = [line.slice(2)];
      items.push('');
    } else if (current !== undefined && /^ {2}\S/.test(line)) {
      current.push(line.trim());
    } else {
      current = undefined;
      continue;
    }
    items[items.length - 1] = current.join(' ');
  }
  return items;
}

export interface Definition {
  /** The code span that starts the item, without its backticks. */
  readonly name: string;
  /** What the parentheses after the name say (`default …`, a type and labels), if any. */
  readonly note: string | undefined;
  readonly meaning: string;
}

/**
 * Definition-style items `- \`name\` (note): meaning` keyed by name. An item that starts with a
 * code span matching `names` but not this shape is an error, so that a mangled entry cannot drop
 * out of a test unnoticed.
 */
export function definitions(text: string, names: RegExp): Map<string, Definition> {
  const found = new Map<string, Definition>();
  for (const item of listItems(text)) {
    const name = /^`([^`]+)`/.exec(item)?.[1];
    if (name === undefined || !names.test(name)) continue;
    const match = /^`[^`]+`(?: \((.*?)\))?: (.+)$/.exec(item);
    if (match === null) throw new Error(`not a "- \`name\` (note): meaning" item: ${item}`);
    if (found.has(name)) throw new Error(`${name} is listed twice`);
    found.set(name, { name, note: match[1], meaning: match[2]! });
  }
  return found;
}

/** Whether `actual` is `claimed` where each `…` of the claim stands for any text. */
export function matchesElided(claimed: string, actual: string): boolean {
  const pattern = claimed
    .split('…')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${pattern}$`, 's').test(actual);
}

/** The names of the metrics that have at least one sample in a text exposition. */
export function sampledMetrics(exposition: string): Set<string> {
  return new Set(
    exposition
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => /^[a-zA-Z_:][\w:]*/.exec(line)![0]),
  );
}

/**
 * docs/metrics.md's mode claims against two expositions of the same results: a row whose meaning
 * starts "Kubernetes mode:" must have samples in Kubernetes mode and none in standalone mode; any
 * other row must be present (or absent) alike in both.
 */
export function metricModeProblems(
  meanings: ReadonlyMap<string, string>,
  standalone: ReadonlySet<string>,
  kubernetes: ReadonlySet<string>,
): string[] {
  const problems: string[] = [];
  for (const [name, meaning] of meanings) {
    const kubernetesOnly = meaning.startsWith('Kubernetes mode:');
    if (kubernetesOnly && standalone.has(name)) {
      problems.push(`${name}: documented as Kubernetes mode only, but standalone mode exports it`);
    }
    if (kubernetesOnly && !kubernetes.has(name)) {
      problems.push(`${name}: documented for Kubernetes mode, which does not export it`);
    }
    if (!kubernetesOnly && standalone.has(name) !== kubernetes.has(name)) {
      problems.push(`${name}: exported in one mode only, but not documented as "Kubernetes mode:"`);
    }
  }
  return problems;
}

/**
 * configuration.md's environment variables against the settings: each is an item
 * `- \`NAME\` (default …): meaning`, whose default's first code span is the setting's default up to
 * its parenthesised remark; a setting without a default has no `(default …)`, or one with no code
 * span (words such as "the host name" are allowed when --help says the same).
 */
export function envDefaultProblems(
  doc: string,
  settings: readonly (readonly [name: string, shown: string, help: string])[],
): string[] {
  const items = definitions(doc, /^[A-Z][A-Z0-9_]*$/);
  const problems: string[] = [];
  for (const [name, shown] of settings) {
    const item = items.get(name);
    if (item === undefined) {
      problems.push(`${name}: no item`);
      continue;
    }
    const cell = /^default (.*)$/.exec(item.note ?? '')?.[1] ?? '';
    if (item.note !== undefined && !item.note.startsWith('default ')) {
      problems.push(`${name}: "(${item.note})" is not "(default …)"`);
    } else if (!defaultAgrees(cell, shown)) {
      problems.push(
        `${name}: documented default ${JSON.stringify(cell)}, --help says ${JSON.stringify(shown)}`,
      );
    }
  }
  return problems;
}

/**
 * A default cell agrees with --help's default when it starts with the same value (code spans
 * unquoted, --help's parenthesised remark left out); a default in words (it has a space: "unset:
 * …", "the host name") needs only the same first word; no default, no code span.
 */
function defaultAgrees(cell: string, shown: string): boolean {
  if (shown === '') return !cell.includes('`');
  const plain = cell.replace(/`/g, '');
  const value = shown.replace(/\s*\([^)]*\)$/, '');
  const firstWord = (text: string): string => text.split(/\s/, 1)[0]!;
  return plain.startsWith(value) || (value.includes(' ') && firstWord(plain) === firstWord(value));
}
