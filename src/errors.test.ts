import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AppError, ERROR_STATUS, errors, formatBytes, renderError, restoreAppError, toAppError, toTusError } from './errors.js';

describe('the error table', () => {
  it('holds every code clients see today, each with the status they see', () => {
    // A contract: apps branch on these. Changing a status or dropping a code breaks them.
    const byStatus: Record<number, string[]> = {
      400: ['BAD_REQUEST', 'INVALID_INPUT', 'LENGTH_REQUIRED', 'TUS_PROTOCOL', 'UNKNOWN_PURPOSE'],
      401: ['SIGNATURE_REQUIRED', 'UNAUTHORIZED'],
      403: ['FORBIDDEN', 'INVALID_SIGNATURE', 'LINK_EXPIRED'],
      404: ['NOT_FOUND', 'UPLOAD_NOT_FOUND'],
      405: ['METHOD_NOT_ALLOWED'],
      409: ['OFFSET_MISMATCH', 'UPLOAD_CONFLICT'],
      412: ['PRECONDITION_FAILED', 'TUS_VERSION_UNSUPPORTED'],
      413: ['FILE_TOO_LARGE', 'QUOTA_EXCEEDED'],
      414: ['URI_TOO_LONG'],
      415: ['UNSUPPORTED_MEDIA_TYPE'],
      416: ['RANGE_NOT_SATISFIABLE'],
      422: ['UNPROCESSABLE_MEDIA'],
      429: ['TOO_MANY_UNFINISHED_UPLOADS'],
      431: ['HEADERS_TOO_LARGE'],
      460: ['CHECKSUM_MISMATCH'],
      500: ['INTERNAL', 'PROCESSING_FAILED'],
      501: ['NOT_IMPLEMENTED'],
      502: ['AUTH_UNAVAILABLE', 'UNAVAILABLE'],
      504: ['UPSTREAM_TIMEOUT'],
      507: ['INSUFFICIENT_STORAGE'],
    };
    const table: Record<number, string[]> = {};
    for (const [code, status] of Object.entries(ERROR_STATUS)) (table[status] ??= []).push(code);
    for (const codes of Object.values(table)) codes.sort();
    expect(table).toEqual(byStatus);
    expect(Object.isFrozen(ERROR_STATUS)).toBe(true);
  });

  it('is the table the README shows', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('### Errors'), readme.indexOf('`TUS_PROTOCOL` is'));
    const shown: Record<string, number> = {};
    for (const [, status, codes] of section.matchAll(/^\| (\d{3}) \| (.+) \|$/gm)) {
      for (const [, code] of codes!.matchAll(/`([A-Z_]+)`/g)) if (code !== 'GET' && code !== 'HEAD') shown[code!] = Number(status);
    }
    expect(shown).toEqual({ ...ERROR_STATUS });
  });

  it('gives every factory its status from the table, and covers every code but the relayed tus one', () => {
    const made = Object.values(errors).map((factory) => (factory as (m: string) => AppError)('x'));
    for (const e of made) expect(e.status).toBe(ERROR_STATUS[e.code]);
    expect(new Set(made.map((e) => e.code))).toEqual(new Set(Object.keys(ERROR_STATUS).filter((c) => c !== 'TUS_PROTOCOL')));
  });

  it('keeps the cause for the logs', () => {
    const cause = new Error('EIO');
    expect(errors.internal(cause).cause).toBe(cause);
    expect(errors.unprocessable('bad', cause).cause).toBe(cause);
  });
});

describe('renderError', () => {
  it('renders an AppError as its status and the JSON body', () => {
    const r = renderError(errors.quotaExceeded('Full.'));
    expect(r.status).toBe(413);
    expect(r.headers).toEqual({ 'Content-Type': 'application/json' });
    expect(JSON.parse(r.body)).toEqual({ error: { code: 'QUOTA_EXCEEDED', message: 'Full.' } });
  });

  it('renders anything else as INTERNAL without leaking its message', () => {
    const r = renderError(new Error('SQLITE_BUSY at /var/lib/secret/path'));
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toEqual({ error: { code: 'INTERNAL', message: 'Something went wrong on our side.' } });
    expect(r.error.cause).toBeInstanceOf(Error);
  });
});

describe('errors relayed by @tus/server', () => {
  it('keeps the protocol status of tus’s own refusals under TUS_PROTOCOL', () => {
    const e = toAppError({ status_code: 409, body: 'Upload-Offset conflict\n' });
    expect([e.code, e.status, e.message]).toEqual(['TUS_PROTOCOL', 409, 'Upload-Offset conflict']);
    expect(toAppError({ status_code: 400, body: '' }).message).toBe('Upload request refused.');
    const internal = toAppError({ status_code: 501, body: 'unsupported' });
    expect([internal.code, internal.status]).toEqual(['INTERNAL', 501]);
  });

  it('round-trips our own errors through the tus hook shape, code, status and message intact', () => {
    const thrown = toTusError(errors.forbidden('Not yours.'));
    expect(thrown).toEqual({ status_code: 403, body: '{"error":{"code":"FORBIDDEN","message":"Not yours."}}' });
    const back = toAppError(thrown);
    expect(back).toBeInstanceOf(AppError);
    expect([back.code, back.status, back.message]).toEqual(['FORBIDDEN', 403, 'Not yours.']);
  });
});

describe('restoreAppError', () => {
  it('rebuilds a known code with its table status, and keeps an unexpected status as it was', () => {
    expect(restoreAppError('UNPROCESSABLE_MEDIA', 422, 'Broken.')).toMatchObject({ code: 'UNPROCESSABLE_MEDIA', status: 422, message: 'Broken.' });
    expect(restoreAppError('NOT_A_CODE', 500, 'boom')).toMatchObject({ code: 'INTERNAL', status: 500 });
    expect(restoreAppError('NOT_A_CODE', 410, 'gone')).toMatchObject({ code: 'TUS_PROTOCOL', status: 410 });
  });
});

describe('formatBytes', () => {
  it('writes sizes in decimal units, one decimal below 100', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1000)).toBe('1 KB');
    expect(formatBytes(1500)).toBe('1.5 KB');
    expect(formatBytes(20_000_000)).toBe('20 MB');
    expect(formatBytes(123_456_789)).toBe('123 MB');
    expect(formatBytes(2.5e12)).toBe('2.5 TB');
    expect(formatBytes(5e15)).toBe('5000 TB');
    expect(formatBytes(-5)).toBe('0 B');
  });
});
