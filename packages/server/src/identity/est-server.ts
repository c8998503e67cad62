import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import Fastify, {
  LogController,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Logger } from '@rampart/shared/logging';
import {
  EST_MEDIA,
  EST_PATH,
  OID,
  PkiFormatError,
  decodeBase64Body,
  encodeBase64Body,
  encodeCertsOnly,
  encodeCsrAttrs,
} from '@rampart/shared/pki';
import type { EnrollmentCredentials, EstOperation } from './enrollment/policy.js';
import { EnrollmentRefusal } from './enrollment/policy.js';
import type { IdentityService, ServerTls } from './service.js';
import { printable } from '../text.js';
import { issuedBy } from './x509.js';
import type { ProvisioningService } from '../provisioning/service.js';
import { AttestationRefusal } from '../provisioning/attestation.js';
import { presentedChainOf } from '../provisioning/enrollment.js';
import { RampartError, STATUS_OF } from '../errors.js';
import type { UpdatesService } from '../updates/service.js';
import { registerDirectorDeviceRoutes } from '../updates/director/routes.js';

/**
 * EST (RFC 7030, with the RFC 8951 clarifications) on its own HTTPS listener. The listener asks
 * for a client certificate but does not require one: `simplereenroll` is authenticated by it,
 * `simpleenroll` by an enrollment credential (HTTP Basic or Bearer). Errors are text/plain with a
 * message saying what was wrong, as EST clients print them; every refusal is audited.
 */
export type EstServer = FastifyInstance;

export interface EstServerOptions {
  identity: IdentityService;
  /** The attestation verifier's endpoints (`/attestation/v1/…`) are served when given. */
  provisioning?: ProvisioningService;
  /** The director's device endpoints (`/director/v1/…`, mutual TLS) are served when given. */
  updates?: UpdatesService;
  tls: ServerTls;
  logger: Logger;
  bodyLimit?: number;
  onRequest?: (operation: string, outcome: 'issued' | 'refused' | 'rate-limited' | 'error') => void;
  /** Refused requests allowed per source address and minute before the address gets 429; 0 = no limit. */
  refusalsPerMinute?: number;
}

/**
 * Counts refused requests per source address in fixed one-minute windows. Only refusals count:
 * a factory behind one address that enrolls thousands of devices correctly is never slowed.
 */
class RefusalLimiter {
  private readonly windows = new Map<string, { start: number; refused: number; announced: boolean }>();

  constructor(readonly limit: number) {}

  private window(address: string, now: number) {
    let w = this.windows.get(address);
    if (!w || now - w.start >= 60_000) {
      if (this.windows.size > 100_000) this.windows.clear();
      w = { start: now, refused: 0, announced: false };
      this.windows.set(address, w);
    }
    return w;
  }

  blocked(address: string): { first: boolean; retryAfterSeconds: number } | null {
    if (this.limit <= 0) return null;
    const now = Date.now();
    const w = this.window(address, now);
    if (w.refused < this.limit) return null;
    const first = !w.announced;
    w.announced = true;
    return { first, retryAfterSeconds: Math.max(1, Math.ceil((w.start + 60_000 - now) / 1000)) };
  }

  count(address: string): void {
    if (this.limit > 0) this.window(address, Date.now()).refused++;
  }
}

function credentialsOf(
  request: FastifyRequest,
  issuingCas: readonly X509Certificate[],
): EnrollmentCredentials {
  // An operational certificate is one an issuing CA signed; birth certificates are not.
  const isRampartDevice = (cert: X509Certificate) => issuingCas.some((ca) => issuedBy(cert, ca));
  const out: EnrollmentCredentials = {};
  const auth = request.headers.authorization;
  if (auth) {
    const [scheme, value = ''] = auth.split(/\s+/, 2);
    if (scheme?.toLowerCase() === 'basic') {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) out.basic = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    } else if (scheme?.toLowerCase() === 'bearer' && value) {
      if (value.startsWith('rpa_')) out.attestationToken = value;
      else out.bearer = value;
    }
  }
  const attestation = request.headers['rampart-attestation'];
  if (typeof attestation === 'string' && attestation.startsWith('rpa_')) out.attestationToken = attestation;
  const socket = request.raw.socket as TLSSocket;
  if (typeof socket.getPeerX509Certificate === 'function') {
    const peer = socket.getPeerX509Certificate();
    const operational = peer && socket.authorized && isRampartDevice(peer);
    if (operational) out.clientCertificate = peer;
    else if (peer && !socket.authorized)
      out.clientCertificateError = String(socket.authorizationError ?? 'not trusted');
    // Birth and claim certificates are checked by their policies, not by TLS: keep what was sent.
    if (peer && !operational) out.presentedChain = presentedChainOf(socket.getPeerCertificate(true));
  }
  return out;
}

