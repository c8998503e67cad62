import type { Logger } from '@rampart/shared/logging';
import type { DeploymentEngine } from './engine.js';

/** The timer that advances deployments: a thin wrapper around `DeploymentEngine.tick`. */
export class DeploymentScheduler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;

  constructor(
    private readonly engine: DeploymentEngine,
    private readonly logger: Logger,
    private readonly everyMs = 5000,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return; // the previous step is still at work
      this.running = this.engine
        .tick()
        .catch((err: unknown) => this.logger.error({ err }, 'advancing deployments failed'))
        .finally(() => (this.running = null));
    }, this.everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
