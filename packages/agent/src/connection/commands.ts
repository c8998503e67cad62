import type { Logger } from '@rampart/shared/logging';
import { COMMAND_NAME_PATTERN, CommandRequestMessage, commandTopics } from '@rampart/shared/command';
import { Value } from '@sinclair/typebox/value';
import { AgentError } from '../errors.js';
import type { GatewayLink } from './connection.js';

export interface CommandContext {
  /** The command's id (the correlation id of request and response). */
  id: string;
  name: string;
  issuedAt: string;
  /** The time the platform waits for the answer. */
  timeoutMs: number;
  /** Aborted when the handler runs out of time: stop the work, the answer has been sent. */
  signal: AbortSignal;
}

/** Runs a command; what it returns (JSON) is the result, what it throws is the error. */
export type CommandHandler = (args: Record<string, unknown>, context: CommandContext) => unknown;

export interface CommandDispatcherOptions {
  /** A handler gets at most this long, and never longer than the request's own timeoutMs. Default 30 s. */
  handlerTimeoutMs?: number;
  /** A request id seen within this window is not run again (redelivery); its answer is sent again. Default 10 min. */
  duplicateWindowMs?: number;
  /** At most this many request ids are remembered for that. Default 1000. */
  maxRemembered?: number;
  log?: Logger;
}

type Response = { status: 'succeeded'; result: unknown } | { status: 'failed'; error: string };

const NAME = new RegExp(COMMAND_NAME_PATTERN);
const MAX_ERROR_LENGTH = 1000;

/**
 * Answers the platform's commands (docs/protocol.md): requests on
 * `$rampart/devices/{id}/commands/+/request` go to the handler registered for their name, and the
 * outcome is published on the matching response topic with the same id — `succeeded` with the
 * handler's result, or `failed` with an error (unknown command, invalid request, handler error or
 * time-out). A request delivered twice is run once.
 */
export class CommandDispatcher {
  private readonly handlers = new Map<string, CommandHandler>();
  private readonly seen = new Map<string, { at: number; response: Response | null }>();
  private readonly handlerTimeoutMs: number;
  private readonly duplicateWindowMs: number;
  private readonly maxRemembered: number;
  private readonly log: Logger | undefined;
  private readonly unsubscribe: () => void;
  private readonly running = new Set<AbortController>();

  constructor(
    private readonly connection: GatewayLink,
    options: CommandDispatcherOptions = {},
  ) {
    this.handlerTimeoutMs = options.handlerTimeoutMs ?? 30_000;
    this.duplicateWindowMs = options.duplicateWindowMs ?? 10 * 60_000;
    this.maxRemembered = options.maxRemembered ?? 1000;
    this.log = options.log;
    // The shared topic builder with `+` as the command id is the subscription filter.
    this.unsubscribe = connection.subscribe(
      commandTopics(connection.deviceId, '+').request,
      (topic, payload) => void this.received(topic, payload),
    );
  }

  /** Register the handler of a command name (replacing an earlier one). */
  handle(name: string, handler: CommandHandler): this {
    if (!NAME.test(name))
      throw new AgentError('USAGE', `"${name}" is not a valid command name (${COMMAND_NAME_PATTERN})`);
    this.handlers.set(name, handler);
    return this;
  }

  /** The command names this device answers. */
  get names(): string[] {
    return [...this.handlers.keys()].sort();
  }

  /** Stop receiving commands; running handlers are aborted. */
  stop(): void {
    this.unsubscribe();
    for (const c of this.running) c.abort();
  }

  private async received(topic: string, payload: Buffer): Promise<void> {
    const topicId = topic.split('/')[4] ?? '';
    let request: unknown;
    try {
      request = JSON.parse(payload.toString('utf8'));
    } catch {
      request = null;
    }
    if (!Value.Check(CommandRequestMessage, request)) {
      this.log?.warn({ topic }, 'command request refused: not a valid command request');
      this.respond(topicId, { status: 'failed', error: 'the request is not a valid command request' });
      return;
    }
    if (request.id !== topicId) {
      this.log?.warn({ topic, id: request.id }, 'command request refused: its id differs from the topic');
      this.respond(topicId, { status: 'failed', error: 'the request id differs from the id in the topic' });
      return;
    }
    const now = Date.now();
    this.forgetOld(now);
    const earlier = this.seen.get(request.id);
    if (earlier) {
      // Redelivered (QoS 1): never run twice. Answer again if the first answer is known.
      this.log?.debug({ command: request.id, name: request.name }, 'duplicate command request ignored');
      if (earlier.response) this.respond(request.id, earlier.response);
      return;
    }
    const entry: { at: number; response: Response | null } = { at: now, response: null };
    this.seen.set(request.id, entry);
    const response = await this.execute(request);
    entry.response = response;
    this.respond(request.id, response);
  }

  private async execute(request: CommandRequestMessage): Promise<Response> {
    const handler = this.handlers.get(request.name);
    if (!handler) {
      this.log?.info({ command: request.id, name: request.name }, `unknown command "${request.name}"`);
      return {
        status: 'failed',
        error: `unknown command "${request.name}"; this device handles: ${this.names.join(', ') || 'none'}`,
      };
    }
    const limit = Math.max(1, Math.min(this.handlerTimeoutMs, request.timeoutMs));
    const controller = new AbortController();
    this.running.add(controller);
    let timer: NodeJS.Timeout | undefined;
    const started = Date.now();
    try {
      const result = await Promise.race([
        Promise.resolve().then(() =>
          handler(request.args, {
            id: request.id,
            name: request.name,
            issuedAt: request.issuedAt,
            timeoutMs: request.timeoutMs,
            signal: controller.signal,
          }),
        ),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new AgentError('TIMEOUT', `the handler did not finish within ${limit} ms`)),
            limit,
          );
        }),
      ]);
      this.log?.info(
        { command: request.id, name: request.name, ms: Date.now() - started },
        `command ${request.name} succeeded`,
      );
      return { status: 'succeeded', result: result === undefined ? null : result };
    } catch (err) {
      if (err instanceof AgentError && err.code === 'TIMEOUT') controller.abort();
      const error = (err instanceof Error ? err.message : String(err)).slice(0, MAX_ERROR_LENGTH);
      this.log?.warn({ command: request.id, name: request.name }, `command ${request.name} failed: ${error}`);
      return { status: 'failed', error: error || 'failed' };
    } finally {
      clearTimeout(timer);
      this.running.delete(controller);
    }
  }

  private respond(id: string, response: Response): void {
    if (!id) return;
    let body: string;
    try {
      body = JSON.stringify(response);
    } catch (err) {
      body = JSON.stringify({
        status: 'failed',
        error: `the command's result is not JSON: ${err instanceof Error ? err.message : String(err)}`,
      });
    }
    try {
      // Through the queue: an answer made while the connection is down still goes out once it is
      // back (the platform ignores it if its time-out has passed).
      this.connection.publish(commandTopics(this.connection.deviceId, id).response, body, { qos: 1 });
    } catch (err) {
      this.log?.error({ err, command: id }, 'could not queue the command response');
    }
  }

  private forgetOld(now: number): void {
    for (const [id, e] of this.seen) {
      if (now - e.at <= this.duplicateWindowMs && this.seen.size <= this.maxRemembered) break;
      this.seen.delete(id);
    }
  }
}
