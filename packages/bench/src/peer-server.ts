/**
 * The peer for the API-write benchmark: a bare Fastify HTTPS server that does only the essential
 * work of a device write (parse JSON, insert one row through the same driver and durability
 * settings) — no authentication, validation, rate limiting or audit entry. Rampart's figure divided
 * by this one is the cost of everything Rampart adds.
 */
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { openStorage } from '@rampart/server';

const [databaseUrl, keyFile, certFile] = process.argv.slice(2) as [string, string, string];
const storage = await openStorage(databaseUrl);
const now = new Date().toISOString();
await storage.db
  .insertInto('device_models')
  .values({ id: 'PEER', name: 'peer', description: '', created_at: now, updated_at: now })
  .onConflict((oc) => oc.doNothing())
  .execute();

const app = Fastify({ https: { key: readFileSync(keyFile), cert: readFileSync(certFile) } });
let n = 0;
app.post('/devices', async (request, reply) => {
  const body = request.body as { attributes?: Record<string, unknown> };
  const t = new Date().toISOString();
  await storage.db
    .insertInto('devices')
    .values({
      id: `peer-${process.pid}-${n++}`,
      model_id: 'PEER',
      hardware_revision: null,
      serial: null,
      attributes: JSON.stringify(body.attributes ?? {}),
      status: 'pending',
      created_at: t,
      updated_at: t,
      status_changed_at: t,
    })
    .execute();
  return reply.code(201).send({ ok: true });
});
await app.listen({ host: '127.0.0.1', port: 0 });
const port = (app.server.address() as { port: number }).port;
process.stdout.write(`listening peer https://127.0.0.1:${port}\n`);
process.on('SIGTERM', () => {
  void app.close().then(() => storage.close().then(() => process.exit(0)));
});
