import http from 'node:http';

export type RawResponse = { status: number; headers: http.IncomingHttpHeaders; body: string };

/**
 * A request whose body is written chunk by chunk (chunked transfer encoding unless a content-length
 * header is given). Settles with the server's answer even when the server answers early and closes
 * the connection while the body is still being sent, as it must for an oversized upload.
 */
export function rawRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: Iterable<Uint8Array> | AsyncIterable<Uint8Array> },
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'POST', headers: opts.headers });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    void (async () => {
      try {
        for await (const chunk of opts.body ?? []) {
          if (answered || req.destroyed) break;
          if (!req.write(chunk)) {
            await new Promise<void>((r) => {
              const done = () => {
                req.off('drain', done).off('close', done);
                r();
              };
              req.on('drain', done).on('close', done);
            });
          }
        }
        if (!req.destroyed) req.end();
      } catch {
        // the server closed the connection after answering; the answer is what counts
      }
    })();
  });
}
