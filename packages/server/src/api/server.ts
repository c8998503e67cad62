import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { FastifyValidationResult } from 'fastify/types/schema.js';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { PROBLEM_CONTENT_TYPE } from '@rampart/shared/problem';
import { createAjv } from '@rampart/shared/schema';
import { roleAllows } from '@rampart/shared/access';
import { RampartError } from '../errors.js';
import { actorOf, type ApiContext, type Audited } from './context.js';
import { errorHandler, problemOf, toRampartError } from './problems.js';
import { tokenIdOf } from '../access/tokens.js';
import { auditRoutes } from './routes/audit.js';
import { tokenRoutes } from './routes/tokens.js';
import { systemRoutes } from './routes/system.js';
import { identityRoutes } from './routes/identity.js';
import { policyRoutes } from './routes/policies.js';
import { shadowRoutes } from './routes/shadows.js';
import { commandRoutes } from './routes/commands.js';
import { connectionRoutes } from './routes/connections.js';
import { fleetRoutes } from './routes/fleet.js';
import { provisioningRoutes } from './routes/provisioning.js';
import { updateRoutes } from './routes/updates.js';
import { deploymentRoutes } from './routes/deployments.js';
import { directorApiRoutes } from '../updates/director/routes.js';
import type { Tx } from '../storage/index.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Api = FastifyInstance<any, any, any, any, any>;

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function bearerOf(request: FastifyRequest): string | undefined {
  const h = request.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : '';
}

/**
 * Two Ajv instances: bodies are validated strictly (a string is not an integer), while query strings
 * and path parameters, which are always text on the wire, are coerced to the declared types.
 */
function validators() {
  const strict = createAjv({ coerceTypes: false, useDefaults: true });
  const coercing = createAjv({ coerceTypes: 'array', useDefaults: true });
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) =>
    (httpPart === 'body' ? strict : coercing).compile(schema) as FastifyValidationResult;
}

export interface BuildApiOptions {
  https?: { key: string | Buffer; cert: string | Buffer } | null;
}

