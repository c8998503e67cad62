import Fastify, { LogController, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from '@rampart/shared/logging';
import type { IdentityService } from './service.js';
import type { OcspAnswer } from './ocsp.js';

/**
 * The PKI listener: plain HTTP, as relying parties fetch revocation data (RFC 5280 §4.2.1.13,
 * RFC 6960 Appendix A). It serves each CA's CRL at the distribution-point URL, CA certificates at
 * the AIA caIssuers URL, and the OCSP responder over GET and POST. No secrets pass here; everything
 * served is signed.
 */
export type PkiServer = FastifyInstance;

export const pkiPaths = {
  crl: (caId: string) => `/crl/${caId}.crl`,
  caCert: (caId: string) => `/ca/${caId}.crt`,
  ocsp: '/ocsp',
};

export interface PkiServerOptions {
  identity: IdentityService;
  logger: Logger;
  onOcsp?: (status: string) => void;
}

export async function buildPkiServer(options: PkiServerOptions): Promise<PkiServer> {
  const { identity } = options;
  const app = Fastify({
    loggerInstance: options.logger.child({ component: 'pki' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 16 * 1024,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  }) as unknown as FastifyInstance;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) request.log.error({ err }, 'PKI request failed');
    return reply
      .code(status)
      .type('text/plain; charset=utf-8')
      .send(status === 500 ? 'internal error\n' : `${err.message}\n`);
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .type('text/plain; charset=utf-8')
      .send(
        `not found: ${request.url.split('?')[0]}; this listener serves /crl/<ca>.crl, /ca/<ca>.crt and /ocsp\n`,
      ),
  );

  const knownCa = (file: string, ext: string): string | null => {
    if (!file.endsWith(ext)) return null;
    const id = file.slice(0, -ext.length);
    const ca = identity.authorities.find(id);
    return ca && ca.status !== 'retired' ? id : null;
  };

  app.get<{ Params: { file: string } }>('/crl/:file', async (request, reply) => {
    const id = knownCa(request.params.file, '.crl');
    if (!id || identity.authorities.get(id).kind === 'root')
      return reply.code(404).type('text/plain').send(`no CRL named ${request.params.file}\n`);
    const crl = await identity.crl.get(id);
    const maxAge = Math.max(0, Math.floor((crl.nextUpdate.getTime() - Date.now()) / 1000 / 2));
    return reply
      .type('application/pkix-crl')
      .header('cache-control', `public, max-age=${maxAge}, no-transform`)
      .header('last-modified', crl.thisUpdate.toUTCString())
      .header('expires', crl.nextUpdate.toUTCString())
      .send(crl.der);
  });

  app.get<{ Params: { file: string } }>('/ca/:file', async (request, reply) => {
    const id = knownCa(request.params.file, '.crt');
    if (!id)
      return reply.code(404).type('text/plain').send(`no CA certificate named ${request.params.file}\n`);
    return reply
      .type('application/pkix-cert')
      .header('cache-control', 'public, max-age=86400')
      .send(identity.authorities.get(id).der);
  });

  const send = (answer: OcspAnswer, reply: FastifyReply, cacheable: boolean) => {
    for (const s of answer.statuses.length ? answer.statuses : ['error']) options.onOcsp?.(s);
    reply.type('application/ocsp-response');
    if (cacheable && answer.cache) {
      // RFC 9919 §6: let HTTP caches keep a response until halfway to nextUpdate.
      const maxAge = Math.max(0, Math.floor((answer.cache.nextUpdate.getTime() - Date.now()) / 2000));
      reply
        .header('cache-control', `max-age=${maxAge}, public, no-transform, must-revalidate`)
        .header('last-modified', answer.cache.thisUpdate.toUTCString())
        .header('expires', answer.cache.nextUpdate.toUTCString())
        .header('etag', answer.cache.etag);
    }
    return reply.send(answer.der);
  };

  app.post('/ocsp', async (request, reply) => {
    const type = (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/ocsp-request')
      return reply
        .code(415)
        .type('text/plain')
        .send(`OCSP requests must have Content-Type application/ocsp-request, not "${type || 'none'}"\n`);
    const body = (request.body as Buffer | undefined) ?? Buffer.alloc(0);
    return send(await identity.ocsp.respond(body), reply, false);
  });

  app.get('/ocsp/*', async (request, reply) => {
    const encoded = request.url.slice(pkiPaths.ocsp.length + 1).split('?')[0]!;
    let der: Buffer;
    try {
      der = Buffer.from(decodeURIComponent(encoded), 'base64');
    } catch {
      der = Buffer.alloc(0);
    }
    return send(await identity.ocsp.respond(der), reply, true);
  });

  return app;
}
