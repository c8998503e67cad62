import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { ShadowDocument, UpdateDesiredBody } from '@rampart/shared/shadow';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import type { ShadowService } from '../../gateway/shadows.js';
import type { ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const DeviceParam = Type.Object(
  { id: Type.String({ minLength: 1, maxLength: 128 }) },
  { additionalProperties: false },
);

export function shadowRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const shadows = (): ShadowService => {
      if (!ctx.shadows) throw new RampartError('INTERNAL', 'the gateway is not running');
      return ctx.shadows;
    };

    app.get(
      '/devices/:id/shadow',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['fleet'],
          summary: "A device's shadow: desired, reported, delta and version",
          description:
            'Version 0 and empty states until the first change. The delta is every desired value the reported state does not have.',
          params: DeviceParam,
          response: { 200: ShadowDocument, ...errors },
        },
      },
      async (request) => shadows().get(ctx.storage.db, request.params.id),
    );

    app.patch(
      '/devices/:id/shadow',
      {
        config: { permission: 'device:write', audit: 'device.shadow.update' },
        schema: {
          tags: ['fleet'],
          summary: 'Change the desired state (a JSON merge patch)',
          description:
            'With `version`, the change applies only if the shadow is still at that version (409 otherwise). A connected device receives what is left to do on `$rampart/devices/{id}/shadow/update/delta`.',
          params: DeviceParam,
          body: UpdateDesiredBody,
          response: { 200: ShadowDocument, ...errors },
        },
      },
      async (request) => {
        const doc = await request.mutate(async (tx) => {
          const { after } = await shadows().update(
            tx,
            request.params.id,
            'desired',
            request.body.desired,
            request.body.version,
          );
          return {
            result: after,
            target: `device:${request.params.id}`,
            details: { version: after.version, keys: Object.keys(request.body.desired) },
          };
        });
        await ctx.gateway?.desiredChanged(doc);
        return doc;
      },
    );
  };
}
