import { describe, expect, it } from 'vitest';
import { sanitizeFilename } from './uploads.js';

describe('sanitizeFilename', () => {
  it('keeps a readable name as it is, Unicode included', () => {
    expect(sanitizeFilename('Holiday photo (1).JPG')).toBe('Holiday photo (1).JPG');
    expect(sanitizeFilename('Grüße – 東京.png')).toBe('Grüße – 東京.png');
  });

  it('replaces path separators and control characters, so a name can never read as a path or break a header', () => {
    expect(sanitizeFilename('../../etc/passwd')).toBe('.._.._etc_passwd');
    expect(sanitizeFilename('C:\\Users\\me\\a.jpg')).toBe('C:_Users_me_a.jpg');
    expect(sanitizeFilename('a\r\nSet-Cookie: x.jpg')).toBe('a__Set-Cookie: x.jpg');
    expect(sanitizeFilename('nul\u0000\u001f\u007f.png')).toBe('nul___.png');
  });

  it('trims surrounding spaces and keeps at most 255 characters', () => {
    expect(sanitizeFilename('  spaced.png  ')).toBe('spaced.png');
    expect(sanitizeFilename('x'.repeat(300))).toHaveLength(255);
  });

  it('names an absent or empty name "upload"', () => {
    expect(sanitizeFilename(undefined)).toBe('upload');
    expect(sanitizeFilename(null)).toBe('upload');
    expect(sanitizeFilename('   ')).toBe('upload');
  });
});
