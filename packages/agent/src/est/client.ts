import { Agent, request } from 'node:https';
import { request as requestOver, type ClientRequest, type IncomingHttpHeaders } from 'node:http';
import {
  EST_MEDIA,
  EST_PATH,
  PkiFormatError,
  decodeBase64Body,
  decodeCertsOnly,
  encodeBase64Body,
} from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import type { MutualTls } from '../tls/mutual-tls.js';

/** How simpleenroll is authenticated: the one-time enrollment token as HTTP Basic password (user = device id), or as a bearer token. */
/**
 * How a first enrollment authenticates: a one-time token (HTTP Basic with the device id, or
 * Bearer), or a claim certificate shared by the devices of a batch, presented over mutual TLS.
 */
export type EnrollmentCredentials =
  { deviceId: string; token: string } | { bearer: string } | { claim: ClientCertificate; deviceId: string };

/**
 * The device's current certificate (PEM, with its CA chain) and how its key signs the handshake
 * (in-process, or in the TPM or the token through the OpenSSL tunnel), presented over mutual TLS for
 * simplereenroll.
 */
export interface ClientCertificate {
  certPem: string;
  tls: MutualTls;
}

export interface EstClientOptions {
  /** The platform's EST server, `https://host:port`; EST paths go under `/.well-known/est/`. A URL already ending in `/.well-known/est[/label]` is used as it is. */
  url: string;
  /** The pinned root CA (PEM): the only certificate the server's TLS certificate may chain to. */
  caPem: string | Buffer;
  /** Where the pinned root came from, for messages. */
  caFile?: string;
  /** Whole-request time limit (connect, TLS, reply). Default 30 s. */
  timeoutMs?: number;
  /** Largest reply accepted. Default 1 MiB. */
  maxResponseBytes?: number;
  /**
   * Keep up to this many connections open for requests without a client certificate (cacerts,
   * csrattrs, token enrollment), for a client that enrolls many devices (a simulator). Default 0:
   * one connection per request. Call `close()` when done.
   */
  keepAliveConnections?: number;
}

/** The remote-attestation endpoints, on the EST server's origin (same host and port). */
export type AttestationOperation = 'attestation/v1/nonce' | 'attestation/v1/evidence';

type Operation = 'cacerts' | 'csrattrs' | 'simpleenroll' | 'simplereenroll' | AttestationOperation;

/** An HTTP reply as received, for callers that interpret the status themselves. */
export interface EstReply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

type Reply = EstReply;

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RESPONSE = 1024 * 1024;
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

/**
 * The device side of EST (RFC 7030, with RFC 8951): fetch the CA certificates, enroll with a
 * one-time token, re-enroll with the current certificate over mutual TLS. TLS trusts only the
 * pinned root and checks the server name as usual. Every failure is an AgentError that says what
 * happened and what to do next.
 */
export class EstClient {
  /** The EST base URL, ending in `/.well-known/est` (or `/.well-known/est/<label>`), without a slash. */
  readonly baseUrl: string;
  private readonly caPem: string | Buffer;
  private readonly caFile: string;
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;
  private readonly pool: Agent | null;

  constructor(options: EstClientOptions) {
    this.baseUrl = estBaseUrl(options.url);
    this.caPem = options.caPem;
    this.caFile = options.caFile ?? 'the pinned root CA';
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE;
    const pooled = options.keepAliveConnections ?? 0;
    this.pool =
      pooled > 0
        ? new Agent({ keepAlive: true, maxSockets: pooled, ca: this.caPem, minVersion: 'TLSv1.2' })
        : null;
  }

  /** Close the kept-alive connections (with `keepAliveConnections`). */
  close(): void {
    this.pool?.destroy();
  }

  /** `GET cacerts`: the CA certificates (DER), root and issuing CA(s), as the server sends them. */
  async cacerts(): Promise<Buffer[]> {
    const reply = await this.send('cacerts', { method: 'GET', headers: { accept: EST_MEDIA.pkcs7 } });
    if (reply.status !== 200) throw this.statusError('cacerts', reply);
    return this.certsOnly('cacerts', reply);
  }

  /** `GET csrattrs`: the DER CsrAttrs the server asks for, or null when it asks for nothing (204/404). */
  async csrattrs(): Promise<Buffer | null> {
    const reply = await this.send('csrattrs', { method: 'GET', headers: { accept: EST_MEDIA.csrattrs } });
    if (reply.status === 204 || reply.status === 404) return null;
    if (reply.status !== 200) throw this.statusError('csrattrs', reply);
    this.expectMedia('csrattrs', reply, EST_MEDIA.csrattrs);
    return this.base64('csrattrs', reply);
  }

