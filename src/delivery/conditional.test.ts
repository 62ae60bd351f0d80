import { describe, expect, it } from 'vitest';
import { ifRangeHolds, notModified, parseHttpDate, preconditionsHold, usableRange } from './conditional.js';

// What nginx's static module answers (test/conditional-paths.test.ts holds both paths side by side).

const etag = '"65f0a1b2-3e8"';
const mtime = 1_710_268_850;
const lastModified = new Date(mtime * 1000).toUTCString();
const size = 1000;

describe('parseHttpDate', () => {
  it('reads the three forms of RFC 9110, all as GMT', () => {
    expect(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT')).toBe(784111777);
    expect(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT')).toBe(784111777);
    expect(parseHttpDate('Sun Nov  6 08:49:37 1994')).toBe(784111777);
    expect(parseHttpDate(lastModified)).toBe(mtime);
  });

  it('reads two-digit years below 70 as 20xx, as nginx does', () => {
    expect(parseHttpDate('Thursday, 01-Jan-15 00:00:00 GMT')).toBe(Date.UTC(2015, 0, 1) / 1000);
  });

  it('refuses anything else: other zones, impossible dates, free text', () => {
    for (const bad of [
      'Sun, 06 Nov 1994 08:49:37 CET',
      'Sun, 31 Feb 1994 08:49:37 GMT',
      'Sun, 06 Nov 1994 24:00:00 GMT',
      'Sun, 06 Foo 1994 08:49:37 GMT',
      'yesterday',
      '784111777',
      '',
    ]) {
      expect(parseHttpDate(bad), bad).toBeUndefined();
    }
  });
});

describe('preconditionsHold (412 when false)', () => {
  it('holds for If-Match naming the ETag exactly, or *; a weak tag or another fails', () => {
    expect(preconditionsHold(etag, undefined, etag, mtime)).toBe(true);
    expect(preconditionsHold(`"x", ${etag}`, undefined, etag, mtime)).toBe(true);
    expect(preconditionsHold('*', undefined, etag, mtime)).toBe(true);
    expect(preconditionsHold(`W/${etag}`, undefined, etag, mtime)).toBe(false);
    expect(preconditionsHold('"other"', undefined, etag, mtime)).toBe(false);
  });

  it('holds for If-Unmodified-Since at or after the modification second; earlier or not a date fails', () => {
    expect(preconditionsHold(undefined, lastModified, etag, mtime)).toBe(true);
    expect(preconditionsHold(undefined, new Date((mtime + 60) * 1000).toUTCString(), etag, mtime)).toBe(true);
    expect(preconditionsHold(undefined, new Date((mtime - 1) * 1000).toUTCString(), etag, mtime)).toBe(false);
    expect(preconditionsHold(undefined, 'yesterday', etag, mtime)).toBe(false);
    expect(preconditionsHold(undefined, undefined, etag, mtime)).toBe(true);
  });
});

describe('notModified', () => {
  it('matches If-None-Match by strong or weak tag, in a list, or *', () => {
    expect(notModified(etag, undefined, etag, mtime)).toBe(true);
    expect(notModified(`W/${etag}`, undefined, etag, mtime)).toBe(true);
    expect(notModified(`"other", ${etag}`, undefined, etag, mtime)).toBe(true);
    expect(notModified('*', undefined, etag, mtime)).toBe(true);
    expect(notModified('"other"', undefined, etag, mtime)).toBe(false);
  });

  it('answers If-Modified-Since only when it names the modification second exactly (nginx: if_modified_since exact)', () => {
    expect(notModified(undefined, lastModified, etag, mtime)).toBe(true);
    expect(notModified(undefined, 'Tue Mar 12 18:40:50 2024', etag, mtime)).toBe(true);
    expect(notModified(undefined, new Date((mtime + 60) * 1000).toUTCString(), etag, mtime)).toBe(false);
    expect(notModified(undefined, new Date((mtime - 1) * 1000).toUTCString(), etag, mtime)).toBe(false);
  });

  it('needs every validator sent to say unchanged', () => {
    expect(notModified(etag, lastModified, etag, mtime)).toBe(true);
    expect(notModified('"other"', lastModified, etag, mtime)).toBe(false);
    expect(notModified(etag, new Date((mtime - 60) * 1000).toUTCString(), etag, mtime)).toBe(false);
  });

  it('ignores an If-Modified-Since that is not a date, and no conditions at all', () => {
    expect(notModified(undefined, 'yesterday-ish', etag, mtime)).toBe(false);
    expect(notModified(undefined, undefined, etag, mtime)).toBe(false);
  });
});

describe('ifRangeHolds', () => {
  it('takes the ETag itself (strong) or the Last-Modified second in any date form', () => {
    expect(ifRangeHolds(etag, etag, mtime)).toBe(true);
    expect(ifRangeHolds(`W/${etag}`, etag, mtime)).toBe(false);
    expect(ifRangeHolds('"stale"', etag, mtime)).toBe(false);
    expect(ifRangeHolds(lastModified, etag, mtime)).toBe(true);
    expect(ifRangeHolds('Tue Mar 12 18:40:50 2024', etag, mtime)).toBe(true);
    expect(ifRangeHolds(new Date((mtime + 10) * 1000).toUTCString(), etag, mtime)).toBe(false);
    expect(ifRangeHolds('soon', etag, mtime)).toBe(false);
  });
});

describe('usableRange', () => {
  const range = (header: string | undefined, ifRange?: string) => usableRange(header, ifRange, etag, mtime, size);

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

  it('clamps numbers past 2^64 like nginx: a huge end or suffix is the whole file, a huge start unsatisfiable', () => {
    expect(range('bytes=0-99999999999999999999')).toEqual([0, 999]);
    expect(range('bytes=-99999999999999999999')).toEqual([0, 999]);
    expect(range('bytes=99999999999999999999-')).toBe('unsatisfiable');
  });

  it('honours If-Range only when it names the current ETag or Last-Modified, and ignores it without Range', () => {
    expect(range('bytes=0-9', etag)).toEqual([0, 9]);
    expect(range('bytes=0-9', lastModified)).toEqual([0, 9]);
    expect(range('bytes=0-9', '"stale"')).toBeUndefined();
    expect(range('bytes=0-9', `W/${etag}`)).toBeUndefined();
    expect(range('bytes=0-9', new Date((mtime - 10) * 1000).toUTCString())).toBeUndefined();
    expect(range(undefined, etag)).toBeUndefined();
  });
});
