import { X509Certificate } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The TLS client certificate the client presented, if any (not verified here; see `clientVerified`). */
  clientCert: X509Certificate | null;
  /** Whether the client certificate chains to `clientCa` (when one was given). */
  clientVerified: boolean;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface FakeEstServer {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * A small HTTPS server that plays the platform's EST endpoints in the agent's unit tests, so that
 * the client's wire behaviour (headers, bodies, TLS) can be observed. `handle` decides each reply.
 */
export async function startFakeEst(options: {
  certPem: string;
  keyPem: string;
  /** CA(s) client certificates are checked against (mutual TLS); the handshake never fails on them. */
  clientCa?: string;
  /** Refuse, in the TLS handshake, clients without a certificate chaining to `clientCa`. */
  requireClientCert?: boolean;
  handle(req: RecordedRequest): Reply | Promise<Reply>;
}): Promise<FakeEstServer> {
  const requests: RecordedRequest[] = [];
  const server = createServer(
    {
      cert: options.certPem,
      key: options.keyPem,
      requestCert: true,
      rejectUnauthorized: options.requireClientCert ?? false,
      ...(options.clientCa ? { ca: options.clientCa } : {}),
    },
    (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const socket = req.socket as TLSSocket;
        const peer = socket.getPeerCertificate();
        const recorded: RecordedRequest = {
          method: req.method ?? '',
          path: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString('latin1'),
          clientCert: peer && peer.raw ? new X509Certificate(peer.raw) : null,
          clientVerified: socket.authorized,
        };
        requests.push(recorded);
        Promise.resolve(options.handle(recorded)).then(
          (reply) => {
            res.writeHead(reply.status, reply.headers ?? {});
            res.end(reply.body ?? '');
          },
          (err: unknown) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(String(err));
          },
        );
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
