import path from 'node:path';
import { loadConfig } from '../config.js';
import { openDatabase } from '../db/index.js';
import { createRepository } from '../db/repository.js';
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
  // The data directory's lock says whether a server is live (a pid file may be stale or missing).
  const lock = tryLockDataDir(config.dataDir, { pidFile: false });
  const live = !lock;
  if (repair && live) {
    const pid = recordedPid(config.dataDir);
    process.stderr.write(`chipmunk fsck: a Chipmunk server${pid ? ` (pid ${pid})` : ''} is using ${config.dataDir}; stop it before --repair.\n`);
    return 2;
  }
  // Read-only beside a live server: the lock is given back at once, so the server can start meanwhile.
  if (!repair) lock?.release();
  const db = openDatabase(config.databasePath);
  // The media folder or the S3 bucket, as the server uses it: fsck compares the database with its listing.
  const blobs = openBlobStorage(config, path.join(config.dataDir, 'work'));
  // The upload areas as the server uses them (the data directory, or the bucket's uploads/ and received/).
  const uploadAreas = openUploadAreas(config);
  try {
    const deps = {
      repo: createRepository(db),
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
    db.$client.close();
    lock?.release();
  }
}
