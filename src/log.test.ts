import { describe, expect, it } from 'vitest';
import { createLogger, type LogFields } from './log.js';

// Redaction is the second line of defence: callers log ids, not tokens, but a credential that slips
// into a field must not reach the log.

function capture(level: 'debug' | 'info' = 'info') {
  const lines: LogFields[] = [];
  const logger = createLogger(level, { service: 'test' }, (line) => lines.push(JSON.parse(line) as LogFields));
  return { logger, lines };
}

describe('log redaction', () => {
  it('replaces fields whose name says they hold a credential, at any depth', () => {
    const { logger, lines } = capture();
    const credentials = ['secret', 'apiKey', 'api_key', 'authorization', 'uploadToken', 'password', 'sig', 'cookie'];
    logger.info('x', {
      ...Object.fromEntries(credentials.map((k) => [k, 'value'])),
      nested: { deliverySignature: 'd', ok: 1 },
      list: [{ token: 't' }],
      fileId: 'f1',
    });
    for (const k of credentials) expect(lines[0]![k]).toBe('[redacted]');
    expect(lines[0]).toMatchObject({ nested: { deliverySignature: '[redacted]', ok: 1 }, list: [{ token: '[redacted]' }], fileId: 'f1' });
  });

  it('masks values that look like credentials wherever they appear, message and stack of errors included', () => {
    const { logger, lines } = capture();
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyaXRhIn0.c2lnbmF0dXJlLXBhcnQ';
    const err = new Error(`refused ${jwt}`, { cause: new Error('header was Bearer abc.def') });
    logger.error('failed', { detail: `key ck_${'a'.repeat(20)} and ${jwt}`, err, signal: 'SIGTERM' });
    const line = lines[0]!;
    expect(line.detail).toBe('key [redacted] and [redacted]');
    expect(line.signal).toBe('SIGTERM');
    const logged = line.err as { name: string; message: string; stack: string; cause: { message: string } };
    expect(logged).toMatchObject({ name: 'Error', message: 'refused [redacted]', cause: { message: 'header was [redacted]' } });
    expect(JSON.stringify(line)).not.toContain(jwt);
  });

  it('keeps ordinary fields, the level and base fields, and writes nothing below its level', () => {
    const { logger, lines } = capture();
    logger.debug('hidden');
    logger.child({ requestId: 'r1' }).warn('seen', { status: 413, path: '/v1/files' });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', msg: 'seen', service: 'test', requestId: 'r1', status: 413, path: '/v1/files' });
    expect(logger.enabled('debug')).toBe(false);
    expect(logger.enabled('error')).toBe(true);
  });
});
