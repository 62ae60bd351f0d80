// One error model for REST routes, tus hooks and the nginx auth endpoint alike:
// a stable code, an HTTP status, a sentence a person can act on, and the cause for the logs.

export type ErrorBody = { error: { code: string; message: string } };

export class AppError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
    this.status = status;
  }

  toJSON(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

export const errors = {
  badRequest: (message: string, cause?: unknown) => new AppError('BAD_REQUEST', 400, message, { cause }),
  invalidInput: (message: string) => new AppError('INVALID_INPUT', 400, message),
  unauthorized: (message = 'Missing or invalid credentials.') => new AppError('UNAUTHORIZED', 401, message),
  forbidden: (message: string) => new AppError('FORBIDDEN', 403, message),
  notFound: (what = 'Resource') => new AppError('NOT_FOUND', 404, `${what} not found.`),
  uploadGone: () => new AppError('UPLOAD_NOT_FOUND', 404, 'This upload does not exist, has finished, or was refused.'),
  unknownPurpose: (purpose: string) => new AppError('UNKNOWN_PURPOSE', 400, `Unknown purpose "${purpose}".`),
  lengthRequired: () =>
    new AppError('LENGTH_REQUIRED', 400, 'Uploads must declare their size up front (Upload-Length); deferred length is not supported.'),
  tooLarge: (message: string) => new AppError('FILE_TOO_LARGE', 413, message),
  quotaExceeded: (message: string) => new AppError('QUOTA_EXCEEDED', 413, message),
  unsupportedType: (message: string) => new AppError('UNSUPPORTED_MEDIA_TYPE', 415, message),
  unprocessable: (message: string, cause?: unknown) => new AppError('UNPROCESSABLE_MEDIA', 422, message, { cause }),
  rangeNotSatisfiable: () => new AppError('RANGE_NOT_SATISFIABLE', 416, 'The requested range starts past the end of the file.'),
  insufficientStorage: (message: string) => new AppError('INSUFFICIENT_STORAGE', 507, message),
  internal: (cause?: unknown) => new AppError('INTERNAL', 500, 'Something went wrong on our side.', { cause }),
};

export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  // Errors thrown by @tus/server itself carry { status_code, body }.
  if (isTusError(err)) {
    const ours = parseErrorBody(err.body);
    if (ours) return new AppError(ours.error.code, err.status_code, ours.error.message, { cause: err });
    const message = err.body.trim() || 'Upload request refused.';
    return new AppError(err.status_code >= 500 ? 'INTERNAL' : 'TUS_PROTOCOL', err.status_code, message, { cause: err });
  }
  return errors.internal(err);
}

function parseErrorBody(body: string): ErrorBody | undefined {
  try {
    const parsed = JSON.parse(body) as ErrorBody;
    return typeof parsed?.error?.code === 'string' && typeof parsed.error.message === 'string' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

function isTusError(err: unknown): err is { status_code: number; body: string } {
  return typeof err === 'object' && err !== null && 'status_code' in err && typeof (err as { status_code: unknown }).status_code === 'number';
}

/** The shape @tus/server expects a hook to throw, carrying our JSON body so tus-js-client shows it in onError. */
export function toTusError(err: unknown): { status_code: number; body: string } {
  const appError = toAppError(err);
  return { status_code: appError.status, body: JSON.stringify(appError.toJSON()) };
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
