import { expect } from 'vitest';
import { renditionBudget } from '../../src/services/budget.js';

type Reader = {
  file(): Promise<{ status: string; durationMs?: number | null }>;
  reservedBytes(): Promise<number>;
};

/**
 * What a committed file still holds in reserve: nothing once it is ready; while a track's renditions
 * are being made, at most their budget from its probed duration (each rendition that lands is charged
 * and its share given back). The file is read on both sides of the user, so a track that turns ready
 * in between is checked as ready.
 */
export async function expectReservationAfterCommit(read: Reader): Promise<void> {
  const before = await read.file();
  const reserved = await read.reservedBytes();
  const after = await read.file();
  if (before.status === 'processing' && after.status === 'processing') {
    expect(reserved).toBeGreaterThan(0);
    expect(reserved).toBeLessThanOrEqual(renditionBudget(after.durationMs ?? undefined, Number.NaN));
    return;
  }
  expect(after.status).toBe('ready');
  expect(await read.reservedBytes()).toBe(0);
}
