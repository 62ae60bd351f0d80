// Small HTTP facts shared by every route and the tus wiring.

/** The origin clients reached us at: CHIPMUNK_PUBLIC_URL when set, else the (forwarded) request origin. */
export function requestBaseUrl(publicUrl: string | undefined, req: Request): string {
  if (publicUrl) return publicUrl;
  const url = new URL(req.url);
  const proto = req.headers.get('x-forwarded-proto')?.split(',')[0]?.trim() || url.protocol.replace(':', '');
  const host = req.headers.get('x-forwarded-host')?.split(',')[0]?.trim() || req.headers.get('host') || url.host;
  return `${proto}://${host}`;
}
