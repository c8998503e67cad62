import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';

/**
 * Commands: request/response over MQTT with a correlation id and a time-out. Rampart publishes the
 * request on `$rampart/devices/{id}/commands/{commandId}/request`; the device answers on
 * `…/{commandId}/response`. See docs/protocol.md.
 */
export const COMMAND_STATUSES = ['sent', 'succeeded', 'failed', 'timed-out'] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];
export const COMMAND_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';

export const commandTopics = (deviceId: string, commandId: string) => {
  const base = `$rampart/devices/${deviceId}/commands/${commandId}`;
  return { request: `${base}/request`, response: `${base}/response` };
};

/** Matches a response topic; the capture groups are the device id and the command id. */
export const COMMAND_RESPONSE_TOPIC = /^\$rampart\/devices\/([^/]+)\/commands\/([^/]+)\/response$/;

export const CommandRequestMessage = Type.Object({
  id: Type.String(),
  name: Type.String(),
  args: Type.Record(Type.String(), Type.Unknown()),
  issuedAt: Type.String(),
  timeoutMs: Type.Integer(),
});
export type CommandRequestMessage = Static<typeof CommandRequestMessage>;

export const CommandRecord = Type.Object(
  {
    id: Type.String(),
    deviceId: Type.String(),
    name: Type.String(),
    args: Type.Record(Type.String(), Type.Unknown()),
    status: StringEnum(COMMAND_STATUSES),
    timeoutMs: Type.Integer(),
    result: Type.Union([Type.Unknown(), Type.Null()]),
    error: Type.Union([Type.String(), Type.Null()]),
    createdBy: Type.String(),
    createdAt: Type.String(),
    completedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { additionalProperties: false },
);
export type CommandRecord = Static<typeof CommandRecord>;

export const SendCommandBody = Type.Object(
  {
    name: Type.String({ pattern: COMMAND_NAME_PATTERN, description: 'e.g. `reboot`.' }),
    args: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    timeoutSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 30 }),
    wait: Type.Boolean({
      default: true,
      description:
        'Answer when the device has responded or the time-out passed (else at once, with status `sent`).',
    }),
  },
  { additionalProperties: false },
);
export type SendCommandBody = Static<typeof SendCommandBody>;
