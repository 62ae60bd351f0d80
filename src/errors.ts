// One error model for REST routes, tus hooks and the nginx auth endpoint alike:
// a stable code, an HTTP status, a sentence a person can act on, and the cause for the logs.

export type ErrorBody = { error: { code: ErrorCode; message: string } };

/**
 * Every code a client can see, with its HTTP status: the one table. Adding a code is one line here
 * and one factory in `errors` below.
 */
export const ERROR_STATUS = Object.freeze({
  BAD_REQUEST: 400,
  INVALID_INPUT: 400,
  UNKNOWN_PURPOSE: 400,
  LENGTH_REQUIRED: 400,
  TUS_PROTOCOL: 400,
  UNAUTHORIZED: 401,
  SIGNATURE_REQUIRED: 401,
  FORBIDDEN: 403,
  INVALID_SIGNATURE: 403,
  LINK_EXPIRED: 403,
  NOT_FOUND: 404,
  UPLOAD_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  OFFSET_MISMATCH: 409,
  UPLOAD_CONFLICT: 409,
  TUS_VERSION_UNSUPPORTED: 412,
  PRECONDITION_FAILED: 412,
  FILE_TOO_LARGE: 413,
  QUOTA_EXCEEDED: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RANGE_NOT_SATISFIABLE: 416,
  UNPROCESSABLE_MEDIA: 422,
  TOO_MANY_UNFINISHED_UPLOADS: 429,
  HEADERS_TOO_LARGE: 431,
  CHECKSUM_MISMATCH: 460,
  INTERNAL: 500,
  PROCESSING_FAILED: 500,
  NOT_IMPLEMENTED: 501,
  AUTH_UNAVAILABLE: 502,
  UNAVAILABLE: 502,
  UPSTREAM_TIMEOUT: 504,
  INSUFFICIENT_STORAGE: 507,
} as const satisfies Record<string, number>);

export type ErrorCode = keyof typeof ERROR_STATUS;

