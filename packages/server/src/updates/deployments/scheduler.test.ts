import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '@rampart/shared/logging';
import type { DeploymentEngine } from './engine.js';
import { DeploymentScheduler } from './scheduler.js';

/** An engine that records its ticks and reports `due` as the next device's time. */
function fakeEngine(due: () => number | null) {
  const ticks: number[] = [];
  const listeners: (() => void)[] = [];
  const engine = {
    nextDueMs: null as number | null,
    onWake: (l: () => void) => listeners.push(l),
    wake: () => listeners.forEach((l) => l()),
    tick: async () => {
      ticks.push(performance.now());
      engine.nextDueMs = due();
      return [];
    },
  };
  return { engine, ticks, asEngine: engine as unknown as DeploymentEngine };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const logger = createLogger({ level: 'silent' });

describe('the deployment scheduler', () => {
  let scheduler: DeploymentScheduler | null = null;
  afterEach(async () => {
    await scheduler?.stop();
    scheduler = null;
  });

  it('ticks at once when woken (a deployment created), not only at its interval', async () => {
    const f = fakeEngine(() => null);
    scheduler = new DeploymentScheduler(f.asEngine, logger, 60_000, 20);
    scheduler.start();
    await sleep(50);
    expect(f.ticks).toHaveLength(0);
    const woken = performance.now();
    f.engine.wake();
    await sleep(50);
    expect(f.ticks).toHaveLength(1);
    expect(f.ticks[0]! - woken).toBeLessThan(40);
  });

  it('ticks again when devices are due before the interval, but not more often than its minimum gap', async () => {
    let left = 3;
    const f = fakeEngine(() => (--left > 0 ? 1 : null)); // "due in 1 ms" twice, then nothing
    scheduler = new DeploymentScheduler(f.asEngine, logger, 60_000, 30);
    scheduler.start();
    f.engine.wake();
    await sleep(250);
    expect(f.ticks).toHaveLength(3);
    for (let i = 1; i < f.ticks.length; i++) expect(f.ticks[i]! - f.ticks[i - 1]!).toBeGreaterThanOrEqual(25);
  });

  it('does nothing once stopped', async () => {
    const f = fakeEngine(() => 1);
    scheduler = new DeploymentScheduler(f.asEngine, logger, 60_000, 10);
    scheduler.start();
    await scheduler.stop();
    f.engine.wake();
    await sleep(50);
    expect(f.ticks).toHaveLength(0);
  });
});
