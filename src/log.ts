// Structured JSON logs, one object a line. Secrets never go in: callers log ids and codes, not
// tokens, and as a second line of defence any field whose name says it holds a credential is
// replaced by "[redacted]" and any string that looks like a bearer credential is masked.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
export type LogFields = Record<string, unknown>;

export type Logger = {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
  /** Whether lines at this level are written: lets hot paths skip building fields nobody reads. */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean;
};

export type LoggerOptions = {
  /** Fields of the current context (the request id), read on every line. */
  context?: () => LogFields | undefined;
};

const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export function createLogger(
  level: LogLevel = 'info',
  base: LogFields = {},
  write: (line: string) => void = (l) => process.stdout.write(l),
  opts: LoggerOptions = {},
): Logger {
  const emit = (at: Exclude<LogLevel, 'silent'>, msg: string, fields?: LogFields) => {
    if (order[at] < order[level]) return;
    const record: LogFields = { time: new Date().toISOString(), level: at, msg, ...opts.context?.(), ...base, ...fields };
    write(`${JSON.stringify(redact(record, 0))}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(level, { ...base, ...fields }, write, opts),
    enabled: (at) => order[at] >= order[level],
  };
}

const secretKey = /(secret|password|passwd|token|api[-_]?key|authorization|signature|^sig$|cookie)/i;
// A JWT, a "Bearer …" value, or our API key prefix.
const secretValue = /(eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,})|(bearer\s+\S+)|(ck_[\w-]{16,})/gi;

function redact(value: unknown, depth: number): unknown {
  if (value instanceof Error) return serializeError(value, depth);
  if (typeof value === 'string') return value.replace(secretValue, '[redacted]');
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: LogFields = {};
  for (const [k, v] of Object.entries(value)) out[k] = secretKey.test(k) ? '[redacted]' : redact(v, depth + 1);
  return out;
}

function serializeError(err: Error, depth: number): LogFields {
  const out: LogFields = { name: err.name, message: redact(err.message, depth), stack: redact(err.stack, depth) };
  if ('code' in err) out.code = (err as { code: unknown }).code;
  if (err.cause instanceof Error && depth < 6) out.cause = serializeError(err.cause, depth + 1);
  return out;
}

export const silentLogger = createLogger('silent');
