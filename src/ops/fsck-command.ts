import path from 'node:path';
import { loadConfig } from '../config.js';
import { openToolPersistence } from '../db/open.js';
import { openBlobStorage } from '../storage/open.js';
import { openUploadAreas } from '../uploads/open.js';
import { tryLockDataDir, recordedPid } from '../db/data-dir-lock.js';
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
  // The data directory's lock says whether a server is live (a pid file may be stale or missing);
  // with PostgreSQL, whether any node is connected to the database.
  const lock = tryLockDataDir(config.dataDir, { pidFile: false });
  const persistence = openToolPersistence(config);
  const nodes = await persistence.liveNodes().catch(async (err: unknown) => {
    await persistence.close();
    lock?.release();
    throw err;
  });
  const live = !lock || (nodes ?? 0) > 0;
  const refuse = async (why: string) => {
    process.stderr.write(`chipmunk fsck: ${why}\n`);
    await persistence.close();
    lock?.release();
    return 2;
  };
  if (repair && !lock) {
    const pid = recordedPid(config.dataDir);
    return refuse(`a Chipmunk server${pid ? ` (pid ${pid})` : ''} is using ${config.dataDir}; stop it before --repair.`);
  }
  if (repair && nodes) return refuse(`${nodes} Chipmunk node${nodes === 1 ? ' is' : 's are'} connected to the database; stop every node before --repair.`);
  // One repair at a time across the cluster (a cluster-wide advisory lock).
  if (repair && !(await persistence.lockForRepair())) return refuse('another chipmunk fsck --repair is running on this database.');
  // Read-only beside a live server: the lock is given back at once, so the server can start meanwhile.
  if (!repair) lock?.release();
  // The media folder or the S3 bucket, as the server uses it: fsck compares the database with its listing.
  const blobs = openBlobStorage(config, path.join(config.dataDir, 'work'));
  // The upload areas as the server uses them (the data directory, or the bucket's uploads/ and received/).
  const uploadAreas = openUploadAreas(config);
  try {
    const deps = {
      repo: persistence.repo,
      storage: blobs.storage,
      area: uploadAreas.area,
      received: uploadAreas.received,
    };
    if (live) process.stdout.write('note: a server is running on this data directory; its uploads, jobs and processing in flight are reported as notices.\n');
    const report = await fsck(deps, { repair, live });
    process.stdout.write(formatFsckReport(report, { repair }));
    if (!repair || report.problems.length === 0) return report.problems.length ? 1 : 0;
    const after = await fsck(deps);
    process.stdout.write(after.problems.length ? `after repair:\n${formatFsckReport(after)}` : 'after repair: clean.\n');
    return after.problems.length ? 1 : 0;
  } finally {
    blobs.close();
    uploadAreas.close();
    await persistence.close();
    lock?.release();
  }
}
