import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  CreateDeploymentBody,
  DEPLOYMENT_STATES,
  DeploymentDetail,
  DeploymentList,
  DeploymentView,
  DeviceDeploymentHistory,
} from '@rampart/shared/api';
import { StringEnum } from '@rampart/shared/schema';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import type { DeploymentEngine } from '../../updates/deployments/engine.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const TAGS = ['updates'];
const IdParam = Type.Object({ id: Type.Integer({ minimum: 1 }) }, { additionalProperties: false });
const DeviceParam = Type.Object(
  { id: Type.String({ minLength: 1, maxLength: 255 }) },
  { additionalProperties: false },
);

/**
 * Deployments: roll a published release out to a group, a fleet query or a list of devices, in a
 * canary and rate-limited phases, inside maintenance windows, stopped by an abort rule.
 */
export function deploymentRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const engine = (): DeploymentEngine => {
      if (!ctx.deployments) throw new RampartError('INTERNAL', 'deployments are not running');
      return ctx.deployments;
    };

    app.post(
      '/deployments',
      {
        config: { permission: 'release:write', audit: 'deployment.create' },
        schema: {
          tags: TAGS,
          summary: 'Create and start a deployment',
          description:
            'Rolls a published release out to a target: first the canary (all at once; the rollout waits until every ' +
            'canary device has sent its receipt or timed out; a canary device a higher-priority deployment holds or ' +
            'takes over is replaced by a free device of the target, and when none is free within ' +
            '`canaryWaitTimeout` the deployment pauses itself with the reason), then `ratePerMinute` devices a ' +
            'minute, growing by ' +
            '`rateGrowth` every `phaseMinutes`. Devices are assigned only while a maintenance window is open. A device ' +
            'succeeds only with its signed receipt within `receiptTimeout`. The abort rule stops the deployment when ' +
            '`abortAtPercent` of at least `minSample` finished devices failed. A device is in one active deployment at ' +
            'a time: a higher `priority` takes it over, an equal priority overlapping an active deployment is refused ' +
            '(409).',
          body: CreateDeploymentBody,
          response: { 201: DeploymentView, ...errors },
        },
      },
      async (request, reply) => {
        const out = await request.mutate(async (tx) => {
          const view = await engine().create(tx, request.body, actorOf(request.principal));
          return {
            result: view,
            target: `deployment:${view.id}`,
            details: {
              release: view.release,
              target: view.target,
              devices: view.counts.total,
              canary: view.canarySize,
              priority: view.priority,
              continuous: view.continuous,
            },
          };
        });
        // Committed: hand out the first devices now, not at the scheduler's next interval.
        engine().wake();
        return reply.code(201).send(out);
      },
    );

    app.get(
      '/deployments',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'List deployments, newest first',
          querystring: Type.Object(
            { state: Type.Optional(StringEnum(DEPLOYMENT_STATES)) },
            { additionalProperties: false },
          ),
          response: { 200: DeploymentList, ...errors },
        },
      },
      async (request) => ({ items: await engine().list(ctx.storage.db, request.query) }),
    );

    app.get(
      '/deployments/:id',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'A deployment with per-phase progress and per-device states',
          params: IdParam,
          response: { 200: DeploymentDetail, ...errors },
        },
      },
      async (request) => engine().detail(ctx.storage.db, request.params.id),
    );

    for (const action of ['pause', 'resume', 'cancel'] as const) {
      app.post(
        `/deployments/:id/${action}`,
        {
          config: { permission: 'release:write', audit: `deployment.${action}` },
          schema: {
            tags: TAGS,
            summary:
              action === 'pause'
                ? 'Pause: assign no more devices (receipts still count)'
                : action === 'resume'
                  ? 'Resume a paused deployment'
                  : 'Cancel: assign no more devices; devices not done yet are unassigned',
            params: IdParam,
            response: { 200: DeploymentView, ...errors },
          },
        },
        async (request) => {
          const out = await request.mutate(async (tx) => {
            const id = request.params.id;
            const view =
              action === 'pause'
                ? await engine().pause(tx, id)
                : action === 'resume'
                  ? await engine().resume(tx, id)
                  : await engine().cancel(tx, id, actorOf(request.principal));
            return { result: view, target: `deployment:${id}`, details: { state: view.state } };
          });
          if (action === 'resume') engine().wake();
          return out;
        },
      );
    }

    app.get(
      '/devices/:id/deployments',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: "A device's deployment history, newest first",
          params: DeviceParam,
          response: { 200: DeviceDeploymentHistory, ...errors },
        },
      },
      async (request) => ({
        deviceId: request.params.id,
        items: await engine().history(ctx.storage.db, request.params.id),
      }),
    );
  };
}
