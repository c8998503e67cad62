import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';

/** Identifiers end up in certificate subjects, URNs and MQTT topics: no `/`, `+`, `#` or spaces. */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
export const REVISION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$';
export const ATTRIBUTE_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_-]{0,63}$';

/**
 * Lifecycle of a device in the registry:
 * - `pending`: registered (e.g. imported from the factory list) but not yet allowed to connect;
 * - `active`: allowed to enroll and connect;
 * - `disabled`: switched off by an operator; it may not connect;
 * - `quarantined`: isolated because it is suspected of being compromised; it reaches nothing but remediation.
 */
/**
 * `decommissioned`: taken out of service — certificates revoked, secrets dropped, history kept; an
 * operator sets it back to `pending` to let the device be provisioned again.
 */
export const DEVICE_STATUSES = ['pending', 'active', 'disabled', 'quarantined', 'decommissioned'] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

export const GROUP_KINDS = ['static', 'dynamic'] as const;
export type GroupKind = (typeof GROUP_KINDS)[number];

export const DeviceId = Type.String({
  pattern: ID_PATTERN,
  description: 'Letters, digits, `.`, `_`, `-`; up to 128 characters.',
});

/** One attribute value: a string (up to 1024 characters), a number or a boolean. One schema, so one clear error. */
export const AttributeValue = Type.Unsafe<string | number | boolean>({
  type: ['string', 'number', 'boolean'],
  maxLength: 1024,
  description: 'A string (up to 1024 characters), a number or a boolean.',
});
export const Attributes = Type.Record(Type.String({ pattern: ATTRIBUTE_NAME_PATTERN }), AttributeValue, {
  additionalProperties: false,
  maxProperties: 64,
  description:
    'Flat map of attribute names (letters, digits, `_`, `-`; starting with a letter or `_`) to strings, numbers or booleans; queryable as `attributes.<name>`.',
});
export type Attributes = Static<typeof Attributes>;

/** An attribute merge patch (RFC 7396): a value sets the attribute, `null` removes it. */
export const AttributesPatch = Type.Record(
  Type.String({ pattern: ATTRIBUTE_NAME_PATTERN }),
  Type.Unsafe<string | number | boolean | null>({
    type: ['string', 'number', 'boolean', 'null'],
    maxLength: 1024,
  }),
  {
    additionalProperties: false,
    maxProperties: 64,
    description:
      'RFC 7396 merge patch of the attributes: a value sets the attribute, `null` removes it, attributes not named stay as they are.',
  },
);
export type AttributesPatch = Static<typeof AttributesPatch>;

// ---------------------------------------------------------------------------------------------
// Device models and hardware revisions

export const HardwareRevision = Type.Object(
  {
    revision: Type.String({ pattern: REVISION_PATTERN }),
    description: Type.String({ maxLength: 1000 }),
    createdAt: Type.String(),
  },
  { additionalProperties: false },
);
export type HardwareRevision = Static<typeof HardwareRevision>;

export const DeviceModel = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN }),
    name: Type.String(),
    description: Type.String(),
    hardwareRevisions: Type.Array(HardwareRevision),
    encryptUpdates: Type.Boolean({
      description:
        'Releases for this model are encrypted (AES-256-GCM; each device gets the content key wrapped to its own key).',
    }),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { additionalProperties: false },
);
export type DeviceModel = Static<typeof DeviceModel>;

export const DeviceModelList = Type.Object({ items: Type.Array(DeviceModel) });
export type DeviceModelList = Static<typeof DeviceModelList>;

