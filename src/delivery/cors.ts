// Cross-origin access for web apps served from another origin (app.example.com reading
// media.example.com). Delivery URLs are capabilities that carry no cookies, and uploads carry a
// bearer token, so answering Access-Control-Allow-Origin for them exposes nothing a page could
// not already fetch: the default allows every origin. One policy feeds Chipmunk's own /f/ path,
// its tus endpoint and the rendered nginx, so all three answer alike.

/** `*`, or the exact origins (scheme://host[:port]) allowed to read. */
export type CorsOrigins = '*' | readonly string[];

/** What a page may read of a delivery answer (besides the CORS-safelisted ones). */
export const DELIVERY_EXPOSED_HEADERS = ['Content-Length', 'Content-Range', 'Accept-Ranges', 'ETag'];
/** Request headers a page may send to /f/ (conditional and range requests from fetch()). */
export const DELIVERY_ALLOWED_HEADERS = ['Range', 'If-Range', 'If-None-Match', 'If-Modified-Since'];
/** What tus-js-client and Uppy read of a tus answer, plus Chipmunk's own. */
export const UPLOAD_EXPOSED_HEADERS = [
  'Location',
  'Upload-Offset',
  'Upload-Length',
  'Upload-Metadata',
  'Upload-Expires',
  'Upload-Defer-Length',
  'Tus-Resumable',
  'Tus-Version',
  'Tus-Extension',
  'Tus-Max-Size',
  'Tus-Checksum-Algorithm',
  'Content-Type',
  'Content-Length',
  'x-request-id',
];
const MAX_AGE_SECONDS = '86400';

const originPattern = /^https?:\/\/[a-z0-9.-]+(?::\d{1,5})?$|^https?:\/\/\[[0-9a-f:.]+\](?::\d{1,5})?$/i;

/** Parses CHIPMUNK_CORS_ORIGINS: `*`, or a comma-separated list of origins; throws a sentence on a bad one. */
export function parseCorsOrigins(value: string): CorsOrigins {
  const trimmed = value.trim();
  if (trimmed === '*') return '*';
  const origins = trimmed
    .split(',')
    .map((o) => o.trim().replace(/\/+$/, ''))
    .filter(Boolean);
  if (origins.length === 0) throw new Error('must be "*" or a comma-separated list of origins such as https://app.example.com');
  for (const origin of origins) {
    if (!originPattern.test(origin)) throw new Error(`"${origin}" is not an origin (scheme://host[:port], no path)`);
  }
  return Object.freeze(origins.map((o) => o.toLowerCase()));
}

export type Cors = ReturnType<typeof createCors>;

export function createCors(origins: CorsOrigins) {
  const any = origins === '*';
  const allowed = new Set(any ? [] : origins);

  /** The Allow-Origin (and Vary) headers for a request from `origin`. */
  function originHeaders(origin: string | undefined): Record<string, string> {
    if (any) return { 'Access-Control-Allow-Origin': '*' };
    // The answer depends on the Origin: caches must keep one per origin.
    if (origin && allowed.has(origin.toLowerCase())) return { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' };
    return { Vary: 'Origin' };
  }

  const deliveryExposed = { 'Access-Control-Expose-Headers': DELIVERY_EXPOSED_HEADERS.join(', ') };
  // The hot path: with `*` every delivery answer carries the same two headers, built once.
  const anyDelivery = Object.freeze({ 'Access-Control-Allow-Origin': '*', ...deliveryExposed });

  return {
    origins,

    /** Headers for every /f/ answer (bytes, 304, 416 and refusals alike, so pages can read the error). */
    delivery(origin: string | undefined): Readonly<Record<string, string>> {
      return any ? anyDelivery : { ...originHeaders(origin), ...deliveryExposed };
    },

    /** The answer to a preflight `OPTIONS /f/…`: 204 with these headers. */
    deliveryPreflight(origin: string | undefined): Record<string, string> {
      return {
        ...originHeaders(origin),
        'Access-Control-Allow-Methods': 'GET, HEAD',
        'Access-Control-Allow-Headers': DELIVERY_ALLOWED_HEADERS.join(', '),
        'Access-Control-Max-Age': MAX_AGE_SECONDS,
        ...deliveryExposed,
      };
    },

    /** Headers for every /uploads answer (the tus protocol layer sets them over @tus/server's). */
    upload(origin: string | undefined): Record<string, string> {
      return { ...originHeaders(origin), 'Access-Control-Expose-Headers': UPLOAD_EXPOSED_HEADERS.join(', ') };
    },

    /**
     * The same policy for the rendered nginx: `http` goes in the http block (a map from the request's
     * Origin when origins are listed), `headers` in every location that answers /f/ itself.
     */
    nginx(): { http: string; headers: string[]; preflight: string[] } {
      const expose = `add_header Access-Control-Expose-Headers "${DELIVERY_EXPOSED_HEADERS.join(', ')}" always;`;
      const allow = any
        ? ['add_header Access-Control-Allow-Origin * always;']
        : ['add_header Access-Control-Allow-Origin $chipmunk_cors_origin always;', 'add_header Vary Origin always;'];
      const http = any
        ? ''
        : // nginx matches map strings ignoring case, as Chipmunk does.
          `map $http_origin $chipmunk_cors_origin {\n    default "";\n${[...allowed].map((o) => `    "${o}" $http_origin;`).join('\n')}\n}\n`;
      const headers = [...allow, expose];
      const preflight = [
        ...headers,
        'add_header Access-Control-Allow-Methods "GET, HEAD" always;',
        `add_header Access-Control-Allow-Headers "${DELIVERY_ALLOWED_HEADERS.join(', ')}" always;`,
        `add_header Access-Control-Max-Age ${MAX_AGE_SECONDS} always;`,
      ];
      return { http, headers, preflight };
    },
  };
}
