import { createSocket } from 'node:dgram';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { octetCountingFrame } from '@rampart/shared/audit';
import { CliError, EXIT } from './errors.js';

/** Where exported syslog messages go: a collector over UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425). */
export interface SyslogSink {
  send(message: string): Promise<void>;
  close(): Promise<void>;
}

export async function openSyslogSink(target: string, options: { ca?: string } = {}): Promise<SyslogSink> {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw new CliError(
      `--to must be udp://host:port, tcp://host:port or tls://host:port (got "${target}")`,
      EXIT.usage,
    );
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || (url.protocol === 'tls:' ? 6514 : 514));
  if (url.protocol === 'udp:') {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    return {
      send: (message) =>
        new Promise((resolve, reject) =>
          socket.send(Buffer.from(message, 'utf8'), port, host, (err) => (err ? reject(err) : resolve())),
        ),
      close: () => new Promise((resolve) => socket.close(() => resolve())),
    };
  }
  if (url.protocol === 'tcp:' || url.protocol === 'tls:') {
    const socket: Socket = await new Promise((resolve, reject) => {
      const s =
        url.protocol === 'tls:'
          ? tlsConnect(
              {
                host,
                port,
                // SNI carries host names only (RFC 6066); the certificate is still checked against an IP.
                ...(isIP(host) ? {} : { servername: host }),
                ...(options.ca ? { ca: readFileSync(options.ca) } : {}),
              },
              () => resolve(s),
            )
          : netConnect({ host, port }, () => resolve(s));
      s.once('error', (err) =>
        reject(
          new CliError(`cannot connect to syslog collector ${target}: ${err.message}`, EXIT.unreachable),
        ),
      );
    });
    return {
      send: (message) =>
        new Promise((resolve, reject) =>
          socket.write(octetCountingFrame(message), (err) => (err ? reject(err) : resolve())),
        ),
      close: () => new Promise((resolve) => socket.end(() => resolve())),
    };
  }
  throw new CliError(`unsupported syslog transport ${url.protocol} (use udp, tcp or tls)`, EXIT.usage);
}
