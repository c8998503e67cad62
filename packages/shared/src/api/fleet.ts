import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';

/** Identifiers end up in certificate subjects, URNs and MQTT topics: no `/`, `+`, `#` or spaces. */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
export const REVISION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$';
export const ATTRIBUTE_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_-]{0,63}$';

export const DEVICE_STATUSES = ['pending', 'active', 'disabled', 'quarantined'] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

export const DeviceId = Type.String({
  pattern: ID_PATTERN,
  description: 'Letters, digits, `.`, `_`, `-`; up to 128 characters.',
});
export const AttributeValue = Type.Union([Type.String({ maxLength: 1024 }), Type.Number(), Type.Boolean()]);
export const Attributes = Type.Record(Type.String({ pattern: ATTRIBUTE_NAME_PATTERN }), AttributeValue, {
  maxProperties: 64,
  description:
    'Flat map of attribute names to strings, numbers or booleans; queryable as `attributes.<name>`.',
});
export type Attributes = Static<typeof Attributes>;

export const HardwareRevision = Type.Object(
  {
    revision: Type.String({ pattern: REVISION_PATTERN }),
    description: Type.String({ maxLength: 1000 }),
    createdAt: Type.String(),
  },
  { additionalProperties: false },
);

export const DeviceModel = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN }),
    name: Type.String(),
    description: Type.String(),
    hardwareRevisions: Type.Array(HardwareRevision),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { additionalProperties: false },
);
export type DeviceModel = Static<typeof DeviceModel>;

export const CreateDeviceModelBody = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN, description: 'Model identifier, e.g. `DW100`.' }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    hardwareRevisions: Type.Optional(
      Type.Array(
        Type.Object(
          {
            revision: Type.String({ pattern: REVISION_PATTERN }),
            description: Type.Optional(Type.String({ maxLength: 1000 })),
          },
          { additionalProperties: false },
        ),
        { maxItems: 100 },
      ),
    ),
  },
  { additionalProperties: false },
);
export type CreateDeviceModelBody = Static<typeof CreateDeviceModelBody>;

export const UpdateDeviceModelBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const CreateHardwareRevisionBody = Type.Object(
  {
    revision: Type.String({ pattern: REVISION_PATTERN }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);

export const Device = Type.Object(
  {
    id: DeviceId,
    model: Type.String(),
    hardwareRevision: Type.Union([Type.String(), Type.Null()]),
    serial: Type.Union([Type.String(), Type.Null()]),
    attributes: Attributes,
    status: StringEnum(DEVICE_STATUSES),
    groups: Type.Optional(
      Type.Array(Type.String(), { description: 'Static groups the device is a direct member of.' }),
    ),
    createdAt: Type.String(),
    updatedAt: Type.String(),
    statusChangedAt: Type.String(),
  },
  { additionalProperties: false },
);
export type Device = Static<typeof Device>;

export const CreateDeviceBody = Type.Object(
  {
    id: Type.Optional(DeviceId),
    model: Type.String({ pattern: ID_PATTERN }),
    hardwareRevision: Type.Optional(Type.String({ pattern: REVISION_PATTERN })),
    serial: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    attributes: Type.Optional(Attributes),
    status: Type.Optional(StringEnum(DEVICE_STATUSES, { default: 'pending' })),
    groups: Type.Optional(Type.Array(Type.String({ pattern: ID_PATTERN }), { maxItems: 100 })),
  },
  { additionalProperties: false },
);
export type CreateDeviceBody = Static<typeof CreateDeviceBody>;

/** PATCH semantics: fields present are set; `attributes` is an RFC 7396 merge patch (a `null` value removes the attribute). */
export const UpdateDeviceBody = Type.Object(
  {
    hardwareRevision: Type.Optional(Type.Union([Type.String({ pattern: REVISION_PATTERN }), Type.Null()])),
    serial: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()])),
    attributes: Type.Optional(
      Type.Record(
        Type.String({ pattern: ATTRIBUTE_NAME_PATTERN }),
        Type.Union([AttributeValue, Type.Null()]),
        { maxProperties: 64 },
      ),
    ),
    status: Type.Optional(StringEnum(DEVICE_STATUSES)),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type UpdateDeviceBody = Static<typeof UpdateDeviceBody>;

export const DeviceListQuery = Type.Object(
  {
    query: Type.Optional(
      Type.String({
        maxLength: 4000,
        description: 'Fleet query, e.g. `model = "DW100" and attributes.region = "eu"`.',
      }),
    ),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
    cursor: Type.Optional(Type.String({ maxLength: 200, description: '`nextCursor` of the previous page.' })),
    count: Type.Boolean({ default: false, description: 'Also return the total number of matching devices.' }),
  },
  { additionalProperties: false },
);
export type DeviceListQuery = Static<typeof DeviceListQuery>;

export const DeviceList = Type.Object({
  items: Type.Array(Device),
  nextCursor: Type.Union([Type.String(), Type.Null()]),
  total: Type.Optional(Type.Integer()),
});
export type DeviceList = Static<typeof DeviceList>;

export const ImportRowError = Type.Object({
  row: Type.Integer(),
  field: Type.String(),
  message: Type.String(),
});
export type ImportRowError = Static<typeof ImportRowError>;

export const ImportResult = Type.Object({
  imported: Type.Integer(),
  dryRun: Type.Boolean(),
  sha256: Type.String({ description: 'Digest of the imported file, also recorded in the audit log.' }),
});
export type ImportResult = Static<typeof ImportResult>;

export const DeviceGroup = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN }),
    name: Type.String(),
    description: Type.String(),
    kind: StringEnum(['static', 'dynamic']),
    parentId: Type.Union([Type.String(), Type.Null()]),
    query: Type.Union([Type.String(), Type.Null()], { description: 'Fleet query of a dynamic group.' }),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { additionalProperties: false },
);
export type DeviceGroup = Static<typeof DeviceGroup>;

export const CreateDeviceGroupBody = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    parentId: Type.Optional(Type.String({ pattern: ID_PATTERN, description: 'Parent static group.' })),
    query: Type.Optional(
      Type.String({ minLength: 1, maxLength: 4000, description: 'Makes the group dynamic.' }),
    ),
  },
  { additionalProperties: false },
);
export type CreateDeviceGroupBody = Static<typeof CreateDeviceGroupBody>;

export const UpdateDeviceGroupBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    parentId: Type.Optional(Type.Union([Type.String({ pattern: ID_PATTERN }), Type.Null()])),
    query: Type.Optional(Type.String({ minLength: 1, maxLength: 4000 })),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const GroupMembersBody = Type.Object(
  { deviceIds: Type.Array(DeviceId, { minItems: 1, maxItems: 10000 }) },
  { additionalProperties: false },
);

export const AttributeIndex = Type.Object({ name: Type.String(), createdAt: Type.String() });
export const CreateAttributeIndexBody = Type.Object(
  { name: Type.String({ pattern: ATTRIBUTE_NAME_PATTERN }) },
  { additionalProperties: false },
);
