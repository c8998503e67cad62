import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { DeviceConnection, SecurityEvent, SecurityEventQuery } from '@rampart/shared/api';
import { Problem } from '@rampart/shared/problem';
import { RampartError, notFound } from '../../errors.js';
import type { Gateway } from '../../gateway/gateway.js';
import type { ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem };

export function connectionRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const gateway = (): Gateway => {
      if (!ctx.gateway) throw new RampartError('INTERNAL', 'the gateway is not running');
      return ctx.gateway;
    };

    app.get(
      '/devices/:id/connection',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: ['fleet'],
          summary: "A device's live MQTT sessions and its connection statistics",
          description:
            'Totals since the device first connected: attempts, connects, disconnects (with the last reason), messages and payload bytes in and out, authorization failures, last source address.',
          params: Type.Object(
            { id: Type.String({ minLength: 1, maxLength: 128 }) },
            { additionalProperties: false },
          ),
          response: { 200: DeviceConnection, ...errors },
        },
      },
      async (request) => {
        const id = request.params.id;
        const exists = await ctx.storage.db
          .selectFrom('devices')
          .select('id')
          .where('id', '=', id)
          .executeTakeFirst();
        if (!exists) throw notFound(`device ${id}`);
        const s = await gateway().stats.get(id);
        const sessions = gateway().liveSessions(id);
        return {
          deviceId: id,
          connected: sessions.length > 0,
          sessions: sessions.map((x) => ({
            clientId: x.clientId,
            sourceAddress: x.remoteAddress,
            certificateSerial: x.certificateSerial,
            connectedAt: new Date(x.connectedAt).toISOString(),
          })),
          stats: {
            connectAttempts: s.connect_attempts,
            connects: s.connects,
            disconnects: s.disconnects,
            messagesIn: s.messages_in,
            messagesOut: s.messages_out,
            bytesIn: s.bytes_in,
            bytesOut: s.bytes_out,
            authorizationFailures: s.authorization_failures,
            lastSourceAddress: s.last_source_address,
            lastConnectedAt: s.last_connected_at,
            lastDisconnectedAt: s.last_disconnected_at,
            lastDisconnectReason: s.last_disconnect_reason,
          },
        };
      },
    );

    app.get(
      '/security-events',
      {
        config: { permission: 'audit:read' },
        schema: {
          tags: ['audit'],
          summary: "The gateway's security events, newest first",
          description:
            'Refused connections, authorization denials, refused TLS handshakes, refused packets and exceeded limits, with device and source address.',
          querystring: SecurityEventQuery,
          response: { 200: Type.Object({ items: Type.Array(SecurityEvent) }), ...errors },
        },
      },
      async (request) => {
        await gateway().stats.flush();
        const q = request.query;
        let sel = ctx.storage.db.selectFrom('security_events').selectAll();
        if (q.device) sel = sel.where('device_id', '=', q.device);
        if (q.kind) sel = sel.where('kind', '=', q.kind);
        if (q.after !== undefined) sel = sel.where('id', '>', q.after);
        const rows = await sel.orderBy('id', 'desc').limit(q.limit).execute();
        return {
          items: rows.map((r) => ({
            id: Number(r.id),
            time: r.time,
            kind: r.kind,
            deviceId: r.device_id,
            sourceAddress: r.source_address,
            reason: r.reason,
          })),
        };
      },
    );
  };
}
