import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';

// Runs a parser or encoder of user bytes as a bounded child: an address-space cap (prlimit), a
// wall-clock limit, its own process group (terminal and group signals do not reach it; the server
// decides when it stops), and death with the server (setpriv --pdeathsig). Written to the shared
// API in HELPERS.md so HEIC decoding can use it now; h12m's version of this file wins at merge.

export type BoundedOptions = {
  memoryBytes: number;
  timeoutMs: number;
  signal?: AbortSignal;
  input?: Buffer | NodeJS.ReadableStream;
  cwd?: string;
};

export type BoundedReason = 'memory' | 'timeout' | 'exit' | 'signal' | 'aborted';

export class BoundedChildError extends Error {
  constructor(
    readonly reason: BoundedReason,
    readonly exitCode: number | null,
    readonly stderr: string,
    message: string,
  ) {
    super(message);
    this.name = 'BoundedChildError';
  }
}

/** Output kept per stream; a child printing more is not one we want to read anyway. */
const MAX_OUTPUT = 64 * 1024 * 1024;

export function runBounded(command: string, args: string[], opts: BoundedOptions): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new BoundedChildError('aborted', null, '', `${command} was not started: aborted`));
      return;
    }
    const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'prlimit', `--as=${Math.floor(opts.memoryBytes)}`, '--', command, ...args], {
      cwd: opts.cwd,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let stopped: BoundedReason | undefined;
    const kill = (reason: BoundedReason) => {
      if (stopped) return;
      stopped = reason;
      try {
        // The whole group: a child that forked its own helpers takes them with it.
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => kill('timeout'), opts.timeoutMs);
    const onAbort = () => kill('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_OUTPUT) kill('memory');
      else out.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (err.length < 64 * 1024) err += chunk.toString('utf8');
    });
    child.stdin.on('error', () => {});
    if (opts.input instanceof Buffer) child.stdin.end(opts.input);
    else if (opts.input) (opts.input as Readable).pipe(child.stdin);
    else child.stdin.end();

    child.once('error', (e) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new BoundedChildError('exit', null, err, `${command} could not be started: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (!stopped && code === 0) {
        resolve({ stdout: Buffer.concat(out), stderr: err });
        return;
      }
      // An allocation refused under the address-space cap shows up as bad_alloc, ENOMEM or an abort.
      const reason: BoundedReason = stopped ?? (/bad_alloc|out of memory|cannot allocate|ENOMEM/i.test(err) || signal === 'SIGABRT' ? 'memory' : signal ? 'signal' : 'exit');
      reject(new BoundedChildError(reason, code, err, `${command} stopped (${reason}${code !== null ? `, exit ${code}` : ''}${signal ? `, ${signal}` : ''}): ${err.trim().slice(0, 300)}`));
    });
  });
}
