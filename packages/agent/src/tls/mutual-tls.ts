import { createHash, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { AgentError } from '../errors.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { OpensslTunnel, type OpensslKey } from './openssl-tunnel.js';
import { RecentMemo } from '../recent-memo.js';

/** Where a mutually authenticated TLS connection goes, and what it presents and trusts. */
export interface MutualTlsTarget {
  /** Host name or IP address (an IPv6 address without brackets); the server's certificate must name it. */
  host: string;
  port: number;
  /** The device certificate followed by its CA chain up to (not including) the root, PEM. */
  certPem: string;
  /** The pinned root CA (PEM): the only certificate authority the server's certificate may chain to. */
  caPem: string | Buffer;
  /** Time limit for connecting and the handshake. Default 30 s. */
  timeoutMs?: number;
}

/**
 * Opens mutually authenticated TLS connections with the device key, wherever the trust anchor keeps
 * it. The stream it returns carries the application's bytes (MQTT, HTTP); it emits
 * `secureConnect` once the handshake is complete, and `error` when the connection fails: Node's TLS
 * errors in-process, AgentErrors (TLS_UNTRUSTED, TLS_REFUSED, TLS_UNREACHABLE, TRUST_ANCHOR) from
 * the OpenSSL tunnel. The server must chain to the pinned root and name the host, or there is no
 * connection.
 */
export interface MutualTls {
  /**
   * `node`: Node's TLS stack signs with the key in this process (software anchor). `openssl-tpm2`,
   * `openssl-pkcs11`: an `openssl s_client` child process signs in the TPM (tpm2-openssl provider)
   * or the PKCS#11 token (libp11 engine); the key never reaches this process.
   */
  readonly via: 'node' | 'openssl-tpm2' | 'openssl-pkcs11';
  connect(target: MutualTlsTarget): Duplex;
}

/** A trust anchor whose key OpenSSL can use where it lives (TPM, PKCS#11 token). */
export interface OpensslKeySource {
  opensslKey(): Promise<OpensslKey>;
}

function hasOpensslKey(anchor: TrustAnchor): anchor is TrustAnchor & OpensslKeySource {
  return typeof (anchor as Partial<OpensslKeySource>).opensslKey === 'function';
}

/** What a client secure context is made of: the CA(s) to trust, and what to present (mutual TLS). */
export interface ClientContextInput {
  ca: string | Buffer;
  /** The certificate (and chain) to present, PEM; with `key`. */
  cert?: string;
  /** The private key, PEM; with `cert`. */
  key?: string;
}

const SECURE_CONTEXTS_MAX = 8;
const secureContexts = new RecentMemo<SecureContext>(SECURE_CONTEXTS_MAX);

/**
 * A client TLS context (TLS 1.2 at least) trusting only `ca`, presenting `cert` with `key` when
 * given. Building one parses the key, the certificates and the CA (milliseconds on a device), and
 * it is the same for the same three texts, so the last few are kept in this process and shared by
 * the connections that use the same ones — a renewed certificate or another CA is a new context.
 * Throws as `createSecureContext` does (a certificate and a key that do not belong together); a
 * failure is not kept.
 */
export function clientSecureContext(input: ClientContextInput): SecureContext {
  const h = createHash('sha256');
  // Length-prefixed, so that no two different inputs run together into the same bytes.
  for (const part of [input.ca, input.cert ?? '', input.key ?? '']) {
    const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    h.update(`${typeof part === 'string' ? 's' : 'b'}${bytes.length}:`).update(bytes);
  }
  return secureContexts.get(h.digest('base64'), () =>
    createSecureContext({
      ca: [input.ca],
      ...(input.cert !== undefined ? { cert: input.cert } : {}),
      ...(input.key !== undefined ? { key: input.key } : {}),
      minVersion: 'TLSv1.2',
    }),
  );
}

/** A key's PEM, by key object: an anchor keeps its key object, so a key is exported once. */
const keyPems = new WeakMap<KeyObject, string>();

/** Mutual TLS in this process, with a key Node's TLS stack holds (the software anchor's). */
export class NodeMutualTls implements MutualTls {
  readonly via = 'node';
  private readonly keyPem: string;

  constructor(key: KeyObject) {
    let pem = keyPems.get(key);
    if (pem === undefined) keyPems.set(key, (pem = key.export({ type: 'pkcs8', format: 'pem' }) as string));
    this.keyPem = pem;
  }

  connect(target: MutualTlsTarget): Duplex {
    let socket: TLSSocket;
    try {
      // The context is built (or found) first: a certificate that does not fit the key fails here.
      const secureContext = clientSecureContext({ ca: target.caPem, cert: target.certPem, key: this.keyPem });
      socket = tlsConnect({
        host: target.host,
        port: target.port,
        // No SNI for an IP address (RFC 6066); Node checks the name either way.
        ...(isIP(target.host) ? {} : { servername: target.host }),
        secureContext,
        rejectUnauthorized: true,
      });
    } catch (err) {
      // Thrown before anything is sent: the certificate and the key cannot be used together.
      throw new AgentError(
        'CERT_REFUSED',
        `cannot present the device certificate over TLS: ${(err as Error).message}; ` +
          'the certificate and the trust anchor key do not belong together: enroll again (rampart-agent enroll)',
        { cause: err },
      );
    }
    const timeoutMs = target.timeoutMs ?? 30_000;
    const timer = setTimeout(
      () =>
        socket.destroy(
          new AgentError(
            'TLS_UNREACHABLE',
            `no TLS connection to ${target.host}:${target.port} within ${timeoutMs / 1000} s`,
          ),
        ),
      timeoutMs,
    );
    timer.unref();
    socket.once('secureConnect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
    return socket;
  }
}

/**
 * How `anchor` does mutual TLS: in-process when it lends its key to Node's TLS stack (software),
 * through the OpenSSL tunnel when the key stays in the TPM or the token. Throws TRUST_ANCHOR when
 * it can do neither, or when its setup cannot work (a TPM reached without a resource manager).
 */
export async function mutualTlsFor(anchor: TrustAnchor): Promise<MutualTls> {
  const key = await anchor.tlsKey();
  if (key) return new NodeMutualTls(key);
  if (hasOpensslKey(anchor)) return new OpensslTunnel(await anchor.opensslKey());
  throw new AgentError(
    'TRUST_ANCHOR',
    `the ${anchor.kind} trust anchor can neither lend its key to the TLS stack nor have OpenSSL use it where it is`,
  );
}
