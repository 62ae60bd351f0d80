import { z } from 'zod';
import { MAX_LINK_SECONDS } from '../delivery/signing.js';
import { audioInfoSchema, audioRenditionsSchema, coverInfoSchema, imageInfoSchema } from '../media/info.js';

// The request shapes the /v1 routes validate with; the OpenAPI document is generated from these.

/** The one user-id schema: every edge (routes, tus creation, token claims) validates with it. */
export const userIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\w.@:+-]+$/, 'letters, digits and . _ @ : + - only');
export const purposeNameSchema = z
  .string()
  .min(1)
  .max(32)
  .regex(/^[a-z][a-z0-9_-]*$/, 'lower-case letters, digits, _ and - only');

/** Users the demo acts for; the /v1 API never names them, so the demo cannot touch an app user. */
export const DEMO_USER_PREFIX = 'demo-';
/** A user id as the app backend names it in /v1: any user id except the demo's. */
export const appUserIdSchema = userIdSchema.refine((id) => !id.startsWith(DEMO_USER_PREFIX), {
  message: `the ${DEMO_USER_PREFIX} prefix is reserved for the demo's users`,
});

export const uploadTokenRequest = z.object({
  userId: appUserIdSchema,
  purpose: purposeNameSchema,
  expiresIn: z
    .number()
    .int()
    .positive()
    .max(30 * 24 * 3600)
    .default(3600)
    .describe('seconds, at most CHIPMUNK_UPLOAD_TOKEN_MAX_AGE (7 days by default)'),
  maxUploads: z
    .number()
    .int()
    .min(1)
    .max(10_000)
    .optional()
    .describe('how many uploads the token may start (1: single use); unbounded within its lifetime when absent'),
});

export const fileIdParams = z.object({ id: z.string().regex(/^[0-9a-z]{24}$/, 'not a file id') });
export const userIdParams = z.object({ id: appUserIdSchema });

export const setQuotaRequest = z.object({ quotaBytes: z.number().int().nonnegative() });

export const listFilesQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z
    .string()
    .regex(/^[0-9a-z]{24}$/)
    .optional(),
});

// POST /v1/files. With an upload token, userId and purpose come from the token (and may only repeat it).
export const ingestJsonRequest = z.object({
  userId: appUserIdSchema.optional(),
  purpose: purposeNameSchema.optional(),
  filename: z.string().min(1).max(255).optional(),
  data: z.string().min(1).describe('the file as base64 (standard or URL-safe alphabet), or a data:<type>;base64,… URI'),
});

/** The text fields of a multipart upload; they come before the `file` part. */
export const ingestFormFields = z.object({
  userId: appUserIdSchema.optional(),
  purpose: purposeNameSchema.optional(),
  filename: z.string().min(1).max(255).optional(),
  size: z.coerce.number().int().nonnegative().optional().describe("the file's exact length in bytes, making the quota reservation exact"),
});

export const ingestForm = ingestFormFields.extend({
  file: z.file().meta({ type: 'string', format: 'binary', description: 'the file; must be the last part' }),
});

// The tus endpoint's request headers (checked by @tus/server and the creation hook).
export const tusHeaders = z.object({
  'Tus-Resumable': z.literal('1.0.0'),
  'X-HTTP-Method-Override': z.enum(['PATCH', 'HEAD', 'DELETE']).optional().describe('on a POST: the method meant (for proxies that block it)'),
});
/** The checksum extension: the chunk is applied only if its digest matches (460 otherwise). */
const uploadChecksum = z
  .string()
  .regex(/^(sha1|sha256|sha512|md5) [A-Za-z0-9+/]+={0,2}$/)
  .optional()
  .describe('"<algorithm> <base64 digest>" of this request\'s bytes (checksum extension)');
export const tusCreateHeaders = tusHeaders.extend({
  'Upload-Length': z.string().regex(/^\d+$/).describe("the whole upload's size in bytes; deferred length is refused"),
  'Upload-Metadata': z
    .string()
    .optional()
    .describe('comma-separated "key base64(value)" pairs: filename, filetype, and optionally purpose (must equal the token\'s)'),
  Authorization: z
    .string()
    .regex(/^Bearer \S+$/)
    .describe('"Bearer <upload token>"'),
  'Content-Type': z.literal('application/offset+octet-stream').optional().describe('only with a first chunk in the creation request'),
  'Upload-Checksum': uploadChecksum,
});
export const tusPatchHeaders = tusHeaders.extend({
  'Upload-Offset': z.string().regex(/^\d+$/).describe("where these bytes start; must equal the server's offset"),
  'Content-Type': z.literal('application/offset+octet-stream'),
  'Upload-Checksum': uploadChecksum,
});

