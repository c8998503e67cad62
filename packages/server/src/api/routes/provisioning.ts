import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  AddManufacturerBody,
  AttestationResultView,
  DeviceTrace,
  EnrollmentPolicyBody,
  EnrollmentPolicyView,
  ImportedBatchView,
  ManufacturerView,
  ModelAttestationBody,
  ModelAttestationView,
  ReferenceValueBody,
  ReferenceValueView,
  RegisterStationBody,
  RegisteredStation,
  StationView,
} from '@rampart/shared/api';
import { ProvisioningTranscript } from '@rampart/shared/provisioning';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import { ManifestRefusal } from '../../provisioning/batches.js';
import type { ProvisioningService } from '../../provisioning/service.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const TAGS = ['provisioning'];
const NameParam = Type.Object({ name: Type.String({ maxLength: 128 }) }, { additionalProperties: false });
const DeviceParam = Type.Object({ id: Type.String({ maxLength: 128 }) }, { additionalProperties: false });

/**
 * Manufacturing and provisioning: stations, manufacturing CAs, batch manifests, enrollment
 * policies, reference values, per-model attestation settings; and, per device, its trace,
 * attestation results and provisioning transcripts.
 */
export function provisioningRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const p = (): ProvisioningService => {
      if (!ctx.provisioning) throw new RampartError('INTERNAL', 'provisioning is not running');
      return ctx.provisioning;
    };
    /** A device's history, or 404 when Rampart has never heard of the device. */
    const knownOrNotFound = async <T>(deviceId: string, items: T[]): Promise<T[]> => {
      if (items.length) return items;
      const db = ctx.storage.db;
      const registered = await db
        .selectFrom('devices')
        .select('id')
        .where('id', '=', deviceId)
        .executeTakeFirst();
      if (!registered && !(await p().batches.byDevice(db, deviceId)))
        throw new RampartError(
          'NOT_FOUND',
          `device ${deviceId} is neither registered nor in any imported manifest`,
        );
      return items;
    };

    // -- stations -------------------------------------------------------------------------------
    app.post(
      '/stations',
      {
        config: { permission: 'provisioning:manage', audit: 'station.register' },
        schema: {
          tags: TAGS,
          summary: 'Register a factory station',
          description:
            "Registers the station's public key and issues it a CA certificate (pathLen 0) under the manufacturing CA for the same key, so that it can issue birth certificates offline.",
          body: RegisterStationBody,
          response: { 201: RegisteredStation, ...errors },
        },
      },
      async (request, reply) => {
        const out = await request.mutate(async (tx) => {
          const r = await p().stations.register(tx, {
            name: request.body.name,
            publicKeyPem: request.body.publicKey,
            ...(request.body.description !== undefined ? { description: request.body.description } : {}),
            actor: actorOf(request.principal),
          });
          return {
            result: r,
            target: `station:${r.station.name}`,
            details: { keyId: r.station.keyId, caSerial: r.station.caSerial },
          };
        });
        return reply.code(201).send({
          station: out.station,
          certificate: out.certificatePem,
          chain: out.chainPem,
          rootCertificate: p().identity.rootPem(),
        });
      },
    );

    app.get(
      '/stations',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List factory stations',
          response: { 200: Type.Array(StationView), ...errors },
        },
      },
      async () => p().stations.list(ctx.storage.db),
    );

    app.post(
      '/stations/:name/revoke',
      {
        config: { permission: 'provisioning:manage', audit: 'station.revoke' },
        schema: {
          tags: TAGS,
          summary: 'Revoke a factory station',
          description:
            'Its CA certificate is revoked; its manifests and birth certificates are refused from now on.',
          params: NameParam,
          response: { 200: StationView, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const s = await p().stations.revoke(tx, request.params.name);
          return { result: s, target: `station:${s.name}` };
        }),
    );

    // -- external manufacturing CAs -------------------------------------------------------------
    app.post(
      '/manufacturers',
      {
        config: { permission: 'provisioning:manage', audit: 'manufacturer.add' },
        schema: {
          tags: TAGS,
          summary: 'Register an external manufacturing CA',
          description:
            "Birth certificates issued by it are accepted (a module vendor's or contract manufacturer's IDevIDs).",
          body: AddManufacturerBody,
          response: { 201: ManufacturerView, ...errors },
        },
      },
      async (request, reply) => {
        const m = await request.mutate(async (tx) => {
          const r = await p().stations.addManufacturer(tx, {
            name: request.body.name,
            certificatePem: request.body.certificate,
            actor: actorOf(request.principal),
          });
          return {
            result: r,
            target: `manufacturer:${r.name}`,
            details: { subject: r.subject, fingerprint: r.fingerprint },
          };
        });
        return reply.code(201).send(m);
      },
    );

    app.get(
      '/manufacturers',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List external manufacturing CAs',
          response: { 200: Type.Array(ManufacturerView), ...errors },
        },
      },
      async () => p().stations.manufacturers(ctx.storage.db),
    );

    app.delete(
      '/manufacturers/:name',
      {
        config: { permission: 'provisioning:manage', audit: 'manufacturer.remove' },
        schema: {
          tags: TAGS,
          summary: 'Remove an external manufacturing CA',
          params: NameParam,
          response: { 200: Type.Object({ deleted: Type.String() }), ...errors },
        },
      },
      async (request, reply) => {
        await request.mutate(async (tx) => {
          await p().stations.removeManufacturer(tx, request.params.name);
          return { result: null, target: `manufacturer:${request.params.name}` };
        });
        return reply.send({ deleted: request.params.name });
      },
    );

    // -- batches --------------------------------------------------------------------------------
    app.post(
      '/batches',
      {
        config: { permission: 'provisioning:manage', audit: 'batch.import' },
        bodyLimit: 64 * 1024 * 1024,
        schema: {
          tags: TAGS,
          summary: 'Import a signed batch manifest',
          description:
            "Verifies the station's signature and every device (birth certificate from that station or a registered manufacturing CA, for the recorded key; TPM keys well formed) and stores the traceability chain. All or nothing. Birth certificates are issued now for devices the station sent requests for.",
          body: Type.Unknown({
            description: 'The manifest (rampart-batch-manifest/1), as the station wrote it.',
          }),
          response: { 201: ImportedBatchView, ...errors },
        },
      },
      async (request, reply) => {
        try {
          const out = await request.mutate(async (tx) => {
            const r = await p().batches.import(tx, request.body, actorOf(request.principal));
            return {
              result: r,
              target: `batch:${r.batch}`,
              details: {
                station: r.station,
                devices: r.devices,
                manifestDigest: r.manifestDigest,
                issued: r.issued.length,
              },
            };
          });
          return reply.code(201).send(out);
        } catch (err) {
          if (err instanceof ManifestRefusal)
            request.log.warn(
              { event: 'batch.import.refused', reason: err.message },
              'batch manifest refused',
            );
          throw err;
        }
      },
    );

    app.get(
      '/batches',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List imported batches',
          response: {
            200: Type.Array(
              Type.Object({
                id: Type.String(),
                station: Type.String(),
                manifestDigest: Type.String(),
                devices: Type.Integer(),
                createdAt: Type.String(),
                closedAt: Type.String(),
                importedAt: Type.String(),
                importedBy: Type.String(),
              }),
            ),
            ...errors,
          },
        },
      },
      async () =>
        (await p().batches.list(ctx.storage.db)).map((b) => ({
          id: b.id,
          station: b.station,
          manifestDigest: b.manifest_digest,
          devices: Number(b.device_count),
          createdAt: b.created_at,
          closedAt: b.closed_at,
          importedAt: b.imported_at,
          importedBy: b.imported_by,
        })),
    );

    // -- enrollment policies --------------------------------------------------------------------
    app.post(
      '/enrollment-policies',
      {
        config: { permission: 'provisioning:manage', audit: 'enrollment.policy.create' },
        schema: {
          tags: TAGS,
          summary: 'Create an enrollment policy',
          body: EnrollmentPolicyBody,
          response: { 201: EnrollmentPolicyView, ...errors },
        },
      },
      async (request, reply) => {
        const out = await request.mutate(async (tx) => {
          const v = await p().policies.create(tx, request.body);
          return {
            result: v,
            target: `enrollment-policy:${v.name}`,
            details: { kind: v.kind, version: v.version },
          };
        });
        return reply.code(201).send(out);
      },
    );

    app.get(
      '/enrollment-policies',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List enrollment policies',
          response: { 200: Type.Array(EnrollmentPolicyView), ...errors },
        },
      },
      async () => p().policies.list(ctx.storage.db),
    );

    app.get(
      '/enrollment-policies/:name',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'One enrollment policy',
          params: NameParam,
          response: { 200: EnrollmentPolicyView, ...errors },
        },
      },
      async (request) => p().policies.get(ctx.storage.db, request.params.name),
    );

    app.patch(
      '/enrollment-policies/:name',
      {
        config: { permission: 'provisioning:manage', audit: 'enrollment.policy.update' },
        schema: {
          tags: TAGS,
          summary: 'Change an enrollment policy (its version increases)',
          params: NameParam,
          body: Type.Partial(
            Type.Pick(EnrollmentPolicyBody, ['config', 'placement', 'description', 'enabled']),
            {
              additionalProperties: false,
            },
          ),
          response: { 200: EnrollmentPolicyView, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const v = await p().policies.update(tx, request.params.name, request.body);
          return { result: v, target: `enrollment-policy:${v.name}`, details: { version: v.version } };
        }),
    );

    app.delete(
      '/enrollment-policies/:name',
      {
        config: { permission: 'provisioning:manage', audit: 'enrollment.policy.delete' },
        schema: {
          tags: TAGS,
          summary: 'Delete an enrollment policy',
          params: NameParam,
          response: { 200: Type.Object({ deleted: Type.String() }), ...errors },
        },
      },
      async (request, reply) => {
        await request.mutate(async (tx) => {
          await p().policies.delete(tx, request.params.name);
          return { result: null, target: `enrollment-policy:${request.params.name}` };
        });
        return reply.send({ deleted: request.params.name });
      },
    );

    app.post(
      '/enrollment-policies/:name/claim-certificate',
      {
        config: { permission: 'provisioning:manage', audit: 'enrollment.claim-certificate.issue' },
        schema: {
          tags: TAGS,
          summary: 'Issue the claim certificate of a claim policy',
          description:
            'For the key of `csr` when given; otherwise for a new P-256 key, returned once in `privateKey` and never stored. Devices present it as TLS client certificate on EST simpleenroll.',
          params: NameParam,
          body: Type.Object(
            {
              csr: Type.Optional(Type.String({ maxLength: 16_384, description: 'PEM PKCS#10 request.' })),
              validityDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
            },
            { additionalProperties: false },
          ),
          response: {
            201: Type.Object({
              certificate: Type.String(),
              chain: Type.Array(Type.String()),
              privateKey: Type.Optional(Type.String()),
              serial: Type.String(),
              fingerprint: Type.String(),
              notAfter: Type.String(),
            }),
            ...errors,
          },
        },
      },
      async (request, reply) => {
        const out = await request.mutate(async (tx) => {
          const issued = await p().claims.issue(tx, request.params.name, {
            ...(request.body.csr ? { csrPem: request.body.csr } : {}),
            ...(request.body.validityDays ? { validityDays: request.body.validityDays } : {}),
          });
          return {
            result: issued,
            target: `enrollment-policy:${request.params.name}`,
            details: {
              serial: issued.serial,
              notAfter: issued.notAfter,
              keyGenerated: issued.privateKey !== undefined,
            },
          };
        });
        return reply.code(201).send(out);
      },
    );

    // -- attestation settings and reference values ----------------------------------------------
    app.get(
      '/device-models/:id/attestation',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: "A model's attestation requirements",
          params: DeviceParam,
          response: { 200: ModelAttestationView, ...errors },
        },
      },
      async (request) => {
        const db = ctx.storage.db;
        const model = await db
          .selectFrom('device_models')
          .select('id')
          .where('id', '=', request.params.id)
          .executeTakeFirst();
        if (!model) throw new RampartError('NOT_FOUND', `device model ${request.params.id} does not exist`);
        return p().attestation.modelSettings(db, request.params.id, true);
      },
    );

    app.put(
      '/device-models/:id/attestation',
      {
        config: { permission: 'provisioning:manage', audit: 'model.attestation.set' },
        schema: {
          tags: TAGS,
          summary: "Set a model's attestation requirements",
          description:
            '`attestation`: `required` (a fresh admitting result before every issuance and renewal), `optional` (checked when presented) or `off`. Without a setting, factory-made devices require attestation and others do not.',
          params: DeviceParam,
          body: ModelAttestationBody,
          response: { 200: ModelAttestationView, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const v = await p().attestation.setModelSettings(tx, request.params.id, request.body);
          return { result: v, target: `model:${v.model}`, details: { ...request.body } };
        }),
    );

    app.post(
      '/reference-values',
      {
        config: { permission: 'provisioning:manage', audit: 'attestation.reference.add' },
        schema: {
          tags: TAGS,
          summary: 'Register a reference value (a known-good measurement)',
          body: ReferenceValueBody,
          response: { 201: ReferenceValueView, ...errors },
        },
      },
      async (request, reply) => {
        const out = await request.mutate(async (tx) => {
          const v = await p().attestation.addReference(tx, request.body);
          return {
            result: v,
            target: `model:${v.model}`,
            details: { component: v.component, digest: v.digest },
          };
        });
        return reply.code(201).send(out);
      },
    );

    app.get(
      '/reference-values',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'List reference values',
          querystring: Type.Object(
            { model: Type.Optional(Type.String({ maxLength: 128 })) },
            { additionalProperties: false },
          ),
          response: { 200: Type.Array(ReferenceValueView), ...errors },
        },
      },
      async (request) => p().attestation.listReferences(ctx.storage.db, request.query.model),
    );

    app.delete(
      '/reference-values/:id',
      {
        config: { permission: 'provisioning:manage', audit: 'attestation.reference.remove' },
        schema: {
          tags: TAGS,
          summary: 'Remove a reference value',
          params: Type.Object({ id: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
          response: { 200: ReferenceValueView, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const v = await p().attestation.removeReference(tx, request.params.id);
          return {
            result: v,
            target: `model:${v.model}`,
            details: { component: v.component, digest: v.digest },
          };
        }),
    );

    // -- per device -----------------------------------------------------------------------------
    app.get(
      '/devices/:id/trace',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: 'Where a device was made and how it was provisioned',
          params: DeviceParam,
          response: { 200: DeviceTrace, ...errors },
        },
      },
      async (request) => p().trace(request.params.id),
    );

    app.get(
      '/devices/:id/attestation',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: "A device's attestation results, newest first",
          params: DeviceParam,
          response: { 200: Type.Array(AttestationResultView), ...errors },
        },
      },
      async (request) =>
        knownOrNotFound(request.params.id, await p().attestation.results(ctx.storage.db, request.params.id)),
    );

    app.get(
      '/devices/:id/transcripts',
      {
        config: { permission: 'device:read' },
        schema: {
          tags: TAGS,
          summary: "A device's signed provisioning transcripts, newest first",
          params: DeviceParam,
          response: { 200: Type.Array(ProvisioningTranscript), ...errors },
        },
      },
      async (request) =>
        knownOrNotFound(request.params.id, await p().transcripts.list(ctx.storage.db, request.params.id)),
    );

    app.get(
      '/provisioning/transcript-key',
      {
        config: { permission: 'authenticated' },
        schema: {
          tags: TAGS,
          summary: 'The public key that signs provisioning transcripts (PEM)',
          response: { 200: Type.String({ contentMediaType: 'application/x-pem-file' }), ...errors },
        },
      },
      async (_request, reply) => reply.type('application/x-pem-file').send(p().transcripts.publicKeyPem()),
    );
  };
}
