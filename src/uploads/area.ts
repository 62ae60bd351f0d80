import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { errors } from '../errors.js';
import { fileIdPattern } from '../ids.js';
import { unlessAbsent } from '../storage/absent.js';

// The tus upload area: where unfinished uploads live, what start-up recovery, the expiry sweep and
// fsck look at. Two implementations: this local folder (the embedded default) and a key prefix of
// the S3 bucket (storage/s3-upload-area.ts), chosen once in uploads/open.ts.

export type UploadEntry = { id: string; dataBytes?: number; hasSidecar: boolean };

export interface UploadArea {
  /** Where the upload's bytes are: a path in the local area, a key in the bucket's (what the received area's `keep` takes). */
  dataPath(id: string): string;
  /**
   * Removes everything of the upload (bytes, tus's record, an unfinished multipart upload); in the
   * bucket a completed upload's whole is the received area's and stays. `completed`: the caller has
   * just completed it, so there is no unfinished multipart upload to look for. Safe to call twice.
   */
  discard(id: string, opts?: { completed?: boolean }): Promise<void>;
  /** Every upload present, keyed by id; names that are not ours are left alone. */
  list(): Promise<Map<string, UploadEntry>>;
  /** Bytes received so far, or undefined when the upload's bytes are gone. */
  receivedBytes(id: string): Promise<number | undefined>;
  /** True when tus's record of the upload is present and readable (a kill can leave it half written). */
  sidecarReadable(id: string): Promise<boolean>;
  /** Makes the upload's bytes one whole at `dataPath` once all of them arrived, if the store left them in pieces (S3: the multipart upload). */
  complete?(id: string): Promise<void>;
}

/** The local folder: `<id>` holds the bytes received so far, `<id>.json` tus's record of the upload (its declared size and metadata). */
export function createUploadArea(uploadDir: string): UploadArea & { dir: string } {
  const dataPath = (id: string) => {
    if (!fileIdPattern.test(id)) throw errors.uploadGone();
    return path.join(uploadDir, id);
  };

  return {
    dir: uploadDir,
    dataPath,

    /** Removes both files of an upload. Safe to call twice. */
    async discard(id: string): Promise<void> {
      await rm(dataPath(id), { force: true });
      await rm(`${dataPath(id)}.json`, { force: true });
    },

    /** Every upload present, keyed by id; names that are not ours are left alone. */
    async list(): Promise<Map<string, UploadEntry>> {
      const entries = new Map<string, UploadEntry>();
      const names = await unlessAbsent(`Listing the upload folder ${uploadDir}`, () => readdir(uploadDir), []);
      for (const name of names) {
        const id = name.endsWith('.json') ? name.slice(0, -5) : name;
        if (!fileIdPattern.test(id)) continue;
        const entry = entries.get(id) ?? { id, hasSidecar: false };
        if (name.endsWith('.json')) entry.hasSidecar = true;
        entries.set(id, entry);
      }
      return entries;
    },

    /** Bytes received so far, or undefined when the data file is gone. */
    async receivedBytes(id: string): Promise<number | undefined> {
      const file = dataPath(id);
      const s = await unlessAbsent(`Reading upload ${id}`, () => stat(file), undefined);
      return s?.isFile() ? s.size : undefined;
    },

    /** True when tus's record of the upload is present and readable (a kill can leave it half written). */
    async sidecarReadable(id: string): Promise<boolean> {
      const record = `${dataPath(id)}.json`;
      const text = await unlessAbsent(`Reading upload ${id}'s record`, () => readFile(record, 'utf8'), undefined);
      if (text === undefined) return false;
      try {
        return (JSON.parse(text) as { id?: unknown } | null)?.id === id;
      } catch {
        return false;
      }
    },
  };
}