const isErrorCode = (code: string): code is ErrorCode => Object.hasOwn(ERROR_STATUS, code);

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_STATUS[code];
  }

  toJSON(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

/**
 * A refusal made by @tus/server itself keeps the status the protocol gives it (409 for a wrong
 * offset, 410, 501…) under the table's code: the one exception to "status from the table".
 */
class RelayedError extends AppError {
  override readonly status: number;

  constructor(code: ErrorCode, status: number, message: string, cause: unknown) {
    super(code, message, { cause });
    this.status = status;
  }
}

export const errors = {
  badRequest: (message: string, cause?: unknown) => new AppError('BAD_REQUEST', message, { cause }),
  invalidInput: (message: string) => new AppError('INVALID_INPUT', message),
  unauthorized: (message = 'Missing or invalid credentials.') => new AppError('UNAUTHORIZED', message),
  forbidden: (message: string) => new AppError('FORBIDDEN', message),
  notFound: (what = 'Resource') => new AppError('NOT_FOUND', `${what} not found.`),
  uploadGone: () => new AppError('UPLOAD_NOT_FOUND', 'This upload does not exist, has finished, or was refused.'),
  unknownPurpose: (purpose: string) => new AppError('UNKNOWN_PURPOSE', `Unknown purpose "${purpose}".`),
  lengthRequired: () => new AppError('LENGTH_REQUIRED', 'Uploads must declare their size up front (Upload-Length); deferred length is not supported.'),
  tooLarge: (message: string) => new AppError('FILE_TOO_LARGE', message),
  quotaExceeded: (message: string) => new AppError('QUOTA_EXCEEDED', message),
  unsupportedType: (message: string) => new AppError('UNSUPPORTED_MEDIA_TYPE', message),
  unprocessable: (message: string, cause?: unknown) => new AppError('UNPROCESSABLE_MEDIA', message, { cause }),
  preconditionFailed: () =>
    new AppError('PRECONDITION_FAILED', 'The file does not match If-Match or If-Unmodified-Since: it is not the version you asked about.'),
  rangeNotSatisfiable: () => new AppError('RANGE_NOT_SATISFIABLE', 'The requested range starts past the end of the file.'),
  insufficientStorage: (message: string) => new AppError('INSUFFICIENT_STORAGE', message),
  internal: (cause?: unknown) => new AppError('INTERNAL', 'Something went wrong on our side.', { cause }),
  signatureRequired: () => new AppError('SIGNATURE_REQUIRED', 'This file is private: its link needs exp and sig parameters. Ask the app for a signed link.'),
  invalidSignature: () => new AppError('INVALID_SIGNATURE', 'The link signature is not valid for this file and variant.'),
  linkExpired: () => new AppError('LINK_EXPIRED', 'This link has expired. Ask the app for a new one.'),
  methodNotAllowed: (message = 'Files are read with GET or HEAD.') => new AppError('METHOD_NOT_ALLOWED', message),
  tusVersionUnsupported: (sent: string | null) =>
    new AppError(
      'TUS_VERSION_UNSUPPORTED',
      sent ? `This server speaks tus 1.0.0; Tus-Resumable "${sent}" is not supported.` : 'tus requests need the header "Tus-Resumable: 1.0.0".',
    ),
  chunkContentType: () => new AppError('UNSUPPORTED_MEDIA_TYPE', 'tus PATCH requests carry their bytes as "Content-Type: application/offset+octet-stream".'),
  checksumMismatch: (algorithm: string) =>
    new AppError(
      'CHECKSUM_MISMATCH',
      `The chunk's ${algorithm} checksum does not match Upload-Checksum; it was not applied: send it again from the same offset.`,
    ),
  offsetMismatch: () =>
    new AppError('OFFSET_MISMATCH', 'Upload-Offset does not match the bytes received so far; ask with HEAD and resume from the offset it answers.'),
  /** nginx's answers when Chipmunk behind it does not respond (rendered into its config). */
  authUnavailable: () => new AppError('AUTH_UNAVAILABLE', 'Chipmunk did not answer the access check; try again shortly.'),
  unavailable: () => new AppError('UNAVAILABLE', 'Chipmunk is not answering; try again shortly.'),
  upstreamTimeout: () => new AppError('UPSTREAM_TIMEOUT', 'Chipmunk did not answer in time; the request may have taken effect: check before sending it again.'),
  uriTooLong: () => new AppError('URI_TOO_LONG', 'The request URI is too long.'),
  headersTooLarge: () => new AppError('HEADERS_TOO_LARGE', 'The request headers (or a cookie) are too large.'),
  notImplemented: (message: string) => new AppError('NOT_IMPLEMENTED', message),
  tooManyUnfinished: (message: string) => new AppError('TOO_MANY_UNFINISHED_UPLOADS', message),
  processingFailed: (reason: string) => new AppError('PROCESSING_FAILED', reason),
  uploadConflict: (message: string) => new AppError('UPLOAD_CONFLICT', message),
};

/** An error rebuilt from its parts (a worker's reply, our JSON body relayed by @tus/server), code and status as they were. */
export function restoreAppError(code: string, status: number, message: string, cause?: unknown): AppError {
  const known: ErrorCode = isErrorCode(code) ? code : status >= 500 ? 'INTERNAL' : 'TUS_PROTOCOL';
  return ERROR_STATUS[known] === status ? new AppError(known, message, { cause }) : new RelayedError(known, status, message, cause);
}

export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  // Errors thrown by @tus/server itself carry { status_code, body }.
  if (isTusError(err)) {
    const ours = parseErrorBody(err.body);
    if (ours) return restoreAppError(ours.error.code, err.status_code, ours.error.message, err);
    const message = err.body.trim() || 'Upload request refused.';
    return restoreAppError(err.status_code >= 500 ? 'INTERNAL' : 'TUS_PROTOCOL', err.status_code, message, err);
  }
  return errors.internal(err);
}

/** What every stack answers an error with (Hono, tus hooks, /f/, /internal/auth, nginx's own bodies). */
export type RenderedError = { status: number; headers: { 'Content-Type': 'application/json' }; body: string; error: AppError };

/** The one renderer: anything thrown becomes a status and the JSON body `{ "error": { "code", "message" } }`. */
export function renderError(err: unknown): RenderedError {
  const error = toAppError(err);
  return { status: error.status, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(error.toJSON()), error };
}

function parseErrorBody(body: string): { error: { code: string; message: string } } | undefined {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    return typeof parsed?.error?.code === 'string' && typeof parsed.error.message === 'string'
      ? (parsed as { error: { code: string; message: string } })
      : undefined;
  } catch {
    return undefined;
  }
}

function isTusError(err: unknown): err is { status_code: number; body: string } {
  return typeof err === 'object' && err !== null && 'status_code' in err && typeof (err as { status_code: unknown }).status_code === 'number';
}

/** The shape @tus/server expects a hook to throw, carrying our JSON body so tus-js-client shows it in onError. */
export function toTusError(err: unknown): { status_code: number; body: string } {
  const { status, body } = renderError(err);
  return { status_code: status, body };
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits).replace(/\.0$/, '')} ${units[unit]}`;
}

/** A bad setting or a start-up the operator must fix: a sentence naming what to change, never a stack trace. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}
