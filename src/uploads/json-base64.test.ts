import { describe, expect, it } from 'vitest';
import { JsonBase64Reader } from './json-base64.js';

// The streaming JSON/base64 reader against JSON.parse + Buffer.from, whatever the chunking.

function read(body: string, chunkSize: number) {
  let fields: Record<string, string> | undefined;
  let mime: string | null | undefined;
  const reader = new JsonBase64Reader({
    onDataStart: (f, m) => {
      fields = f;
      mime = m;
    },
  });
  const out: Buffer[] = [];
  const bytes = Buffer.from(body, 'utf8');
  for (let i = 0; i < bytes.length; i += chunkSize) out.push(...reader.push(bytes.subarray(i, i + chunkSize)));
  out.push(...reader.end());
  return { fields, mime, data: Buffer.concat(out) };
}

const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 37) % 256));

describe('JsonBase64Reader', () => {
  for (const chunk of [1, 3, 7, 64, 100_000]) {
    it(`decodes what JSON.parse + base64 would, in chunks of ${chunk}`, () => {
      const b64 = payload.toString('base64');
      const wrapped = b64.replace(/(.{76})/g, '$1\n');
      const cases = [
        { body: JSON.stringify({ userId: 'ünï', purpose: 'image', filename: 'a "b".jpg', data: b64 }), mime: null },
        { body: JSON.stringify({ data: `data:image/jpeg;base64,${b64}`, extra: 5 }), mime: 'image/jpeg' },
        { body: JSON.stringify({ filename: 'x', data: wrapped }), mime: null },
        { body: `{ "userId" : "a\\u00e9\\/b", "data" : "${b64.replace(/\//g, '\\/')}" , "n": null }`, mime: null },
        { body: JSON.stringify({ data: payload.toString('base64url') }), mime: null },
      ];
      for (const c of cases) {
        const got = read(c.body, chunk);
        expect(got.data.equals(payload)).toBe(true);
        expect(got.mime).toBe(c.mime);
        const parsed = JSON.parse(c.body) as Record<string, unknown>;
        for (const [k, v] of Object.entries(got.fields ?? {})) expect(v).toBe(parsed[k]);
      }
    });
  }

  it('refuses what is not one JSON object with valid base64 data', () => {
    for (const body of [
      '[1]',
      '{"data":"AAAA"',
      '{"data":"AAAA"} x',
      '{"data":"AA!A"}',
      '{"data":"A"}',
      '{"data":"AA=A"}',
      '{"data":"data:text/plain,hello"}',
      '{"userId":{"a":1},"data":"AAAA"}',
      '{"purpose":5,"data":"AAAA"}',
      '{"data":"AAAA","data":"AAAA"}',
      '{"filename":"x"}',
    ]) {
      expect(() => read(body, 5), body).toThrow(expect.objectContaining({ status: 400 }));
    }
  });
});
