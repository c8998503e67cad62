import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { AgentError } from '../errors.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { OpensslTunnel, type OpensslKey } from './openssl-tunnel.js';

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

/** Mutual TLS in this process, with a key Node's TLS stack holds (the software anchor's). */
export class NodeMutualTls implements MutualTls {
  readonly via = 'node';
  private readonly keyPem: string;

  constructor(key: KeyObject) {
    this.keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
  }

  connect(target: MutualTlsTarget): Duplex {
    let socket: TLSSocket;
    try {
      socket = tlsConnect({
        host: target.host,
        port: target.port,
        // No SNI for an IP address (RFC 6066); Node checks the name either way.
        ...(isIP(target.host) ? {} : { servername: target.host }),
        ca: [target.caPem],
        cert: target.certPem,
        key: this.keyPem,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
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
