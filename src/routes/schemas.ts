import { z } from 'zod';

// The request shapes the /v1 routes validate with; the OpenAPI document is generated from these.

export const userIdSchema = z.string().min(1).max(128).regex(/^[\w.@:+-]+$/, 'letters, digits and . _ @ : + - only');
export const purposeNameSchema = z.string().min(1).max(32);

export const uploadTokenRequest = z.object({
  userId: userIdSchema,
  purpose: purposeNameSchema,
  expiresIn: z.number().int().positive().max(7 * 24 * 3600).default(3600).describe('seconds'),
});

export const fileIdParams = z.object({ id: z.string().regex(/^[0-9a-z]{24}$/, 'not a file id') });
export const userIdParams = z.object({ id: userIdSchema });

export const setQuotaRequest = z.object({ quotaBytes: z.number().int().nonnegative() });

export const listFilesQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().regex(/^[0-9a-z]{24}$/).optional(),
});
