import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  CaStatus,
  CertificateDetail,
  CertificateList,
  CertificateListQuery,
  CreateEnrollmentTokenBody,
  CreatedEnrollmentToken,
  EnrollmentTokenRecord,
  RevokeBody,
  RevokeResult,
  RolloverBody,
  RootExport,
  RootExportBody,
  RootImportBody,
  CertificateAuthority,
} from '@rampart/shared/api';
import { PkiFormatError, normalizeSerial } from '@rampart/shared/pki';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import type { CaRecord } from '../../identity/authorities.js';
import type { CertificateRecord } from '../../identity/certificates.js';
import type { IdentityService } from '../../identity/service.js';
import { parseDuration } from '../../time.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const SerialParam = Type.Object(
  {
    serial: Type.String({
      minLength: 1,
      maxLength: 64,
      description: 'Hex serial; `:` separators and any case accepted.',
    }),
  },
  { additionalProperties: false },
);
const CaIdParam = Type.Object(
  { id: Type.String({ pattern: '^[a-z]+-\\d+$' }) },
  { additionalProperties: false },
);
const DeviceQuery = Type.Object(
  {
    device: Type.Optional(Type.String()),
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  },
  { additionalProperties: false },
);

function serialOf(input: string): string {
  try {
    return normalizeSerial(input);
  } catch (err) {
    if (err instanceof PkiFormatError)
      throw new RampartError('VALIDATION', err.message, [
        { field: 'serial', message: 'is not a hex serial' },
      ]);
    throw err;
  }
}

function summary(c: CertificateRecord) {
  const { certificatePem: _pem, status: _status, ...rest } = c;
  return rest;
}

/** Routes that change state outside `request.mutate` audit themselves; this marks them done. */
async function audited(
  ctx: ApiContext,
  request: FastifyRequest,
  event: { action: string; target: string; details?: Record<string, unknown> },
): Promise<void> {
  await ctx.audit.record({ actor: actorOf(request.principal), outcome: 'success', ...event });
  request.audited = true;
}

