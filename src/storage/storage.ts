import type { Readable } from 'node:stream';

/**
 * Where a file's blobs live. Each file owns exactly one folder (a key prefix on object storage),
 * addressed by its id, holding `0.<ext>` (the original) and the generated variants. Two
 * implementations: the local media folder (`local.ts`, the embedded default) and any
 * `ObjectStore`, such as an S3-compatible bucket (`object-blobs.ts`). Processing scratch
 * (workspaces) is always a local folder.
 */
export interface BlobStorage {
  /**
   * Moves a finished local file (an upload, a processed variant) into the file's folder under
   * `name`; the blob is whole, with the source's size (and, on object storage, its SHA-256) checked
   * as it lands, before the promise resolves. Returns the size.
   */
  adopt(fileId: string, name: string, sourcePath: string): Promise<number>;
  /** Writes bytes under `name` atomically (temporary name, then rename). Returns the size. */
  write(fileId: string, name: string, data: Uint8Array): Promise<number>;
  /** A local scratch folder for the file's processing, removed by `discardWorkspace`. */
  workspace(fileId: string): Promise<string>;
  discardWorkspace(fileId: string): Promise<void>;
  /** Size and modification time (an object's Last-Modified), or undefined when absent. */
  stat(fileId: string, name: string): Promise<{ size: number; mtimeMs: number } | undefined>;
  /** The bytes (`range` inclusive); an absent blob makes the stream fail with `code: 'ENOENT'`. */
  read(fileId: string, name: string, range?: { start: number; end: number }): Readable;
  /** Removes one name from the file's folder (a leftover temporary file). Safe to call twice. */
  removeName(fileId: string, name: string): Promise<void>;
  /** Ids of the processing workspaces present (none survive a clean process; leftovers are a crash's). */
  listWorkspaces(): Promise<string[]>;
  /** Removes every processing workspace; only safe when no processing runs (at start-up). */
  discardAllWorkspaces(): Promise<number>;
  /** Removes the file's whole folder. Safe to call twice. */
  removeFolder(fileId: string): Promise<void>;
  /** Ids of every file folder present, for consistency checks. */
  listFolders(): AsyncIterable<string>;
  /** Names inside one file's folder. */
  listNames(fileId: string): Promise<string[]>;
  /**
   * Where `name` is inside the store: its path relative to the media root, which is also its
   * object key (`ab/cd/<id>/<name>`), as nginx needs it for internal redirects.
   */
  relativePath(fileId: string, name: string): string;
  /**
   * A local file holding the blob's bytes, for readers that need a path (sharp, ffmpeg), valid
   * until `discardWorkspace`: object storage downloads it into the file's workspace (made if
   * needed); the local folder answers its own file (no copy).
   */
  fetchToWorkspace(fileId: string, name: string): Promise<string>;
}

/** Temporary names (`<name>.tmp-<hex>`) used while a blob is written, then renamed away. */
export const isTempName = (name: string) => /\.tmp-[0-9a-f]+$/.test(name);
