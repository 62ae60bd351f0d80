import { describe, expect, it } from 'vitest';
import { createLifecycle, type Part } from './lifecycle.js';
import { silentLogger } from './log.js';

function recorder() {
  const events: string[] = [];
  const part = (name: string, opts: { failStart?: boolean; failStop?: boolean } = {}): Part => ({
    name,
    async start() {
      events.push(`start ${name}`);
      if (opts.failStart) throw new Error(`${name} cannot start`);
    },
    async stop(deadline) {
      events.push(`stop ${name} ${typeof deadline}`);
      if (opts.failStop) throw new Error(`${name} cannot stop`);
    },
  });
  return { events, part };
}

describe('lifecycle', () => {
  it('starts parts in order and stops them in reverse, each with the deadline', async () => {
    const { events, part } = recorder();
    const life = createLifecycle([part('lock'), part('jobs'), part('http')], silentLogger);
    await life.start(1000);
    expect(life.running).toEqual(['lock', 'jobs', 'http']);
    await life.stop(Date.now() + 1000);
    expect(events).toEqual(['start lock', 'start jobs', 'start http', 'stop http number', 'stop jobs number', 'stop lock number']);
    expect(life.running).toEqual([]);
  });

  it('stops only what started when a part fails to start, and rethrows', async () => {
    const { events, part } = recorder();
    const life = createLifecycle([part('lock'), part('jobs', { failStart: true }), part('http')], silentLogger);
    await expect(life.start(1000)).rejects.toThrow('jobs cannot start');
    expect(events).toEqual(['start lock', 'start jobs', 'stop lock number']);
  });

  it('never started: stopping does nothing', async () => {
    const { events, part } = recorder();
    const life = createLifecycle([part('lock')], silentLogger);
    await life.stop(Date.now());
    expect(events).toEqual([]);
  });

  it('a part that fails to stop does not keep the others running; a second stop is the first', async () => {
    const { events, part } = recorder();
    const life = createLifecycle([part('lock'), part('jobs', { failStop: true })], silentLogger);
    await life.start(1000);
    const first = life.stop(Date.now());
    expect(life.stop(Date.now())).toBe(first);
    await first;
    expect(events.slice(2)).toEqual(['stop jobs number', 'stop lock number']);
  });
});
