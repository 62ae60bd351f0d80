// Renders the nginx config that stands in front of one Chipmunk: /f/ is authorised by
// Chipmunk's internal /internal/auth (auth_request, answers cached briefly) and served from the
// media folder with sendfile; /uploads streams to Chipmunk for tus; everything else is proxied.
// The output runs as `nginx -p <prefix> -c <file>`: pid, logs, temp files and the auth cache live
// under the prefix, and there is no daemon directive (containers pass -g 'daemon off;').

export type NginxConfigOptions = {
  /** `host:port` or `port`, as nginx's listen takes it. */
  listen: string;
  /** The public Chipmunk, e.g. http://127.0.0.1:8080. */
  upstream: string;
  /** Chipmunk's internal port, serving /internal/auth, e.g. http://127.0.0.1:8081. */
  authUpstream: string;
  /** Absolute path of the media folder (CHIPMUNK_DATA_DIR/media), readable by nginx's workers. */
  mediaDir: string;
  /** Seconds an auth answer may be reused; 0 turns the cache off. Chipmunk never lets it outlive a link. */
  authCacheSeconds: number;
  /** Largest request body /uploads takes: the biggest purpose limit, since a tus PATCH may carry a whole file. */
  maxUploadBytes: number;
  /** Worker user, when the master runs as root and the default (nobody) cannot read the media. */
  user?: string;
  workerProcesses?: number | 'auto';
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

const safeValue = (value: string, what: string): string => {
  if (!/^[^\s;{}'"\\$#]+$/.test(value)) throw new Error(`${what} "${value}" cannot go into an nginx config (spaces, quotes, ; { } $ # are not allowed).`);
  return value;
};

export function renderNginxConfig(o: NginxConfigOptions): string {
  const listen = safeValue(o.listen, '--listen');
  const app = safeValue(hostPort(o.upstream, '--upstream'), '--upstream');
  const auth = safeValue(hostPort(o.authUpstream, 'the auth upstream'), 'the auth upstream');
  const media = safeValue(o.mediaDir.replace(/\/+$/, ''), 'the media directory');
  const cache = o.authCacheSeconds > 0;
  const bodyLimit = Math.max(1, Math.ceil(o.maxUploadBytes / 1_000_000) + 1);
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
  const extra = o.extraServerConfig ? `\n${indent(o.extraServerConfig.trim(), 8)}\n` : '';

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
    access_log access.log combined buffer=64k flush=1s;
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
${cache ? `
    # Auth answers, keyed by the full request URI (the signature is in it). Chipmunk sends
    # X-Accel-Expires = min(${o.authCacheSeconds}s, seconds left on the link), so no answer outlives its link.
    proxy_cache_path auth_cache levels=1:2 keys_zone=chipmunk_auth:10m max_size=64m inactive=60s use_temp_path=off;
` : ''}
    upstream chipmunk_app {
        server ${app};
        keepalive 32;
    }

    upstream chipmunk_auth {
        server ${auth};
        keepalive 64;
    }

    server {
        listen ${listen};

        # nginx itself refuses NULs and encoded slashes that climb out of the root (400);
        # under /f/ that is just a file that does not exist.
        error_page 400 = /_chipmunk/bad-request;
        error_page 502 503 504 = @chipmunk_unavailable;
        error_page 413 = @chipmunk_too_large;
        location = /_chipmunk/bad-request {
            internal;
            default_type application/json;
            add_header X-Content-Type-Options nosniff always;
            if ($request ~ "^[A-Z]+ /f/") {
                return 404 '{"error":{"code":"NOT_FOUND","message":"File not found."}}';
            }
            return 400 '{"error":{"code":"BAD_REQUEST","message":"Malformed request."}}';
        }

        # Variants: Chipmunk decides, nginx sends the bytes.
        location /f/ {
            auth_request /_chipmunk/auth;
            auth_request_set $chipmunk_status $upstream_http_x_chipmunk_status;
            auth_request_set $chipmunk_error $upstream_http_x_chipmunk_error;
            auth_request_set $chipmunk_path $upstream_http_x_chipmunk_path;
            auth_request_set $chipmunk_type $upstream_http_x_chipmunk_content_type;
            auth_request_set $chipmunk_cache_control $upstream_http_x_chipmunk_cache_control;
            auth_request_set $chipmunk_disposition $upstream_http_x_chipmunk_content_disposition;
            auth_request_set $chipmunk_vary $upstream_http_x_chipmunk_vary;
            # auth_request passes 401/403 through and turns anything else (404 for an unknown or deleted
            # token, a dead upstream) into 500; @chipmunk_refused restores Chipmunk's own status and JSON.
            error_page 401 403 500 = @chipmunk_refused;
            error_page 404 = @chipmunk_missing;
            error_page 405 = @chipmunk_method;

            root ${media};
            try_files /$chipmunk_path =404;
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
        }

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
${cache ? `            proxy_cache chipmunk_auth;
            proxy_cache_key $request_uri|$http_accept;
            proxy_cache_valid 200 401 403 404 ${o.authCacheSeconds}s;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
` : ''}        }

        location @chipmunk_refused {
            default_type application/json;
            add_header Cache-Control no-store always;
            add_header X-Content-Type-Options nosniff always;
            if ($chipmunk_status = 401) {
                return 401 $chipmunk_error;
            }
            if ($chipmunk_status = 403) {
                return 403 $chipmunk_error;
            }
            if ($chipmunk_status = 404) {
                return 404 $chipmunk_error;
            }
            return 502 '{"error":{"code":"AUTH_UNAVAILABLE","message":"Chipmunk did not answer the access check; try again shortly."}}';
        }

        location @chipmunk_unavailable {
            default_type application/json;
            add_header Retry-After 5 always;
            return 502 '{"error":{"code":"UNAVAILABLE","message":"Chipmunk is not answering; try again shortly."}}';
        }

        location @chipmunk_too_large {
            default_type application/json;
            return 413 '{"error":{"code":"FILE_TOO_LARGE","message":"The request body is larger than any upload Chipmunk accepts."}}';
        }

        location @chipmunk_missing {
            default_type application/json;
            add_header Cache-Control no-store always;
            add_header X-Content-Type-Options nosniff always;
            return 404 '{"error":{"code":"NOT_FOUND","message":"File not found."}}';
        }

        location @chipmunk_method {
            default_type application/json;
            add_header Allow "GET, HEAD" always;
            add_header X-Content-Type-Options nosniff always;
            return 405 '{"error":{"code":"METHOD_NOT_ALLOWED","message":"Files are read with GET or HEAD."}}';
        }

        # Never reachable from here; the auth endpoint listens on Chipmunk's internal port anyway.
        location /internal/ {
            default_type application/json;
            return 404 '{"error":{"code":"NOT_FOUND","message":"Route not found."}}';
        }

        # tus: bodies stream straight through (a PATCH may carry a whole file), and the forwarded
        # headers make Chipmunk's upload Location point back at this server.
        location /uploads {
${proxyToApp}
            proxy_request_buffering off;
            proxy_buffering off;
            client_max_body_size ${bodyLimit}m;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }

        location / {
${proxyToApp}
            client_max_body_size 1m;
        }
${extra}    }
}
`;
}

function indent(text: string, spaces: number): string {
  const pad = ' '.repeat(spaces);
  return text
    .split('\n')
    .map((line) => (line ? pad + line : line))
    .join('\n');
}
