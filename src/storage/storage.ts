import type { Readable } from 'node:stream';

/**
 * Where a file's blobs live. Each file owns exactly one folder, addressed by its id, holding
 * `0.<ext>` (the original) and the generated variants. The local-folder implementation is the
 * embedded default; an S3-compatible one plugs in behind this same interface.
 */
export interface BlobStorage {
  /** Moves a finished local file (an upload, a processed variant) into the file's folder under `name`. */
  adopt(fileId: string, name: string, sourcePath: string): Promise<number>;
  /** Writes bytes under `name` atomically (temporary name, then rename). Returns the size. */
  write(fileId: string, name: string, data: Uint8Array): Promise<number>;
  /** A local scratch folder for the file's processing, removed by `discardWorkspace`. */
  workspace(fileId: string): Promise<string>;
  discardWorkspace(fileId: string): Promise<void>;
  /** Size and modification time, or undefined when absent. */
  stat(fileId: string, name: string): Promise<{ size: number; mtimeMs: number } | undefined>;
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
  /** The path of `name` relative to the media root, as nginx needs it for internal redirects. */
  relativePath(fileId: string, name: string): string;
  /** An absolute local path for readers that need one (sharp, ffmpeg). */
  localPath(fileId: string, name: string): string;
}

/** Temporary names (`<name>.tmp-<hex>`) used while a blob is written, then renamed away. */
export const isTempName = (name: string) => /\.tmp-[0-9a-f]+$/.test(name);