  /**
   * `POST simpleenroll` with the one-time token, or over mutual TLS with a claim certificate: the
   * certificates of the reply (DER), the issued one among them.
   */
  async simpleEnroll(csrDer: Uint8Array, credentials: EnrollmentCredentials): Promise<Buffer[]> {
    const claim = 'claim' in credentials ? credentials.claim : undefined;
    const reply = await this.send('simpleenroll', {
      method: 'POST',
      headers:
        'claim' in credentials
          ? csrHeaders()
          : { ...csrHeaders(), authorization: authorizationHeader(credentials) },
      body: encodeBase64Body(csrDer),
      ...(claim ? { client: claim } : {}),
      deviceId: 'deviceId' in credentials ? credentials.deviceId : undefined,
    });
    if (reply.status !== 200)
      throw this.statusError(
        'simpleenroll',
        reply,
        'deviceId' in credentials ? credentials.deviceId : undefined,
      );
    return this.certsOnly('simpleenroll', reply);
  }

  /**
   * `POST simplereenroll`, authenticated by the current certificate over mutual TLS; with `bearer`
   * (an attestation token, for devices provisioned with a birth identity) also `Authorization: Bearer`.
   */
  async simpleReenroll(
    csrDer: Uint8Array,
    client: ClientCertificate,
    deviceId?: string,
    bearer?: string,
  ): Promise<Buffer[]> {
    const reply = await this.send('simplereenroll', {
      method: 'POST',
      headers: {
        ...csrHeaders(),
        ...(bearer !== undefined ? { authorization: authorizationHeader({ bearer }) } : {}),
      },
      body: encodeBase64Body(csrDer),
      client,
      deviceId,
    });
    if (reply.status !== 200) throw this.statusError('simplereenroll', reply, deviceId);
    return this.certsOnly('simplereenroll', reply);
  }

