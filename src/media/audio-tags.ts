import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errors } from '../errors.js';
import { BoundedChildError, NODE_RESERVED_BYTES, runBounded } from './bounded.js';
import type { TagsJson } from './audio-tags-child.js';

// Runs music-metadata on a user's file in a bounded child (audio-tags-child.ts) and turns how it ended
// into a verdict: the parser refusing the bytes, or needing more than one file's memory or time, is the
// content's fault (422); a child killed from outside or failing to start is the server's (retryable).

export type MediaBounds = {
  /** Working memory of one child, on top of what its runtime reserves. */
  memoryBytes: number;
  timeoutMs: number;
  signal?: AbortSignal;
};

export const defaultMediaBounds: MediaBounds = { memoryBytes: 1_000_000_000, timeoutMs: 60_000 };

const here = fileURLToPath(import.meta.url);
// From the TypeScript sources (tests, benches) the child runs under tsx; from dist/ it is plain JS.
const fromSources = here.endsWith('.ts');
const childFile = path.join(path.dirname(here), fromSources ? 'audio-tags-child.ts' : 'audio-tags-child.js');

/** The exit code by which the child says the parser refused the bytes. */
const PARSER_REFUSED = 3;

export async function readTags(filePath: string, bounds: MediaBounds = defaultMediaBounds): Promise<TagsJson> {
  // The parser's object trees live in the JS heap: a quarter of the working memory, at most 512 MB.
  const heapMb = Math.max(64, Math.min(512, Math.floor(bounds.memoryBytes / 4 / 1e6)));
  const args = [`--max-old-space-size=${heapMb}`, ...(fromSources ? ['--import', 'tsx'] : []), childFile, filePath];
  try {
    // Under tsx the address-space cap cannot apply (its WebAssembly reserves 32 GB): the heap cap still does.
    const { stdout } = await runBounded(process.execPath, args, {
      memoryBytes: fromSources ? Infinity : bounds.memoryBytes + NODE_RESERVED_BYTES,
      timeoutMs: bounds.timeoutMs,
      signal: bounds.signal,
    });
    return JSON.parse(stdout.toString('utf8')) as TagsJson;
  } catch (err) {
    if (!(err instanceof BoundedChildError)) throw err;
    if (err.reason === 'exit' && err.exitCode === PARSER_REFUSED) {
      throw errors.unprocessable(`The audio file is damaged and cannot be read (${err.message}).`, err);
    }
    if (err.reason === 'memory') {
      throw errors.unprocessable(
        `Reading the audio file's tags needs more than the ${Math.round(bounds.memoryBytes / 1e6)} MB of memory this server allows for one file; the file is damaged or crafted.`,
        err,
      );
    }
    if (err.reason === 'timeout') {
      throw errors.unprocessable(
        `Reading the audio file's tags took longer than ${Math.round(bounds.timeoutMs / 1000)} s, the limit for one file; the file is damaged or crafted.`,
        err,
      );
    }
    // Killed from outside, cancelled, or the child could not start: nothing says the file is at fault.
    throw err;
  }
}
