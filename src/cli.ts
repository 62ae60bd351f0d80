import { parseArgs } from 'node:util';
import { ConfigError, dataPaths, internalPort, parseDistributedSettings, parseEnvironment } from './config.js';
import { renderNginxConfig } from './delivery/nginx-config.js';
import { start } from './index.js';
import { fsckCommand } from './ops/fsck-command.js';
import { loadPurposes } from './purposes.js';
import { objectOrigin } from './storage/object-location.js';

// `chipmunk <command>`: start (default) runs the server; the others are operator tools.
export async function main(argv: string[]): Promise<void> {
  const [command = 'start', ...rest] = argv;
  try {
    switch (command) {
      case 'start':
        await start();
        return;
      case 'nginx-config':
        process.stdout.write(nginxConfigCommand(rest));
        return;
      case 'fsck':
        process.exitCode = await fsckCommand(rest);
        return;
      default:
        process.stderr.write(`chipmunk: unknown command "${command}". Commands: start, nginx-config, fsck [--repair]\n`);
        process.exit(2);
    }
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UsageError) {
      process.stderr.write(`chipmunk ${command}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

class UsageError extends Error {}

function internalOrigin(upstream: string, port: number): string {
  if (port === 0) throw new UsageError('CHIPMUNK_INTERNAL_PORT is 0 (a free port at start): give --auth-upstream or a fixed port.');
  let url: URL;
  try {
    url = new URL(upstream);
  } catch {
    throw new UsageError(`--upstream must be a URL such as http://127.0.0.1:8080, not "${upstream}".`);
  }
  url.port = String(port);
  return url.origin;
}

const nginxUsage =
  'usage: chipmunk nginx-config --listen <host:port> --upstream <http://node:port> [--upstream <http://node:port> …] [--auth-upstream <http://node:internal-port> …] [--user <worker user>]';

/**
 * Renders the nginx config for the Chipmunk this environment describes: the media folder from
 * CHIPMUNK_DATA_DIR, the auth endpoint on CHIPMUNK_INTERNAL_PORT of each --upstream's host (unless
 * --auth-upstream names them), the auth cache time from CHIPMUNK_AUTH_CACHE and the upload body
 * limit from the purposes. --upstream once per node. Reads the environment only; writes nothing.
 */
export function nginxConfigCommand(args: string[], env: NodeJS.ProcessEnv = process.env): string {
  let values: { listen?: string; upstream?: string[]; 'auth-upstream'?: string[]; user?: string };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        listen: { type: 'string' },
        upstream: { type: 'string', multiple: true },
        'auth-upstream': { type: 'string', multiple: true },
        user: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${nginxUsage}`);
  }
  if (!values.listen || !values.upstream?.length) throw new UsageError(`--listen and --upstream are required.\n${nginxUsage}`);
  const upstreams = values.upstream;
  const e = parseEnvironment(env);
  const purposes = loadPurposes(e.CHIPMUNK_PURPOSES_FILE);
  const { s3 } = parseDistributedSettings(env);
  try {
    // Each node's internal port is on its own host: the same CHIPMUNK_INTERNAL_PORT on every node.
    const authUpstreams = values['auth-upstream'] ?? upstreams.map((upstream) => internalOrigin(upstream, internalPort(e)));
    return renderNginxConfig({
      listen: values.listen,
      upstreams,
      authUpstreams,
      mediaDir: dataPaths(e.CHIPMUNK_DATA_DIR).mediaDir,
      authCacheSeconds: e.CHIPMUNK_AUTH_CACHE,
      corsOrigins: e.CHIPMUNK_CORS_ORIGINS,
      maxUploadBytes: Math.max(...purposes.all().map((p) => p.maxBytes)),
      user: values.user,
      // Blobs in a bucket (CHIPMUNK_S3_*): nginx fetches them from its endpoint with presigned GETs.
      objectOrigin: s3 ? objectOrigin(s3).origin : undefined,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
