import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './helpers/backends.js';
import { corpus, storedForm } from './helpers/chipmunk.js';
import { tusUpload } from './helpers/tus.js';
import { creationBudget } from '../src/services/budget.js';

type Received = { event: string; delivery: string; signature: string; body: string; verified: boolean; json: any };

const webhookSecret = 'receiver-shared-secret-0123456789';

/** A local receiver that checks every signature the way an integrator would, and can be told to fail. */
function verify(signature: string, body: string): boolean {
  const parts = Object.fromEntries(signature.split(',').map((p) => p.split('=') as [string, string]));
  if (!parts.t || !parts.v1) return false;
  const expected = createHmac('sha256', webhookSecret).update(`${parts.t}.${body}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  const fresh = Math.abs(Date.now() / 1000 - Number(parts.t)) < 300;
  return fresh && given.length === expected.length && timingSafeEqual(given, expected);
}

let receiver: Server;
let receiverUrl: string;
const received: Received[] = [];
let failNext = 0;
let refuseAll = false;

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const signature = String(req.headers['chipmunk-signature'] ?? '');
      received.push({
        event: String(req.headers['chipmunk-event']),
        delivery: String(req.headers['chipmunk-delivery']),
        signature,
        body,
        verified: verify(signature, body),
        json: JSON.parse(body),
      });
      if (refuseAll || failNext > 0) {
        failNext = Math.max(0, failNext - 1);
        res.writeHead(503).end('try later');
      } else res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const address = receiver.address() as { port: number };
  receiverUrl = `http://127.0.0.1:${address.port}/hooks`;
});
afterAll(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

describe.each(backends)('webhooks: $name', (backend) => {
  it('delivers signed file.ready, file.deleted and quota.exceeded, retrying after a failure and across a restart', async () => {
    // The receiver is shared by both backends' runs: each starts with it empty and answering.
    received.length = 0;
    failNext = 0;
    refuseAll = false;
    const env = { CHIPMUNK_WEBHOOK_URL: receiverUrl, CHIPMUNK_WEBHOOK_SECRET: webhookSecret, CHIPMUNK_WEBHOOK_BACKOFF: '0.05' };
    let t = await backend.start(env);
    const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
    const token = await t.uploadToken('wes', 'image');

    // 1. Delivered at once, signature valid, no delivery token in the payload.
    const up = await tusUpload(`${t.url}/uploads`, photo, { token });
    if (!up.ok) throw up.error;
    const fileId = (up.body as { id: string }).id;
    await expect.poll(() => received.filter((r) => r.event === 'file.ready').length).toBe(1);
    const ready = received.find((r) => r.event === 'file.ready')!;
    expect(ready.verified).toBe(true);
    expect(ready.json).toMatchObject({
      type: 'file.ready',
      data: { id: fileId, userId: 'wes', purpose: 'image', status: 'ready', bytes: (await storedForm(photo)).length },
    });
    expect(ready.body).not.toContain((await t.chipmunk.inspect.file(fileId))!.deliveryToken);

    // 2. The receiver fails once: the same delivery comes again, signed again, and is marked delivered.
    failNext = 1;
    expect((await t.api(`/v1/files/${fileId}`, { method: 'DELETE' })).status).toBe(204);
    await expect.poll(() => received.filter((r) => r.event === 'file.deleted').length).toBe(2);
    const [first, second] = received.filter((r) => r.event === 'file.deleted');
    expect(first!.delivery).toBe(second!.delivery);
    expect(first!.json.id).toBe(second!.json.id);
    expect(second!.verified).toBe(true);
    await expect.poll(async () => (await t.chipmunk.inspect.webhooks()).find((w) => String(w.id) === second!.delivery)?.state).toBe('done');
    expect((await t.chipmunk.inspect.webhooks()).find((w) => String(w.id) === second!.delivery)?.attempts).toBe(2);

    // 3. The receiver is down while an event happens and the server stops: the next start delivers it.
    refuseAll = true;
    await t.api('/v1/users/wes', { method: 'PUT', json: { quotaBytes: 1000 } });
    expect(await tusUpload(`${t.url}/uploads`, photo, { token })).toMatchObject({ ok: false, status: 413 });
    await expect.poll(() => received.filter((r) => r.event === 'quota.exceeded').length).toBeGreaterThanOrEqual(1);
    await t.stop();
    const attemptsBefore = received.filter((r) => r.event === 'quota.exceeded').length;
    refuseAll = false;
    t = await backend.restart(t, env);
    await expect.poll(() => received.filter((r) => r.event === 'quota.exceeded').length).toBe(attemptsBefore + 1);
    const quota = received.filter((r) => r.event === 'quota.exceeded').at(-1)!;
    expect(quota.verified).toBe(true);
    // What was needed: the photo and the budget for its variants (README, "Quota budget").
    expect(quota.json.data).toMatchObject({ userId: 'wes', purpose: 'image', neededBytes: photo.length + creationBudget('image', photo.length) });
    await expect.poll(() => t.chipmunk.webhooks!.pending()).toBe(0);
    expect(received.every((r) => r.verified)).toBe(true);
    await t.close();
  });
});