export function identityRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const identityOf = (): IdentityService => {
      if (!ctx.identity) throw new RampartError('INTERNAL', 'the certificate authority is not running');
      return ctx.identity;
    };

    async function describeCa(identity: IdentityService, ca: CaRecord) {
      const counts = (await identity.registry.countsByState(ctx.storage.db)).filter(
        (r) => r.issuerId === ca.id,
      );
      const n = (state: string) => counts.find((c) => c.state === state)?.n ?? 0;
      let crl = null;
      if (ca.kind !== 'root' && ca.status !== 'retired') {
        const doc = await identity.crl.get(ca.id);
        crl = {
          number: doc.number,
          thisUpdate: doc.thisUpdate.toISOString(),
          nextUpdate: doc.nextUpdate.toISOString(),
          url: identity.endpoints?.crl(ca.id) ?? '',
        };
      }
      return {
        id: ca.id,
        kind: ca.kind,
        generation: ca.generation,
        parentId: ca.parentId,
        subject: ca.subject,
        serial: ca.serial,
        notBefore: ca.notBefore,
        notAfter: ca.notAfter,
        status: ca.status,
        keyAlgorithm: ca.keyAlgorithm,
        keyState: ca.keyState,
        keyExportedAt: ca.keyExportedAt,
        crl,
        certificates: { valid: n('valid'), expired: n('expired'), revoked: n('revoked') },
      };
    }

    app.get(
      '/ca',
      {
        config: { permission: 'certificate:read' },
        schema: {
          tags: ['certificates'],
          summary: 'CA hierarchy, key store, CRL state and enrollment endpoints',
          response: { 200: CaStatus, ...errors },
        },
      },
      async () => {
        const identity = identityOf();
        const authorities = [];
        for (const ca of identity.authorities.all()) authorities.push(await describeCa(identity, ca));
        const crl: Record<string, string> = {};
        for (const ca of identity.authorities.served())
          if (ca.kind !== 'root') crl[ca.id] = identity.endpoints?.crl(ca.id) ?? '';
        return {
          keyStore: ctx.config.keystore.backend,
          authorities,
          endpoints: { est: identity.endpoints?.est ?? null, ocsp: identity.endpoints?.ocsp ?? '', crl },
          deviceCertificateHours: identity.settings.deviceValidityHours,
        };
      },
    );

    app.get(
      '/ca/:id/certificate',
      {
        config: { permission: 'certificate:read' },
        schema: {
          tags: ['certificates'],
          summary: 'A CA certificate (PEM)',
          params: CaIdParam,
          response: { 200: Type.String({ contentMediaType: 'application/x-pem-file' }), ...errors },
        },
      },
      async (request, reply) =>
        reply
          .type('application/x-pem-file')
          .send(identityOf().authorities.get(request.params.id).certificatePem),
    );

    app.post(
      '/ca/rollover',
      {
        config: { permission: 'ca:manage', audit: 'ca.rollover' },
        schema: {
          tags: ['certificates'],
          summary: 'Roll over the issuing (or manufacturing) CA',
          description:
            'A new generation signed by the root becomes active; the previous one is retiring: still served in `cacerts`, CRLs and OCSP until its certificates expire. Needs the root key online.',
          body: RolloverBody,
          response: {
            200: Type.Object({ previous: CertificateAuthority, next: CertificateAuthority }),
            ...errors,
          },
        },
      },
      async (request) => {
        const identity = identityOf();
        const { previous, next } = await identity.rollover(request.body.kind);
        await audited(ctx, request, {
          action: 'ca.rollover',
          target: `ca:${next.id}`,
          details: { previous: previous.id, next: next.id, subject: next.subject, serial: next.serial },
        });
        return { previous: await describeCa(identity, previous), next: await describeCa(identity, next) };
      },
    );

    app.post(
      '/ca/:id/retire',
      {
        config: { permission: 'ca:manage', audit: 'ca.retire' },
        schema: {
          tags: ['certificates'],
          summary: 'Stop serving a retiring CA',
          params: CaIdParam,
          response: { 200: CertificateAuthority, ...errors },
        },
      },
      async (request) => {
        const identity = identityOf();
        const ca = await identity.retire(request.params.id);
        await audited(ctx, request, { action: 'ca.retire', target: `ca:${ca.id}` });
        return describeCa(identity, ca);
      },
    );

    app.post(
      '/ca/root/export',
      {
        config: { permission: 'ca:manage', audit: 'ca.root.export' },
        schema: {
          tags: ['certificates'],
          summary: 'Export the root key, encrypted, to keep it offline',
          body: RootExportBody,
          response: { 200: RootExport, ...errors },
        },
      },
      async (request) => {
        const identity = identityOf();
        const out = await identity.authorities.exportRootKey(request.body.passphrase);
        await audited(ctx, request, {
          action: 'ca.root.export',
          target: `ca:${identity.authorities.root().id}`,
        });
        return out;
      },
    );

    app.post(
      '/ca/root/remove',
      {
        config: { permission: 'ca:manage', audit: 'ca.root.remove' },
        schema: {
          tags: ['certificates'],
          summary: 'Delete the root key from the key store (after an export)',
          response: { 200: CertificateAuthority, ...errors },
        },
      },
      async (request) => {
        const identity = identityOf();
        const root = await identity.authorities.removeRootKey();
        await audited(ctx, request, { action: 'ca.root.remove', target: `ca:${root.id}` });
        return describeCa(identity, root);
      },
    );

    app.post(
      '/ca/root/import',
      {
        config: { permission: 'ca:manage', audit: 'ca.root.import' },
        schema: {
          tags: ['certificates'],
          summary: 'Bring an exported root key back online (e.g. for a rollover)',
          body: RootImportBody,
          response: { 200: CertificateAuthority, ...errors },
        },
      },
      async (request) => {
        const identity = identityOf();
        const root = await identity.authorities.importRootKey(request.body.keyPem, request.body.passphrase);
        await audited(ctx, request, { action: 'ca.root.import', target: `ca:${root.id}` });
        return describeCa(identity, root);
      },
    );

    app.get(
      '/certificates',
      {
        config: { permission: 'certificate:read' },
        schema: {
          tags: ['certificates'],
          summary: 'List certificates by device, CA, state or upcoming expiry',
          querystring: CertificateListQuery,
          response: { 200: CertificateList, ...errors },
        },
      },
      async (request) => {
        const q = request.query;
        const items = await identityOf().registry.list(ctx.storage.db, {
          ...(q.device ? { deviceId: q.device } : {}),
          ...(q.issuer ? { issuerId: q.issuer } : {}),
          ...(q.profile ? { profile: q.profile } : {}),
          ...(q.state ? { state: q.state } : {}),
          ...(q.expiringWithinDays !== undefined ? { expiringWithinDays: q.expiringWithinDays } : {}),
          ...(q.after ? { after: serialOf(q.after) } : {}),
          limit: q.limit,
        });
        return {
          items: items.map(summary),
          next: items.length === q.limit ? items[items.length - 1]!.serial : null,
        };
      },
    );

    app.get(
      '/certificates/:serial',
      {
        config: { permission: 'certificate:read' },
        schema: {
          tags: ['certificates'],
          summary: 'One certificate with its PEM',
          params: SerialParam,
          response: { 200: CertificateDetail, ...errors },
        },
      },
      async (request) => {
        const { status: _s, ...rest } = await identityOf().certificate(serialOf(request.params.serial));
        return rest;
      },
    );

    app.get(
      '/certificates/:serial/chain',
      {
        config: { permission: 'certificate:read' },
        schema: {
          tags: ['certificates'],
          summary: 'The certificate and its CA chain up to the root (PEM)',
          params: SerialParam,
          response: {
            200: Type.String({ contentMediaType: 'application/pem-certificate-chain' }),
            ...errors,
          },
        },
      },
      async (request, reply) => {
        const identity = identityOf();
        const cert = await identity.certificate(serialOf(request.params.serial));
        return reply.type('application/pem-certificate-chain').send(identity.chainOf(cert));
      },
    );

    app.post(
      '/certificates/:serial/revoke',
      {
        config: { permission: 'certificate:revoke', audit: 'certificate.revoke' },
        schema: {
          tags: ['certificates'],
          summary: 'Revoke a certificate and every certificate renewed from it',
          description:
            'The CRL is re-signed and pre-signed OCSP answers are dropped at once. Revoking an already revoked certificate still revokes its valid descendants.',
          params: SerialParam,
          body: RevokeBody,
          response: { 200: RevokeResult, ...errors },
        },
      },
      async (request) => {
        const serial = serialOf(request.params.serial);
        request.auditTarget = `certificate:${serial}`;
        const result = await identityOf().revoke(serial, request.body.reason, actorOf(request.principal));
        request.audited = true;
        return {
          serial,
          reason: request.body.reason,
          revoked: result.revoked.map((r) => ({ serial: r.serial, deviceId: r.deviceId })),
          alreadyRevoked: result.alreadyRevoked,
        };
      },
    );

    app.post(
      '/enrollment-tokens',
      {
        config: { permission: 'enrollment:manage', audit: 'enrollment-token.create' },
        schema: {
          tags: ['certificates'],
          summary: 'Create a one-time enrollment token for a device',
          description:
            'The device presents it once to EST simpleenroll: as the HTTP Basic password with its device id as user name, or as a Bearer token. The secret is shown only in this response.',
          body: CreateEnrollmentTokenBody,
          response: { 201: CreatedEnrollmentToken, ...errors },
        },
      },
      async (request, reply) => {
        const identity = identityOf();
        const { deviceId, expiresIn } = request.body;
        const ms = parseDuration(expiresIn);
        if (ms === null || ms <= 0 || ms > 366 * 86400_000)
          throw new RampartError(
            'VALIDATION',
            'expiresIn must be a positive duration of at most a year, such as 1h',
            [{ field: 'expiresIn', message: 'is not a positive duration up to 366d' }],
          );
        const created = await request.mutate(async (tx) => {
          const device = await tx
            .selectFrom('devices')
            .select(['id', 'status'])
            .where('id', '=', deviceId)
            .executeTakeFirst();
          if (!device)
            throw new RampartError(
              'NOT_FOUND',
              `device ${deviceId} does not exist; register it first: rampart device create`,
            );
          if (device.status === 'disabled')
            throw new RampartError('CONFLICT', `device ${deviceId} is disabled; enable it before it enrolls`);
          const c = await identity.tokens.create(tx, {
            deviceId,
            expiresAt: new Date(Date.now() + ms).toISOString(),
            createdBy: actorOf(request.principal),
          });
          return {
            result: c,
            target: `device:${deviceId}`,
            details: { tokenId: c.record.id, expiresAt: c.record.expiresAt },
          };
        });
        return reply
          .code(201)
          .send({ ...created.record, token: created.token, estUrl: identity.endpoints?.est ?? null });
      },
    );

    app.get(
      '/enrollment-tokens',
      {
        config: { permission: 'enrollment:manage' },
        schema: {
          tags: ['certificates'],
          summary: 'List enrollment tokens (never their secrets)',
          querystring: DeviceQuery,
          response: { 200: Type.Object({ items: Type.Array(EnrollmentTokenRecord) }), ...errors },
        },
      },
      async (request) => ({
        items: await identityOf().tokens.list(ctx.storage.db, {
          ...(request.query.device ? { deviceId: request.query.device } : {}),
          limit: request.query.limit,
        }),
      }),
    );

    app.delete(
      '/enrollment-tokens/:id',
      {
        config: { permission: 'enrollment:manage', audit: 'enrollment-token.revoke' },
        schema: {
          tags: ['certificates'],
          summary: 'Revoke an unused enrollment token',
          params: Type.Object(
            { id: Type.String({ pattern: '^[a-z0-9]{12}$' }) },
            { additionalProperties: false },
          ),
          response: { 200: EnrollmentTokenRecord, ...errors },
        },
      },
      async (request) =>
        request.mutate(async (tx) => {
          const record = await identityOf().tokens.revoke(tx, request.params.id);
          return { result: record, target: `device:${record.deviceId}`, details: { tokenId: record.id } };
        }),
    );
  };
}
