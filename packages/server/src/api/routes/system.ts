import type { FastifyPluginAsync } from 'fastify';
import { sql } from 'kysely';
import { Health } from '@rampart/shared/api';
import type { ApiContext } from '../context.js';

export function systemRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/healthz',
      {
        schema: {
          tags: ['system'],
          summary: 'Liveness and readiness',
          description:
            'Answers 200 when the platform can reach its database, 503 otherwise. No token needed.',
          response: { 200: Health, 503: Health },
        },
      },
      async (_request, reply) => {
        let database = 'ok';
        try {
          await sql`select 1`.execute(ctx.storage.db);
        } catch {
          database = 'unreachable';
        }
        const ok = database === 'ok';
        return reply
          .code(ok ? 200 : 503)
          .send({ status: ok ? 'ok' : 'degraded', version: ctx.version, checks: { database } });
      },
    );

    app.get(
      '/metrics',
      {
        config: { permission: 'metrics:read' },
        schema: {
          tags: ['system'],
          summary: 'Prometheus metrics',
          description:
            'Prometheus text exposition format. Configure the scraper with a bearer token (e.g. a viewer-free `auditor` token).',
          produces: ['text/plain'],
        },
      },
      async (_request, reply) => {
        const body = await ctx.metrics.registry.metrics();
        return reply.type(ctx.metrics.registry.contentType).send(body);
      },
    );

    app.get(
      '/openapi.json',
      { schema: { tags: ['system'], summary: 'OpenAPI 3.1 description of this API', hide: true } },
      async () => app.swagger(),
    );
  };
}