function mediaType(request: FastifyRequest): string {
  return (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

function refuse(reply: FastifyReply, status: number, message: string): FastifyReply {
  if (status === 401) reply.header('www-authenticate', 'Basic realm="rampart-est"');
  return reply
    .code(status)
    .type('text/plain; charset=utf-8')
    .send(printable(message) + '\n');
}

export async function buildEstServer(options: EstServerOptions): Promise<EstServer> {
  const { identity, tls } = options;
  const app = Fastify({
    https: {
      key: tls.key,
      cert: tls.cert,
      ca: identity.trustedCaPems(),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
    loggerInstance: options.logger.child({ component: 'est' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.bodyLimit ?? 64 * 1024,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  }) as unknown as FastifyInstance;

  // EST bodies are base64 text whatever the declared type; the handler checks the type itself so
  // that a wrong one gets EST's 415 with a message rather than a generic parser error.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) request.log.error({ err }, 'EST request failed');
    return refuse(
      reply,
      status,
      status === 500 ? 'internal error; the server log has the details' : err.message,
    );
  });
  app.setNotFoundHandler((request, reply) =>
    refuse(
      reply,
      404,
      `no such EST operation: ${request.method} ${request.url.split('?')[0]}; see RFC 7030 §3.2.2`,
    ),
  );

  app.get(`${EST_PATH}/cacerts`, async (_request, reply) =>
    reply
      .type(EST_MEDIA.pkcs7)
      .header('content-transfer-encoding', 'base64')
      .send(encodeBase64Body(encodeCertsOnly(identity.caCertificates()))),
  );

  app.get(`${EST_PATH}/csrattrs`, async (_request, reply) => {
    // What a device should send: an EC key on P-256 or P-384, signed with ECDSA-SHA256.
    const attrs = encodeCsrAttrs([OID.ecPublicKey, OID.secp256r1, OID.secp384r1, OID.ecdsaWithSha256]);
    return reply
      .type(EST_MEDIA.csrattrs)
      .header('content-transfer-encoding', 'base64')
      .send(encodeBase64Body(attrs));
  });

  // Parsed once, and again after a rollover (below), not on every request.
  const parseIssuing = () => identity.authorities.served('issuing').map((ca) => new X509Certificate(ca.der));
  let issuingCas = parseIssuing();

  const limiter = new RefusalLimiter(options.refusalsPerMinute ?? 0);

  const enroll = (operation: EstOperation) => async (request: FastifyRequest, reply: FastifyReply) => {
    const remoteAddress = request.ip;
    const credentials = credentialsOf(request, issuingCas);
    const blocked = limiter.blocked(remoteAddress);
    if (blocked) {
      options.onRequest?.(operation, 'rate-limited');
      // One audit entry per blocked window, not one per request: refusals must not become a way
      // to flood the audit log and the disk.
      if (blocked.first) {
        request.log.warn(
          { event: 'certificate.enroll.rate-limited', operation, sourceAddress: remoteAddress },
          'too many refused enrollment requests from one address',
        );
        await identity.auditRefusal(
          operation,
          new EnrollmentRefusal(
            403,
            `more than ${limiter.limit} refused requests in a minute from ${remoteAddress}`,
          ),
          remoteAddress,
          { status: 429, rateLimited: true },
        );
      }
      reply.header('retry-after', String(blocked.retryAfterSeconds));
      return refuse(
        reply,
        429,
        `too many refused requests from ${remoteAddress}; retry in ${blocked.retryAfterSeconds} s`,
      );
    }
    try {
      if (mediaType(request) !== EST_MEDIA.pkcs10)
        throw Object.assign(
          new EnrollmentRefusal(
            400,
            `the request must have Content-Type ${EST_MEDIA.pkcs10}, not "${request.headers['content-type'] ?? 'none'}"`,
          ),
          { httpStatus: 415 },
        );
      const body = request.body as Buffer | undefined;
      let der: Buffer;
      try {
        der = decodeBase64Body(body ?? Buffer.alloc(0), 'PKCS#10');
      } catch (err) {
        if (err instanceof PkiFormatError) throw new EnrollmentRefusal(400, err.message);
        throw err;
      }
      const csr = identity.parseRequest(der);
      const issued = await identity.enroll({ operation, csr, credentials, remoteAddress });
      options.onRequest?.(operation, 'issued');
      request.log.info(
        {
          event: 'certificate.issue',
          operation,
          serial: issued.record.serial,
          device: issued.record.deviceId,
        },
        'certificate issued',
      );
      return reply
        .type(EST_MEDIA.certsOnly)
        .header('content-transfer-encoding', 'base64')
        .send(encodeBase64Body(encodeCertsOnly([issued.der])));
    } catch (caught) {
      // A policy that cannot go on for a reason the operator can fix (a device model that is not
      // registered, say) is a refusal with that reason, not an internal error.
      const err =
        caught instanceof RampartError && STATUS_OF[caught.code] < 500
          ? Object.assign(new EnrollmentRefusal(403, caught.message), {
              httpStatus: STATUS_OF[caught.code],
            })
          : caught;
      if (!(err instanceof EnrollmentRefusal)) {
        options.onRequest?.(operation, 'error');
        throw err;
      }
      options.onRequest?.(operation, 'refused');
      limiter.count(remoteAddress);
      const status = (err as EnrollmentRefusal & { httpStatus?: number }).httpStatus ?? err.status;
      request.log.warn(
        {
          event: 'certificate.enroll.refused',
          operation,
          status,
          reason: err.message,
          device: err.deviceId,
          sourceAddress: remoteAddress,
        },
        'enrollment refused',
      );
      await identity.auditRefusal(operation, err, remoteAddress, {
        status,
        ...(credentials.clientCertificate
          ? { clientCertificate: credentials.clientCertificate.serialNumber.toLowerCase() }
          : {}),
        ...(credentials.basic ? { basicUser: credentials.basic.username.slice(0, 128) } : {}),
      });
      return refuse(reply, status, err.message);
    }
  };

  // Remote attestation (RATS background check): a nonce, then evidence over it. JSON in, JSON out,
  // errors as RFC 9457 problems. Refusals are audited, logged and raised as security events.
  const provisioning = options.provisioning;
  if (provisioning) {
    const problem = (reply: FastifyReply, status: number, detail: string) =>
      reply
        .code(status)
        .type('application/problem+json')
        .send({
          type: 'about:blank',
          title: status === 400 ? 'Bad evidence' : 'Attestation refused',
          status,
          detail,
        });
    // An address with too many refusals in a minute (enrollment or attestation) gets 429 on both
    // attestation endpoints too, so that refused evidence cannot keep the verifier busy.
    const blockedFor = async (request: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
      const blocked = limiter.blocked(request.ip);
      if (!blocked) return false;
      if (blocked.first) {
        const reason = `more than ${limiter.limit} refused requests in a minute from ${request.ip}`;
        request.log.warn(
          { event: 'attestation.rate-limited', sourceAddress: request.ip },
          'too many refused requests from one address',
        );
        await identity.auditAttestationRefusal(reason, null, request.ip, 429);
      }
      reply.header('retry-after', String(blocked.retryAfterSeconds));
      problem(
        reply,
        429,
        `too many refused requests from ${request.ip}; retry in ${blocked.retryAfterSeconds} s`,
      );
      return true;
    };
    app.post('/attestation/v1/nonce', async (request, reply) => {
      if (await blockedFor(request, reply)) return reply;
      return reply.type('application/json').send(provisioning.attestation.issueNonce());
    });
    app.post('/attestation/v1/evidence', async (request, reply) => {
      const remoteAddress = request.ip;
      if (await blockedFor(request, reply)) return reply;
      if (mediaType(request) !== 'application/json')
        return problem(reply, 415, 'evidence must be sent as application/json');
      let body: unknown;
      try {
        body = JSON.parse(((request.body as Buffer | undefined) ?? Buffer.alloc(0)).toString('utf8'));
      } catch {
        limiter.count(remoteAddress);
        return problem(reply, 400, 'the body is not JSON');
      }
      try {
        const out = await provisioning.attestation.submit(body, remoteAddress);
        return reply.type('application/json').send(out);
      } catch (err) {
        if (!(err instanceof AttestationRefusal)) throw err;
        limiter.count(remoteAddress);
        const device = err.deviceId === undefined ? null : printable(err.deviceId);
        request.log.warn(
          {
            event: 'attestation.refused',
            status: err.status,
            reason: err.message,
            device,
            sourceAddress: remoteAddress,
          },
          'attestation refused',
        );
        await identity.auditAttestationRefusal(err.message, device, remoteAddress, err.status);
        provisioning.attestation.securityEvent('attestation.refused', device, remoteAddress, err.message);
        return problem(reply, err.status, err.message);
      }
    });
  }

  if (options.updates) {
    // The peer certificate and its chain are fixed for a TLS connection: checked once per
    // connection, not on every request a device sends over it (the director's are kept alive).
    const peers = new WeakMap<object, X509Certificate | undefined>();
    registerDirectorDeviceRoutes(app, options.updates, (request) => {
      const socket = request.raw.socket;
      if (peers.has(socket)) return peers.get(socket);
      const certificate = credentialsOf(request, issuingCas).clientCertificate;
      peers.set(socket, certificate);
      return certificate;
    });
  }

  app.post(`${EST_PATH}/simpleenroll`, enroll('simpleenroll'));
  app.post(`${EST_PATH}/simplereenroll`, enroll('simplereenroll'));

  // After a rollover the new issuing CA's certificates must be accepted for re-enrollment at once,
  // and a renewed server certificate must be presented without a restart.
  let current = tls;
  const reload = () =>
    (app.server as unknown as { setSecureContext(o: object): void }).setSecureContext({
      key: current.key,
      cert: current.cert,
      ca: identity.trustedCaPems(),
      minVersion: 'TLSv1.2',
    });
  identity.onHierarchyChange(() => {
    issuingCas = parseIssuing();
    reload();
  });
  identity.onServerTlsChange((next) => {
    current = next;
    reload();
  });
  return app;
}
