import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, serverEnvironmentOn } from './helpers/backends.js';
import { corpus } from './helpers/chipmunk.js';
import { runCli, spawnServer, type ServerProcess } from './helpers/server-process.js';
import { whatIsLeft } from './helpers/stores.js';
import { tusUpload, type TusResult } from './helpers/tus.js';

// The hostile corpus through tus while normal uploads run, against the real server process.
// Which files are refused where (see ../shared/corpus/SOURCES.md):
//  - refused by the bytes' signature alone, on every build: empty, one byte, text, SVG, PNGs whose signature is damaged;
//  - refused only once a decoder checks them (the image branch: sharp; the audio branch: the parser):
//    headers that sniff right over broken, truncated or oversized content. Until a decoder is wired
//    they may be stored; the test finds out whether one is wired from a normal upload's answer;
//  - valid files under misleading names, which must be accepted.

const refusedBySignature = new Set([
  'images/hostile/one-byte.jpg',
  'images/hostile/empty.heic',
  'images/hostile/svg-with-script.svg',
  'images/hostile/pngsuite/xcrn0g04.png',
  'images/hostile/pngsuite/xlfn0g04.png',
  'images/hostile/pngsuite/xs1n0g01.png',
  'images/hostile/pngsuite/xs2n0g01.png',
  'images/hostile/pngsuite/xs4n0g01.png',
  'images/hostile/pngsuite/xs7n0g01.png',
  'audio/hostile/empty.mp3',
  'audio/hostile/text-content-with-mp3-extension.mp3',
]);
const refusedByImageDecoder = new Set([
  'images/hostile/bomb-16383x16383.png', // decodes, but over CHIPMUNK_MAX_PIXELS (50 Mpx)
  'images/hostile/bomb-16384x16384.png',
  'images/hostile/bomb-17000x17000.avif',
  'images/hostile/bomb-65536x65536-uint32.png',
  'images/hostile/bomb-gif-frame-65535.gif',
  'images/hostile/corrupt-header.jpg',
  'images/hostile/corrupt-huffman.jpg',
  'images/hostile/invalid-multiframe.gif',
  'images/hostile/truncated-photo.jpg',
  'images/hostile/truncated-progressive.jpg',
  'images/hostile/truncated.gif',
  'images/hostile/truncated.heic',
  'images/hostile/truncated.png',
  'images/hostile/pngsuite/xc1n0g08.png',
  'images/hostile/pngsuite/xc9n2c08.png',
  'images/hostile/pngsuite/xcsn0g01.png',
  'images/hostile/pngsuite/xd0n2c08.png',
  'images/hostile/pngsuite/xd3n2c08.png',
  'images/hostile/pngsuite/xd9n2c08.png',
  'images/hostile/pngsuite/xdtn0g01.png',
  'images/hostile/pngsuite/xhdn0g08.png',
]);
const refusedByAudioParser = new Set([
  'audio/hostile/aiff-cwe835-loop.aiff',
  'audio/hostile/flac-oom-header.flac',
  'audio/hostile/flac-short-picture-block.flac',
  'audio/hostile/flac-too-short-block-size.flac',
  'audio/hostile/truncated-64bit.mp4',
  'audio/hostile/too-short.mp3',
]);
// SOURCES.md: valid images (decode fine) under misleading names or with odd content.
const accepted = new Set([
  'images/hostile/looks-like-svg.webp',
  'images/hostile/png-content-with-jpg-extension.jpg',
  'images/hostile/jpeg-content-with-png-extension.png',
]);
// A valid 1x1 PNG carrying zTXt decompression-bomb chunks: a decoder may keep it (stripped) or refuse it.
const either = new Set(['images/hostile/bomb-png-ztxt.png']);

const baseFileKeys = new Set([
  'id',
  'userId',
  'purpose',
  'kind',
  'status',
  'visibility',
  'filename',
  'mimeType',
  'bytes',
  'totalBytes',
  'width',
  'height',
  'variants',
  'error',
  'createdAt',
  'updatedAt',
]);

