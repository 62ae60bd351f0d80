import { describe, expect, it } from 'vitest';
import type { Delivery, DeliveryResolver } from '../delivery/resolve.js';
import { deliveryErrors } from '../delivery/resolve.js';
import { authAnswer } from './internal-auth.js';

const now = 1_800_000_000_000;
const rel = (id: string, name: string) => `ab/cd/${id}/${name}`;
const resolved =
  (expiresAt: number | undefined): DeliveryResolver =>
  () =>
    ({
      target: { fileId: 'abcd', path: '3.webp' } as Delivery['target'],
      contentType: 'image/webp',
      cacheControl: 'private, max-age=2, immutable',
      contentDisposition: undefined,
      expiresAt,
    }) as Delivery;

describe('nginx auth answers', () => {
  it('allow with the path and headers nginx serves with', async () => {
    const a = await authAnswer(resolved(undefined), rel, '/f/x/3', 5, now);
    expect(a.status).toBe(200);
    expect(a.headers).toMatchObject({ 'X-Chipmunk-Path': 'ab/cd/abcd/3.webp', 'X-Chipmunk-Content-Type': 'image/webp', 'X-Accel-Expires': '5' });
  });

  it('are never cached past the link expiry', async () => {
    expect((await authAnswer(resolved(now / 1000 + 2), rel, '/f/x/3', 5, now)).headers['X-Accel-Expires']).toBe('2');
    expect((await authAnswer(resolved(now / 1000 + 3600), rel, '/f/x/3', 5, now)).headers['X-Accel-Expires']).toBe('5');
    expect((await authAnswer(resolved(now / 1000 + 0.5), rel, '/f/x/3', 5, now)).headers['X-Accel-Expires']).toBe('0');
  });

  it('refuse with the real status, mirrored in headers nginx maps back', async () => {
    const refuse = () => {
      throw deliveryErrors.notFound();
    };
    const a = await authAnswer(refuse, rel, '/f/x/3', 5, now);
    // Sent as 403 (auth_request logs other statuses as errors); nginx restores the 404.
    expect(a.status).toBe(403);
    expect(a.headers['X-Chipmunk-Status']).toBe('404');
    expect(JSON.parse(a.headers['X-Chipmunk-Error']!)).toEqual(JSON.parse(a.body));
    expect((await authAnswer(resolved(undefined), rel, undefined, 5, now)).headers['X-Chipmunk-Status']).toBe('400');
  });
});
