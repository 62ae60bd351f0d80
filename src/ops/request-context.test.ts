import { describe, expect, it } from 'vitest';
import { loggablePath } from './request-context.js';

describe('loggablePath', () => {
  it('masks capability tokens (32+ characters) in logged paths and keeps the rest', () => {
    expect(loggablePath(`/f/${'a1'.repeat(16)}/3`)).toBe('/f/:token/3');
    expect(loggablePath(`/uploads/${'x'.repeat(24)}`)).toBe(`/uploads/${'x'.repeat(24)}`);
    expect(loggablePath(`/v1/files/${'b'.repeat(24)}/variants`)).toBe(`/v1/files/${'b'.repeat(24)}/variants`);
    expect(loggablePath(`/demo/${'Z_-9'.repeat(10)}`)).toBe('/demo/:token');
    expect(loggablePath('/health')).toBe('/health');
  });
});
