import { fork, spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';

// Every parser and encoder of user bytes runs here: in a child process with a memory cap (RLIMIT_AS,
// set by util-linux's prlimit before the program starts) and a wall-clock limit, killed when it passes
// either. Children are leaders of their own process group (`detached`), so a SIGTERM sent to the
// server's group or a terminal's Ctrl-C never reaches them: the server decides when they stop. They die
// with the server: setpriv sets the parent-death signal to SIGKILL before the program starts (forked
// Node children also exit when their IPC channel closes).

export type BoundedReason = 'memory' | 'timeout' | 'exit' | 'signal' | 'aborted';

export type BoundedOptions = {
  /** Address-space cap of the child (RLIMIT_AS), in bytes. */
  memoryBytes: number;
  /** Wall-clock limit; the child's process group is killed when it passes. */
  timeoutMs: number;
  /** Aborting kills the child (the file was deleted, the server is stopping). */
  signal?: AbortSignal;
  /** Written to the child's stdin; without it stdin is closed. */
  input?: Buffer | NodeJS.ReadableStream;
  cwd?: string;
  /** Streams stdout here instead of collecting it (a PCM pipe); the result's stdout is then empty. */
  onStdout?: (chunk: Buffer) => void;
};

/** How a bounded child ended badly. `memory` and `timeout` are our caps; `signal` is a kill from elsewhere. */
export class BoundedChildError extends Error {
  override name = 'BoundedChildError';
  constructor(
    message: string,
    readonly reason: BoundedReason,
    readonly exitCode: number | null,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const STDERR_TAIL = 16 * 1024;

/** util-linux's wrappers, when this machine has them (Linux); elsewhere children run without caps. */
const wrappers = (() => {
  const has = (tool: string) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
  return { setpriv: has('setpriv'), prlimit: has('prlimit') };
})();

/** The command line that runs `command` with the memory cap and the parent-death signal. */
export function boundedCommand(command: string, args: string[], memoryBytes: number): { file: string; args: string[] } {
  let line = [command, ...args];
  if (wrappers.prlimit && Number.isFinite(memoryBytes)) line = ['prlimit', `--as=${Math.floor(memoryBytes)}`, '--', ...line];
  if (wrappers.setpriv) line = ['setpriv', '--pdeathsig', 'SIGKILL', '--', ...line];
  return { file: line[0]!, args: line.slice(1) };
}

/**
 * The environment of every bounded child: glibc reserves 64 MB of address space per thread arena,
 * which would count against RLIMIT_AS without being used; two arenas are plenty for one job at a time.
 */
export function boundedEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX ?? '2' };
}

/** What an allocation failure looks like on stderr: glibc/ffmpeg, libvips, V8, C++. */
const memoryFailure = /cannot allocate memory|out of memory|\bENOMEM\b|bad_alloc|Fatal process OOM|heap out of memory|allocation failed|failed to reserve/i;

export function looksLikeMemoryFailure(stderr: string): boolean {
  return memoryFailure.test(stderr);
}

/** Kills the child's whole process group (it leads one: `detached`). */
export function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // Already gone.
    child.kill('SIGKILL');
  }
}

/**
 * Runs `command` bounded; resolves with its stdout and stderr when it exits 0. The collected stdout
 * counts against the memory cap too: a child cannot flood the server through its pipe.
 */
export function runBounded(command: string, args: string[], opts: BoundedOptions): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted)
      return reject(new BoundedChildError(`${command} was not started: the work was cancelled`, 'aborted', null, '', { cause: opts.signal.reason }));
    const line = boundedCommand(command, args, opts.memoryBytes);
    const child = spawn(line.file, line.args, {
      cwd: opts.cwd,
      env: boundedEnv(),
      detached: true,
      stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    let collected = 0;
    let stderr = '';
    let killedFor: 'memory' | 'timeout' | 'aborted' | undefined;
    const kill = (why: NonNullable<typeof killedFor>) => {
      killedFor ??= why;
      killGroup(child);
    };
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      stderr = (stderr + s).slice(-STDERR_TAIL);
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      if (opts.onStdout) return opts.onStdout(chunk);
      collected += chunk.length;
      if (collected > opts.memoryBytes) return kill('memory');
      chunks.push(chunk);
    });
    if (opts.input && child.stdin) {
      // A child that exits without reading all of its input is judged by its exit, not by EPIPE.
      child.stdin.on('error', () => {});
      if (Buffer.isBuffer(opts.input)) child.stdin.end(opts.input);
      else opts.input.pipe(child.stdin);
    }
    const timer = setTimeout(() => kill('timeout'), opts.timeoutMs);
    const onAbort = () => kill('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const done = () => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    child.once('error', (err) => {
      done();
      reject(new BoundedChildError(`${command} could not start: ${err.message}`, 'exit', null, stderr, { cause: err }));
    });
    child.once('close', (code, signal) => {
      done();
      if (code === 0 && !killedFor) return resolve({ stdout: Buffer.concat(chunks), stderr });
      const reason = classifyEnd({ code, signal, stderr, killedFor });
      reject(
        new BoundedChildError(
          describeEnd(command, reason, { code, signal, stderr, opts }),
          reason,
          code,
          stderr,
          reason === 'aborted' ? { cause: opts.signal?.reason } : undefined,
        ),
      );
    });
  });
}

