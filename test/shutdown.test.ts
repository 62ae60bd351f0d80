import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { corpus, storedForm } from './helpers/chipmunk.js';
import { backends } from './helpers/backends.js';
import { runCli, serverEnvironment, spawnServer } from './helpers/server-process.js';
import { createDistributedEnvironment } from './helpers/services.js';

// On both backends: embedded on a data directory of its own, distributed on a database and a bucket
// of its own (the upload in flight then streams into the bucket).
describe.each(backends)('$name: graceful shutdown', (backend) => {
  let dataDir: string;
  let env: Record<string, string>;
  let dropServices: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    const services = backend.name === 'distributed' ? await createDistributedEnvironment('shutdown') : undefined;
    dropServices = services?.drop;
    ({ dataDir, env } = await serverEnvironment('shutdown', { ...services?.env, CHIPMUNK_LOG_LEVEL: 'info', CHIPMUNK_SHUTDOWN_TIMEOUT: '20' }));
  }, 120_000);
  afterAll(async () => {
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    await dropServices?.();
  });

  it('on SIGTERM stops accepting, lets the upload in flight finish, closes the database and exits 0', async () => {
    const server = await spawnServer(env);
    const photo = await readFile(corpus('images/photos/portrait-canal.jpg'));
    const token = await new SignJWT({ purpose: 'image' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('zoe')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(env.CHIPMUNK_SECRET));
    const created = await fetch(`${server.url}/uploads`, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(photo.length), Authorization: `Bearer ${token}` },
    });
    expect(created.status).toBe(201);
    const location = created.headers.get('location')!;

    // One PATCH whose body dribbles in over a second and a half; SIGTERM arrives after its first bytes.
    const chunks = 6;
    const size = Math.ceil(photo.length / chunks);
    let sent = 0;
    let firstSent!: () => void;
    const started = new Promise<void>((resolve) => (firstSent = resolve));
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= chunks) return controller.close();
        if (sent > 0) await new Promise((r) => setTimeout(r, 250));
        controller.enqueue(photo.subarray(sent * size, (sent + 1) * size));
        sent++;
        if (sent === 1) firstSent();
      },
    });
    const patch = fetch(location, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' },
      body,
      duplex: 'half',
    } as RequestInit);
    await started;
    await new Promise((r) => setTimeout(r, 100));
    server.proc.kill('SIGTERM');

    // New connections are refused while the upload is still streaming.
    await expect
      .poll(
        async () =>
          fetch(`${server.url}/health`).then(
            () => 'answered',
            () => 'refused',
          ),
        { timeout: 5_000, interval: 50 },
      )
      .toBe('refused');
    expect(sent).toBeLessThan(chunks);

    const res = await patch;
    expect(res.status).toBe(200);
    const file = (await res.json()) as { id: string; bytes: number };
    expect(file.bytes).toBe((await storedForm(photo)).length);
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(server.output()).toContain('"msg":"chipmunk stopped"');
    // SQLite's write-ahead log is checkpointed into the database file as it closes.
    if (backend.name === 'embedded') expect(existsSync(path.join(dataDir, 'chipmunk.db-wal'))).toBe(false);
    expect(existsSync(path.join(dataDir, 'chipmunk.pid'))).toBe(false);

    const check = await runCli(['fsck'], env);
    expect(check.code).toBe(0);
    // The stored file is there after a restart.
    const again = await spawnServer(env);
    const described = await fetch(`${again.url}/v1/files/${file.id}`, { headers: { authorization: `Bearer ${env.CHIPMUNK_API_KEY}` } });
    expect(described.status).toBe(200);
    again.proc.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
  }, 120_000);
});
