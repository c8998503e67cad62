import type { FastifyPluginAsync } from 'fastify';
import type { ApiContext } from '../context.js';

export function fleetRoutes(_ctx: ApiContext): FastifyPluginAsync {
  return async () => {};
}
