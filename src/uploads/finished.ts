import type { FileRow } from '../db/schema.js';
import type { UnitOfWork } from '../db/ports.js';
import { AppError, errors, restoreAppError } from '../errors.js';
import { requestBaseUrl } from '../http.js';
import type { FileService } from '../services/files.js';
import type { UploadService } from '../services/uploads.js';
import { uploadIdOf } from './tus.js';

// What an upload URL answers once its last byte arrived, before @tus/server (which only knows uploads in
// flight) sees the request. tus requires HEAD to answer the offset "even if the upload is complete", so a
// client whose final answer was lost resumes into "done" instead of uploading everything again:
//   received / processing / ready → 200, Upload-Offset = Upload-Length, Chipmunk-File-Id/-Status
//   refused or failed              → 410 Gone with the JSON error (a new upload would be refused again)
//   a replayed final PATCH          → the file JSON (waiting for processing like the first one)
// GET is never a read handle for the bytes.

export type FinishedUploads = ReturnType<typeof createFinishedUploads>;

export function createFinishedUploads(deps: { uow: UnitOfWork; uploads: UploadService; files: FileService; publicUrl: string | undefined }) {
  const { uow } = deps;

  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Tus-Resumable': '1.0.0', ...headers },
    });

  const gone = (err: AppError, method: string) => {
    const res = json(410, err.toJSON(), { 'Chipmunk-Error-Code': err.code });
    return method === 'HEAD' ? new Response(null, { status: 410, headers: res.headers }) : res;
  };

  const fileHeaders = (file: FileRow): Record<string, string> => {
    const length = String(file.uploadLength ?? file.bytes);
    return {
      'Upload-Offset': length,
      'Upload-Length': length,
      'Chipmunk-File-Id': file.id,
      'Chipmunk-File-Status': file.status === 'received' ? 'processing' : file.status,
    };
  };

  /** A failure of processing itself (nothing stored), as opposed to a track whose renditions failed. */
  const failedUpload = (file: FileRow) => file.status === 'failed' && file.totalBytes === 0;

  return {
    fileHeaders,

    /** The answer for a finished upload's URL, or undefined to let tus handle the request. */
    async answer(req: Request): Promise<Response | undefined> {
      const id = uploadIdOf(req.url);
      if (req.method === 'GET') {
        return json(405, errors.methodNotAllowed('An upload URL is not a way to read the file: use the URLs in the file JSON (GET /v1/files/:id).').toJSON(), {
          Allow: 'HEAD, PATCH, DELETE, OPTIONS',
        });
      }
      if (!id || !['HEAD', 'PATCH', 'DELETE'].includes(req.method)) return undefined;
      const file = await uow.ports.files.get(id);
      if (!file) {
        const refusal = await uow.ports.uploads.refusal(id);
        return refusal ? gone(restoreAppError(refusal.code, refusal.status, refusal.message), req.method) : undefined;
      }
      if (file.status === 'uploading' || file.status === 'deleting') return undefined;
      if (failedUpload(file)) return gone(errors.processingFailed(file.error ?? 'Processing failed on the server.'), req.method);
      const headers = fileHeaders(file);
      if (req.method === 'HEAD') return new Response(null, { status: 200, headers: { ...headers, 'Cache-Control': 'no-store', 'Tus-Resumable': '1.0.0' } });
      if (req.method === 'DELETE') {
        return json(409, errors.uploadConflict('This upload is complete: delete the file with DELETE /v1/files/:id.').toJSON(), headers);
      }
      // PATCH: a replay of the final request (all bytes were there) gets the answer the first one got.
      const offset = req.headers.get('upload-offset');
      const bodyLength = Number(req.headers.get('content-length') ?? '0');
      if (offset !== headers['Upload-Offset'] || bodyLength > 0) {
        return json(409, errors.uploadConflict(`This upload is complete (${headers['Upload-Length']} bytes); it takes no more bytes.`).toJSON(), headers);
      }
      await req.body?.cancel().catch(() => undefined);
      try {
        const done = await deps.uploads.complete({ fileId: id, sourcePath: '' });
        const body = deps.files.toJson(done, await uow.ports.files.variants(done.id), requestBaseUrl(deps.publicUrl, req));
        return json(200, body, fileHeaders(done));
      } catch (err) {
        if (err instanceof AppError) return err.status < 500 ? gone(err, 'PATCH') : json(err.status, err.toJSON());
        throw err;
      }
    },
  };
}
