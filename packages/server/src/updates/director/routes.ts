import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { X509Certificate } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { DirectorRotateBody, DirectorRotationView } from '@rampart/shared/api';
import { Problem } from '@rampart/shared/problem';
import { isTargetPath } from '@rampart/shared/updates';
import { RampartError, STATUS_OF } from '../../errors.js';
import { actorOf, type ApiContext } from '../../api/context.js';
import type { UpdatesService } from '../service.js';
import { assign, tableAssignments, unassign } from './assignments.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const DeviceParam = Type.Object(
  { id: Type.String({ minLength: 1, maxLength: 255 }) },
  { additionalProperties: false },
);
export const AssignmentView = Type.Object({
  deviceId: Type.String(),
  path: Type.String(),
  deploymentId: Type.Union([Type.String(), Type.Null()]),
});

/**
 * `PUT/DELETE /devices/{id}/update-assignment`: what the director tells one device to install;
 * `POST /updates/director/rotate`: replace the director's root or targets key.
 */
export function directorApiRoutes(ctx: ApiContext & { updates?: UpdatesService }): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const director = () => {
      if (!ctx.updates) throw new RampartError('INTERNAL', 'updates are not running');
      return ctx.updates.director;
    };
    app.put(
      '/devices/:id/update-assignment',
      {
        config: { permission: 'release:write', audit: 'device.update-assignment.set' },
        schema: {
          tags: ['updates'],
          summary: "Set the release a device must install (the director's assignment)",
          description:
            'The director lists this target, and only it, in the targets metadata it signs for the device. ' +
            "The target must be published and fit the device's model and hardware revision.",
          params: DeviceParam,
          body: Type.Object(
            { path: Type.String({ minLength: 1, maxLength: 200 }) },
            { additionalProperties: false },
          ),
          response: { 200: AssignmentView, ...errors },
        },
      },
      async (request) => {
        director();
        const { id } = request.params;
        const { path } = request.body;
        if (!isTargetPath(path))
          throw new RampartError('VALIDATION', `"${path}" is not a target path`, [
            { field: 'path', message: 'not a target path' },
          ]);
        return request.mutate(async (tx) => {
          const device = await tx
            .selectFrom('devices')
            .select(['model_id', 'hardware_revision'])
            .where('id', '=', id)
            .executeTakeFirst();
          if (!device) throw new RampartError('NOT_FOUND', `device ${id} does not exist`);
          const release = await tx
            .selectFrom('update_releases')
            .select(['custom', 'state'])
            .where('path', '=', path)
            .executeTakeFirst();
          if (!release || release.state !== 'published')
            throw new RampartError('NOT_FOUND', `no published release ${path}; see rampart release list`);
          const custom = JSON.parse(release.custom) as {
            models: string[];
            hardwareRevisions?: string[];
            encryption?: unknown;
          };
          if (!custom.models.includes(device.model_id))
            throw new RampartError(
              'VALIDATION',
              `release ${path} is for ${custom.models.join(', ')}, device ${id} is a ${device.model_id}`,
              [{ field: 'path', message: 'does not fit the device model' }],
            );
          if (
            custom.hardwareRevisions &&
            (device.hardware_revision === null ||
              !custom.hardwareRevisions.includes(device.hardware_revision))
          )
            throw new RampartError(
              'VALIDATION',
              `release ${path} is for hardware revisions ${custom.hardwareRevisions.join(', ')}, device ${id} is ${device.hardware_revision ?? 'of no known revision'}`,
              [{ field: 'path', message: 'does not fit the hardware revision' }],
            );
          const encryption = custom.encryption ? await director().encryptionProblem(tx, id) : null;
          if (encryption)
            throw new RampartError(
              'VALIDATION',
              `release ${path} is encrypted and device ${id} cannot receive its key: ${encryption}`,
              [{ field: 'path', message: "an encrypted release, and the device's key cannot do ECDH" }],
            );
          await assign(tx, id, path, null, actorOf(request.principal));
          return {
            result: { deviceId: id, path, deploymentId: null },
            target: `device:${id}`,
            details: { path },
          };
        });
      },
    );
    app.post(
      '/updates/director/rotate',
      {
        config: { permission: 'release:write', audit: 'director.rotate' },
        schema: {
          tags: ['updates'],
          summary: "Rotate the director's root key, its targets key, or both",
          description:
            'Creates the next director root version, listing fresh key-store keys for the named roles, signed by ' +
            'the current root key(s) and the new root key (TUF root rotation). Devices walk to it from the root they pinned ' +
            '(`/director/v1/<version>.root.json`); device targets are signed with the new targets key from their next ' +
            'request on.',
          body: DirectorRotateBody,
          response: { 200: DirectorRotationView, ...errors },
        },
      },
      async (request) => {
        request.auditTarget = 'director:root';
        const result = await director().rotate(request.body.roles, actorOf(request.principal));
        // The director audits the rotation in the transaction that stores the new root.
        request.audited = true;
        return result;
      },
    );
    app.delete(
      '/devices/:id/update-assignment',
      {
        config: { permission: 'release:write', audit: 'device.update-assignment.clear' },
        schema: {
          tags: ['updates'],
          summary: "Clear a device's update assignment (the director then lists nothing for it)",
          params: DeviceParam,
          response: { 204: Type.Null(), ...errors },
        },
      },
      async (request, reply) => {
        director();
        const { id } = request.params;
        await request.mutate(async (tx) => {
          if (!(await tableAssignments.forDevice(tx, id)))
            throw new RampartError('NOT_FOUND', `device ${id} has no update assignment`);
          await unassign(tx, id);
          return { result: null, target: `device:${id}` };
        });
        return reply.code(204).send(null);
      },
    );
  };
}