// Delivery controls (routes/file-delivery.ts) and delivery itself (/f/<token>/<n>).
export const setVisibilityRequest = z.object({ visibility: z.enum(['public', 'private']) });
export const signedLinkQuery = z.object({
  variant: z
    .string()
    .regex(/^[0-9a-z][0-9a-z-]{0,31}$/, 'a variant name such as 0, 3 or waveform')
    .default('0'),
  expiresIn: z.coerce.number().int().min(1).max(MAX_LINK_SECONDS).default(3600).describe('seconds'),
});
export const signedLinkResponse = z.object({ url: z.url(), expiresAt: z.iso.datetime() }).meta({ id: 'SignedLink' });
export const deliveryParams = z.object({ token: z.string().regex(/^[0-9a-z]{32}$/), n: z.string().regex(/^[0-9a-z-]{1,32}$/) });
export const deliveryQuery = z.object({
  exp: z.coerce.number().int().positive().optional().describe('expiry of a signed URL, unix seconds'),
  sig: z
    .string()
    .regex(/^[A-Za-z0-9_-]{43}$/)
    .optional()
    .describe('unpadded base64url HMAC-SHA256 of "/f/<token>/<n>?exp=<exp>" keyed with CHIPMUNK_SECRET'),
});

// What the routes answer: the server's types (z.infer below), the OpenAPI document and the client kit's
// types (src/client/contract.ts, generated from these by `npm run contract:types`) all come from here.
// `.meta({ id })` names a schema in the document's components.

export const errorResponse = z.object({ error: z.object({ code: z.string(), message: z.string() }) }).meta({ id: 'Error' });

export const uploadTokenResponse = z
  .object({
    token: z.string(),
    expiresAt: z.iso.datetime(),
    maxUploads: z.number().int().optional().describe('echoed when the token was minted with a bound on its uses'),
  })
  .meta({ id: 'UploadToken' });

export const variantFormatJson = z.object({ mimeType: z.string(), bytes: z.number().int(), url: z.url() });

export const variantJson = z
  .object({
    n: z.union([z.number().int(), z.string()]),
    width: z.number().int().optional(),
    height: z.number().int().optional(),
    bytes: z.number().int(),
    mimeType: z.string(),
    url: z.url().describe('answers in AVIF to clients whose Accept names image/avif when the rung has an AVIF twin (formats), else in WebP'),
    formats: z
      .array(variantFormatJson)
      .optional()
      .describe('present on rungs with an AVIF twin: each format with a URL of its own (AVIF first), for <picture>/srcset'),
  })
  .meta({ id: 'Variant' });

/** What every file's JSON holds, whatever its kind. */
const fileCommon = {
  id: z.string(),
  userId: z.string(),
  purpose: z.string(),
  status: z.enum(['processing', 'ready', 'failed']),
  visibility: z.enum(['public', 'private']),
  filename: z.string(),
  mimeType: z.string().nullable(),
  bytes: z.number().int().describe('the original'),
  totalBytes: z.number().int().describe('original plus everything generated: what the user is charged'),
  width: z.number().int().optional(),
  height: z.number().int().optional(),
  variants: z.array(variantJson),
  error: z.string().optional(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
};

/** An image: its facts (media/info.ts) are present once it is processed. */
export const imageFileJson = z.object({ kind: z.literal('image'), ...fileCommon, ...imageInfoSchema.partial().shape }).meta({ id: 'ImageFile' });

/** A track's embedded cover: its facts and its square ladder's URLs, 'cover-0' (the picture as stored) first. */
export const coverJson = coverInfoSchema.extend({ variants: z.array(z.url()) }).meta({ id: 'Cover' });

/** A track: its tags and stream facts (media/info.ts), its renditions once made, and its cover if it has one. */
export const audioFileJson = z
  .object({
    kind: z.literal('audio'),
    ...fileCommon,
    ...audioInfoSchema.partial().shape,
    renditions: audioRenditionsSchema.optional(),
    cover: coverJson.optional(),
  })
  .meta({ id: 'AudioFile' });

/** The file JSON: one shape per kind, told apart by `kind`. */
export const fileJson = z.discriminatedUnion('kind', [imageFileJson, audioFileJson]).meta({ id: 'File' });

export const fileListResponse = z.object({ files: z.array(fileJson), nextCursor: z.string().nullable() }).meta({ id: 'FileList' });

export const userJson = z
  .object({
    id: z.string(),
    quotaBytes: z.number().int(),
    usedBytes: z.number().int(),
    reservedBytes: z.number().int(),
    fileCount: z.number().int(),
  })
  .meta({ id: 'User' });

export type ErrorJson = z.infer<typeof errorResponse>;
export type UploadTokenJson = z.infer<typeof uploadTokenResponse>;
export type SignedLinkJson = z.infer<typeof signedLinkResponse>;
export type VariantFormatJson = z.infer<typeof variantFormatJson>;
export type VariantJson = z.infer<typeof variantJson>;
export type ImageFileJson = z.infer<typeof imageFileJson>;
export type AudioFileJson = z.infer<typeof audioFileJson>;
export type CoverJson = z.infer<typeof coverJson>;
export type FileJson = z.infer<typeof fileJson>;
export type FileListJson = z.infer<typeof fileListResponse>;
export type UserJson = z.infer<typeof userJson>;
