import type { Repository } from '../db/repository.js';
import type { FileRow } from '../db/schema.js';
import { fileIdPattern } from '../ids.js';
import { isTempName, type BlobStorage } from '../storage/storage.js';
import type { UploadArea } from '../uploads/area.js';
import type { ReceivedArea } from '../uploads/received.js';

// `chipmunk fsck`: compares the database with the media folder and the upload area. Every
// finding is a problem (exit 1) or a notice (work that is merely pending). `--repair` fixes what
// is safe to fix, says what it did, and checks again. `--repair` runs only with the server stopped
// (it takes the data directory's lock); read-only beside a live server (`live`), running jobs,
// processing scratch and uploads being completed are notices, not problems.

export type Finding = { kind: string; subject: string; detail: string; repairable: boolean };
export type FsckReport = { problems: Finding[]; notices: Finding[]; repaired: string[] };

export type FsckDeps = { repo: Repository; storage: BlobStorage; area: UploadArea; received?: ReceivedArea; now?: number };

const PAGE = 500;
/** How long after its commit a stored file's tus files may still be on their way out, beside a live server. */
const FRESH_COMMIT_MS = 60_000;

export async function fsck(deps: FsckDeps, opts: { repair?: boolean; live?: boolean } = {}): Promise<FsckReport> {
  const { repo, storage, area } = deps;
  const now = deps.now ?? Date.now();
  const problems: Finding[] = [];
  const notices: Finding[] = [];
  const repaired: string[] = [];
  const problem = (kind: string, subject: string, detail: string, repairable: boolean) => problems.push({ kind, subject, detail, repairable });
  const repair = async (what: string, action: () => Promise<void> | void) => {
    if (!opts.repair) return;
    await action();
    repaired.push(what);
  };
  const uploadsPresent = await area.list();
  const rowIds = new Set<string>();
  const awaiting = new Set<string>();
  /** Unfinished uploads: in the bucket a completed one's bytes are already at its received key. */
  const uploading = new Set<string>();

  // 1. Every file row against its folder, its variants and its upload.
  let after = '';
  for (;;) {
    const page = await repo.filesPage(after, PAGE);
    if (page.length === 0) break;
    after = page[page.length - 1]!.id;
    for (const file of page) {
      rowIds.add(file.id);
      if (file.status === 'uploading') await checkUpload(file);
      else if ((file.status === 'received' || file.status === 'processing') && file.committedAt === null) await checkAwaiting(file);
      else if (file.status === 'deleting') {
        problem('unfinished-delete', file.id, 'a delete was interrupted (its bytes were already given back)', true);
        await repair(`finished the delete of ${file.id}`, async () => {
          await storage.removeFolder(file.id);
          await repo.finishDelete(file.id);
        });
      } else await checkStored(file);
    }
  }

  async function checkUpload(file: FileRow) {
    uploading.add(file.id);
    const entry = uploadsPresent.get(file.id);
    uploadsPresent.delete(file.id);
    const received = entry ? await area.receivedBytes(file.id) : undefined;
    const folder = await storage.listNames(file.id);
    let why: string | undefined;
    if (folder.length > 0) why = 'an unfinished upload has a media folder (killed between the move and the commit)';
    else if (received === undefined) why = 'an unfinished upload has no bytes in the upload area';
    else if (!entry?.hasSidecar || !(await area.sidecarReadable(file.id))) why = "an unfinished upload lost tus's record of it";
    else if (received >= (file.uploadLength ?? file.bytes) && received > 0) {
      // The last byte is a commitment: the next start makes it 'received' and processes it.
      notices.push({
        kind: 'upload-complete',
        subject: file.id,
        detail: `all ${received} bytes received; processed ${opts.live ? 'by the live server' : 'at the next start'}`,
        repairable: false,
      });
      return;
    } else if (file.expiresAt !== null && file.expiresAt <= now) why = 'an unfinished upload expired but still holds its reservation';
    // Beside a live server an upload between its move and its commit is being completed, not stuck.
    if (opts.live && why && folder.length > 0) why = undefined;
    if (!why) {
      notices.push({ kind: 'upload-in-progress', subject: file.id, detail: `${received} of ${file.bytes} bytes received`, repairable: false });
      return;
    }
    problem('stale-reservation', file.id, `${why}; ${file.reservedBytes} bytes reserved`, true);
    await repair(`released the upload ${file.id} (${file.reservedBytes} bytes of reservation)`, async () => {
      await storage.removeFolder(file.id);
      await repo.releaseUpload(file.id);
      await area.discard(file.id);
      await deps.received?.remove(file.id);
    });
  }

  // A received upload waiting for (or in) its processing job: its bytes must be in the received area.
  async function checkAwaiting(file: FileRow) {
    awaiting.add(file.id);
    uploadsPresent.delete(file.id);
    if (await deps.received?.locate(file.id)) {
      notices.push({
        kind: 'awaiting-processing',
        subject: file.id,
        detail: `${file.status}; processing resumes at the next start if the server is stopped`,
        repairable: false,
      });
      return;
    }
    problem('received-bytes-missing', file.id, `a received upload has no bytes in the received area; ${file.reservedBytes} bytes reserved`, true);
    await repair(`released the received upload ${file.id}`, async () => {
      await storage.removeFolder(file.id);
      await repo.releaseAwaiting(file.id);
    });
  }

  async function checkStored(file: FileRow) {
    if (uploadsPresent.delete(file.id)) {
      // A live server removes a creation-with-upload's tus files once it has answered it.
      if (opts.live && file.committedAt !== null && now - file.committedAt < FRESH_COMMIT_MS) {
        notices.push({ kind: 'upload-cleanup', subject: file.id, detail: 'stored moments ago; the live server is removing its tus files', repairable: false });
      } else {
        problem('orphan-upload', file.id, 'upload-area leftovers of a stored file', true);
        await repair(`removed the upload leftovers of ${file.id}`, () => area.discard(file.id));
      }
    }
    const variants = await repo.getVariants(file.id);
    const names = new Set(await storage.listNames(file.id));
    let sum = 0;
    for (const v of variants) {
      sum += v.bytes;
      names.delete(v.path);
      const s = await storage.stat(file.id, v.path);
      if (!s) problem('missing-variant', `${file.id}/${v.path}`, `variant "${v.name}" is recorded but its blob is missing`, false);
      else if (s.size !== v.bytes)
        problem('variant-size', `${file.id}/${v.path}`, `variant "${v.name}" weighs ${s.size} bytes on disk, ${v.bytes} in the database`, false);
    }
    if (sum !== file.totalBytes) {
      problem('file-total', file.id, `totalBytes is ${file.totalBytes} but its variants add up to ${sum}`, true);
      await repair(`set the total of ${file.id} to ${sum}`, () => repo.setFileTotal(file.id, sum));
    }
    for (const name of names) {
      const temp = isTempName(name);
      problem(
        temp ? 'temp-file' : 'unexpected-file',
        `${file.id}/${name}`,
        temp ? 'a temporary file left by an interrupted write' : 'a blob no variant records (never charged)',
        true,
      );
      await repair(`removed ${file.id}/${name}`, () => storage.removeName(file.id, name));
    }
  }

  // 2. Folders no row accounts for.
  for await (const id of storage.listFolders()) {
    if (!fileIdPattern.test(id)) {
      problem('stray-entry', id, 'a name in the media folder that is not a file id (left alone)', false);
      continue;
    }
    if (rowIds.has(id) || (await repo.getFile(id))) continue;
    problem('orphan-folder', id, 'a media folder with no file row (never charged)', true);
    await repair(`removed the orphan folder ${id}`, () => storage.removeFolder(id));
  }

  // 3. Upload-area files with no unfinished upload.
  for (const id of uploadsPresent.keys()) {
    problem('orphan-upload', id, 'upload-area files with no unfinished upload', true);
    await repair(`removed the orphan upload ${id}`, () => area.discard(id));
  }

  // 3b. Received-area files with no upload waiting for processing.
  for (const id of (await deps.received?.list()) ?? []) {
    if (awaiting.has(id) || uploading.has(id)) continue;
    problem('orphan-received', id, 'received-area bytes of an upload that is no longer waiting for processing', true);
    await repair(`removed the received leftovers of ${id}`, () => deps.received!.remove(id));
  }

  // 4. Processing scratch space (only a dead process leaves any).
  const workspaces = await storage.listWorkspaces();
  if (workspaces.length && opts.live) {
    notices.push({ kind: 'processing', subject: `work/ (${workspaces.length})`, detail: 'the live server is processing these files', repairable: false });
  } else if (workspaces.length) {
    problem('workspace-leftover', `work/ (${workspaces.length})`, 'processing scratch folders of a process that stopped mid-work', true);
    await repair(`removed ${workspaces.length} work folders`, async () => void (await storage.discardAllWorkspaces()));
  }

  // 5. Usage and reservations against the files (after the repairs above changed them).
  const computed = new Map((await repo.usageFromFiles()).map((u) => [u.userId, u]));
  for (const user of await repo.allUsers()) {
    const want = computed.get(user.id) ?? { used: 0, reserved: 0 };
    if (user.usedBytes !== want.used) problem('usage', user.id, `usedBytes is ${user.usedBytes}, its files total ${want.used}`, true);
    if (user.reservedBytes !== want.reserved)
      problem('reservation', user.id, `reservedBytes is ${user.reservedBytes}, its unfinished uploads hold ${want.reserved}`, true);
    if (user.usedBytes !== want.used || user.reservedBytes !== want.reserved) {
      await repair(`set the counters of user ${user.id} to used ${want.used}, reserved ${want.reserved}`, () =>
        repo.setUserCounters(user.id, { usedBytes: want.used, reservedBytes: want.reserved }),
      );
    }
  }

  // 6. Jobs: 'running' with the server stopped means interrupted; a job whose file is gone is dead.
  for (const job of await repo.unfinishedJobs()) {
    if (job.type === 'webhook.deliver') continue; // counted below
    const file = await repo.getFile(job.fileId);
    if (!file || file.status === 'deleting' || file.status === 'uploading') {
      problem('orphan-job', `job ${job.id}`, `${job.type} job for a file that is gone`, true);
      await repair(`removed job ${job.id}`, () => repo.deleteJob(job.id));
    } else if (job.state === 'running' && opts.live) {
      notices.push({ kind: 'running-job', subject: `job ${job.id}`, detail: `${job.type} for ${job.fileId}, running in the live server`, repairable: false });
    } else if (job.state === 'running') {
      problem('unfinished-job', `job ${job.id}`, `${job.type} job for ${job.fileId} was interrupted while running`, true);
      await repair(`requeued job ${job.id}`, async () => void (await repo.requeueRunningJobs()));
    } else notices.push({ kind: 'queued-job', subject: `job ${job.id}`, detail: `${job.type} for ${job.fileId}, runs at next start`, repairable: false });
  }
  const pendingWebhooks = await repo.pendingWebhookCount();
  if (pendingWebhooks) notices.push({ kind: 'webhooks-pending', subject: 'webhooks', detail: `${pendingWebhooks} not yet delivered`, repairable: false });

  return { problems, notices, repaired };
}

export function formatFsckReport(report: FsckReport, opts: { repair?: boolean } = {}): string {
  const lines: string[] = [];
  for (const p of report.problems) lines.push(`PROBLEM ${p.kind} ${p.subject}: ${p.detail}${p.repairable ? '' : ' (not repairable automatically)'}`);
  for (const n of report.notices) lines.push(`notice  ${n.kind} ${n.subject}: ${n.detail}`);
  for (const r of report.repaired) lines.push(`REPAIRED ${r}`);
  if (report.problems.length === 0) lines.push('fsck: clean, the database and the folders agree.');
  else if (opts.repair) {
    const left = report.problems.filter((p) => !p.repairable).length;
    lines.push(`fsck: ${report.problems.length} problem(s) found, ${report.repaired.length} repair(s) made${left ? `, ${left} need a person` : ''}.`);
  } else lines.push(`fsck: ${report.problems.length} problem(s). Run \`chipmunk fsck --repair\` (server stopped) to fix the repairable ones.`);
  return `${lines.join('\n')}\n`;
}
