/**
 * docs/ is navigable: docs/README.md lists every page, every relative link of README.md and of
 * docs/*.md reaches its file and heading, and no table is wider than MAX_TABLE_ROW characters.
 */

import { describe, expect, test } from '@jest/globals';
import {
  anchorsOf,
  brokenLinks,
  markdownFiles,
  MAX_TABLE_ROW,
  readDoc,
  relativeLinks,
  slugOf,
  unindexedPages,
  wideTableRows,
} from './docs-check.js';

const FILES = markdownFiles();

describe('docs/README.md, the index', () => {
  test('lists every page of docs/', () => {
    const pages = FILES.filter((file) => file.startsWith('docs/')).map((file) => file.slice(5));
    expect(pages.length).toBeGreaterThan(10);
    expect(unindexedPages(readDoc('docs/README.md'), pages)).toEqual([]);
  });

  test('is linked from README.md', () => {
    expect(relativeLinks(readDoc('README.md')).map((link) => link.target)).toContain(
      'docs/README.md',
    );
  });

  test('a page missing from the index is reported', () => {
    expect(unindexedPages('- [a.md](a.md): A.\n', ['a.md', 'b.md', 'README.md'])).toEqual(['b.md']);
  });
});

describe('relative links', () => {
  test.each(FILES)('every link of %s reaches its file and heading', (file) => {
    expect(brokenLinks(file, readDoc(file))).toEqual([]);
  });

  test('a missing file, a missing heading and a missing own heading are reported', () => {
    const pages: Record<string, string> = {
      'docs/a.md': '# A\n\n## Second part\n\n## `GET /x` (JSON)\n',
    };
    const text = [
      '# Page',
      '[ok](a.md#second-part), [code heading](a.md#get-x-json), [self](#page)',
      '[gone](b.md), [no heading](a.md#third-part), [no own heading](#nothing)',
      '`[in code](nowhere.md)` and [web](https://example.com/x.md)',
      '```',
      '[in a fence](nowhere.md)',
      '```',
    ].join('\n');
    expect(
      brokenLinks(
        'docs/page.md',
        text,
        (path) => pages[path],
        (path) => path in pages || path === 'docs/page.md',
      ),
    ).toEqual([
      'docs/page.md:3: b.md: no such file',
      'docs/page.md:3: a.md#third-part: docs/a.md has no heading #third-part',
      'docs/page.md:3: #nothing: docs/page.md has no heading #nothing',
    ]);
  });

  test('anchors follow GitHub: punctuation dropped, duplicates numbered', () => {
    expect(slugOf("Keeping Autopilot's open API")).toBe('keeping-autopilots-open-api');
    expect([...anchorsOf('## `/status`\n## Notes\n## Notes\n')]).toEqual([
      'status',
      'notes',
      'notes-1',
    ]);
  });
});

describe(`tables no wider than ${MAX_TABLE_ROW} characters`, () => {
  test.each(FILES)('%s', (file) => {
    expect(wideTableRows(file, readDoc(file))).toEqual([]);
  });

  test('a wide row is reported, a wide line in a code block is not', () => {
    const wide = `| ${'x'.repeat(MAX_TABLE_ROW)} |`;
    expect(wideTableRows('f.md', `${wide}\n\`\`\`\n${wide}\n\`\`\`\n| short |\n`)).toEqual([
      `f.md:1: ${MAX_TABLE_ROW + 4} characters`,
    ]);
  });
});
