import { randomUUID } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { commandTopics } from '@rampart/shared/command';
import { FakeLink } from '../test-support/fake-link.js';
import { CommandDispatcher, type CommandContext } from './commands.js';

const until = async (check: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

function request(link: FakeLink, name: string, args: Record<string, unknown> = {}, timeoutMs = 10_000) {
  const id = randomUUID();
  const body = { id, name, args, issuedAt: new Date().toISOString(), timeoutMs };
  link.deliver(commandTopics(link.deviceId, id).request, body);
  return { id, body };
}

const responseOf = (link: FakeLink, id: string) =>
  link.queued.filter((q) => q.topic === commandTopics(link.deviceId, id).response).map((q) => q.body);

describe('command dispatcher', () => {
  it('runs the handler registered for the name and answers on the response topic with the same id', async () => {
    const link = new FakeLink();
    const handler = vi.fn((args: Record<string, unknown>, ctx: CommandContext) => ({
      echo: args.text,
      id: ctx.id,
    }));
    const commands = new CommandDispatcher(link).handle('echo', handler);
    const { id } = request(link, 'echo', { text: 'hello' });
    await until(() => responseOf(link, id).length === 1);
    expect(responseOf(link, id)).toEqual([{ status: 'succeeded', result: { echo: 'hello', id } }]);
    expect(link.queued[0]!.qos).toBe(1);
    expect(commands.names).toEqual(['echo']);
  });

  it('answers an unknown command with an error naming the commands it knows', async () => {
    const link = new FakeLink();
    new CommandDispatcher(link).handle('ping', () => 'pong').handle('reboot', () => null);
    const { id } = request(link, 'format-disk');
    await until(() => responseOf(link, id).length === 1);
    expect(responseOf(link, id)).toEqual([
      { status: 'failed', error: 'unknown command "format-disk"; this device handles: ping, reboot' },
    ]);
  });

  it('answers failed with the error message when the handler throws', async () => {
    const link = new FakeLink();
    new CommandDispatcher(link).handle('reboot', async () => {
      throw new Error('a firmware update is being installed; try again later');
    });
    const { id } = request(link, 'reboot');
    await until(() => responseOf(link, id).length === 1);
    expect(responseOf(link, id)).toEqual([
      { status: 'failed', error: 'a firmware update is being installed; try again later' },
    ]);
  });

  it('times a handler out (its own limit or the request time-out, whichever is shorter) and aborts it', async () => {
    const link = new FakeLink();
    let signal: AbortSignal | undefined;
    new CommandDispatcher(link, { handlerTimeoutMs: 60_000 }).handle(
      'slow',
      (_args, ctx) =>
        new Promise(() => {
          signal = ctx.signal;
        }),
    );
    const { id } = request(link, 'slow', {}, 50);
    await until(() => responseOf(link, id).length === 1);
    expect(responseOf(link, id)).toEqual([
      { status: 'failed', error: 'the handler did not finish within 50 ms' },
    ]);
    expect(signal?.aborted).toBe(true);
  });

  it('does not run a redelivered request twice; it answers it again', async () => {
    const link = new FakeLink();
    const handler = vi.fn(() => ({ n: handler.mock.calls.length }));
    new CommandDispatcher(link).handle('count', handler);
    const { id, body } = request(link, 'count');
    await until(() => responseOf(link, id).length === 1);
    link.deliver(commandTopics(link.deviceId, id).request, body);
    await until(() => responseOf(link, id).length === 2);
    expect(handler).toHaveBeenCalledTimes(1);
    expect(responseOf(link, id)).toEqual([
      { status: 'succeeded', result: { n: 1 } },
      { status: 'succeeded', result: { n: 1 } },
    ]);
  });

  it('runs a repeated id again once the duplicate window has passed or the memory is full', async () => {
    const link = new FakeLink();
    const handler = vi.fn(() => 'ok');
    new CommandDispatcher(link, { maxRemembered: 1 }).handle('x', handler);
    const first = request(link, 'x');
    await until(() => responseOf(link, first.id).length === 1);
    const second = request(link, 'x');
    await until(() => responseOf(link, second.id).length === 1);
    link.deliver(commandTopics(link.deviceId, first.id).request, first.body);
    await until(() => responseOf(link, first.id).length === 2);
    expect(handler).toHaveBeenCalledTimes(3);
  });

  it('refuses a malformed request or one whose id differs from its topic, without running anything', async () => {
    const link = new FakeLink();
    const handler = vi.fn();
    new CommandDispatcher(link).handle('ping', handler);
    const id = randomUUID();
    link.deliver(commandTopics(link.deviceId, id).request, '{not json');
    await until(() => responseOf(link, id).length === 1);
    expect(responseOf(link, id)).toEqual([
      { status: 'failed', error: 'the request is not a valid command request' },
    ]);
    const other = randomUUID();
    link.deliver(commandTopics(link.deviceId, other).request, {
      id: randomUUID(),
      name: 'ping',
      args: {},
      issuedAt: new Date().toISOString(),
      timeoutMs: 1000,
    });
    await until(() => responseOf(link, other).length === 1);
    expect(responseOf(link, other)[0]).toMatchObject({
      status: 'failed',
      error: expect.stringMatching(/differs/),
    });
    expect(handler).not.toHaveBeenCalled();
  });

  it('refuses a command name the platform would not send', () => {
    expect(() => new CommandDispatcher(new FakeLink()).handle('bad name!', () => null)).toThrow(
      /not a valid command name/,
    );
  });

  it('answers failed when the result is not JSON', async () => {
    const link = new FakeLink();
    new CommandDispatcher(link).handle('big', () => ({ n: 10n }));
    const { id } = request(link, 'big');
    await until(() => responseOf(link, id).length === 1);
    expect(responseOf(link, id)[0]).toMatchObject({
      status: 'failed',
      error: expect.stringMatching(/result is not JSON/),
    });
  });
});