export const CreateHardwareRevisionBody = Type.Object(
  {
    revision: Type.String({ pattern: REVISION_PATTERN, description: 'Revision name, e.g. `rev-b`.' }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
export type CreateHardwareRevisionBody = Static<typeof CreateHardwareRevisionBody>;

export const CreateDeviceModelBody = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN, description: 'Model identifier, e.g. `DW100`.' }),
    name: Type.Optional(
      Type.String({ minLength: 1, maxLength: 200, description: 'Display name; the id when omitted.' }),
    ),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    hardwareRevisions: Type.Optional(Type.Array(CreateHardwareRevisionBody, { maxItems: 100 })),
    encryptUpdates: Type.Optional(
      Type.Boolean({
        description:
          'Require encrypted releases for this model (default false); devices need an EC P-256 or P-384 key.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateDeviceModelBody = Static<typeof CreateDeviceModelBody>;

export const UpdateDeviceModelBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    encryptUpdates: Type.Optional(
      Type.Boolean({
        description: 'Require encrypted releases for this model (releases created from now on).',
      }),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type UpdateDeviceModelBody = Static<typeof UpdateDeviceModelBody>;

// ---------------------------------------------------------------------------------------------
// Devices

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
    id: Type.Optional(
      Type.String({
        pattern: ID_PATTERN,
        description: 'Letters, digits, `.`, `_`, `-`; up to 128 characters. Generated (`d-…`) when omitted.',
      }),
    ),
    model: Type.String({ pattern: ID_PATTERN, description: 'Id of an existing device model.' }),
    hardwareRevision: Type.Optional(
      Type.String({ pattern: REVISION_PATTERN, description: 'A hardware revision of that model.' }),
    ),
    serial: Type.Optional(
      Type.String({ minLength: 1, maxLength: 128, description: 'Serial number, unique per model.' }),
    ),
    attributes: Type.Optional(Attributes),
    status: Type.Optional(StringEnum(DEVICE_STATUSES, { default: 'pending' })),
    groups: Type.Optional(
      Type.Array(Type.String({ pattern: ID_PATTERN }), {
        maxItems: 100,
        description: 'Static groups to add the device to.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateDeviceBody = Static<typeof CreateDeviceBody>;

/** PATCH semantics: fields present are set; `attributes` is an RFC 7396 merge patch (a `null` value removes the attribute). */
export const UpdateDeviceBody = Type.Object(
  {
    hardwareRevision: Type.Optional(
      Type.Union([Type.String({ pattern: REVISION_PATTERN }), Type.Null()], {
        description: 'A hardware revision of the device model, or `null` to clear it.',
      }),
    ),
    serial: Type.Optional(
      Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()], {
        description: 'Serial number (unique per model), or `null` to clear it.',
      }),
    ),
    attributes: Type.Optional(AttributesPatch),
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
  nextCursor: Type.Union([Type.String(), Type.Null()], {
    description: 'Pass as `cursor` to get the next page; `null` on the last page.',
  }),
  total: Type.Optional(Type.Integer({ description: 'Number of matching devices (with `count=true`).' })),
});
export type DeviceList = Static<typeof DeviceList>;

// ---------------------------------------------------------------------------------------------
// Bulk import

export const IMPORT_FORMATS = ['csv', 'jsonl'] as const;
export type ImportFormat = (typeof IMPORT_FORMATS)[number];

/** Content types accepted by `POST /api/v1/devices/import`, and the format each one means. */
export const IMPORT_CONTENT_TYPES: Record<string, ImportFormat> = {
  'text/csv': 'csv',
  'application/x-ndjson': 'jsonl',
  'application/jsonl': 'jsonl',
};

/** Columns of a CSV import besides `attributes.<name>[:string|number|boolean]`. */
export const IMPORT_CSV_COLUMNS = ['id', 'model', 'hardwareRevision', 'serial', 'status', 'groups'] as const;
export const IMPORT_ATTRIBUTE_TYPES = ['string', 'number', 'boolean'] as const;

export const ImportQuery = Type.Object(
  {
    dryRun: Type.Boolean({
      default: false,
      description: 'Validate the whole file and report what would be imported, without writing anything.',
    }),
  },
  { additionalProperties: false },
);
export type ImportQuery = Static<typeof ImportQuery>;

export const ImportRowError = Type.Object({
  row: Type.Integer(),
  field: Type.String(),
  message: Type.String(),
});
export type ImportRowError = Static<typeof ImportRowError>;

export const ImportResult = Type.Object({
  imported: Type.Integer({ description: 'Devices created (or that would be, on a dry run).' }),
  dryRun: Type.Boolean(),
  format: StringEnum(IMPORT_FORMATS),
  sha256: Type.String({ description: 'Digest of the imported file, also recorded in the audit log.' }),
});
export type ImportResult = Static<typeof ImportResult>;

// ---------------------------------------------------------------------------------------------
// Groups

export const DeviceGroup = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN }),
    name: Type.String(),
    description: Type.String(),
    kind: StringEnum(GROUP_KINDS),
    parentId: Type.Union([Type.String(), Type.Null()]),
    query: Type.Union([Type.String(), Type.Null()], { description: 'Fleet query of a dynamic group.' }),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { additionalProperties: false },
);
export type DeviceGroup = Static<typeof DeviceGroup>;

export const DeviceGroupList = Type.Object({ items: Type.Array(DeviceGroup) });
export type DeviceGroupList = Static<typeof DeviceGroupList>;

export const CreateDeviceGroupBody = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN, description: 'Group identifier, e.g. `plant-berlin`.' }),
    name: Type.Optional(
      Type.String({ minLength: 1, maxLength: 200, description: 'Display name; the id when omitted.' }),
    ),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    parentId: Type.Optional(Type.String({ pattern: ID_PATTERN, description: 'Parent static group.' })),
    query: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 4000,
        description: 'Makes the group dynamic: its members are the devices matching this fleet query.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateDeviceGroupBody = Static<typeof CreateDeviceGroupBody>;

export const UpdateDeviceGroupBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    parentId: Type.Optional(
      Type.Union([Type.String({ pattern: ID_PATTERN }), Type.Null()], {
        description: 'New parent static group, or `null` to make it a top-level group.',
      }),
    ),
    query: Type.Optional(
      Type.String({ minLength: 1, maxLength: 4000, description: 'New fleet query (dynamic groups only).' }),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type UpdateDeviceGroupBody = Static<typeof UpdateDeviceGroupBody>;

export const GroupMembersBody = Type.Object(
  { deviceIds: Type.Array(DeviceId, { minItems: 1, maxItems: 10000 }) },
  { additionalProperties: false },
);
export type GroupMembersBody = Static<typeof GroupMembersBody>;

export const GroupMembersResult = Type.Object({
  groupId: Type.String(),
  added: Type.Integer({ description: 'Devices that were not members before.' }),
  alreadyMembers: Type.Integer({ description: 'Devices that already were members (left unchanged).' }),
});
export type GroupMembersResult = Static<typeof GroupMembersResult>;

export const GroupMemberRemoved = Type.Object({
  groupId: Type.String(),
  deviceId: Type.String(),
});
export type GroupMemberRemoved = Static<typeof GroupMemberRemoved>;

// ---------------------------------------------------------------------------------------------
// Attribute indexes

export const AttributeIndex = Type.Object({ name: Type.String(), createdAt: Type.String() });
export type AttributeIndex = Static<typeof AttributeIndex>;
export const AttributeIndexList = Type.Object({ items: Type.Array(AttributeIndex) });
export type AttributeIndexList = Static<typeof AttributeIndexList>;
export const CreateAttributeIndexBody = Type.Object(
  {
    name: Type.String({
      pattern: ATTRIBUTE_NAME_PATTERN,
      description: 'Attribute name to index, e.g. `region` for `attributes.region`.',
    }),
  },
  { additionalProperties: false },
);
export type CreateAttributeIndexBody = Static<typeof CreateAttributeIndexBody>;