async function listCorpus(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(corpus(dir), { withFileTypes: true })) {
    const rel = `${dir}/${entry.name}`;
    if (entry.isDirectory()) out.push(...(await listCorpus(rel)));
    else out.push(rel);
  }
  return out;
}

describe.each(backends)('hostile corpus ($name)', (backend) => {
  let env: Record<string, string>;
  let drop: (() => Promise<void>) | undefined;
  let server: ServerProcess;

  beforeAll(async () => {
    // The whole hostile corpus is sent at once by one user: above the default bound on unfinished
    // uploads (20), which would refuse some for that instead of for their content.
    ({ env, drop } = await serverEnvironmentOn(backend, 'hostile', { CHIPMUNK_MAX_UNFINISHED_UPLOADS: '500' }));
    server = await spawnServer(env);
  }, 120_000);
  afterAll(async () => {
    if (server?.proc.exitCode === null) server.proc.kill('SIGKILL');
    await drop?.();
  });

  it('refuses every hostile file with a 4xx tus-js-client reports, while normal uploads succeed and the server stays up', async () => {
    const hostile = [...(await listCorpus('images/hostile')), ...(await listCorpus('audio/hostile'))];
    const classified = [refusedBySignature, refusedByImageDecoder, refusedByAudioParser, accepted, either];
    // Every corpus file has a decision, and every decision names a corpus file.
    expect(hostile.filter((f) => !classified.some((s) => s.has(f)))).toEqual([]);
    expect(classified.flatMap((s) => [...s]).filter((f) => !hostile.includes(f))).toEqual([]);

    const key = new TextEncoder().encode(env.CHIPMUNK_SECRET);
    const token = (userId: string, purpose: string) =>
      new SignJWT({ purpose }).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setExpirationTime('1h').sign(key);
    // Mallory sends the hostile files alone; Alice's normal uploads run beside them. Two users, so what
    // one user's work does to the other's counters shows (a track's renditions once charged every user).
    const tokens = { image: await token('mallory', 'image'), audio: await token('mallory', 'audio') };
    const aliceTokens = { image: await token('alice', 'image'), audio: await token('alice', 'audio') };
    const endpoint = `${server.url}/uploads`;
    const pid = server.proc.pid;

    // Normal uploads (Alice's) keep running beside the hostile ones.
    const normals = [...(await listCorpus('images/photos')), ...(await listCorpus('audio/ok'))];
    let stopNormals = false;
    const normalResults: Array<{ file: string; result: TusResult }> = [];
    const normalLoop = (async () => {
      for (let i = 0; !stopNormals || i < normals.length; i++) {
        const file = normals[i % normals.length]!;
        const purpose = file.startsWith('audio/') ? 'audio' : 'image';
        const result = await tusUpload(endpoint, await readFile(corpus(file)), {
          token: aliceTokens[purpose],
          metadata: { filename: path.basename(file) },
          chunkSize: 256_000,
        });
        normalResults.push({ file, result });
      }
    })();

    const hostileResults = await Promise.all(
      hostile.map(async (file) => {
        const purpose = file.startsWith('audio/') ? 'audio' : 'image';
        // Retries on: a refusal must be final, never turned into a false success by a resume.
        const result = await tusUpload(endpoint, await readFile(corpus(file)), {
          token: tokens[purpose],
          metadata: { filename: path.basename(file) },
          retryDelays: [0, 50],
        });
        return { file, result };
      }),
    );
    stopNormals = true;
    await normalLoop;

    for (const { file, result } of normalResults) expect(result.ok, `${file}: ${!result.ok && result.body}`).toBe(true);
    const okBody = (f: (file: string) => boolean) =>
      normalResults.find((n) => f(n.file) && n.result.ok)?.result as { body: Record<string, unknown> } | undefined;
    const imageBody = okBody((f) => f.startsWith('images/'))!.body;
    const audioBody = okBody((f) => f.startsWith('audio/'))!.body;
    // A wired decoder shows in a normal answer: the image branch makes variants, the audio branch adds facts or processes in the background.
    const imageDecoder = (imageBody.variants as unknown[]).length > 1;
    const audioParser = audioBody.status === 'processing' || Object.keys(audioBody).some((k) => !baseFileKeys.has(k));
    console.log(
      `hostile corpus: image decoder ${imageDecoder ? 'wired' : 'not wired (sniffing only)'}, audio parser ${audioParser ? 'wired' : 'not wired (sniffing only)'}`,
    );

    const isRefusal = (r: TusResult) =>
      !r.ok && r.status !== undefined && r.status >= 400 && r.status < 500 && r.error instanceof Error && /response code: 4\d\d/.test(r.error.message);
    const summary: string[] = [];
    for (const { file, result } of hostileResults) {
      const mustRefuse = refusedBySignature.has(file) || (imageDecoder && refusedByImageDecoder.has(file)) || (audioParser && refusedByAudioParser.has(file));
      const mustAccept = accepted.has(file);
      summary.push(`${file}: ${result.ok ? 'accepted' : `refused ${result.status}`}`);
      if (mustRefuse)
        expect(
          isRefusal(result),
          `${file} should be refused with a 4xx: ${JSON.stringify(result.ok ? result.body : { status: result.status, body: result.body })}`,
        ).toBe(true);
      else if (mustAccept) expect(result.ok, `${file} is a valid image: ${!result.ok && result.body}`).toBe(true);
      // Decoder-dependent files on a build without that decoder, and the undecided one: stored, or refused cleanly; never a 5xx.
      else expect(result.ok || isRefusal(result), `${file}: ${!result.ok && `${result.status} ${result.body}`}`).toBe(true);
      if (!result.ok && result.body) expect(JSON.parse(result.body).error.code, file).toEqual(expect.any(String));
    }
    console.log(summary.join('\n'));

    // The same process answered throughout.
    expect(server.proc.exitCode).toBeNull();
    expect(server.proc.pid).toBe(pid);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);

    // Once Alice's tracks have their renditions, each user's counters are what that user's files say:
    // Mallory is charged exactly her accepted files and holds no reservation.
    const api = async (p: string) => (await fetch(`${server.url}${p}`, { headers: { authorization: `Bearer ${env.CHIPMUNK_API_KEY}` } })).json();
    const filesOf = async (userId: string) =>
      ((await api(`/v1/users/${userId}/files?limit=200`)) as { files: Array<{ id: string; status: string; totalBytes: number }> }).files;
    for (let settled = false; !settled;) {
      settled = (await filesOf('alice')).every((f) => f.status !== 'processing');
      if (!settled) await new Promise((r) => setTimeout(r, 100));
    }
    const malloryFiles = await filesOf('mallory');
    expect(malloryFiles.length).toBe(hostileResults.filter((h) => h.result.ok).length);
    const kept: string[] = [];
    for (const userId of ['mallory', 'alice']) {
      const counters = (await api(`/v1/users/${userId}`)) as { usedBytes: number; reservedBytes: number };
      const files = await filesOf(userId);
      kept.push(...files.map((f) => f.id));
      const total = files.reduce((s, f) => s + f.totalBytes, 0);
      expect(counters, userId).toMatchObject({ usedBytes: total, reservedBytes: 0 });
    }
    server.proc.kill('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    const check = await runCli(['fsck'], env);
    expect(check.stdout).toContain('fsck: clean');
    expect(check.code).toBe(0);

    // Nothing of a refused file is left where the server keeps bytes (the data directory or the
    // bucket): exactly the kept files have a folder, and no upload, received copy, scratch space or
    // reservation remains.
    expect(await whatIsLeft(env)).toEqual({ folders: kept.sort(), uploads: [], received: [], workspaces: [], reservations: { count: 0, bytes: 0 } });
  }, 240_000);
});
