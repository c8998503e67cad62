import type { Logger } from '@rampart/shared/logging';
import type { DeploymentEngine } from './engine.js';

/**
 * The timer that advances deployments: a thin wrapper around `DeploymentEngine.tick`. Besides its
 * interval it ticks at once when a deployment is created or resumed (`engine.wake()`), and again
 * when a rollout has its next devices due before the interval comes round (a high rate), but not
 * more often than every `minGapMs`.
 */
export class DeploymentScheduler {
  private timer: NodeJS.Timeout | null = null;
  private soonTimer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  /** Woken while a tick was running: tick again once it is done. */
  private again = false;
  private listening = false;

  constructor(
    private readonly engine: DeploymentEngine,
    private readonly logger: Logger,
    private readonly everyMs = 5000,
    private readonly minGapMs = 250,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.run(), this.everyMs);
    this.timer.unref();
    if (!this.listening) {
      this.listening = true;
      this.engine.onWake(() => this.soon(0));
    }
  }

  /** Tick in `ms` (sooner than the interval); one such tick is pending at a time. */
  private soon(ms: number): void {
    if (!this.timer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.soonTimer) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null;
      this.run();
    }, ms);
    this.soonTimer.unref();
  }

  private run(): void {
    if (this.running) return; // the previous step is still at work
    this.running = this.engine
      .tick()
      .catch((err: unknown) => this.logger.error({ err }, 'advancing deployments failed'))
      .finally(() => {
        this.running = null;
        const due = this.engine.nextDueMs;
        if (this.again) {
          this.again = false;
          this.soon(0);
        } else if (due !== null && due < this.everyMs) this.soon(Math.max(due, this.minGapMs));
      });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.timer = null;
    this.soonTimer = null;
    await this.running;
  }
}
