/**
 * Debian's chromium driven by puppeteer-core, for the status page's browser tests and benchmark.
 * puppeteer-core downloads no browser: scripts/install.sh --test installs the `chromium` package.
 */

import { existsSync } from 'node:fs';
import puppeteer, { type Browser } from 'puppeteer-core';

/** AUTOPILOT_TEST_CHROMIUM names another build (e.g. Google Chrome) where Debian's is absent. */
export const CHROMIUM = process.env.AUTOPILOT_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** A fixed window, so that layouts and the screenshot do not depend on the machine. */
export const VIEWPORT = { width: 1280, height: 800 } as const;

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `no browser at ${CHROMIUM}: scripts/install.sh --test installs Debian's chromium ` +
        '(or set AUTOPILOT_TEST_CHROMIUM to a Chromium or Chrome binary)',
    );
  }
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    defaultViewport: VIEWPORT,
    // Chromium's sandbox refuses to start as root (CI's containers run the tests as root).
    args: [
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      '--disable-gpu',
      '--font-render-hinting=none',
    ],
  });
}

/**
 * The few DOM members the tests read inside the page. The project compiles without the DOM
 * library (it is a Node program), so callbacks passed to $eval and $$eval name their type here.
 */
export interface DomElement {
  getAttribute(name: string): string | null;
  querySelector(selectors: string): DomElement | null;
  readonly textContent: string | null;
  readonly children: ArrayLike<DomElement>;
}
