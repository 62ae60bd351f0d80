import { errors, renderError, type AppError } from '../errors.js';

// Renders the nginx config that stands in front of one Chipmunk or several identical nodes: /f/ is
// authorised by Chipmunk's internal /internal/auth (auth_request, answers cached briefly) and served
// from the media folder with sendfile; /uploads streams to Chipmunk for tus; everything else is proxied.
// With several nodes nginx balances across them (no stickiness: uploads, locks and the store are
// shared) and fails over only where no request can be replayed after it may have had effects.
// The output runs as `nginx -p <prefix> -c <file>`: pid, logs, temp files and the auth cache live
// under the prefix, and there is no daemon directive (containers pass -g 'daemon off;').

import { createCors, type CorsOrigins } from './cors.js';

export type NginxConfigOptions = {
  /** `host:port` or `port`, as nginx's listen takes it. */
  listen: string;
  /** Each node's public Chipmunk, e.g. http://127.0.0.1:8080 (one for a single Chipmunk). */
  upstreams: string[];
  /** The nodes' internal ports, serving /internal/auth, e.g. http://127.0.0.1:8081. */
  authUpstreams: string[];
  /** Absolute path of the media folder (CHIPMUNK_DATA_DIR/media), readable by nginx's workers. */
  mediaDir: string;
  /** Seconds an auth answer may be reused; 0 turns the cache off. Chipmunk never lets it outlive a link. */
  authCacheSeconds: number;
  /** Largest request body /uploads takes: the biggest purpose limit, since a tus PATCH may carry a whole file. */
  maxUploadBytes: number;
  /** Worker user, when the master runs as root and the default (nobody) cannot read the media. */
  user?: string;
  workerProcesses?: number | 'auto';
  /** Origins whose pages may read /f/ (CHIPMUNK_CORS_ORIGINS); `*` when absent. */
  corsOrigins?: CorsOrigins;
  /**
   * With the blobs in a bucket: the S3 endpoint's origin (as presigned URLs name it). A variant not
   * in the media folder is then fetched from there with the presigned GET the auth answer carries.
   */
  objectOrigin?: string;
  /** Extra directives inside the server block (the benchmark adds a plain static location). */
  extraServerConfig?: string;
};

const hostPort = (url: string, what: string): string => {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${what} must be a URL such as http://127.0.0.1:8080, not "${url}".`);
  }
  if (parsed.protocol !== 'http:') throw new Error(`${what} must be an http:// URL (nginx talks plain HTTP to Chipmunk).`);
  if (parsed.pathname !== '/' || parsed.search) throw new Error(`${what} must have no path: "${url}".`);
  return parsed.port ? parsed.host : `${parsed.hostname}:80`;
};

