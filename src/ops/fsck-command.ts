import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../config.js';
import { openDatabase } from '../db/index.js';
import { createRepository } from '../db/repository.js';
import { createLocalStorage } from '../storage/local.js';
import { createUploadArea } from '../uploads/area.js';
import { createReceivedArea } from '../uploads/received.js';
import { formatFsckReport, fsck } from './fsck.js';

/** `chipmunk fsck [--repair]`: prints the report; exit 0 clean, 1 problems (left), 2 refused to run. */
export async function fsckCommand(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const unknown = args.filter((a) => a !== '--repair');
  if (unknown.length) {
    process.stderr.write(`chipmunk fsck: unknown argument ${unknown[0]}. Usage: chipmunk fsck [--repair]\n`);
    return 2;
  }
  const repair = args.includes('--repair');
  const config = loadConfig(env);
  const livePid = runningServerPid(config.dataDir);
  if (repair && livePid) {
    process.stderr.write(`chipmunk fsck: a Chipmunk server (pid ${livePid}) is using ${config.dataDir}; stop it before --repair.\n`);
    return 2;
  }
  const db = openDatabase(config.databasePath);
  try {
    const deps = {
      repo: createRepository(db),
      storage: createLocalStorage({ mediaDir: config.mediaDir, workDir: path.join(config.dataDir, 'work') }),
      area: createUploadArea(config.uploadDir),
      received: createReceivedArea(path.join(config.dataDir, 'received')),
    };
    if (livePid) process.stdout.write(`note: a server (pid ${livePid}) is running; uploads in flight may show as problems.\n`);
    const report = await fsck(deps, { repair });
    process.stdout.write(formatFsckReport(report, { repair }));
    if (!repair || report.problems.length === 0) return report.problems.length ? 1 : 0;
    const after = await fsck(deps);
    process.stdout.write(after.problems.length ? `after repair:\n${formatFsckReport(after)}` : 'after repair: clean.\n');
    return after.problems.length ? 1 : 0;
  } finally {
    db.$client.close();
  }
}

function runningServerPid(dataDir: string): number | undefined {
  const file = path.join(dataDir, 'chipmunk.pid');
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive but someone else's; ESRCH: a stale file left by a killed server.
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}
