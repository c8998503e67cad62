import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { CommandRecord, SendCommandBody } from '@rampart/shared/command';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import type { CommandService } from '../../gateway/commands.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const DeviceParam = Type.Object(
  { id: Type.String({ minLength: 1, maxLength: 128 }) },
  { additionalProperties: false },
);

export function commandRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const commands = (): CommandService => {
      if (!ctx.commands) throw new RampartError('INTERNAL', 'the gateway is not running');
      return ctx.commands;
    };

    app.post(
      '/devices/:id/commands',
      {
        config: { permission: 'device:write', audit: 'device.command' },
        schema: {
          tags: ['fleet'],
          summary: 'Send a command to a connected device',
          description:
            'Published on `$rampart/devices/{id}/commands/{commandId}/request`; the device answers on `…/response`. With `wait` (default) the call returns when the device answered or the time-out passed; the status says which. A device that is not connected gets 409: commands are not queued.',
          params: DeviceParam,
          body: SendCommandBody,
          response: { 200: CommandRecord, 202: CommandRecord, ...errors },
        },
      },
      async (request, reply) => {
        const { name, args, timeoutSeconds, wait } = request.body;
        request.auditTarget = `device:${request.params.id}`;
        const { record, outcome } = await commands().send({
          deviceId: request.params.id,
          name,
          args: args ?? {},
          timeoutMs: timeoutSeconds * 1000,
          createdBy: actorOf(request.principal),
        });
        await ctx.audit.record({
          actor: actorOf(request.principal),
          action: 'device.command',
          target: `device:${request.params.id}`,
          outcome: 'success',
          details: { command: record.id, name, timeoutSeconds },
        });
        request.audited = true;
        if (!wait) return reply.code(202).send(record);
        return reply.code(200).send(await outcome);
      },
    );

    app.get(
      '/devices/:id/commands',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['fleet'],
          summary: 'Commands sent to a device, newest first',
          description: 'With their status: sent, succeeded, failed or timed-out.',
          params: DeviceParam,
          querystring: Type.Object(
            { limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }) },
            { additionalProperties: false },
          ),
          response: { 200: Type.Object({ items: Type.Array(CommandRecord) }), ...errors },
        },
      },
      async (request) => ({
        items: await commands().list(ctx.storage.db, request.params.id, request.query.limit),
      }),
    );

    app.get(
      '/devices/:id/commands/:command',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['fleet'],
          summary: 'One command and its outcome',
          description: 'Poll this after sending with `wait: false`.',
          params: Type.Object(
            {
              id: Type.String({ minLength: 1, maxLength: 128 }),
              command: Type.String({ minLength: 1, maxLength: 64 }),
            },
            { additionalProperties: false },
          ),
          response: { 200: CommandRecord, ...errors },
        },
      },
      async (request) => commands().get(ctx.storage.db, request.params.id, request.params.command),
    );
  };
}
