import type { FastifyPluginAsync } from 'fastify';
import type { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  CreateReleaseQuery,
  InitRepositoryBody,
  ReleaseList,
  RELEASE_STATES,
  ReleaseView,
  RepositoryView,
  RoleNameParam,
  SetRoleBody,
  SigningRequestList,
  SigningRequestView,
} from '@rampart/shared/api';
import { DetachedSignature, type TufKey } from '@rampart/shared/updates';
import { StringEnum } from '@rampart/shared/schema';
import { Problem } from '@rampart/shared/problem';
import { RampartError } from '../../errors.js';
import type { UpdatesService } from '../../updates/service.js';
import { actorOf, type ApiContext } from '../context.js';

const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem };
const TAGS = ['updates'];
const IdParam = Type.Object({ id: Type.Integer({ minimum: 1 }) }, { additionalProperties: false });
const RoleVersionParam = Type.Object(
  { role: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' }) },
  { additionalProperties: false },
);
const Proposal = Type.Object({
  role: Type.String(),
  version: Type.Integer(),
  published: Type.Boolean(),
  signingRequest: Type.Union([SigningRequestView, Type.Null()]),
});

/**
 * The release repository: upload releases, read TUF roles and metadata, collect detached signatures
 * for signing requests (M-of-N approval), change role keys, delegations and online keys.
 */
export function updateRoutes(ctx: ApiContext & { updates?: UpdatesService }): FastifyPluginAsync {
  return async (base) => {
    const app = base.withTypeProvider<TypeBoxTypeProvider>();
    const u = (): UpdatesService => {
      if (!ctx.updates) throw new RampartError('INTERNAL', 'updates are not running');
      return ctx.updates;
    };
    const requestView = async (id: number | null) =>
      id === null
        ? null
        : u().repository.requestView(ctx.storage.db, await u().repository.requestRow(ctx.storage.db, id));

    // The artifact arrives as a stream and is hashed on its way to the store.
    app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

    app.get(
      '/updates/repository',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'The release repository: mode, listener, TUF roles',
          response: { 200: RepositoryView, ...errors },
        },
      },
      async () => u().view(ctx.storage.db),
    );

    app.post(
      '/updates/repository/init',
      {
        config: { permission: 'release:write', audit: 'release.repository.init' },
        schema: {
          tags: TAGS,
          summary: 'Initialise a production repository with offline root and targets keys',
          description:
            'For a repository that is not in development mode and has no root yet. The server makes online snapshot ' +
            'and timestamp keys in its key store and builds root v1 (the offline `root` and `targets` keys with their ' +
            'thresholds, the online keys) and an empty targets v1. Both wait as signing requests: root v1 for the ' +
            'threshold of its own root keys, targets v1 for the targets keys (`rampart release request`, `sign`, ' +
            '`submit`). Once both are signed they are published with the first snapshot and timestamp, and the ' +
            'repository serves. 409 in development mode (it initialises itself), when a root exists or an ' +
            'initialisation is pending; 400 naming the field for a malformed key or a threshold above the number ' +
            'of keys. Nothing is written on refusal.',
          body: InitRepositoryBody,
          response: { 201: Type.Object({ root: Proposal, targets: Proposal }), ...errors },
        },
      },
      async (request, reply) => {
        request.auditTarget = 'tuf:root';
        const body = request.body;
        const p = await u().repository.exclusive(() =>
          request.mutate(async (tx) => {
            const r = await u().repository.initialiseOffline(
              tx,
              {
                root: { keys: body.root.keys as TufKey[], threshold: body.root.threshold },
                targets: { keys: body.targets.keys as TufKey[], threshold: body.targets.threshold },
              },
              actorOf(request.principal),
            );
            return {
              result: r,
              target: 'tuf:root',
              details: {
                development: false,
                rootKeys: body.root.keys.length,
                rootThreshold: body.root.threshold,
                targetsKeys: body.targets.keys.length,
                targetsThreshold: body.targets.threshold,
                rootRequest: r.root.requestId,
                targetsRequest: r.targets.requestId,
              },
            };
          }),
        );
        const view = async (
          role: string,
          x: { version: number; published: boolean; requestId: number | null },
        ) => ({
          role,
          version: x.version,
          published: x.published,
          signingRequest: await requestView(x.requestId),
        });
        return reply
          .code(201)
          .send({ root: await view('root', p.root), targets: await view('targets', p.targets) });
      },
    );

    app.get(
      '/updates/metadata/:role',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: "A role's newest published metadata (TUF JSON)",
          description: 'Use `/updates/metadata/root` to bootstrap a TUF client with the current root.',
          params: RoleVersionParam,
          response: { 200: Type.Object({}, { additionalProperties: true }), ...errors },
        },
      },
      async (request, reply) => {
        const doc = await u().repository.document(ctx.storage.db, request.params.role);
        if (doc === null) throw new RampartError('NOT_FOUND', `no metadata for role ${request.params.role}`);
        return reply.type('application/json').send(doc);
      },
    );

    app.post(
      '/updates/releases',
      {
        config: { permission: 'release:write', audit: 'release.create' },
        schema: {
          tags: TAGS,
          summary: 'Upload and publish a release',
          description:
            'The artifact is the body (`Content-Type: application/octet-stream`); its metadata is in the query. It is ' +
            'stored content-addressed and added as a TUF target to the targets role responsible for its path (`targets`, ' +
            "or the delegated role whose paths match). It is published at once when the server holds that role's keys " +
            '(development repository, online targets key); otherwise a signing request waits for detached signatures. ' +
            'With `encrypt=true`, or when one of its models requires it (`encryptUpdates`), only AES-256-GCM ciphertext ' +
            'is stored and served; `custom.rampart.encryption` describes it and the director wraps the key to each device. ' +
            'When earlier releases of the same model and kind are stored (and deltas are on), it is answered at once in ' +
            'state `preparing`: patches from them are generated in the background, added to its signed metadata ' +
            '(`custom.rampart.deltas`), and then it is signed as above; poll `GET /updates/releases?path=` until it leaves `preparing`.',
          querystring: CreateReleaseQuery,
          body: {
            content: {
              'application/octet-stream': { schema: Type.Unknown({ description: 'The artifact bytes.' }) },
            },
          },
          response: { 201: ReleaseView, 413: Problem, 415: Problem, ...errors },
        },
      },
      async (request, reply) => {
        const declared = Number(request.headers['content-length'] ?? NaN);
        if (Number.isFinite(declared) && declared > u().settings.maxArtifactBytes)
          throw new RampartError(
            'PAYLOAD_TOO_LARGE',
            `the artifact (${declared} bytes) is larger than updates.maxArtifactBytes (${u().settings.maxArtifactBytes}); nothing was stored`,
          );
        const plan = await u().planRelease(ctx.storage.db, request.query);
        const stored = await u().storeArtifact(request.body as Readable, { encrypt: plan.encrypt });
        try {
          const out = await u().repository.exclusive(() =>
            request.mutate(async (tx) => {
              const r = await u().recordRelease(tx, plan, stored, actorOf(request.principal));
              return {
                result: r.view,
                target: `release:${r.view.path}`,
                details: {
                  sha256: r.view.sha256,
                  length: r.view.length,
                  role: r.view.role,
                  state: r.view.state,
                  releaseCounter: r.view.custom.releaseCounter,
                  signingRequest: r.proposal?.requestId ?? null,
                  ...(r.view.custom.encryption ? { encrypted: true } : {}),
                  ...(u().settings.development ? { development: true } : {}),
                },
              };
            }),
          );
          // Deltas from earlier releases are generated off the request path; the release is signed after that.
          if (out.state === 'preparing') u().prepareSoon(out.path);
          return reply.code(201).send(out);
        } catch (err) {
          await u().dropUnreferenced(stored.sha256);
          throw err;
        }
      },
    );

    app.get(
      '/updates/releases',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'List releases',
          querystring: Type.Object(
            {
              model: Type.Optional(Type.String({ maxLength: 64 })),
              state: Type.Optional(StringEnum(RELEASE_STATES)),
              path: Type.Optional(
                Type.String({ maxLength: 200, description: 'Only the release at this target path.' }),
              ),
            },
            { additionalProperties: false },
          ),
          response: { 200: ReleaseList, ...errors },
        },
      },
      async (request) => ({ items: await u().listReleases(ctx.storage.db, request.query) }),
    );

    app.get(
      '/updates/signing-requests',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'List signing requests',
          querystring: Type.Object(
            { state: Type.Optional(StringEnum(['pending', 'published', 'cancelled'])) },
            { additionalProperties: false },
          ),
          response: { 200: SigningRequestList, ...errors },
        },
      },
      async (request) => {
        let q = ctx.storage.db.selectFrom('tuf_signing_requests').selectAll().orderBy('id', 'desc');
        if (request.query.state) q = q.where('state', '=', request.query.state);
        const rows = await q.execute();
        const items = [];
        for (const r of rows) items.push(await u().repository.requestView(ctx.storage.db, r));
        return { items };
      },
    );

    app.get(
      '/updates/signing-requests/:id',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'Show a signing request',
          params: IdParam,
          response: { 200: SigningRequestView, ...errors },
        },
      },
      async (request) => (await requestView(request.params.id))!,
    );

    app.get(
      '/updates/signing-requests/:id/metadata',
      {
        config: { permission: 'release:read' },
        schema: {
          tags: TAGS,
          summary: 'The metadata document to sign (TUF JSON, with the signatures so far)',
          description: 'Sign it offline with `rampart release sign FILE --key KEY`.',
          params: IdParam,
          response: { 200: Type.Object({}, { additionalProperties: true }), ...errors },
        },
      },
      async (request, reply) => {
        const row = await u().repository.requestRow(ctx.storage.db, request.params.id);
        return reply.type('application/json').send(row.document);
      },
    );

    app.post(
      '/updates/signing-requests/:id/signatures',
      {
        config: { permission: 'release:sign', audit: 'release.sign' },
        schema: {
          tags: TAGS,
          summary: 'Hand in a detached signature',
          description:
            "The signature `rampart release sign` wrote. It must be for this request's exact document, by a key of the " +
            'role, and verify; otherwise 400 and nothing changes. When it completes the threshold the metadata is ' +
            'published (with a new snapshot and timestamp).',
          params: IdParam,
          body: DetachedSignature,
          response: { 200: SigningRequestView, ...errors },
        },
      },
      async (request) => {
        const id = request.params.id;
        request.auditTarget = `signing-request:${id}`;
        await u().repository.exclusive(() =>
          request.mutate(async (tx) => {
            const r = await u().sign(tx, id, request.body);
            return {
              result: r,
              target: `signing-request:${id}`,
              details: {
                role: r.role,
                version: r.version,
                keyid: request.body.keyid,
                published: r.published,
              },
            };
          }),
        );
        return (await requestView(id))!;
      },
    );

    app.post(
      '/updates/signing-requests/:id/cancel',
      {
        config: { permission: 'release:write', audit: 'release.signing.cancel' },
        schema: {
          tags: TAGS,
          summary: 'Cancel a pending signing request',
          description: 'Releases waiting on it are removed (their artifacts stay in the store).',
          params: IdParam,
          response: { 200: SigningRequestView, ...errors },
        },
      },
      async (request) => {
        const id = request.params.id;
        await u().repository.exclusive(() =>
          request.mutate(async (tx) => {
            const role = await u().cancel(tx, id);
            return { result: role, target: `signing-request:${id}`, details: { role } };
          }),
        );
        return (await requestView(id))!;
      },
    );

    app.put(
      '/updates/roles/:name',
      {
        config: { permission: 'release:write', audit: 'release.role.set' },
        schema: {
          tags: TAGS,
          summary: 'Set the keys and threshold of a role, or create a delegation',
          description:
            'Top-level roles (`root`, `targets`, `snapshot`, `timestamp`) change through a new root version, which ' +
            'needs the threshold of the current root keys and of the new ones. `onlineKey: true` rotates the role to a ' +
            'fresh key in the server key store. Any other name is a delegated targets role with its own `keys`, ' +
            '`threshold` and path patterns (`paths`), signed into the top-level targets.',
          params: RoleNameParam,
          body: SetRoleBody,
          response: { 200: Proposal, ...errors },
        },
      },
      async (request) => {
        const name = request.params.name;
        request.auditTarget = `tuf-role:${name}`;
        const body = request.body;
        const p = await u().repository.exclusive(() =>
          request.mutate(async (tx) => {
            const r = await u().repository.setRole(
              tx,
              name,
              {
                ...(body.threshold !== undefined ? { threshold: body.threshold } : {}),
                ...(body.keys ? { keys: body.keys as TufKey[] } : {}),
                ...(body.onlineKey ? { onlineKey: true } : {}),
                ...(body.paths ? { paths: body.paths } : {}),
              },
              actorOf(request.principal),
            );
            return {
              result: r,
              target: `tuf-role:${name}`,
              details: {
                threshold: body.threshold ?? null,
                keys: body.keys?.length ?? 0,
                onlineKey: !!body.onlineKey,
                published: r.published,
                signingRequest: r.requestId,
              },
            };
          }),
        );
        const changed =
          name === 'root' || ['targets', 'snapshot', 'timestamp'].includes(name) ? 'root' : 'targets';
        return {
          role: changed,
          version: p.version,
          published: p.published,
          signingRequest: await requestView(p.requestId),
        };
      },
    );
  };
}
