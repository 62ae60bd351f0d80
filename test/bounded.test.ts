import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BoundedChildError, runBounded } from '../src/media/bounded.js';
import { isAlive as alive } from './helpers/server-process.js';

// The bounded child runner on real programs: its caps kill, its verdicts say which cap, its children
// lead their own process group and die with the process that started them.

const statField = (pid: number, field: number) =>
  Number(
    readFileSync(`/proc/${pid}/stat`, 'utf8')
      .replace(/^.*\) /, '')
      .split(' ')[field - 3],
  );

describe('runBounded', () => {
  it('returns stdout and stderr, passes input, and runs under the memory cap', async () => {
    const out = await runBounded('sh', ['-c', 'cat; echo warn >&2; grep "Max address space" /proc/self/limits'], {
      memoryBytes: 300_000_000,
      timeoutMs: 10_000,
      input: Buffer.from('bytes in\n'),
    });
    const text = out.stdout.toString();
    expect(text).toMatch(/^bytes in\n/);
    expect(text).toMatch(/Max address space\s+300000000\s+300000000/);
    expect(out.stderr).toBe('warn\n');
  });

  it('says "memory" when the program runs out of its cap, "timeout" when it runs too long, "exit" for a failure of its own', async () => {
    const memory = await runBounded('awk', ['BEGIN { s = "x"; while (1) s = s s }'], { memoryBytes: 100_000_000, timeoutMs: 30_000 }).catch((e: unknown) => e);
    expect(memory).toBeInstanceOf(BoundedChildError);
    expect(memory).toMatchObject({ reason: 'memory', message: 'awk needed more than its 100 MB of memory' });

    const started = Date.now();
    const slow = await runBounded('sleep', ['30'], { memoryBytes: 100_000_000, timeoutMs: 300 }).catch((e: unknown) => e);
    expect(slow).toMatchObject({ reason: 'timeout', message: 'sleep took longer than 0.3 s' });
    expect(Date.now() - started).toBeLessThan(20_000);

    await expect(runBounded('sh', ['-c', 'echo "it is broken" >&2; exit 3'], { memoryBytes: 100_000_000, timeoutMs: 10_000 })).rejects.toMatchObject({
      reason: 'exit',
      exitCode: 3,
      message: 'it is broken',
    });
  });

  it('kills the child when the signal aborts, and a kill from elsewhere is "signal"', async () => {
    const controller = new AbortController();
    const running = runBounded('sleep', ['30'], { memoryBytes: 100_000_000, timeoutMs: 60_000, signal: controller.signal });
    setTimeout(() => controller.abort(new Error('file deleted')), 100);
    await expect(running).rejects.toMatchObject({ reason: 'aborted' });

    const pidFile = runBounded('sh', ['-c', 'echo $$; exec sleep 30'], {
      memoryBytes: 100_000_000,
      timeoutMs: 60_000,
      onStdout: (chunk) => process.kill(Number(chunk.toString()), 'SIGTERM'),
    });
    await expect(pidFile).rejects.toMatchObject({ reason: 'signal', message: 'sh was killed by SIGTERM' });
  });

  it('runs the child in its own process group, out of reach of signals sent to ours', async () => {
    let pid = 0;
    const running = runBounded('sh', ['-c', 'echo $$; exec sleep 1'], {
      memoryBytes: 100_000_000,
      timeoutMs: 10_000,
      onStdout: (chunk) => (pid = Number(chunk.toString())),
    });
    await expect.poll(() => pid).toBeGreaterThan(0);
    // /proc/<pid>/stat field 5 is the process group: the child's own pid, not the test runner's group.
    expect(statField(pid, 5)).toBe(pid);
    expect(statField(pid, 5)).not.toBe(statField(process.pid, 5));
    await running;
  });

  it('dies with the process that started it (kill -9 leaves no orphan)', async () => {
    // A parent that starts a bounded `sleep`, prints its pid, then is killed with SIGKILL.
    const script = `import { runBounded } from ${JSON.stringify(new URL('../src/media/bounded.ts', import.meta.url).pathname)};
      runBounded('sh', ['-c', 'echo $$ >&2; exec sleep 60'], { memoryBytes: 100000000, timeoutMs: 120000 }).catch(() => {});
      setInterval(() => {}, 1000);`;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    // The bounded child's stderr is its own pipe; ask the parent's children instead. The parent also
    // runs short-lived children of its own (the wrappers' `--version` probes at import), so wait for
    // the one that has exec'd into sleep: the parent-death signal is set by then.
    let child = 0;
    await expect
      .poll(
        () => {
          child = readChildren(parent.pid!).find((pid) => commOf(pid) === 'sleep') ?? 0;
          return child;
        },
        { timeout: 20_000, interval: 50 },
      )
      .toBeGreaterThan(0);
    parent.kill('SIGKILL');
    await expect
      .poll(() => alive(child) && readFileSync(`/proc/${child}/stat`, 'utf8').includes(') Z') === false, { timeout: 5_000, interval: 50 })
      .toBe(false);
  });
});

/** The command name of `pid`, or '' once it has gone. */
function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Pids whose parent is `pid`, from /proc/<pid>/task/<pid>/children. */
function readChildren(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