/** nginx's own answer with one of Chipmunk's errors, rendered by the one error renderer. */
const returnError = (err: AppError): string => {
  const { status, body } = renderError(err);
  // Inside nginx's single quotes a backslash, a quote or a $ would be interpreted, not sent.
  if (/['\\$]/.test(body)) throw new Error(`The error body ${body} cannot go into an nginx return.`);
  return `return ${status} '${body}';`;
};

/** The same, with the message taken from an nginx variable (a map whose values are sentences without quotes). */
const returnErrorSaying = (err: AppError, variable: string): string => {
  const { status, body } = renderError(err);
  const message = JSON.stringify(err.message);
  if (!/^\$[a-z_]+$/.test(variable) || body.split(message).length !== 2) throw new Error(`Cannot put ${variable} into the error body ${body}.`);
  return `return ${status} '${body.replace(message, `"${variable}"`)}';`;
};

const safeValue = (value: string, what: string): string => {
  if (!/^[^\s;{}'"\\$#]+$/.test(value)) throw new Error(`${what} "${value}" cannot go into an nginx config (spaces, quotes, ; { } $ # are not allowed).`);
  return value;
};

export function renderNginxConfig(o: NginxConfigOptions): string {
  const listen = safeValue(o.listen, '--listen');
  const app = servers(o.upstreams, '--upstream');
  const auth = servers(o.authUpstreams, 'the auth upstream');
  const media = safeValue(o.mediaDir.replace(/\/+$/, ''), 'the media directory');
  const cache = o.authCacheSeconds > 0;
  const bodyLimit = Math.max(1, Math.ceil(o.maxUploadBytes / 1_000_000) + 1);
  // POST /v1/files takes the same files as multipart, or base64 in JSON (a third larger).
  const filesBodyLimit = Math.max(1, Math.ceil((o.maxUploadBytes * 4) / 3 / 1_000_000) + 1);
  // Both app locations pass requests the same way: keepalive upstream, the client's host and scheme.
  const proxyToApp = [
    'proxy_pass http://chipmunk_app;',
    'proxy_http_version 1.1;',
    'proxy_set_header Connection "";',
    'proxy_set_header Host $http_host;',
    'proxy_set_header X-Forwarded-Host $http_host;',
    'proxy_set_header X-Forwarded-Proto $scheme;',
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
  ]
    .map((line) => `            ${line}`)
    .join('\n');
  // Methods nginx would replay on another node go to @chipmunk_once (see FAILOVER).
  const sendOnce = ['if ($chipmunk_send_once) {', '    return 418;', '}'].map((line) => `            ${line}\n`).join('');
  // The same CORS answers as Chipmunk's own /f/ path, on bytes and refusals alike (add_header is
  // not inherited by a location that has its own, hence the lines in each).
  const cors = createCors(o.corsOrigins ?? '*').nginx();
  const corsLines = (n: number) => cors.headers.map((line) => `${' '.repeat(n)}${line}\n`).join('');
  const extra = o.extraServerConfig ? `\n${indent(o.extraServerConfig.trim(), 8)}\n` : '';
  const objects = o.objectOrigin ? objectUpstream(o.objectOrigin) : undefined;

  return `# Chipmunk's nginx, rendered by \`chipmunk nginx-config\`. Run it as
#   nginx -p <prefix> -c <this file> [-g 'daemon off;']
# pid, logs, temp files and the auth cache live under <prefix>.
${o.user ? `user ${safeValue(o.user, '--user')};\n` : ''}worker_processes ${o.workerProcesses ?? 'auto'};
pid nginx.pid;
error_log error.log warn;

events {
    worker_connections 4096;
}

http {
${indent(LOG_FORMAT, 4)}
    access_log access.log chipmunk buffer=64k flush=1s;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    server_tokens off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 10000;
    # Descriptors of media and auth-cache files. Safe to reuse briefly: a variant is never rewritten
    # in place (new bytes arrive by rename), and access is decided by the auth answer, not the file.
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 5s;
    types { }
    default_type application/octet-stream;
${cors.http ? `\n${indent(cors.http.trim(), 4)}\n` : ''}${
    cache
      ? `
    # Auth answers, keyed by the full request URI (the signature is in it). Chipmunk sends
    # X-Accel-Expires = min(${o.authCacheSeconds}s, seconds left on the link), so no answer outlives its link.
    proxy_cache_path auth_cache levels=1:2 keys_zone=chipmunk_auth:10m max_size=64m inactive=60s use_temp_path=off;
`
      : ''
  }
    # nginx's own 413 names the limit of the address that refused the body.
    map $uri $chipmunk_too_large {
        default "Request bodies here carry at most 1 MB; send files with tus (/uploads) or POST /v1/files.";
        ~^/uploads "Upload requests carry at most ${bodyLimit} MB (the largest purpose's limit).";
        /v1/files "POST /v1/files bodies carry at most ${filesBodyLimit} MB (the largest purpose's limit, base64 included); send larger files with tus.";
    }
${indent(RANGE_MAP, 4)}

    # The nodes. least_conn: a node busy with long uploads gets fewer new requests; the zone shares
    # connection counts and failures (a node refusing connections is skipped for 10 s) across workers.
    upstream chipmunk_app {
        zone chipmunk_app_nodes 64k;
        least_conn;
${app}        keepalive 32;
    }

    upstream chipmunk_auth {
        zone chipmunk_auth_nodes 64k;
        least_conn;
${auth}        keepalive 64;
    }

${indent(FAILOVER, 4)}
${
  objects
    ? `
    # The S3 endpoint holding the media blobs (CHIPMUNK_S3_*): reached only through @chipmunk_object.
    upstream chipmunk_objects {
        server ${objects.server};
        keepalive 32;
    }

    # nginx does not evaluate conditional requests on proxied answers: those (every precondition
    # header, If-Match and If-Unmodified-Since included), and HEAD (the presigned URL is for GET),
    # are answered by Chipmunk from the same object.
    map "$request_method:$http_if_none_match$http_if_modified_since$http_if_range$http_if_match$http_if_unmodified_since" $chipmunk_object_to_app {
        "GET:" 0;
        default 1;
    }
`
    : ''
}
    server {
        listen ${listen};

        # nginx itself refuses NULs and encoded slashes that climb out of the root (400);
        # under /f/ that is just a file that does not exist.
        error_page 400 = /_chipmunk/bad-request;
        # A request already sent on by an error_page (@chipmunk_once, @chipmunk_ranged) still gets
        # these JSON answers when its node fails.
        recursive_error_pages on;
${EARLY_ERRORS.map(([status]) => `        error_page ${status} = /_chipmunk/${status};\n`).join('')}        error_page 502 503 = @chipmunk_unavailable;
        error_page 504 = @chipmunk_timeout;
        error_page 413 = @chipmunk_too_large;
        error_page 418 = @chipmunk_once;
        location = /_chipmunk/bad-request {
            internal;
            default_type application/json;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}            if ($request ~ "^[A-Z]+ /f/") {
                ${returnError(errors.notFound('File'))}
            }
            ${returnError(errors.badRequest('Malformed request.'))}
        }

        # Variants: Chipmunk decides, nginx sends the bytes.
        location /f/ {
            # Preflights are answered before the access check: they carry no token to check.
            if ($request_method = OPTIONS) {
${cors.preflight.map((line) => `                ${line}\n`).join('')}                return 204;
            }
            # Ranges nginx would read otherwise than RFC 9110 are answered by Chipmunk itself.
            error_page 418 = @chipmunk_ranged;
            if ($chipmunk_range_to_app) {
                return 418;
            }
            auth_request /_chipmunk/auth;
            auth_request_set $chipmunk_status $upstream_http_x_chipmunk_status;
            auth_request_set $chipmunk_error $upstream_http_x_chipmunk_error;
            auth_request_set $chipmunk_path $upstream_http_x_chipmunk_path;
            auth_request_set $chipmunk_type $upstream_http_x_chipmunk_content_type;
            auth_request_set $chipmunk_cache_control $upstream_http_x_chipmunk_cache_control;
            auth_request_set $chipmunk_disposition $upstream_http_x_chipmunk_content_disposition;
            auth_request_set $chipmunk_size $upstream_http_x_chipmunk_size;
            auth_request_set $chipmunk_vary $upstream_http_x_chipmunk_vary;
            auth_request_set $chipmunk_object $upstream_http_x_chipmunk_object;
            auth_request_set $chipmunk_etag $upstream_http_x_chipmunk_etag;
            auth_request_set $chipmunk_last_modified $upstream_http_x_chipmunk_last_modified;
            # auth_request passes 401/403 through and turns anything else (404 for an unknown or deleted
            # token, a dead upstream) into 500; @chipmunk_refused restores Chipmunk's own status and JSON.
            error_page 401 403 500 = @chipmunk_refused;
            error_page 404 = @chipmunk_missing;
            error_page 405 = @chipmunk_method;
            error_page 412 = @chipmunk_precondition_failed;
            error_page 416 = @chipmunk_unsatisfiable;
            # A missing file is an answer (404), not a server fault worth an error.log line.
            log_not_found off;

            root ${media};
            # The media folder, else the bucket (the auth answer says where the object is).
            try_files /$chipmunk_path @chipmunk_object;
            autoindex off;
            max_ranges 1;
            etag on;
            # The type comes from Chipmunk's database, not from the file name.
            types { }
            default_type "";
            add_header Content-Type $chipmunk_type;
            add_header Cache-Control $chipmunk_cache_control;
            add_header Content-Disposition $chipmunk_disposition;
            add_header Vary $chipmunk_vary;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}        }

        # A variant held in the bucket: the presigned GET from the auth answer, proxied to the S3
        # endpoint (its URL never reaches the client), with Chipmunk's headers instead of the store's.
        location @chipmunk_object {
            error_page 404 = @chipmunk_missing;
            if ($chipmunk_object = "") {
                return 404;
            }
${
  objects
    ? `            error_page 418 = @chipmunk_ranged;
            if ($chipmunk_object_to_app) {
                return 418;
            }
            proxy_pass ${objects.scheme}://chipmunk_objects$chipmunk_object;
${
  objects.scheme === 'https'
    ? `            proxy_ssl_server_name on;
            proxy_ssl_name ${objects.host};
`
    : ''
}            proxy_method GET;
            proxy_http_version 1.1;
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_set_header Host ${objects.hostHeader};
            proxy_set_header Connection "";
            proxy_set_header Range $http_range;
            proxy_buffering off;
            proxy_intercept_errors on;
            error_page 403 500 502 503 504 = @chipmunk_unavailable;
${OBJECT_HEADERS_HIDDEN.map(
  (h) => `            proxy_hide_header ${h};
`,
).join('')}            add_header Content-Type $chipmunk_type;
            add_header Cache-Control $chipmunk_cache_control;
            add_header Content-Disposition $chipmunk_disposition;
            add_header Vary $chipmunk_vary;
            add_header ETag $chipmunk_etag;
            add_header Last-Modified $chipmunk_last_modified;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}`
    : `            return 404;
`
}        }

        location = /_chipmunk/auth {
            internal;
            proxy_pass http://chipmunk_auth/internal/auth;
            proxy_method GET;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            # A rung with an AVIF twin is answered by Accept (Chipmunk's negotiate.ts decides, so the
            # cache key carries the whole header: distinct values are few, one per browser family).
            proxy_set_header X-Original-Accept $http_accept;
${
  cache
    ? `            proxy_cache chipmunk_auth;
            proxy_cache_key $request_uri|$http_accept;
            proxy_cache_valid 200 401 403 404 ${o.authCacheSeconds}s;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
`
    : ''
}        }

        location @chipmunk_refused {
            default_type application/json;
            add_header Cache-Control no-store always;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}            if ($chipmunk_status = 401) {
                return 401 $chipmunk_error;
            }
            if ($chipmunk_status = 403) {
                return 403 $chipmunk_error;
            }
            if ($chipmunk_status = 404) {
                return 404 $chipmunk_error;
            }
            ${returnError(errors.authUnavailable())}
        }

        # nginx's own 412 (If-Match or If-Unmodified-Since not met by the file it is about to send).
        location @chipmunk_precondition_failed {
            default_type application/json;
            add_header Cache-Control no-store always;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}            ${returnError(errors.preconditionFailed())}
        }

        # Not reached by the ranges above; kept so an unforeseen 416 is still JSON.
        location @chipmunk_unsatisfiable {
            default_type application/json;
            add_header Content-Range "bytes */$chipmunk_size" always;
            add_header Cache-Control no-store always;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}            ${returnError(errors.rangeNotSatisfiable())}
        }

        # Chipmunk's own delivery, for the Range forms sent here by $chipmunk_range_to_app.
        location @chipmunk_ranged {
${proxyToApp}
            proxy_buffering off;
        }

        location @chipmunk_unavailable {
            default_type application/json;
            add_header Retry-After 5 always;
            ${returnError(errors.unavailable())}
        }

        location @chipmunk_timeout {
            default_type application/json;
            ${returnError(errors.upstreamTimeout())}
        }

${EARLY_ERRORS.map(
  ([status, error]) => `        location = /_chipmunk/${status} {
            internal;
            default_type application/json;
            ${returnError(error)}
        }
`,
).join('')}
        location @chipmunk_too_large {
            default_type application/json;
            ${returnErrorSaying(errors.tooLarge('The body is too large.'), '$chipmunk_too_large')}
        }

        location @chipmunk_missing {
            default_type application/json;
            add_header Cache-Control no-store always;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}            ${returnError(errors.notFound('File'))}
        }

        location @chipmunk_method {
            default_type application/json;
            add_header Allow "GET, HEAD" always;
            add_header X-Content-Type-Options nosniff always;
${corsLines(12)}            ${returnError(errors.methodNotAllowed())}
        }

        # Never reachable from here; the auth endpoint listens on Chipmunk's internal port anyway.
        location /internal/ {
            default_type application/json;
            ${returnError(errors.notFound('Route'))}
        }

        # Operator endpoints (queue depths, disk figures, tool paths) stay off the public side:
        # scrape /metrics and probe /ready on Chipmunk's own port. /health (liveness, no figures) stays.
        location = /metrics {
            default_type application/json;
            ${returnError(errors.notFound('Route'))}
        }
        location = /ready {
            default_type application/json;
            ${returnError(errors.notFound('Route'))}
        }

        # tus: bodies stream straight through (a PATCH may carry a whole file), and the forwarded
        # headers make Chipmunk's upload Location point back at this server.
        location /uploads {
${sendOnce}${proxyToApp}
            proxy_request_buffering off;
            proxy_buffering off;
            client_max_body_size ${bodyLimit}m;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }

        # Whole files from a backend (multipart or base64 JSON): streamed through like tus.
        location = /v1/files {
${sendOnce}${proxyToApp}
            proxy_request_buffering off;
            client_max_body_size ${filesBodyLimit}m;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }

        location / {
${sendOnce}${proxyToApp}
            client_max_body_size 1m;
        }

        # DELETE, PUT and the like: one node is asked, never a second (it may have acted already).
        location @chipmunk_once {
${proxyToApp}
            proxy_next_upstream off;
            proxy_request_buffering off;
            client_max_body_size 1m;
        }
${extra}    }
}
`;
}

/**
 * The access log keeps where a request went, not the capabilities in it: delivery tokens and upload
 * ids are masked, query strings (exp, sig) dropped, and referrers that carry either are blanked.
 */
const LOG_FORMAT = String.raw`map $request_uri $chipmunk_log_uri {
    "~^/f/[^/?]*/(?<chipmunk_log_variant>[^/?]*)" "/f/<token>/$chipmunk_log_variant";
    "~^/uploads/[^?]" "/uploads/<id>";
    default $uri;
}
map $http_referer $chipmunk_log_referer {
    "~(/f/|/uploads/|sig=|token=)" "-";
    default $http_referer;
}
log_format chipmunk escape=json '$remote_addr - [$time_local] "$request_method $chipmunk_log_uri $server_protocol" $status $body_bytes_sent "$chipmunk_log_referer" "$http_user_agent"';`;

/**
 * nginx's own refusals outside /f/, some made before it has read a whole request (a URI or headers
 * over its buffers), hence URI pages rather than named locations. 494 is nginx's "headers too large".
 */
const EARLY_ERRORS: Array<[number, AppError]> = [
  // The internal locations, asked for by a client.
  [404, errors.notFound('Route')],
  [405, errors.methodNotAllowed('This method is not served here.')],
  [414, errors.uriTooLong()],
  [494, errors.headersTooLarge()],
  [500, errors.internal()],
  [501, errors.notImplemented('Request bodies are sent as they are or chunked; no other Transfer-Encoding is supported.')],
];

/** Failover between nodes, for every proxied request including the auth subrequest. */
const FAILOVER = String.raw`# Failover between nodes. A request no node has received (connection refused, connect timeout)
# goes to the next node; one a node has received is sent again only if it cannot have had effects.
# nginx itself never resends a POST or PATCH it began sending (no non_idempotent here) nor a body
# it streamed unbuffered, but counts DELETE and PUT idempotent: those, and every method but the ones
# below, go to @chipmunk_once, which asks one node only (a failure there is a 502 "try again").
proxy_next_upstream error timeout;
proxy_connect_timeout 5s;
map $request_method $chipmunk_send_once {
    GET 0;
    HEAD 0;
    OPTIONS 0;
    POST 0;
    PATCH 0;
    default 1;
}`;

/**
 * Which Range headers nginx's static module may answer: the ones no stored file can refuse (a start
 * at 0, a suffix; no variant is empty) with numbers that cannot overflow — a player's first request
 * (\`bytes=0-\`) keeps sendfile. Everything else (a seek, an end past 2^63, a start after the end,
 * several ranges, odd syntax) goes to Chipmunk, whose answer is RFC 9110's: an end past the file is
 * clamped (206), an invalid range ignored (200), a start past the end 416 in JSON. nginx's own 416
 * would carry the variant's Content-Type and Cache-Control (add_header runs before the range filter).
 */
const RANGE_MAP = String.raw`map $http_range $chipmunk_range_to_app {
    "" 0;
    "~^bytes=0{1,15}-\d{0,15}$" 0;
    "~^bytes=-[1-9]\d{0,14}$" 0;
    default 1;
}`;

/** What the object store says about itself: Chipmunk's answer replaces it (type, caching, validators). */
const OBJECT_HEADERS_HIDDEN = [
  'Content-Type',
  'Cache-Control',
  'Content-Disposition',
  'Expires',
  'ETag',
  'Last-Modified',
  'Set-Cookie',
  'x-amz-request-id',
  'x-amz-id-2',
  'x-amz-version-id',
  'x-amz-storage-class',
  'x-amz-server-side-encryption',
  'x-amz-expiration',
  'x-amz-restore',
  'x-amz-mp-parts-count',
  'x-amz-tagging-count',
  'x-amz-replication-status',
  'x-amz-delete-marker',
  'x-amz-checksum-crc32',
  'x-amz-checksum-crc32c',
  'x-amz-checksum-crc64nvme',
  'x-amz-checksum-sha1',
  'x-amz-checksum-sha256',
  'x-amz-checksum-type',
  'x-rgw-object-type',
];

function objectUpstream(origin: string): { scheme: 'http' | 'https'; server: string; host: string; hostHeader: string } {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    throw new Error(`The S3 endpoint must be a URL such as https://s3.example.com, not "${origin}".`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`The S3 endpoint must be http:// or https://, not "${origin}".`);
  const scheme = url.protocol === 'https:' ? 'https' : 'http';
  const port = url.port || (scheme === 'https' ? '443' : '80');
  return {
    scheme,
    server: safeValue(`${url.hostname}:${port}`, 'the S3 endpoint'),
    host: safeValue(url.hostname, 'the S3 endpoint'),
    // What the presigned URL was signed for: the host as the URL names it (a default port is left out).
    hostHeader: safeValue(url.host, 'the S3 endpoint'),
  };
}

/** One `server` line per node (each once), for an upstream block. */
function servers(urls: string[], what: string): string {
  if (urls.length === 0) throw new Error(`${what} is required.`);
  const seen = new Set<string>();
  for (const url of urls) {
    const server = safeValue(hostPort(url, what), what);
    if (seen.has(server)) throw new Error(`${what} names ${server} twice.`);
    seen.add(server);
  }
  return [...seen].map((server) => `        server ${server};\n`).join('');
}

function indent(text: string, spaces: number): string {
  const pad = ' '.repeat(spaces);
  return text
    .split('\n')
    .map((line) => (line ? pad + line : line))
    .join('\n');
}
