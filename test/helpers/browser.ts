import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/** Debian's Chromium (installed by .ci/run when missing); CHIPMUNK_CHROMIUM points elsewhere. */
export const chromiumPath = process.env.CHIPMUNK_CHROMIUM ?? '/usr/bin/chromium';

export type TestBrowser = { context: BrowserContext; close(): Promise<void> };

/** Headless Chromium in a fresh profile, with everything that would reach the network on its own turned off. */
export async function launchChromium(): Promise<TestBrowser> {
  if (!existsSync(chromiumPath)) throw new Error(`No Chromium at ${chromiumPath}: apt-get install chromium (.ci/run does it), or set CHIPMUNK_CHROMIUM.`);
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'chipmunk-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}
