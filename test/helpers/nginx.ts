import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { nginxConfigCommand } from '../../src/cli.js';
import type { TestChipmunk } from './chipmunk.js';
import { freePort } from './server-process.js';

export const NGINX_BIN = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p)) ?? 'nginx';

export type TestNginx = { url: string; prefix: string; config: string; close(): Promise<void> };

/**
 * Real nginx in front of a test Chipmunk, configured by the very command operators run
 * (`chipmunk nginx-config`, reading the same environment as that Chipmunk), on a free port.
 */
export async function startNginx(
  t: TestChipmunk,
  opts: { authCacheSeconds?: number; extraServerConfig?: string; env?: Record<string, string> } = {},
): Promise<TestNginx> {
  // When the tests run as root, nginx's workers run as nobody: they must reach the media.
  await chmod(t.dataDir, 0o755);
  const env = {
    ...t.serviceEnv,
    CHIPMUNK_DATA_DIR: t.dataDir,
    CHIPMUNK_INTERNAL_PORT: String(t.internalPort),
    CHIPMUNK_AUTH_CACHE: String(opts.authCacheSeconds ?? 5),
    ...opts.env,
  };
  return runNginx((listen) => {
    const config = nginxConfigCommand(['--listen', listen, '--upstream', t.url], env);
    return opts.extraServerConfig ? config.replace(/\n    }\n}\n$/, `\n${opts.extraServerConfig}\n    }\n}\n`) : config;
  });
}

/**
 * Real nginx in front of several nodes (`--upstream` and `--auth-upstream` once per node), with the
 * media folder and settings `env` names, as operators run it.
 */
export async function startNginxOver(nodes: Array<{ url: string; internalUrl: string }>, env: Record<string, string>): Promise<TestNginx> {
  if (env.CHIPMUNK_DATA_DIR) await chmod(env.CHIPMUNK_DATA_DIR, 0o755);
  const args = nodes.flatMap((node) => ['--upstream', node.url, '--auth-upstream', node.internalUrl]);
  return runNginx((listen) => nginxConfigCommand(['--listen', listen, ...args], env));
}

/** nginx with the config `render` gives for a free loopback port, running until close(). */
async function runNginx(render: (listen: string) => string): Promise<TestNginx> {
  const prefix = await mkdtemp(path.join(tmpdir(), 'chipmunk-nginx-'));
  await chmod(prefix, 0o755);
  const port = await freePort();
  const config = render(`127.0.0.1:${port}`);
  const file = path.join(prefix, 'nginx.conf');
  await writeFile(file, config);
  const proc: ChildProcess = spawn(NGINX_BIN, ['-p', prefix, '-c', file, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null)
      throw new Error(`nginx exited (${proc.exitCode}): ${stderr}${await readFile(path.join(prefix, 'error.log'), 'utf8').catch(() => '')}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (i > 200) throw new Error(`nginx did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    prefix,
    config,
    async close() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await exited;
      }
      await rm(prefix, { recursive: true, force: true });
    },
  };
}
