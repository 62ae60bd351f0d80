import type { Context } from 'hono';
import type { z } from 'zod';
import { errors, type AppError } from '../errors.js';

// Validation at the edge: every route parses its inputs with a zod schema and trusts the types inside.

/** A failed check as the client sees it: 400 INVALID_INPUT naming the input, the field and the rule. */
export function invalidInput(error: z.ZodError, what: string): AppError {
  const issue = error.issues[0]!;
  const where = issue.path.length ? ` (${issue.path.join('.')})` : '';
  return errors.invalidInput(`Invalid ${what}${where}: ${issue.message}`);
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalidInput(parsed.error, what);
  return parsed.data;
}

/** The body as JSON, whatever its Content-Type (a browser's fetch sends a string body as text/plain). */
export async function readJson(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw errors.invalidInput('The request body must be JSON.');
  }
}

export async function jsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  return parseWith(schema, await readJson(c), 'request body');
}