export async function buildApi(ctx: ApiContext, options: BuildApiOptions = {}): Promise<Api> {
  const { config } = ctx;
  const app = Fastify({
    ...(options.https ? { https: { ...options.https, minVersion: 'TLSv1.2' as const } } : {}),
    loggerInstance: ctx.logger.child({ component: 'api' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.api.bodyLimit,
    trustProxy: config.api.trustProxy,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setValidatorCompiler(validators());
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .type(PROBLEM_CONTENT_TYPE)
      .send(
        problemOf(
          new RampartError(
            'NOT_FOUND',
            `no such endpoint: ${request.method} ${request.url.split('?')[0]}; see /openapi.json`,
          ),
        ),
      ),
  );

  app.decorateRequest('principal', null);
  app.decorateRequest('authFailure', null);
  app.decorateRequest('audited', false);
  app.decorateRequest('auditTarget', null);
  app.decorateRequest('mutate', function <
    T,
  >(this: FastifyRequest, work: (tx: Tx) => Promise<Audited<T>>): Promise<T> {
    const action = this.routeOptions.config.audit;
    if (!action) throw new Error(`route ${this.routeOptions.url} mutates state but declares no audit action`);
    const committed = ctx.storage.db.transaction().execute(async (tx) => {
      const done = await work(tx);
      this.auditTarget = done.target;
      await ctx.audit.append(tx, {
        actor: actorOf(this.principal),
        action,
        target: done.target,
        outcome: 'success',
        details: done.details ?? {},
      });
      this.audited = true;
      return done.result;
    });
    return committed.finally(() => ctx.audit.sealSoon());
  });

  // 1. Identify the caller (no reply yet, so that rate limiting can key on the verified token).
  app.addHook('onRequest', async (request) => {
    const permission = request.routeOptions.config.permission;
    if (!permission) return;
    const result = await ctx.tokens.authenticate(ctx.storage.db, bearerOf(request));
    if (typeof result === 'string') request.authFailure = result;
    else request.principal = result;
  });

  // 2. Rate limits, per verified token, otherwise per source address.
  await app.register(rateLimit, {
    global: true,
    max: config.api.rateLimit.max,
    timeWindow: config.api.rateLimit.windowSeconds * 1000,
    keyGenerator: (request) =>
      request.principal ? `token:${request.principal.tokenId}` : `addr:${request.ip}`,
    errorResponseBuilder: (_request, context) => {
      const err = new RampartError(
        'RATE_LIMITED',
        `rate limit of ${context.max} requests per ${context.after} exceeded; retry later`,
      );
      return Object.assign(err, { statusCode: 429 });
    },
  });

  // 3. Refuse unauthenticated and forbidden calls before the body is read; both are audited.
  app.addHook('preParsing', async (request, reply) => {
    const permission = request.routeOptions.config.permission;
    if (!permission) return;
    const target = `${request.method} ${request.routeOptions.url ?? request.url}`;
    if (!request.principal) {
      const reason = request.authFailure ?? 'missing';
      ctx.metrics.authRefusals.inc({ reason });
      request.log.warn(
        { event: 'api.authenticate.denied', reason, sourceAddress: request.ip, target },
        'request refused: no valid API token',
      );
      request.audited = true;
      await ctx.audit.record({
        actor: 'anonymous',
        action: 'api.authenticate',
        target,
        outcome: 'denied',
        details: {
          reason,
          sourceAddress: request.ip,
          ...(reason !== 'missing' && reason !== 'malformed'
            ? { tokenId: tokenIdOf(bearerOf(request) ?? '') }
            : {}),
        },
      });
      reply.header('www-authenticate', 'Bearer realm="rampart"');
      const message =
        reason === 'missing'
          ? 'this endpoint needs an API token: send "Authorization: Bearer <token>" (rampart token create makes one)'
          : `the API token was refused (${reason}); use a valid, unrevoked token`;
      throw new RampartError('UNAUTHORIZED', message);
    }
    if (permission !== 'authenticated' && !roleAllows(request.principal.role, permission)) {
      ctx.metrics.authRefusals.inc({ reason: 'forbidden' });
      request.log.warn(
        {
          event: 'api.authorize.denied',
          tokenId: request.principal.tokenId,
          role: request.principal.role,
          permission,
          sourceAddress: request.ip,
          target,
        },
        'request refused: role lacks permission',
      );
      request.audited = true;
      await ctx.audit.record({
        actor: actorOf(request.principal),
        action: 'api.authorize',
        target,
        outcome: 'denied',
        details: { role: request.principal.role, permission, sourceAddress: request.ip },
      });
      throw new RampartError(
        'FORBIDDEN',
        `role ${request.principal.role} lacks permission ${permission}; use a token whose role grants it (see rampart token roles)`,
      );
    }
  });

  // 4. A state-changing call that did not commit is still recorded, with its failure.
  app.addHook('onSend', async (request, reply, payload) => {
    const action = request.routeOptions.config.audit;
    if (!action || request.audited || !MUTATING.has(request.method) || reply.statusCode < 400) return payload;
    request.audited = true;
    let problem: { code?: string; detail?: string } = {};
    try {
      problem = typeof payload === 'string' ? (JSON.parse(payload) as typeof problem) : {};
    } catch {
      /* not JSON: keep the status only */
    }
    const params = request.params as Record<string, string> | undefined;
    await ctx.audit.record({
      actor: actorOf(request.principal),
      action,
      target: request.auditTarget ?? (params?.id ? `${action.split('.')[0]}:${params.id}` : ''),
      outcome: 'failure',
      details: {
        status: reply.statusCode,
        ...(problem.code ? { code: problem.code } : {}),
        ...(problem.detail ? { reason: problem.detail } : {}),
      },
    });
    return payload;
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    ctx.metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    ctx.metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Rampart management API',
        version: ctx.version,
        description:
          'Manage a Rampart platform: tokens, the audit log and the device registry. Errors are RFC 9457 problem details. Authenticate with `Authorization: Bearer <token>`.',
      },
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description: 'An API token from `rampart token create`.',
          },
        },
      },
      tags: [
        { name: 'system', description: 'Health, metrics and this description.' },
        { name: 'tokens', description: 'API tokens and roles.' },
        { name: 'audit', description: 'The tamper-evident audit log.' },
        { name: 'fleet', description: 'Device models, devices, groups and fleet queries.' },
        {
          name: 'certificates',
          description: 'CA hierarchy, certificates, revocation and enrollment tokens.',
        },
        {
          name: 'updates',
          description: 'The TUF release repository: releases, roles, signing requests.',
        },
      ],
    },
    transform: ({ schema, url, route }) => {
      const permission = route.config?.permission;
      const transformed = { ...(schema ?? {}) } as Record<string, unknown>;
      if (permission) {
        transformed.security = [{ bearer: [] }];
        transformed.description =
          `${(transformed.description as string | undefined) ?? ''}\n\nRequires permission \`${permission}\`.`.trim();
      }
      return { schema: transformed, url };
    },
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { docExpansion: 'list', deepLinking: true },
  });

  await app.register(systemRoutes(ctx));
  await app.register(tokenRoutes(ctx), { prefix: '/api/v1' });
  await app.register(auditRoutes(ctx), { prefix: '/api/v1' });
  await app.register(fleetRoutes(ctx), { prefix: '/api/v1' });
  await app.register(identityRoutes(ctx), { prefix: '/api/v1' });
  await app.register(policyRoutes(ctx), { prefix: '/api/v1' });
  await app.register(shadowRoutes(ctx), { prefix: '/api/v1' });
  await app.register(commandRoutes(ctx), { prefix: '/api/v1' });
  await app.register(connectionRoutes(ctx), { prefix: '/api/v1' });
  await app.register(provisioningRoutes(ctx), { prefix: '/api/v1' });
  await app.register(updateRoutes(ctx), { prefix: '/api/v1' });
  await app.register(deploymentRoutes(ctx), { prefix: '/api/v1' });
  await app.register(directorApiRoutes(ctx), { prefix: '/api/v1' });
  return app;
}

export { toRampartError };