  /**
   * `POST` a JSON document to an attestation endpoint on the EST server's origin, over the same
   * pinned TLS (no client certificate). Transport failures are AgentErrors as for EST; the reply is
   * returned whatever its status, for the caller to interpret.
   */
  async postJson(op: AttestationOperation, value: unknown): Promise<EstReply> {
    return this.send(op, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, application/problem+json' },
      body: JSON.stringify(value),
    });
  }

  private url(op: Operation): URL {
    return op.startsWith('attestation/')
      ? new URL(`/${op}`, new URL(this.baseUrl).origin)
      : new URL(`${this.baseUrl}/${op}`);
  }

  private send(
    op: Operation,
    init: {
      method: 'GET' | 'POST';
      headers: Record<string, string>;
      body?: string;
      client?: ClientCertificate;
      deviceId?: string | undefined;
    },
  ): Promise<Reply> {
    const url = this.url(op);
    const body = init.body === undefined ? undefined : Buffer.from(init.body, 'utf8');
    return new Promise<Reply>((resolve, reject) => {
      let settled = false;
      const fail = (err: AgentError) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        req.destroy();
        reject(err);
      };
      let req: ClientRequest;
      const headers = { ...init.headers, ...(body ? { 'content-length': String(body.length) } : {}) };
      const client = init.client;
      try {
        req = client
          ? // Mutual TLS: HTTP over the connection the device's key signs (its own connection,
            // never a pooled one that could carry another certificate).
            requestOver({
              host: url.hostname,
              port: url.port || 443,
              path: `${url.pathname}${url.search}`,
              method: init.method,
              headers: { ...headers, host: url.host },
              createConnection: () =>
                client.tls.connect({
                  host: url.hostname.replace(/^\[|\]$/g, ''),
                  port: Number(url.port || 443),
                  certPem: client.certPem,
                  caPem: this.caPem,
                  timeoutMs: this.timeoutMs,
                }),
              timeout: this.timeoutMs,
            })
          : request(url, {
              method: init.method,
              headers,
              ca: this.caPem,
              minVersion: 'TLSv1.2',
              agent: this.pool ?? false,
              timeout: this.timeoutMs,
            });
      } catch (err) {
        // Thrown before anything is sent: the TLS options themselves are unusable.
        settled = true;
        reject(
          err instanceof AgentError
            ? err
            : init.client
              ? new AgentError(
                  'CERT_REFUSED',
                  `cannot present the device certificate over TLS: ${(err as Error).message}; ` +
                    'the certificate and the trust anchor key do not belong together: enroll again (rampart-agent enroll)',
                  { cause: err },
                )
              : new AgentError(
                  'EST_UNTRUSTED',
                  `cannot set up TLS with ${this.caFile}: ${(err as Error).message}`,
                  {
                    cause: err,
                  },
                ),
        );
        return;
      }
      const deadline = setTimeout(() => fail(this.timeoutError(op)), this.timeoutMs);
      req.on('timeout', () => fail(this.timeoutError(op)));
      let secured = false;
      req.on('socket', (socket) => {
        // A kept-alive connection finished its handshake for an earlier request.
        if (req.reusedSocket) secured = true;
        else socket.once('secureConnect', () => (secured = true));
      });
      req.on('error', (err) =>
        fail(this.transportError(op, err as NodeJS.ErrnoException, init.deviceId, secured && !!init.client)),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.maxResponseBytes)
            fail(
              new AgentError(
                'EST_BAD_RESPONSE',
                `the EST server's ${op} reply is larger than ${this.maxResponseBytes} bytes; refused`,
              ),
            );
          else chunks.push(chunk);
        });
        res.on('error', (err) => fail(this.transportError(op, err as NodeJS.ErrnoException, init.deviceId)));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(deadline);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
      });
      req.end(body);
    });
  }

  private timeoutError(op: Operation): AgentError {
    return new AgentError(
      'EST_TIMEOUT',
      `${op.startsWith('attestation/') ? 'the request' : `EST ${op}`} at ${this.url(op).href} got no complete answer within ${this.timeoutMs / 1000} s; ` +
        'check the network and that the platform is running, then try again',
    );
  }

  private transportError(
    op: Operation,
    err: NodeJS.ErrnoException,
    deviceId?: string,
    /** A client certificate was presented and the handshake completed: with TLS 1.3 a server that refuses the certificate just closes the connection. */
    closedAfterClientCert = false,
  ): AgentError {
    const where = `${this.url(op).origin}`;
    if (err instanceof AgentError) return this.tunnelError(op, err, where, deviceId);
    const code = err.code ?? '';
    if (closedAfterClientCert && (code === 'ECONNRESET' || code === 'EPIPE'))
      return new AgentError(
        'EST_REFUSED',
        `the EST server at ${where} closed the connection without answering after the TLS handshake: ` +
          'it most likely did not accept the device certificate. If it expired or was revoked, the device ' +
          `must enroll again with a new token: rampart enrollment token create --device ${deviceId ?? 'ID'}`,
        { cause: err },
      );
    if (/ALERT|ERR_SSL/.test(code))
      return new AgentError(
        'EST_REFUSED',
        `the EST server at ${where} ended the TLS handshake: ${err.message} (${code})` +
          (op === 'simplereenroll'
            ? '. It did not accept the device certificate; if it expired or was revoked, the device ' +
              `must enroll again with a new token: rampart enrollment token create --device ${deviceId ?? 'ID'}`
            : ''),
        { cause: err },
      );
    if (/CERT|SELF_SIGNED|UNABLE_TO_|ALTNAME|HOSTNAME|INVALID_CA|PATH_LENGTH|INVALID_PURPOSE/.test(code))
      return new AgentError(
        'EST_UNTRUSTED',
        `the EST server at ${where} is not trusted: ${err.message} (${code}). The device trusts only ` +
          `the root CA in ${this.caFile}; check that it is Rampart's root CA (<server-data-dir>/ca.pem) ` +
          'and that the URL names the server as its certificate does',
        { cause: err },
      );
    return new AgentError(
      'EST_UNREACHABLE',
      `cannot reach the EST server at ${where}: ${err.message}${code ? ` (${code})` : ''}; ` +
        'check est.url and the network, and that the platform is running',
      { cause: err },
    );
  }

  /** A mutual-TLS failure the OpenSSL tunnel reported (key in a TPM or a PKCS#11 token), in EST's terms. */
  private tunnelError(op: Operation, err: AgentError, where: string, deviceId?: string): AgentError {
    const again =
      'If it expired or was revoked, the device must enroll again with a new token: ' +
      `rampart enrollment token create --device ${deviceId ?? 'ID'}`;
    switch (err.code) {
      case 'TLS_UNTRUSTED':
        return new AgentError(
          'EST_UNTRUSTED',
          `the EST server at ${where}: ${err.message}. Check that ${this.caFile} is Rampart's root CA ` +
            '(<server-data-dir>/ca.pem) and that the URL names the server as its certificate does',
          { cause: err },
        );
      case 'TLS_REFUSED':
        return new AgentError(
          'EST_REFUSED',
          `the EST server at ${where}: ${err.message}` + (op === 'simplereenroll' ? `. ${again}` : ''),
          { cause: err },
        );
      case 'TLS_UNREACHABLE':
        return new AgentError(
          'EST_UNREACHABLE',
          `the EST server at ${where}: ${err.message}; check est.url and the network, and that the platform is running`,
          { cause: err },
        );
      default:
        return err;
    }
  }

  private statusError(
    op: 'cacerts' | 'csrattrs' | 'simpleenroll' | 'simplereenroll',
    reply: Reply,
    deviceId?: string,
  ): AgentError {
    const status = reply.status;
    const text = serverText(reply);
    const said = `the EST server answered ${status}${text ? `: "${text}"` : ''}`;
    const id = deviceId ?? 'ID';
    const retryAfter = retryAfterSeconds(reply.headers['retry-after']);
    const opts = {
      status,
      ...(text ? { serverMessage: text } : {}),
      ...(retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : {}),
    };
    const what = {
      cacerts: 'fetching the CA certificates',
      csrattrs: 'fetching the CSR attributes',
      simpleenroll: 'enrollment',
      simplereenroll: 'renewal (re-enrollment)',
    }[op];
    let next: string;
    if (status === 202)
      return new AgentError(
        'EST_PENDING',
        `${what} is pending: the server accepted the request but has not issued the certificate yet; ` +
          `try again${retryAfter !== undefined ? ` in ${retryAfter} s` : ' later'}`,
        opts,
      );
    if (status === 401 && op === 'simpleenroll')
      next =
        'the enrollment token was refused: it may be used, expired or for another device; ' +
        `ask the operator for a new one: rampart enrollment token create --device ${id}`;
    else if (status === 401 && op === 'simplereenroll')
      next =
        'the device certificate was not accepted as TLS client certificate; if it expired or was ' +
        'revoked, the device must enroll again with a new token: ' +
        `rampart enrollment token create --device ${id}, then rampart-agent enroll`;
    else if (status === 403 && op === 'simpleenroll')
      next =
        'the token was accepted but enrollment was refused (the token may be bound to another device, ' +
        `or the device is disabled); ask the operator to check: rampart device show ${id}`;
    else if (status === 403 && op === 'simplereenroll')
      next =
        'renewal was refused (the certificate may be revoked or expired, or the device disabled); ' +
        `ask the operator to check: rampart device show ${id}; a revoked device must enroll again ` +
        `with a new token: rampart enrollment token create --device ${id}`;
    else if (status === 401 || status === 403)
      next = 'the server wants credentials for this request; check est.url points at Rampart';
    else if (status === 400)
      next =
        'the server found the request malformed; the agent and the platform may disagree on the ' +
        'EST format: update the agent, or report this message';
    else if (status === 404)
      next = `there is no EST service at ${this.baseUrl}; check est.url (e.g. https://rampart.example:8444)`;
    else if (status === 415)
      next =
        'the server refused the content type; the agent and the platform disagree on EST media types: ' +
        'update the agent, or report this message';
    else if (status === 429 || status === 503)
      next = `the server is busy; try again${retryAfter !== undefined ? ` in ${retryAfter} s` : ' later'}`;
    else if (status >= 500)
      next =
        'the server failed; try again later, and if it persists ask the operator to check the platform logs';
    else next = 'this is not an EST answer; check est.url';
    return new AgentError('EST_REFUSED', `${what} failed: ${said}. ${upperFirst(next)}`, opts);
  }

  private expectMedia(op: Operation, reply: Reply, expected: string): Map<string, string> {
    const { type, params } = parseContentType(reply.headers['content-type']);
    if (type !== expected)
      throw new AgentError(
        'EST_BAD_RESPONSE',
        `the EST server's ${op} reply has content type ${JSON.stringify(reply.headers['content-type'] ?? '(none)')}, ` +
          `not ${expected}; refused (is est.url the EST server?)`,
      );
    return params;
  }

  private base64(op: Operation, reply: Reply): Buffer {
    try {
      return decodeBase64Body(reply.body, `${op} reply`);
    } catch (err) {
      throw this.badBody(op, err);
    }
  }

  private certsOnly(op: Operation, reply: Reply): Buffer[] {
    const params = this.expectMedia(op, reply, EST_MEDIA.pkcs7);
    const smime = params.get('smime-type');
    if (smime !== undefined && smime.toLowerCase() !== 'certs-only')
      throw new AgentError(
        'EST_BAD_RESPONSE',
        `the EST server's ${op} reply is a PKCS#7 ${smime} message, not certs-only; refused`,
      );
    let certs: Buffer[];
    try {
      certs = decodeCertsOnly(this.base64(op, reply));
    } catch (err) {
      throw this.badBody(op, err);
    }
    if (certs.length === 0)
      throw new AgentError('EST_BAD_RESPONSE', `the EST server's ${op} reply holds no certificate; refused`);
    return certs;
  }

  private badBody(op: Operation, err: unknown): AgentError {
    if (err instanceof AgentError) return err;
    const reason = err instanceof PkiFormatError ? err.message : String(err);
    return new AgentError(
      'EST_BAD_RESPONSE',
      `the EST server's ${op} reply is not a base64 certs-only PKCS#7 message: ${reason}; refused`,
      { cause: err },
    );
  }
}

