import { describe, expect, it } from 'vitest';
import { notModified, usableRange } from './conditional.js';

const etag = '"65f0a1b2-3e8"';
const mtime = 1_710_268_850;
const lastModified = new Date(mtime * 1000).toUTCString();
const size = 1000;

describe('notModified', () => {
  it('matches If-None-Match by strong or weak tag, in a list, or *', () => {
    expect(notModified(etag, undefined, etag, mtime)).toBe(true);
    expect(notModified(`W/${etag}`, undefined, etag, mtime)).toBe(true);
    expect(notModified(`"other", ${etag}`, undefined, etag, mtime)).toBe(true);
    expect(notModified('*', undefined, etag, mtime)).toBe(true);
    expect(notModified('"other"', undefined, etag, mtime)).toBe(false);
  });

  it('lets If-None-Match win over If-Modified-Since', () => {
    expect(notModified('"other"', lastModified, etag, mtime)).toBe(false);
  });

  it('answers If-Modified-Since at or after the modification second, not before', () => {
    expect(notModified(undefined, lastModified, etag, mtime)).toBe(true);
    expect(notModified(undefined, new Date((mtime + 60) * 1000).toUTCString(), etag, mtime)).toBe(true);
    expect(notModified(undefined, new Date((mtime - 1) * 1000).toUTCString(), etag, mtime)).toBe(false);
  });

  it('ignores an If-Modified-Since that is not a date, and no conditions at all', () => {
    expect(notModified(undefined, 'yesterday-ish', etag, mtime)).toBe(false);
    expect(notModified(undefined, undefined, etag, mtime)).toBe(false);
  });
});

describe('usableRange', () => {
  const range = (header: string | undefined, ifRange?: string) => usableRange(header, ifRange, etag, lastModified, size);

  it('reads start-end, open-ended and suffix ranges, clamped to the size', () => {
    expect(range('bytes=0-99')).toEqual([0, 99]);
    expect(range('bytes=900-')).toEqual([900, 999]);
    expect(range('bytes=-100')).toEqual([900, 999]);
    expect(range('bytes=-5000')).toEqual([0, 999]);
    expect(range('bytes=500-5000')).toEqual([500, 999]);
    expect(range(' bytes=1-1 ')).toEqual([1, 1]);
  });

  it('refuses ranges that start past the end, and the empty suffix, as unsatisfiable', () => {
    expect(range('bytes=1000-')).toBe('unsatisfiable');
    expect(range('bytes=1000-1001')).toBe('unsatisfiable');
    expect(range('bytes=-0')).toBe('unsatisfiable');
  });

  it('sends the whole file for no range, several ranges, reversed or malformed ones (as nginx with max_ranges 1)', () => {
    expect(range(undefined)).toBeUndefined();
    expect(range('bytes=0-1,5-6')).toBeUndefined();
    expect(range('bytes=50-10')).toBeUndefined();
    expect(range('bytes=-')).toBeUndefined();
    expect(range('items=0-10')).toBeUndefined();
  });

  it('honours If-Range only when it names the current ETag or Last-Modified', () => {
    expect(range('bytes=0-9', etag)).toEqual([0, 9]);
    expect(range('bytes=0-9', lastModified)).toEqual([0, 9]);
    expect(range('bytes=0-9', '"stale"')).toBeUndefined();
    expect(range('bytes=0-9', new Date((mtime - 10) * 1000).toUTCString())).toBeUndefined();
  });
});
