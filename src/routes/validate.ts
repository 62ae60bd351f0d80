import type { Context } from 'hono';
import type { z } from 'zod';
import { errors } from '../errors.js';

// Validation at the edge: every route parses its inputs with a zod schema and trusts the types inside.

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? ` (${issue.path.join('.')})` : '';
    throw errors.invalidInput(`Invalid ${what}${where}: ${issue.message}`);
  }
  return parsed.data;
}

export async function jsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw errors.invalidInput('The request body must be JSON.');
  }
  return parseWith(schema, body, 'request body');
}