/** `https://host:port[/path]` → the EST base URL, `…/.well-known/est` (or the given labelled EST URL). */
export function estBaseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new AgentError('USAGE', `"${url}" is not a URL; give the EST server as https://host:port`);
  }
  if (u.protocol !== 'https:')
    throw new AgentError('USAGE', `EST needs HTTPS: give the EST server as https://${u.host || 'host:port'}`);
  if (u.username || u.password || u.search || u.hash)
    throw new AgentError(
      'USAGE',
      'give the EST server as https://host:port, without credentials, query or fragment',
    );
  const path = u.pathname.replace(/\/+$/, '');
  const base = path.includes(EST_PATH) ? path : `${path}${EST_PATH}`;
  return `${u.origin}${base}`;
}

function csrHeaders(): Record<string, string> {
  return {
    'content-type': EST_MEDIA.pkcs10,
    'content-transfer-encoding': 'base64',
    accept: EST_MEDIA.pkcs7,
  };
}

/** The Authorization header for simpleenroll. Checked so that a token can never smuggle a header. */
export function authorizationHeader(
  credentials: Exclude<EnrollmentCredentials, { claim: ClientCertificate }>,
): string {
  if ('bearer' in credentials) {
    if (!TOKEN_PATTERN.test(credentials.bearer))
      throw new AgentError('USAGE', 'the enrollment token is empty or contains spaces or control characters');
    return `Bearer ${credentials.bearer}`;
  }
  const { deviceId, token } = credentials;
  if (deviceId.includes(':'))
    throw new AgentError(
      'USAGE',
      `device id "${deviceId}" contains ":", which HTTP Basic cannot carry as user name; send the token as a bearer token`,
    );
  if (!TOKEN_PATTERN.test(token))
    throw new AgentError('USAGE', 'the enrollment token is empty or contains spaces or control characters');
  return `Basic ${Buffer.from(`${deviceId}:${token}`, 'utf8').toString('base64')}`;
}

