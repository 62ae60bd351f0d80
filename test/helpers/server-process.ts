import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import path from 'node:path';

// The real server as a child process (`node dist/src/index.js`), for tests that kill it.

export const root = path.resolve(import.meta.dirname, '../..');
const entry = path.join(root, 'dist/src/index.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const s = statSync(p);
    newest = Math.max(newest, s.isDirectory() ? newestMtime(p) : s.mtimeMs);
  }
  return newest;
}

/** `npm test` builds first; a targeted `vitest run` builds here when dist/ is missing or older than src/. */
export function ensureBuilt(): void {
  if (existsSync(entry) && statSync(entry).mtimeMs >= newestMtime(path.join(root, 'src'))) return;
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export type ServerProcess = {
  proc: ChildProcess;
  url: string;
  /** Resolves when the process ends, with how it ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
};

/** `detached` starts the server as the leader of its own process group (for tests that signal the group). */
export async function spawnServer(env: Record<string, string>, opts: { readyTimeoutMs?: number; detached?: boolean } = {}): Promise<ServerProcess> {
  // A free internal (auth) port, so servers started side by side never collide on the default 8081.
  const proc = spawn(process.execPath, [entry], {
    cwd: root,
    env: { ...process.env, CHIPMUNK_INTERNAL_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached,
  });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let gone = false;
  void exited.then(() => (gone = true));
  const url = `http://127.0.0.1:${env.PORT}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (gone) throw new Error(`server exited before answering:\n${out}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`server did not answer /health in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { proc, url, exited, output: () => out };
}

/** Runs `chipmunk <args>` (the bin) and returns its exit code and output. */
export function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [path.join(root, 'bin/chipmunk.js'), ...args], { cwd: root, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => (stdout += d));
    proc.stderr.on('data', (d) => (stderr += d));
    proc.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * A fresh data directory and the environment for a server process on a free port, with the secrets
 * set by the test (so it can mint tokens); `extra` adds or overrides variables.
 */
export async function serverEnvironment(name: string, extra: Record<string, string> = {}): Promise<{ dataDir: string; env: Record<string, string> }> {
  ensureBuilt();
  const dataDir = await mkdtemp(path.join(tmpdir(), `chipmunk-${name}-`));
  const env = {
    PORT: String(await freePort()),
    HOST: '127.0.0.1',
    CHIPMUNK_DATA_DIR: dataDir,
    CHIPMUNK_API_KEY: `ck_${randomBytes(18).toString('base64url')}`,
    CHIPMUNK_SECRET: randomBytes(32).toString('base64url'),
    CHIPMUNK_LOG_LEVEL: 'warn',
    CHIPMUNK_DISK_MARGIN: '0',
    ...extra,
  };
  return { dataDir, env };
}

/** True while the process runs: a zombie (exited, not yet reaped by its parent) counts as gone. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
