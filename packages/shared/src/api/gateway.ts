import { Type, type Static } from '@sinclair/typebox';

export const DeviceConnection = Type.Object(
  {
    deviceId: Type.String(),
    connected: Type.Boolean(),
    sessions: Type.Array(
      Type.Object({
        clientId: Type.String(),
        sourceAddress: Type.String(),
        certificateSerial: Type.Union([Type.String(), Type.Null()]),
        connectedAt: Type.String(),
      }),
    ),
    stats: Type.Object({
      connectAttempts: Type.Integer(),
      connects: Type.Integer(),
      disconnects: Type.Integer(),
      messagesIn: Type.Integer(),
      messagesOut: Type.Integer(),
      bytesIn: Type.Integer(),
      bytesOut: Type.Integer(),
      authorizationFailures: Type.Integer(),
      lastSourceAddress: Type.Union([Type.String(), Type.Null()]),
      lastConnectedAt: Type.Union([Type.String(), Type.Null()]),
      lastDisconnectedAt: Type.Union([Type.String(), Type.Null()]),
      lastDisconnectReason: Type.Union([Type.String(), Type.Null()]),
    }),
  },
  { additionalProperties: false },
);
export type DeviceConnection = Static<typeof DeviceConnection>;

export const SecurityEvent = Type.Object({
  id: Type.Integer(),
  time: Type.String(),
  kind: Type.String({
    description:
      '`connect.refused`, `authorization.denied`, `tls.refused`, `packet.refused` or `limit.exceeded`.',
  }),
  deviceId: Type.Union([Type.String(), Type.Null()]),
  sourceAddress: Type.Union([Type.String(), Type.Null()]),
  reason: Type.String(),
});
export type SecurityEvent = Static<typeof SecurityEvent>;

export const SecurityEventQuery = Type.Object(
  {
    device: Type.Optional(Type.String()),
    kind: Type.Optional(Type.String()),
    after: Type.Optional(Type.Integer({ minimum: 0, description: 'Only events with a larger id.' })),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  },
  { additionalProperties: false },
);
export type SecurityEventQuery = Static<typeof SecurityEventQuery>;
