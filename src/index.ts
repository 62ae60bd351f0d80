import { loadConfig, ConfigError, type Config } from './config.js';
import { createChipmunk } from './chipmunk.js';

// Starts the process: config, database + migrations, HTTP server, graceful shutdown.
export async function start(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let config;
  let chipmunk;
  try {
    config = loadConfig(env);
    // The process's temporary files go inside its data directory, where the next start empties them
    // after a kill (@tus/s3-store spools parts to os.tmpdir() and cannot be told otherwise; /tmp would
    // keep a killed node's spool for good). Children (ffmpeg, the workers) inherit it.
    process.env.TMPDIR = config.tmpDir;
    chipmunk = createChipmunk(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`chipmunk: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  let port: number;
  try {
    ({ port } = await chipmunk.listen());
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`chipmunk: ${err.message}\n`);
    process.exit(2);
  }
  const url = config.publicUrl ?? `http://${config.host === '0.0.0.0' ? 'localhost' : config.host}:${port}`;
  chipmunk.logger.info('chipmunk listening', { url, dataDir: config.dataDir });
  if (config.demo) {
    process.stdout.write(`\nTry Chipmunk in your browser: ${url}/  (demo mode; CHIPMUNK_DEMO=off or NODE_ENV=production turns it off)\n\n`);
  }
  if (config.generatedSecrets) {
    // Said once, on the start that generated them. The values go only to a terminal: stdout is
    // often a log stream (journald, docker logs) that keeps them for anyone who reads logs.
    process.stdout.write(secretsNotice(config, Boolean(process.stdout.isTTY)));
  }
  // SIGTERM/SIGINT: stop accepting, let requests and jobs in flight finish within
  // CHIPMUNK_SHUTDOWN_TIMEOUT, close the database. A second signal exits at once.
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      chipmunk.logger.warn('second signal, exiting now', { signal });
      process.exit(1);
    }
    stopping = true;
    chipmunk.logger.info('shutting down', { signal, timeoutMs: config.shutdownTimeoutMs });
    setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 10_000).unref();
    chipmunk.close().then(
      () => process.exit(0),
      (err: unknown) => {
        chipmunk.logger.error('shutdown failed', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** Where the generated secrets are; their values only when `toTerminal`. */
export function secretsNotice(config: Pick<Config, 'dataDir' | 'apiKey' | 'secret'>, toTerminal: boolean): string {
  const file = `${config.dataDir}/secrets.json`;
  if (!toTerminal) return `\nChipmunk generated its API key and secret in ${file} (mode 0600, readable by this user only); read them there.\n\n`;
  return `\nChipmunk generated its secrets in ${file} (shown once, on this terminal only):\n  CHIPMUNK_API_KEY=${config.apiKey}\n  CHIPMUNK_SECRET=${config.secret}\n\n`;
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) await start();
