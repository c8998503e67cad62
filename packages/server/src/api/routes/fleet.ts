import { createHash } from 'node:crypto';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import {
  ATTRIBUTE_NAME_PATTERN,
  AttributeIndex,
  AttributeIndexList,
  CreateAttributeIndexBody,
  CreateDeviceBody,
  CreateDeviceGroupBody,
  CreateDeviceModelBody,
  CreateHardwareRevisionBody,
  Device,
  DeviceGroup,
  DeviceGroupList,
  DeviceList,
  DeviceListQuery,
  DeviceModel,
  DeviceModelList,
  GroupMemberRemoved,
  GroupMembersBody,
  GroupMembersResult,
  ID_PATTERN,
  IMPORT_CONTENT_TYPES,
  ImportQuery,
  ImportResult,
  REVISION_PATTERN,
  UpdateDeviceBody,
  UpdateDeviceGroupBody,
  UpdateDeviceModelBody,
  type ImportFormat,
} from '@rampart/shared/api';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import {
  createAttributeIndex,
  dropAttributeIndex,
  listAttributeIndexes,
} from '../../fleet/attribute-indexes.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const TAGS = ['fleet'];

const IdParams = (what: string) =>
  Type.Object(
    { id: Type.String({ pattern: ID_PATTERN, description: `Id of the ${what}.` }) },
    { additionalProperties: false },
  );
const ModelParams = IdParams('device model');
const DeviceParams = IdParams('device');
const GroupParams = IdParams('group');
const RevisionParams = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN, description: 'Id of the device model.' }),
    revision: Type.String({ pattern: REVISION_PATTERN, description: 'The hardware revision.' }),
  },
  { additionalProperties: false },
);
const MemberParams = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN, description: 'Id of the static group.' }),
    deviceId: Type.String({ pattern: ID_PATTERN, description: 'Id of the device.' }),
  },
  { additionalProperties: false },
);
const IndexParams = Type.Object(
  { name: Type.String({ pattern: ATTRIBUTE_NAME_PATTERN, description: 'The indexed attribute.' }) },
  { additionalProperties: false },
);

const ImportBodyText = (description: string) => ({ schema: Type.String({ description }) });

/** Actions whose first part also names the kind of their target (`device.update` -> `device:<id>`). */
const TARGET_KINDS = new Set(['device', 'model', 'group', 'attribute-index']);

/** Name the target of a state-changing request before it is validated, so that a refusal names it too. */
function earlyTarget(request: FastifyRequest): string | null {
  const action = request.routeOptions.config.audit;
  if (!action) return null;
  if (action === 'device.import') return 'devices';
  const prefix = action.split('.')[0] ?? '';
  if (!TARGET_KINDS.has(prefix)) return null;
  const params = (request.params ?? {}) as Record<string, unknown>;
  const body = (typeof request.body === 'object' && request.body !== null ? request.body : {}) as Record<
    string,
    unknown
  >;
  const key = params.id ?? params.name ?? body.id ?? body.name;
  return typeof key === 'string' && key.length <= 200 ? `${prefix}:${key}` : null;
}

/** Changed fields of a patch, for the audit entry. */
function patchDetails(changed: string[], patch: Record<string, unknown>): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const f of changed) if (f in patch) values[f] = patch[f];
  return { changed, ...values };
}