/** Why a child ended: our own kill first, then what its stderr says, then how it ended. */
export function classifyEnd(end: {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  killedFor?: 'memory' | 'timeout' | 'aborted';
}): BoundedReason {
  if (end.killedFor) return end.killedFor;
  if (looksLikeMemoryFailure(end.stderr)) return 'memory';
  // V8 aborts (SIGABRT/SIGTRAP) on a failed reservation; a segfault under RLIMIT_AS is usually one too,
  // but without the sentence on stderr it is not ours to call: a crash is a server-side failure.
  return end.signal ? 'signal' : 'exit';
}

function describeEnd(
  command: string,
  reason: BoundedReason,
  end: { code: number | null; signal: NodeJS.Signals | null; stderr: string; opts: BoundedOptions },
): string {
  const name = command.split('/').pop();
  switch (reason) {
    case 'memory':
      return `${name} needed more than its ${Math.round(end.opts.memoryBytes / 1e6)} MB of memory`;
    case 'timeout':
      return `${name} took longer than ${seconds(end.opts.timeoutMs)} s`;
    case 'aborted':
      return `${name} was stopped: the work was cancelled`;
    case 'signal':
      return `${name} was killed by ${end.signal}`;
    default:
      return lastLine(end.stderr) || `${name} ended with exit code ${end.code}`;
  }
}

export type BoundedForkOptions = {
  /** Address-space cap on top of what Node itself reserves (about 0.75 GB for an empty process). */
  memoryBytes: number;
  /** V8's old-space cap in MB (the JS heap: parsers' object trees live there). */
  heapMb?: number;
  /**
   * False leaves out the address-space cap (the heap cap stays): under tsx (tests, benches from the
   * TypeScript sources) WebAssembly reserves some 32 GB of address space it never uses.
   */
  capAddressSpace?: boolean;
  execArgv?: string[];
  stdio?: StdioOptions;
};

/**
 * Address space an idle Node process reserves without using it (V8's code range, heap cages, thread
 * stacks): 0.73 GB measured for Node 20 and 0.91 GB with sharp loaded. Node children get it on top of
 * their working memory, so the cap bounds what the work itself may take.
 */
export const NODE_RESERVED_BYTES = 1_000_000_000;

/**
 * Forks a Node module the way runBounded starts a program: memory-capped, in its own process group,
 * killed by the kernel when the server dies. The IPC channel works through the wrappers (they exec).
 */
export function forkBounded(modulePath: string, args: string[], opts: BoundedForkOptions): ChildProcess {
  const nodeArgs = [...(opts.heapMb ? [`--max-old-space-size=${Math.floor(opts.heapMb)}`] : []), ...(opts.execArgv ?? [])];
  const line = boundedCommand(process.execPath, nodeArgs, opts.capAddressSpace === false ? Infinity : opts.memoryBytes + NODE_RESERVED_BYTES);
  return fork(modulePath, args, {
    execPath: line.file,
    execArgv: line.args,
    env: boundedEnv(),
    detached: true,
    stdio: opts.stdio ?? ['ignore', 'inherit', 'pipe', 'ipc'],
  });
}

const seconds = (ms: number) => Number((ms / 1000).toFixed(ms < 10_000 ? 1 : 0));

function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  // ffmpeg prefixes lines with "[component @ 0x…]"; the address means nothing to a person.
  return (lines[lines.length - 1] ?? '').replace(/\s*@ 0x[0-9a-f]+/g, '').slice(0, 300);
}
