// Small HTTP facts shared by every route and the tus wiring.

/** The origin clients reached us at: CHIPMUNK_PUBLIC_URL when set, else the (forwarded) request origin. */
export function requestBaseUrl(publicUrl: string | undefined, req: Request): string {
  if (publicUrl) return publicUrl;
  const url = new URL(req.url);
  const proto = req.headers.get('x-forwarded-proto')?.split(',')[0]?.trim() || url.protocol.replace(':', '');
  const host = req.headers.get('x-forwarded-host')?.split(',')[0]?.trim() || req.headers.get('host') || url.host;
  return `${proto}://${host}`;
}

/**
 * One request header read from Node's raw list (lower-case `name`; repeats joined by ", " as
 * req.headers would). The /f/ fast path reads its few headers this way: touching req.headers makes
 * Node build an object of every header, which costs more than answering a cached thumbnail.
 */
export function rawHeader(rawHeaders: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const key = rawHeaders[i]!;
    if (key.length === name.length && key.toLowerCase() === name) value = value === undefined ? rawHeaders[i + 1]! : `${value}, ${rawHeaders[i + 1]!}`;
  }
  return value;
}
