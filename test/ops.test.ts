import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { newFileId } from '../src/ids.js';
import { backends, uploadAreaIds, type Backend } from './helpers/backends.js';
import { corpus, type TestChipmunk } from './helpers/chipmunk.js';
import { fsckCommand } from '../src/ops/fsck-command.js';
import { tusUpload } from './helpers/tus.js';
import { rawUploadArea } from './helpers/crash-states.js';
import { creationBudget } from '../src/services/budget.js';

type Json = Record<string, any>;

/** `chipmunk fsck` (the command's own function, in this process) with what it prints. */
async function fsckRun(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  const quiet = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    return { code: await fsckCommand(args, env), stdout };
  } finally {
    write.mockRestore();
    quiet.mockRestore();
  }
}

const metricValue = (text: string, name: string, labels: Record<string, string> = {}) => {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text
    .split('\n')
    .find(
      (l) =>
        l.startsWith(`${name}`) &&
        !l.startsWith('#') &&
        (l.startsWith(`${name} `) || want.every((w) => l.includes(w))) &&
        l.slice(0, l.indexOf(' ')).replace(/\{.*\}/, '') === name,
    );
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : undefined;
};

describe.each(backends)('$name', (backend: Backend) => {
  const distributed = backend.name === 'distributed';
  const running: TestChipmunk[] = [];
  const start = async (...args: Parameters<Backend['start']>) => {
    const t = await backend.start(...args);
    running.push(t);
    return t;
  };
  /** A new Chipmunk on what a stopped one left; it takes the old one's place in the clean-up. */
  const restart = async (previous: TestChipmunk) => {
    const t = await backend.restart(previous);
    running.splice(running.indexOf(previous), 1, t);
    return t;
  };
  afterEach(async () => {
    while (running.length) await running.pop()!.close();
  });

  describe('health, readiness and metrics', () => {
    it('answers /health, and /ready with each check', async () => {
      const t = await start({}, { ffmpegPath: async () => '/usr/bin/ffmpeg' });
      expect(await (await fetch(`${t.url}/health`)).json()).toEqual({ status: 'ok' });
      const ready = await fetch(`${t.url}/ready`);
      expect(ready.status).toBe(200);
      const body = (await ready.json()) as Json;
      expect(body.ready).toBe(true);
      // Distributed, the bucket is checked too (a wrong name, wrong keys or a store down make it fail).
      expect(Object.keys(body.checks).sort()).toEqual(['dataDir', 'database', 'disk', 'ffmpeg', 'queue', ...(distributed ? ['storage'] : [])].sort());
      expect(body.checks.queue.detail).toEqual({ jobs: 0, webhooks: 0 });
      expect(body.checks.disk.detail.freeBytes).toBeGreaterThan(0);
    });

    it('is not ready without ffmpeg or with a full disk, and says which check failed', async () => {
      const t = await start({ CHIPMUNK_DISK_MARGIN: '5000' }, { ffmpegPath: async () => undefined, freeBytes: async () => 4000 });
      const res = await fetch(`${t.url}/ready`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as Json;
      expect(body.ready).toBe(false);
      expect(body.checks.ffmpeg.ok).toBe(false);
      expect(body.checks.disk).toEqual({ ok: false, detail: { freeBytes: 4000, marginBytes: 5000 } });
      expect(body.checks.database.ok).toBe(true);
    });

    it('counts uploads started, finished and refused by purpose and reason, bytes, quota refusals and reservations', async () => {
      const t = await start();
      const endpoint = `${t.url}/uploads`;
      const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const token = await t.uploadToken('mia', 'image');
      expect((await tusUpload(endpoint, photo, { token })).ok).toBe(true);
      const text = Buffer.from('plain text, not an image '.repeat(20));
      expect(await tusUpload(endpoint, text, { token })).toMatchObject({ ok: false, status: 422 });
      await t.api('/v1/users/noah', { method: 'PUT', json: { quotaBytes: 10 } });
      const small = await t.uploadToken('noah', 'avatar');
      expect(await tusUpload(endpoint, photo, { token: small })).toMatchObject({ ok: false, status: 413 });
      // An upload left half way holds a reservation.
      const open = await fetch(endpoint, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '777', Authorization: `Bearer ${token}` } });
      expect(open.status).toBe(201);

      const res = await fetch(`${t.url}/metrics`);
      expect(res.headers.get('content-type')).toContain('text/plain');
      const m = await res.text();
      expect(metricValue(m, 'chipmunk_uploads_started_total', { purpose: 'image' })).toBe(3);
      expect(metricValue(m, 'chipmunk_uploads_finished_total', { purpose: 'image' })).toBe(1);
      expect(metricValue(m, 'chipmunk_uploads_refused_total', { purpose: 'image', reason: 'UNPROCESSABLE_MEDIA' })).toBe(1);
      expect(metricValue(m, 'chipmunk_uploads_refused_total', { purpose: 'avatar', reason: 'QUOTA_EXCEEDED' })).toBe(1);
      expect(metricValue(m, 'chipmunk_quota_refusals_total', { purpose: 'avatar' })).toBe(1);
      expect(metricValue(m, 'chipmunk_upload_bytes_received_total')).toBe(photo.length + text.length);
      expect(metricValue(m, 'chipmunk_processing_duration_seconds_count', { kind: 'image', outcome: 'ok' })).toBe(1);
      expect(metricValue(m, 'chipmunk_processing_duration_seconds_count', { outcome: 'refused' })).toBe(1);
      expect(metricValue(m, 'chipmunk_reservations_outstanding')).toBe(1);
      expect(metricValue(m, 'chipmunk_reserved_bytes')).toBe(777 + creationBudget('image', 777));
      expect(metricValue(m, 'chipmunk_queue_depth', { queue: 'jobs' })).toBe(0);
      // The delivery routes report through this hook (wired by the delivery branch).
      t.chipmunk.metrics.deliveryAnswered(200);
      t.chipmunk.metrics.deliveryAnswered(404);
      t.chipmunk.metrics.deliveryAnswered(200);
      const after = await (await fetch(`${t.url}/metrics`)).text();
      expect(metricValue(after, 'chipmunk_delivery_responses_total', { status: '200' })).toBe(2);
      expect(metricValue(after, 'chipmunk_delivery_responses_total', { status: '404' })).toBe(1);
    });

    it("keeps each Chipmunk's metrics apart", async () => {
      const a = await start();
      const b = await start();
      const token = await a.uploadToken('solo', 'image');
      await fetch(`${a.url}/uploads`, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '10', Authorization: `Bearer ${token}` } });
      expect(metricValue(await (await fetch(`${a.url}/metrics`)).text(), 'chipmunk_uploads_started_total', { purpose: 'image' })).toBe(1);
      expect(metricValue(await (await fetch(`${b.url}/metrics`)).text(), 'chipmunk_uploads_started_total', { purpose: 'image' })).toBeUndefined();
    });
  });

  describe('disk space', () => {
    it('refuses with 507 a creation the free space minus the margin cannot hold, before any byte is written', async () => {
      let free = 1_000_000;
      const t = await start({ CHIPMUNK_DISK_MARGIN: '200000' }, { freeBytes: async () => free });
      const token = await t.uploadToken('pat', 'image');
      const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const data = Buffer.concat([photo, Buffer.alloc(900_000 - photo.length, 1)]);
      const result = await tusUpload(`${t.url}/uploads`, data, { token, uploadDataDuringCreation: true });
      expect(result).toMatchObject({ ok: false, status: 507 });
      if (result.ok) return;
      const body = JSON.parse(result.body!) as Json;
      expect(body.error.code).toBe('INSUFFICIENT_STORAGE');
      expect(body.error.message).toMatch(/low on disk space: it can take 800 KB more right now and this upload needs 900 KB/);
      expect(await uploadAreaIds(t)).toEqual([]);
      expect(await (await t.api('/v1/users/pat')).json()).toMatchObject({ reservedBytes: 0, usedBytes: 0 });
      // The same upload fits once space is freed.
      free = 10_000_000;
      const ok = await tusUpload(`${t.url}/uploads`, data, { token });
      expect(ok.ok).toBe(true);
    });
  });

  describe('chipmunk fsck', () => {
    it("calls a just-stored file's tus files a cleanup in flight beside the live server, and a repairable orphan otherwise", async () => {
      const t = await start();
      const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const r = await tusUpload(`${t.url}/uploads`, photo, { token: await t.uploadToken('oona', 'image') });
      if (!r.ok) throw r.error;
      const { id } = r.body as { id: string };
      // As they are between the final answer and their removal (the server removes them once it has answered).
      const raw = rawUploadArea(t);
      try {
        await raw.plantLeftover(id);
      } finally {
        raw.close();
      }
      const live = await t.chipmunk.inspect.fsck({ live: true });
      expect(live.problems).toEqual([]);
      expect(live.notices).toContainEqual(expect.objectContaining({ kind: 'upload-cleanup', subject: id }));
      const stopped = await t.chipmunk.inspect.fsck();
      expect(stopped.problems).toEqual([expect.objectContaining({ kind: 'orphan-upload', subject: id, repairable: true })]);
      // Long after its commit, even a live server's leftovers are an orphan.
      const later = await t.chipmunk.inspect.fsck({ live: true, now: Date.now() + 120_000 });
      expect(later.problems).toEqual([expect.objectContaining({ kind: 'orphan-upload', subject: id })]);
      await t.chipmunk.area.discard(id);
    });

    it('compares the database with the blobs as stored (the media folder, or a listing of the bucket), only reads beside a live server, and repairs what is safe', async () => {
      const t = await start();
      const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const token = await t.uploadToken('olga', 'image');
      const [damaged, cluttered] = await Promise.all(
        [0, 1].map(async (i) => {
          const r = await tusUpload(`${t.url}/uploads`, Buffer.concat([photo, Buffer.from([i])]), { token });
          if (!r.ok) throw r.error;
          return r.body as { id: string };
        }),
      );
      const env = { ...t.serviceEnv, CHIPMUNK_DATA_DIR: t.dataDir, CHIPMUNK_LOG_LEVEL: 'silent' };
      const clean = await fsckRun([], env);
      expect(clean.stdout).toContain('fsck: clean');
      expect(clean.code).toBe(0);

      // Damage behind the server's back: a recorded variant's blob gone, a folder and a blob no row records.
      const { storage } = t.chipmunk;
      const lost = (await t.chipmunk.inspect.variants(damaged!.id)).at(-1)!;
      await storage.removeName(damaged!.id, lost.path);
      const orphan = newFileId();
      await storage.write(orphan, '0.jpg', photo);
      await storage.write(cluttered!.id, 'stray.bin', Buffer.from('x'));
      const found = await fsckRun([], env);
      expect(found.code).toBe(1);
      expect(found.stdout).toContain(`PROBLEM missing-variant ${damaged!.id}/${lost.path}`);
      expect(found.stdout).toContain(`PROBLEM orphan-folder ${orphan}`);
      expect(found.stdout).toContain(`PROBLEM unexpected-file ${cluttered!.id}/stray.bin`);
      // Read-only beside the live server: nothing was touched, and --repair is refused.
      expect(await storage.listNames(orphan)).toEqual(['0.jpg']);
      expect((await fsckRun(['--repair'], env)).code).toBe(2);

      await t.stop();
      const repaired = await fsckRun(['--repair'], env);
      expect(repaired.stdout).toContain(`REPAIRED removed the orphan folder ${orphan}`);
      expect(repaired.stdout).toContain(`REPAIRED removed ${cluttered!.id}/stray.bin`);
      expect(repaired.code).toBe(1); // the lost variant needs a person
      const again = await restart(t);
      expect(await again.chipmunk.storage.listNames(orphan)).toEqual([]);
      expect(await again.chipmunk.storage.listNames(cluttered!.id)).not.toContain('stray.bin');
      expect((await again.chipmunk.inspect.fsck()).problems.map((p) => `${p.kind} ${p.subject}`)).toEqual([`missing-variant ${damaged!.id}/${lost.path}`]);
    });
  });

  describe('logs', () => {
    it('puts a request id on every request line (x-request-id in and out) and never a credential', async () => {
      const lines: string[] = [];
      const t = await start({ CHIPMUNK_LOG_LEVEL: 'debug' }, { logWrite: (l) => void lines.push(l) });
      const startupLines = lines.length;
      const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
      const token = await t.uploadToken('quinn', 'image');
      const given = await fetch(`${t.url}/health`, { headers: { 'x-request-id': 'trace-abc.123' } });
      expect(given.headers.get('x-request-id')).toBe('trace-abc.123');
      const made = await fetch(`${t.url}/health`);
      expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-z]{16}$/);
      const result = await tusUpload(`${t.url}/uploads`, photo, { token, headers: { Authorization: `Bearer ${token}`, 'x-request-id': 'upload-req-1' } });
      expect(result.ok).toBe(true);
      const file = (result as { body: Json }).body;
      const described = (await (await t.api(`/v1/files/${file.id}`)).json()) as Json;
      const deliveryToken = String(described.variants[0].url).split('/f/')[1]!.split('/')[0]!;
      // Delivery-like requests: a capability in the path, a signature in the query.
      const signature = 'c2lnbmF0dXJlLXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw';
      await fetch(`${t.url}/f/${deliveryToken}/0?exp=9999999999&sig=${signature}`);
      await fetch(`${t.url}/v1/users/quinn`, { headers: { authorization: 'Bearer wrong-key-that-is-long-enough' } });
      await fetch(`${t.url}/uploads`, {
        method: 'POST',
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '5', Authorization: 'Bearer not.a.valid-token' },
      });
      await t.api(`/v1/files/${file.id}`, { method: 'DELETE' });

      const all = lines.join('');
      if (process.env.SHOW_LOGS) console.log(all);
      for (const secret of [t.apiKey, t.secret, token, deliveryToken, signature, 'wrong-key-that-is-long-enough']) expect(all).not.toContain(secret);
      const requestLines = lines.slice(startupLines).map((l) => JSON.parse(l) as Json);
      expect(requestLines.length).toBeGreaterThan(8);
      for (const line of requestLines) expect(line.requestId, JSON.stringify(line)).toEqual(expect.any(String));
      // The tus hook's own lines carry the id of the request that ran them.
      const reserved = requestLines.find((l) => l.msg === 'upload reserved');
      const stored = requestLines.find((l) => l.msg === 'upload stored');
      expect(reserved?.requestId).toBe('upload-req-1');
      expect(stored?.requestId).toBe('upload-req-1');
      expect(requestLines.find((l) => l.msg === 'request' && l.path.startsWith('/f/'))?.path).toBe('/f/:token/0');
      expect(requestLines.filter((l) => l.msg === 'request' && l.path === '/health')).toHaveLength(2);
    });
  });
});