function parseContentType(header: string | undefined): { type: string; params: Map<string, string> } {
  const [type = '', ...rest] = (header ?? '').split(';');
  const params = new Map<string, string>();
  for (const p of rest) {
    const i = p.indexOf('=');
    if (i > 0)
      params.set(
        p.slice(0, i).trim().toLowerCase(),
        p
          .slice(i + 1)
          .trim()
          .replace(/^"|"$/g, ''),
      );
  }
  return { type: type.trim().toLowerCase(), params };
}

/**
 * The server's explanation, when it is text: one line, printable, at most 300 characters. From a
 * JSON reply (RFC 9457 `application/problem+json`), its `detail` (else `message`, `title`).
 */
export function serverText(reply: EstReply): string {
  const type = parseContentType(reply.headers['content-type']).type;
  if (type && !type.startsWith('text/') && !type.endsWith('json')) return '';
  let text = reply.body.toString('utf8');
  if (type.endsWith('json')) {
    try {
      const j = JSON.parse(text) as { detail?: unknown; title?: unknown; message?: unknown };
      const msg = j.detail ?? j.message ?? j.title;
      if (typeof msg === 'string') text = msg;
    } catch {
      // keep the raw text
    }
  }
  const flat = text.replace(/\p{Cc}+/gu, ' ').trim();
  return flat.length > 300 ? `${flat.slice(0, 300)}…` : flat;
}

function retryAfterSeconds(header: string | undefined): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

function upperFirst(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
