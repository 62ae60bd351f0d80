import { describe, expect, it } from 'vitest';
import { base64Length, decodedLength, parseBase64Payload } from './ingest.js';

describe('base64 payloads', () => {
  it('takes plain base64, standard or URL-safe, and strips MIME line wrapping', () => {
    expect(parseBase64Payload('aGVsbG8=')).toEqual({ base64: 'aGVsbG8=', mimeType: null });
    expect(parseBase64Payload('ab-_\r\n cd')).toEqual({ base64: 'ab-_cd', mimeType: null });
  });

  it('reads a data: URI’s type, lower-cased, and needs its ;base64 flag', () => {
    expect(parseBase64Payload('data:Image/PNG;base64,iVBORw==')).toEqual({ base64: 'iVBORw==', mimeType: 'image/png' });
    expect(parseBase64Payload('data:image/svg+xml;charset=utf-8;base64,PHN2Zz4=')).toEqual({ base64: 'PHN2Zz4=', mimeType: 'image/svg+xml' });
    expect(parseBase64Payload('data:;base64,AAAA')).toEqual({ base64: 'AAAA', mimeType: null });
    expect(() => parseBase64Payload('data:image/png,rawbytes')).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', status: 400 }));
    expect(() => parseBase64Payload('data:image/png;base64')).toThrow(/must be base64/);
  });

  it('knows the decoded size from the text alone, padded or not, and agrees with Buffer', () => {
    for (const bytes of [0, 1, 2, 3, 4, 5, 100, 1001]) {
      const data = Buffer.alloc(bytes, 7);
      const padded = data.toString('base64');
      expect(decodedLength(padded)).toBe(bytes);
      expect(decodedLength(padded.replace(/=+$/, ''))).toBe(bytes);
      expect(decodedLength(data.toString('base64url'))).toBe(bytes);
      expect(base64Length(bytes)).toBe(padded.length);
    }
  });

  it('refuses characters outside the alphabet and impossible lengths', () => {
    expect(() => decodedLength('ab$d')).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', message: 'The "data" field is not valid base64.' }));
    expect(() => decodedLength('ab=c')).toThrow(/not valid base64/);
    expect(() => decodedLength('abcde')).toThrow(/wrong length/);
    expect(() => decodedLength('abc==')).toThrow(/wrong length/);
    expect(() => decodedLength('a===')).toThrow(/not valid base64/);
  });
});
