import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type TestBrowser } from './helpers/browser.js';
import { corpus, startChipmunk, storedForm, type TestChipmunk } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';
import { creationBudget } from '../src/services/budget.js';

// The demo page, driven in a real Chromium against a real Chipmunk: drop a file, watch the ladder
// appear, hit the quota, pause and resume, delete. Screenshots land in test-artifacts/.

type Variant = { n: number | string; width?: number; height?: number; bytes: number; mimeType: string; url: string };
type FileJson = { id: string; bytes: number; totalBytes: number; width: number; height: number; placeholder?: string; thumbhash?: string; variants: Variant[] };
type UserJson = { usedBytes: number; reservedBytes: number; quotaBytes: number; fileCount: number };

const artifacts = path.resolve(import.meta.dirname, '../test-artifacts');
const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');

let t: TestChipmunk;
let browser: TestBrowser;

beforeAll(async () => {
  t = await startChipmunk({ CHIPMUNK_DEMO: 'on' });
  browser = await launchChromium();
  await mkdir(artifacts, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
});

// Demo users are the demo's: /v1 refuses their names, so the test reads them as the page does.
const user = async (id: string) => (await (await fetch(`${t.url}/demo/api/users/${id}`)).json()) as UserJson;
const fileJson = async (id: string) => (await (await t.api(`/v1/files/${id}`)).json()) as FileJson;

/** Opens the page as the demo user demo-<name>, failing the test on any script error. */
async function openPage(name: string, viewport = { width: 1280, height: 800 }, purpose = 'image'): Promise<Page> {
  const page = await browser.context.newPage();
  await page.setViewportSize(viewport);
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  (page as Page & { problems?: string[] }).problems = problems;
  await page.goto(`${t.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  await page.fill('#user', name);
  await page.locator('#user').blur();
  // The page remembers the last purpose (localStorage, shared by this browser profile): set it.
  await page.selectOption('#purpose', purpose);
  await expect.poll(() => page.textContent('#usage-quota')).toContain('of');
  return page;
}

const pageErrors = (page: Page) => (page as Page & { problems?: string[] }).problems ?? [];

/** Drops a file on the drop zone the way a desktop drag does: a drop event carrying a DataTransfer. */
async function dropFile(page: Page, file: string, mimeType: string): Promise<void> {
  const bytes = (await readFile(file)).toString('base64');
  const dataTransfer = await page.evaluateHandle(
    ({ bytes, name, mimeType }) => {
      const raw = Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([raw], name, { type: mimeType }));
      return dt;
    },
    { bytes, name: path.basename(file), mimeType },
  );
  await page.dispatchEvent('#drop', 'drop', { dataTransfer });
}

async function waitForReadyFile(page: Page): Promise<FileJson> {
  await page.waitForSelector('#result[data-status="ready"]', { timeout: 60_000 });
  const id = await page.getAttribute('#result', 'data-file-id');
  return fileJson(id!);
}

describe('demo page', () => {
  it('uploads a dropped image and shows every variant at its real size, the placeholder and the thumbhash', async () => {
    const page = await openPage('alice');
    const photo = corpus('images/photos/landscape-cardinal-bird-2mp.jpg');
    await dropFile(page, photo, 'image/jpeg');
    const file = await waitForReadyFile(page);

    // The ladder the server made, all of it, on the page.
    expect(file.variants.map((v) => v.n)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const rows = await page.$$eval('[data-variant-row]', (trs) =>
      trs.map((tr) =>
        Array.from(tr.querySelectorAll('td'))
          .slice(0, 2)
          .map((td) => td.textContent),
      ),
    );
    expect(rows).toEqual(file.variants.map((v) => [v.n === 0 ? '0 (original)' : String(v.n), `${v.width}×${v.height}`]));

    // Each rung is drawn from its real URL at its real size.
    const ladder = file.variants.filter((v) => v.n !== 0);
    for (const v of ladder) {
      const img = page.locator(`.ladder figure[data-variant="${v.n}"] img`);
      await img.scrollIntoViewIfNeeded();
      await expect.poll(() => img.evaluate((el: HTMLImageElement) => el.complete && el.naturalWidth), { timeout: 20_000 }).toBe(v.width);
      const size = await img.evaluate((el: HTMLImageElement) => [el.naturalHeight, el.clientWidth, el.clientHeight]);
      expect(size).toEqual([v.height, v.width, v.height]);
      expect(await page.textContent(`.ladder figure[data-variant="${v.n}"] figcaption`)).toContain(`${v.width}×${v.height}`);
    }

    // The placeholder from the JSON sits under the sharp image, which fades in once loaded.
    expect(file.placeholder).toMatch(/^data:image\//);
    expect(await page.getAttribute('#placeholder', 'src')).toBe(file.placeholder);
    await page.waitForSelector('#blurup.loaded');
    const sharpSrc = await page.getAttribute('#sharp', 'src');
    expect(ladder.map((v) => v.url)).toContain(sharpSrc);

    // The thumbhash is decoded in the browser into a small image.
    expect(await page.textContent('#thumbhash-text')).toBe(file.thumbhash);
    const decoded = await page.$eval('#thumbhash-small', (el: HTMLImageElement) => [el.naturalWidth, el.naturalHeight]);
    expect(decoded[0]).toBeGreaterThan(0);
    expect(decoded[0]).toBeLessThanOrEqual(32);

    // Usage on the page is the user's real usage.
    await expect.poll(() => page.getAttribute('#usage-text', 'data-used-bytes')).toBe(String(file.totalBytes));
    expect((await user('demo-alice')).usedBytes).toBe(file.totalBytes);

    await page.screenshot({ path: path.join(artifacts, 'demo-laptop.png'), fullPage: true });
    expect(pageErrors(page)).toEqual([]);
    await page.close();

    // The same file, opened fresh on a phone-sized screen.
    const phone = await openPage('alice', { width: 390, height: 844 });
    await phone.click(`#file-list li[data-file-id="${file.id}"]`);
    await phone.waitForSelector('#blurup.loaded');
    await phone.screenshot({ path: path.join(artifacts, 'demo-phone-result.png') });
    await phone.evaluate(() => window.scrollTo(0, 0));
    await phone.screenshot({ path: path.join(artifacts, 'demo-phone-first-screen.png') });
    await phone.screenshot({ path: path.join(artifacts, 'demo-phone.png'), fullPage: true });
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBe(0);
    expect(pageErrors(phone)).toEqual([]);
    await phone.close();
  });

  it('shows a song with its cover, its waveform and a player of its renditions', async () => {
    const page = await openPage('listener', undefined, 'audio');
    await page.setInputFiles('#file-input', corpus('audio/ok/m4a-aac-cover.m4a'));
    // Renditions, waveform and cover are made in the background; the page polls until ready.
    const file = (await waitForReadyFile(page)) as FileJson & { cover?: { variants: string[] } };
    const names = file.variants.map((v) => String(v.n));
    expect(names).toEqual(expect.arrayContaining(['0', '1', '2', 'waveform']));
    expect(await page.isVisible('#music')).toBe(true);
    expect(await page.isEnabled('#play')).toBe(true);
    const audioSrc = await page.$eval('#audio', (el: HTMLAudioElement) => el.src);
    expect([file.variants.find((v) => v.n === 1)!.url, file.variants.find((v) => v.n === 2)!.url]).toContain(audioSrc);
    // The rendition really plays in this browser: its duration arrives.
    await expect.poll(() => page.$eval('#audio', (el: HTMLAudioElement) => el.duration), { timeout: 20_000 }).toBeGreaterThan(0);

    // The waveform is drawn from the peaks: some bars are taller than the flat line drawn without data.
    await expect
      .poll(() =>
        page.$eval('#waveform', (canvas: HTMLCanvasElement) => {
          const ctx = canvas.getContext('2d')!;
          const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
          let inked = 0;
          for (let i = 3; i < data.length; i += 4) if (data[i]! > 0) inked++;
          return inked / (canvas.width * canvas.height);
        }),
      )
      .toBeGreaterThan(0.1);

    // The cover: its sharp rung replaces the placeholder, and its ladder is listed.
    expect(file.cover?.variants.length).toBeGreaterThan(1);
    await expect
      .poll(() => page.$eval('#cover', (el: HTMLImageElement) => el.src))
      .toBe(await page.evaluate(() => document.querySelector<HTMLImageElement>('.ladder figure:nth-child(4) img')?.src ?? ''));
    expect(await page.locator('.ladder figure').count()).toBe(file.cover!.variants.length - 1);

    // Clicking the waveform seeks.
    const box = (await page.locator('#waveform').boundingBox())!;
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    await expect.poll(() => page.$eval('#audio', (el: HTMLAudioElement) => el.currentTime / el.duration)).toBeCloseTo(0.5, 1);

    await page.screenshot({ path: path.join(artifacts, 'demo-music-laptop.png'), fullPage: true });
    expect(pageErrors(page)).toEqual([]);
    await page.close();
  });

  it('shows the sentence the server sent when the quota is full or the type is wrong', async () => {
    const page = await openPage('quota');
    await page.selectOption('#quota', '1000000');
    await page.click('#quota-form button[type="submit"]');
    await expect.poll(() => page.textContent('#usage-quota')).toBe('of 1 MB');
    expect((await user('demo-quota')).quotaBytes).toBe(1_000_000);

    const big = corpus('images/photos/landscape-canon-adobergb-2mp.jpg');
    await page.setInputFiles('#file-input', big);
    await page.waitForSelector('#error:not([hidden])');
    // The very sentence Chipmunk answers the same request with.
    const minted = await fetch(`${t.url}/demo/api/upload-tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'demo-quota', purpose: 'image' }),
    });
    const { token } = (await minted.json()) as { token: string };
    const direct = await tusUpload(`${t.url}/uploads`, await readFile(big), { token, metadata: { filename: 'x.jpg', filetype: 'image/jpeg' } });
    expect(direct.ok).toBe(false);
    const expected = JSON.parse((direct as { body: string }).body) as { error: { code: string; message: string } };
    expect(expected.error.code).toBe('QUOTA_EXCEEDED');
    expect(await page.textContent('#error-message')).toBe(expected.error.message);
    expect(await page.textContent('#error-code')).toBe('QUOTA_EXCEEDED');
    await page.screenshot({ path: path.join(artifacts, 'demo-quota-error.png') });

    // A text file for an image purpose: refused at creation, the server's sentence shown.
    await page.selectOption('#quota', '100000000');
    await page.click('#quota-form button[type="submit"]');
    await page.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a picture\n') });
    await expect.poll(() => page.textContent('#error-code')).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect(await page.textContent('#error-message')).toBe('"image" uploads take image files; "text/plain" is not one.');

    expect(await user('demo-quota')).toMatchObject({ usedBytes: 0, reservedBytes: 0, fileCount: 0 });
    expect(pageErrors(page)).toEqual([]);
    await page.close();
  });

  it('pauses an upload half way and resumes it from where the server stopped', async () => {
    const page = await openPage('pauser');
    const photo = corpus('images/photos/landscape-canon-adobergb-2mp.jpg');
    const bytes = await readFile(photo);
    // A slow uplink, so there is time to press Pause while bytes are flowing.
    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 400 * 1024 });

    await page.setInputFiles('#file-input', photo);
    await expect.poll(() => page.getAttribute('#progress', 'data-bytes-sent').then(Number), { timeout: 30_000 }).toBeGreaterThan(200_000);
    await page.click('#pause');
    await page.waitForSelector('#upload[data-state="paused"]');
    expect(await page.textContent('#pause')).toBe('Resume');

    // The server kept a part of the file, and still holds the whole length (and the quota budget of a photo) in reserve.
    const uploadUrl = (await page.getAttribute('#upload', 'data-upload-url'))!;
    const offset = async () => Number((await fetch(uploadUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })).headers.get('upload-offset'));
    await expect.poll(offset).toBeGreaterThan(0);
    expect(await offset()).toBeLessThan(bytes.length);
    expect((await user('demo-pauser')).reservedBytes).toBe(bytes.length + creationBudget('image', bytes.length));

    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await page.click('#pause');
    const file = await waitForReadyFile(page);
    // The original, fetched back from its delivery URL, is byte-identical to what was sent, metadata stripped.
    const stored = await storedForm(bytes);
    expect(file.bytes).toBe(stored.length);
    const original = await fetch(file.variants.find((v) => v.n === 0)!.url);
    expect(original.status).toBe(200);
    expect(sha256(new Uint8Array(await original.arrayBuffer()))).toBe(sha256(stored));
    expect(await user('demo-pauser')).toMatchObject({ reservedBytes: 0, usedBytes: file.totalBytes });
    expect(pageErrors(page)).toEqual([]);
    await page.close();
  });

  it('deletes files and the usage bar falls', async () => {
    const page = await openPage('deleter');
    await page.setInputFiles('#file-input', corpus('images/photos/portrait-canal.jpg'));
    const first = await waitForReadyFile(page);
    await page.setInputFiles('#file-input', corpus('images/color/progressive-cat.jpg'));
    await page.waitForSelector(`#result[data-status="ready"]:not([data-file-id="${first.id}"])`, { timeout: 60_000 });
    const second = await fileJson((await page.getAttribute('#result', 'data-file-id'))!);
    const both = first.totalBytes + second.totalBytes;
    await expect.poll(() => page.getAttribute('#usage-text', 'data-used-bytes')).toBe(String(both));
    expect(await page.locator('#file-list li').count()).toBe(2);

    // From the list: the first file goes, its bytes come back.
    await page.click(`#file-list li[data-file-id="${first.id}"] .icon-btn`);
    await expect.poll(() => page.getAttribute('#usage-text', 'data-used-bytes')).toBe(String(second.totalBytes));
    expect(await page.locator('#file-list li').count()).toBe(1);

    // The Delete button on the shown file: down to nothing.
    await page.click('#delete');
    await expect.poll(() => page.getAttribute('#usage-text', 'data-used-bytes')).toBe('0');
    expect(await page.isHidden('#result')).toBe(true);
    expect(await page.isVisible('#file-list-empty')).toBe(true);
    expect(await user('demo-deleter')).toMatchObject({ usedBytes: 0, fileCount: 0 });
    expect((await t.api(`/v1/files/${second.id}`)).status).toBe(404);
    expect(pageErrors(page)).toEqual([]);
    await page.close();
  });
});