function problem(reply: FastifyReply, err: RampartError): FastifyReply {
  const status = STATUS_OF[err.code] ?? 500;
  return reply.code(status).type('application/problem+json').send({
    type: 'about:blank',
    title: err.code,
    status,
    detail: err.message,
  });
}

/**
 * The device side of the director on the EST listener (mutual TLS with the operational
 * certificate): `/director/v1/root.json` (the newest root), `/director/v1/<version>.root.json`,
 * `/director/v1/repository` (the release repository's URL and
 * root, for the device to pin), `/director/v1/devices/{id}/targets.json` (own id only) and
 * `POST /director/v1/receipts`.
 */
export function registerDirectorDeviceRoutes(
  app: FastifyInstance,
  updates: UpdatesService,
  clientCertificateOf: (request: FastifyRequest) => X509Certificate | undefined,
): void {
  const director = updates.director;
  const guarded =
    (handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
      try {
        return await handler(request, reply);
      } catch (err) {
        if (err instanceof RampartError && err.code !== 'INTERNAL') return problem(reply, err);
        throw err;
      }
    };
  const json = (reply: FastifyReply, text: string) => {
    updates.served('director', Buffer.byteLength(text));
    return reply.code(200).header('cache-control', 'no-store').type('application/json').send(text);
  };
  app.get(
    '/director/v1/root.json',
    guarded(async (request, reply) => {
      await director.authenticate(clientCertificateOf(request), request.raw.socket);
      const doc = await director.rootDocument(updates.storage.db);
      if (!doc) throw new RampartError('NOT_FOUND', 'the director has no root yet');
      return json(reply, doc);
    }),
  );
  // Every root version, for devices walking from the one they pinned to the newest (404 past it).
  app.get(
    '/director/v1/:file',
    guarded(async (request, reply) => {
      await director.authenticate(clientCertificateOf(request), request.raw.socket);
      const file = (request.params as { file: string }).file;
      const m = /^([1-9][0-9]{0,8})\.root\.json$/.exec(file);
      if (!m) throw new RampartError('NOT_FOUND', `no such director document: ${file}`);
      const doc = await director.rootDocument(updates.storage.db, Number(m[1]));
      if (!doc) throw new RampartError('NOT_FOUND', `the director has no root version ${m[1]}`);
      return json(reply, doc);
    }),
  );
  /** The answer to `/director/v1/repository`, made anew only when the root (or URL) changes. */
  let repositoryReply: { root: string; url: string; text: string } | null = null;
  app.get(
    '/director/v1/repository',
    guarded(async (request, reply) => {
      await director.authenticate(clientCertificateOf(request), request.raw.socket);
      const root = await updates.repository.document(updates.storage.db, 'root');
      if (!root || !updates.url)
        throw new RampartError('NOT_FOUND', 'the release repository is not initialised yet');
      if (repositoryReply?.root !== root || repositoryReply.url !== updates.url)
        repositoryReply = {
          root,
          url: updates.url,
          text: JSON.stringify({ url: updates.url, root: JSON.parse(root) as unknown }),
        };
      return json(reply, repositoryReply.text);
    }),
  );
  app.get(
    '/director/v1/devices/:id/targets.json',
    guarded(async (request, reply) => {
      const device = await director.authenticate(clientCertificateOf(request), request.raw.socket);
      const asked = (request.params as { id: string }).id;
      if (asked !== device.deviceId) await director.refuseOther(device, asked, request.ip);
      return json(reply, await director.targetsFor(device.deviceId));
    }),
  );
  app.post(
    '/director/v1/receipts',
    guarded(async (request, reply) => {
      const device = await director.authenticate(clientCertificateOf(request), request.raw.socket);
      let body: unknown;
      try {
        body = JSON.parse(((request.body as Buffer | undefined) ?? Buffer.alloc(0)).toString('utf8'));
      } catch {
        throw new RampartError('VALIDATION', 'the receipt is not JSON');
      }
      const out = await director.storeReceipt(device, body);
      return reply.code(out.stored ? 201 : 200).send({ id: out.id, stored: out.stored });
    }),
  );
}