export function fleetRoutes(ctx: ApiContext): FastifyPluginAsync {
  const fleet = ctx.fleet;
  const digests = new WeakMap<FastifyRequest, string>();
  const utf8 = new TextDecoder('utf-8', { fatal: true });

  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();

    // Bulk import bodies: kept as text, with the digest of the exact bytes received.
    for (const type of Object.keys(IMPORT_CONTENT_TYPES)) {
      app.addContentTypeParser(
        type,
        { parseAs: 'buffer', bodyLimit: ctx.config.api.importBodyLimit },
        (request, body, done) => {
          const buf = body as Buffer;
          let text: string;
          try {
            text = utf8.decode(buf);
          } catch {
            done(
              new RampartError('IMPORT_INVALID', 'the file is not valid UTF-8 text; nothing was imported', [
                { field: '(body)', message: 'is not valid UTF-8' },
              ]),
            );
            return;
          }
          digests.set(request, createHash('sha256').update(buf).digest('hex'));
          done(null, text);
        },
      );
    }

    app.addHook('preValidation', async (request) => {
      const target = earlyTarget(request);
      if (target) request.auditTarget = target;
    });

    // ----------------------------------------------------------------------------- device models

    app.post(
      '/device-models',
      {
        config: { permission: 'model:write', audit: 'model.create' },
        schema: {
          tags: TAGS,
          summary: 'Create a device model',
          description:
            'A device model (a product, e.g. `DW100`) with optional hardware revisions. Every device belongs to one model.',
          body: CreateDeviceModelBody,
          response: { 201: DeviceModel, ...errors },
        },
      },
      async (request, reply) => {
        const model = await request.mutate(async (tx) => {
          const m = await fleet.models.create(tx, request.body);
          return {
            result: m,
            target: `model:${m.id}`,
            details: {
              name: m.name,
              hardwareRevisions: m.hardwareRevisions.map((r) => r.revision),
              encryptUpdates: m.encryptUpdates,
            },
          };
        });
        return reply.code(201).send(model);
      },
    );

    app.get(
      '/device-models',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List device models',
          description: 'Every device model with its hardware revisions, ordered by id.',
          response: { 200: DeviceModelList, ...errors },
        },
      },
      async () => ({ items: await fleet.models.list(ctx.storage.db) }),
    );

    app.get(
      '/device-models/:id',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'Show a device model',
          description: 'The model and its hardware revisions.',
          params: ModelParams,
          response: { 200: DeviceModel, ...errors },
        },
      },
      async (request) => fleet.models.get(ctx.storage.db, request.params.id),
    );

    app.patch(
      '/device-models/:id',
      {
        config: { permission: 'model:write', audit: 'model.update' },
        schema: {
          tags: TAGS,
          summary: 'Update a device model',
          description:
            'Change the name, the description, or whether releases for the model are encrypted (`encryptUpdates`, ' +
            'for releases created from then on). The id never changes.',
          params: ModelParams,
          body: UpdateDeviceModelBody,
          response: { 200: DeviceModel, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const m = await fleet.models.update(tx, request.params.id, request.body);
          return { result: m, target: `model:${m.id}`, details: { ...request.body } };
        }),
    );

    app.delete(
      '/device-models/:id',
      {
        config: { permission: 'model:write', audit: 'model.delete' },
        schema: {
          tags: TAGS,
          summary: 'Delete a device model',
          description:
            'Deletes the model and its hardware revisions. Refused (409) while any device is of this model.',
          params: ModelParams,
          response: { 200: DeviceModel, ...errors },
        },
      },
      async (request) => {
        const model = await request.mutate(async (tx) => {
          const m = await fleet.models.delete(tx, request.params.id);
          return { result: m, target: `model:${m.id}`, details: { name: m.name } };
        });
        // No device uses a deleted model; only its policy attachments went with it.
        fleet.changed({ devices: [] });
        return model;
      },
    );

    app.post(
      '/device-models/:id/hardware-revisions',
      {
        config: { permission: 'model:write', audit: 'model.revision.add' },
        schema: {
          tags: TAGS,
          summary: 'Add a hardware revision to a device model',
          description: 'Devices of the model can then name this revision. Returns the updated model.',
          params: ModelParams,
          body: CreateHardwareRevisionBody,
          response: { 201: DeviceModel, ...errors },
        },
      },
      async (request, reply) => {
        const model = await request.mutate(async (tx) => {
          const m = await fleet.models.addRevision(tx, request.params.id, request.body);
          return { result: m, target: `model:${m.id}`, details: { revision: request.body.revision } };
        });
        return reply.code(201).send(model);
      },
    );

    app.delete(
      '/device-models/:id/hardware-revisions/:revision',
      {
        config: { permission: 'model:write', audit: 'model.revision.remove' },
        schema: {
          tags: TAGS,
          summary: 'Remove a hardware revision from a device model',
          description: 'Refused (409) while any device has this revision. Returns the updated model.',
          params: RevisionParams,
          response: { 200: DeviceModel, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const m = await fleet.models.removeRevision(tx, request.params.id, request.params.revision);
          return { result: m, target: `model:${m.id}`, details: { revision: request.params.revision } };
        }),
    );

    // ----------------------------------------------------------------------------------- devices

    app.post(
      '/devices',
      {
        config: { permission: 'device:write', audit: 'device.create' },
        schema: {
          tags: TAGS,
          summary: 'Register a device',
          description:
            'The model must exist, `hardwareRevision` must be one of its revisions and `serial` must be unique for the model. ' +
            'Without `id`, an id `d-<20 random characters>` is generated. New devices are `pending` unless `status` says otherwise.',
          body: CreateDeviceBody,
          response: { 201: Device, ...errors },
        },
      },
      async (request, reply) => {
        const device = await request.mutate(async (tx) => {
          const d = await fleet.devices.create(tx, request.body);
          return {
            result: d,
            target: `device:${d.id}`,
            details: {
              model: d.model,
              hardwareRevision: d.hardwareRevision,
              serial: d.serial,
              status: d.status,
              ...(d.groups?.length ? { groups: d.groups } : {}),
            },
          };
        });
        return reply.code(201).send(device);
      },
    );

    app.get(
      '/devices',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List devices, optionally filtered by a fleet query',
          description:
            'Devices ordered by id, `limit` at a time. Pass the `nextCursor` of a page as `cursor` to get the next one; ' +
            'every device is returned exactly once. `count=true` adds the total number of matching devices. ' +
            'Query example: `model = "DW100" and attributes.region = "eu" and status in ("active", "pending")`.',
          querystring: DeviceListQuery,
          response: { 200: DeviceList, ...errors },
        },
      },
      async (request) => fleet.devices.list(ctx.storage.db, request.query),
    );

    app.post(
      '/devices/import',
      {
        config: { permission: 'device:write', audit: 'device.import' },
        bodyLimit: ctx.config.api.importBodyLimit,
        schema: {
          tags: TAGS,
          summary: 'Import devices from a CSV or JSON-lines file',
          description:
            'Send the file as the body with `Content-Type: text/csv` or `application/x-ndjson` (also `application/jsonl`). ' +
            'CSV: a header row with `id`, `model`, `hardwareRevision`, `serial`, `status`, `groups` (`;`-separated) and ' +
            '`attributes.<name>` columns (strings, or typed as `attributes.<name>:number` / `:boolean`); empty cells are omitted. ' +
            'JSON lines: one device object per line, as for `POST /devices`; blank lines are ignored. ' +
            'Every row is validated first; if any is invalid the answer is a 400 `IMPORT_INVALID` problem listing each error ' +
            'as `rows[<n>].<field>` (n counts data rows from 1) and nothing is written. Otherwise all devices are created in ' +
            'one transaction. `dryRun=true` only validates.',
          querystring: ImportQuery,
          body: {
            content: {
              'text/csv': ImportBodyText('CSV with a header row.'),
              'application/x-ndjson': ImportBodyText('One JSON object per line.'),
              'application/jsonl': ImportBodyText('One JSON object per line.'),
            },
          },
          response: { 200: ImportResult, 413: Problem, 415: Problem, ...errors },
        },
      },
      async (request) => {
        const mediaType = (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        const format: ImportFormat | undefined = IMPORT_CONTENT_TYPES[mediaType];
        const sha256 = digests.get(request);
        if (!format || typeof request.body !== 'string' || sha256 === undefined) {
          throw new RampartError(
            'UNSUPPORTED_MEDIA_TYPE',
            `send the file with Content-Type ${Object.keys(IMPORT_CONTENT_TYPES).join(', ')}`,
          );
        }
        const input = { text: request.body, format, sha256, dryRun: request.query.dryRun };
        if (input.dryRun) return fleet.importer.run(ctx.storage.db, input);
        return request.mutate(async (tx) => {
          const result = await fleet.importer.run(tx, input);
          return {
            result,
            target: 'devices',
            details: { count: result.imported, format, sha256 },
          };
        });
      },
    );

    app.get(
      '/devices/:id',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'Show a device',
          description: 'Includes `groups`: the static groups the device is a direct member of.',
          params: DeviceParams,
          response: { 200: Device, ...errors },
        },
      },
      async (request) => fleet.devices.get(ctx.storage.db, request.params.id),
    );

    app.patch(
      '/devices/:id',
      {
        config: { permission: 'device:write', audit: 'device.update' },
        schema: {
          tags: TAGS,
          summary: 'Update a device',
          description:
            'Fields present are set. `attributes` is an RFC 7396 merge patch: `{"attributes": {"floor": 3, "room": null}}` ' +
            'sets `floor`, removes `room` and keeps every other attribute. A status change is also recorded as a ' +
            '`device.status` audit entry and moves `statusChangedAt`.',
          params: DeviceParams,
          body: UpdateDeviceBody,
          response: { 200: Device, ...errors },
        },
      },
      async (request) => {
        const device = await request.mutate(async (tx) => {
          const { device, changed, status } = await fleet.devices.update(tx, request.params.id, request.body);
          const target = `device:${device.id}`;
          if (status) {
            await ctx.audit.append(tx, {
              actor: actorOf(request.principal),
              action: 'device.status',
              target,
              outcome: 'success',
              details: { from: status.from, to: status.to },
            });
          }
          return { result: device, target, details: patchDetails(changed, request.body) };
        });
        // Its model, attributes or status may change which policies apply and what they allow.
        fleet.changed({ devices: [device.id] });
        return device;
      },
    );

    app.delete(
      '/devices/:id',
      {
        config: { permission: 'device:write', audit: 'device.delete' },
        schema: {
          tags: TAGS,
          summary: 'Delete a device',
          description: 'Removes the device and its group memberships. Returns the deleted device.',
          params: DeviceParams,
          response: { 200: Device, ...errors },
        },
      },
      async (request) => {
        const device = await request.mutate(async (tx) => {
          const d = await fleet.devices.delete(tx, request.params.id);
          return {
            result: d,
            target: `device:${d.id}`,
            details: { model: d.model, serial: d.serial, status: d.status },
          };
        });
        fleet.changed({ devices: [device.id] });
        return device;
      },
    );

    // ------------------------------------------------------------------------------------ groups

    app.post(
      '/device-groups',
      {
        config: { permission: 'group:write', audit: 'group.create' },
        schema: {
          tags: TAGS,
          summary: 'Create a group',
          description:
            'Without `query` the group is static: devices are added to it explicitly, and it may sit under a static ' +
            '`parentId` (a device in a child group is also in every ancestor). With `query` it is dynamic: its members ' +
            'are the devices matching the fleet query, evaluated when asked; the query is stored in canonical form.',
          body: CreateDeviceGroupBody,
          response: { 201: DeviceGroup, ...errors },
        },
      },
      async (request, reply) => {
        const group = await request.mutate(async (tx) => {
          const g = await fleet.groups.create(tx, request.body);
          return {
            result: g,
            target: `group:${g.id}`,
            details: { kind: g.kind, parentId: g.parentId, ...(g.query ? { query: g.query } : {}) },
          };
        });
        // A new dynamic group has members at once.
        if (group.kind === 'dynamic') fleet.changed({ all: true });
        return reply.code(201).send(group);
      },
    );

    app.get(
      '/device-groups',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List groups',
          description: 'Every group, ordered by id; `parentId` gives the static hierarchy.',
          response: { 200: DeviceGroupList, ...errors },
        },
      },
      async () => ({ items: await fleet.groups.list(ctx.storage.db) }),
    );

    app.get(
      '/device-groups/:id',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'Show a group',
          description:
            'Its kind, parent and, for a dynamic group, its query. `GET /device-groups/{id}/devices` lists its devices.',
          params: GroupParams,
          response: { 200: DeviceGroup, ...errors },
        },
      },
      async (request) => fleet.groups.get(ctx.storage.db, request.params.id),
    );

    app.patch(
      '/device-groups/:id',
      {
        config: { permission: 'group:write', audit: 'group.update' },
        schema: {
          tags: TAGS,
          summary: 'Update a group',
          description:
            'Rename it, move it under another static parent (`parentId`, `null` for top level) or change the query of a ' +
            'dynamic group. Changes that would make a group contain itself are refused (409).',
          params: GroupParams,
          body: UpdateDeviceGroupBody,
          response: { 200: DeviceGroup, ...errors },
        },
      },
      async (request) => {
        const group = await request.mutate(async (tx) => {
          const { group, changed } = await fleet.groups.update(tx, request.params.id, request.body);
          return {
            result: group,
            target: `group:${group.id}`,
            details: patchDetails(changed, { ...request.body, query: group.query }),
          };
        });
        fleet.changed({ all: true });
        return group;
      },
    );

    app.delete(
      '/device-groups/:id',
      {
        config: { permission: 'group:write', audit: 'group.delete' },
        schema: {
          tags: TAGS,
          summary: 'Delete a group',
          description:
            'Refused (409) while it has child groups or a dynamic group names it. Its memberships are removed; the devices stay.',
          params: GroupParams,
          response: { 200: DeviceGroup, ...errors },
        },
      },
      async (request) => {
        const group = await request.mutate(async (tx) => {
          const g = await fleet.groups.delete(tx, request.params.id);
          return { result: g, target: `group:${g.id}`, details: { kind: g.kind } };
        });
        fleet.changed({ all: true });
        return group;
      },
    );

    app.post(
      '/device-groups/:id/members',
      {
        config: { permission: 'group:write', audit: 'group.members.add' },
        schema: {
          tags: TAGS,
          summary: 'Add devices to a static group',
          description:
            'Every device must exist (otherwise nothing is added); devices already in the group are left as they are. ' +
            'Dynamic groups have no members of their own (409).',
          params: GroupParams,
          body: GroupMembersBody,
          response: { 200: GroupMembersResult, ...errors },
        },
      },
      async (request) => {
        const ids = request.body.deviceIds;
        const result = await request.mutate(async (tx) => {
          const r = await fleet.groups.addMembers(tx, request.params.id, ids);
          return {
            result: r,
            target: `group:${r.groupId}`,
            details: {
              added: r.added,
              alreadyMembers: r.alreadyMembers,
              deviceIds: ids.slice(0, 100),
              ...(ids.length > 100 ? { deviceIdsOmitted: ids.length - 100 } : {}),
            },
          };
        });
        fleet.changed({ devices: ids });
        return result;
      },
    );

    app.delete(
      '/device-groups/:id/members/:deviceId',
      {
        config: { permission: 'group:write', audit: 'group.members.remove' },
        schema: {
          tags: TAGS,
          summary: 'Remove a device from a static group',
          description: 'The device must be a direct member of the group (404 otherwise).',
          params: MemberParams,
          response: { 200: GroupMemberRemoved, ...errors },
        },
      },
      async (request) => {
        const result = await request.mutate(async (tx) => {
          const r = await fleet.groups.removeMember(tx, request.params.id, request.params.deviceId);
          return { result: r, target: `group:${r.groupId}`, details: { deviceId: r.deviceId } };
        });
        fleet.changed({ devices: [result.deviceId] });
        return result;
      },
    );

    app.get(
      '/device-groups/:id/devices',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List the devices in a group',
          description:
            'Static group: its members and those of every group below it (dynamic groups below it contribute the devices ' +
            'matching their queries). Dynamic group: the devices matching its query now. Paginated and filterable like ' +
            '`GET /devices`.',
          params: GroupParams,
          querystring: DeviceListQuery,
          response: { 200: DeviceList, ...errors },
        },
      },
      async (request) => fleet.groups.devicesOf(ctx.storage.db, request.params.id, request.query),
    );

    // -------------------------------------------------------------------------- attribute indexes

    app.get(
      '/device-attribute-indexes',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List attribute indexes',
          description:
            'Attributes with a database index, which makes fleet queries on them fast in large fleets.',
          response: { 200: AttributeIndexList, ...errors },
        },
      },
      async () => ({ items: await listAttributeIndexes(ctx.storage.db) }),
    );

    app.post(
      '/device-attribute-indexes',
      {
        config: { permission: 'model:write', audit: 'attribute-index.create' },
        schema: {
          tags: TAGS,
          summary: 'Index an attribute',
          description:
            'Builds a database index on `attributes.<name>` so that queries on it do not scan every device. ' +
            'On PostgreSQL the index is built concurrently: device writes continue meanwhile.',
          body: CreateAttributeIndexBody,
          response: { 201: AttributeIndex, ...errors },
        },
      },
      async (request, reply) => {
        const { name } = request.body;
        const target = `attribute-index:${name}`;
        let info;
        if (ctx.storage.dialect === 'postgres') {
          // Built outside the audit transaction: a concurrent build cannot run inside one.
          const built = await createAttributeIndex(ctx.storage.db, 'postgres', name);
          info = await request.mutate(async () => ({ result: built, target }));
        } else {
          info = await request.mutate(async (tx) => ({
            result: await createAttributeIndex(tx, 'sqlite', name),
            target,
          }));
        }
        return reply.code(201).send(info);
      },
    );

    app.delete(
      '/device-attribute-indexes/:name',
      {
        config: { permission: 'model:write', audit: 'attribute-index.delete' },
        schema: {
          tags: TAGS,
          summary: 'Drop an attribute index',
          description: 'Queries on the attribute keep working, only slower in large fleets.',
          params: IndexParams,
          response: { 200: AttributeIndex, ...errors },
        },
      },
      async (request) => {
        const { name } = request.params;
        const target = `attribute-index:${name}`;
        const info = (await listAttributeIndexes(ctx.storage.db)).find((i) => i.name === name);
        if (!info) throw new RampartError('NOT_FOUND', `attribute ${name} is not indexed`);
        if (ctx.storage.dialect === 'postgres') {
          await dropAttributeIndex(ctx.storage.db, 'postgres', name);
          return request.mutate(async () => ({ result: info, target }));
        }
        return request.mutate(async (tx) => {
          await dropAttributeIndex(tx, 'sqlite', name);
          return { result: info, target };
        });
      },
    );
  };
}
