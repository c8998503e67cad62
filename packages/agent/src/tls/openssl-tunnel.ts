import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { AgentError } from '../errors.js';
import type { MutualTls, MutualTlsTarget } from './mutual-tls.js';

/**
 * How OpenSSL reaches a key that never leaves its hardware.
 * - `tpm2`: the tpm2-openssl provider loads the key from its TSS2 key file (the TPM-wrapped blobs and
 *   the parent handle: useless without that TPM) and signs in the TPM at `tcti`.
 * - `pkcs11`: the libp11 engine logs in to the token with `pin` through `module` and signs with the
 *   private key the RFC 7512 `uri` names.
 */
export type OpensslKey =
  | { kind: 'tpm2'; keyPem: string; tcti: string }
  | { kind: 'pkcs11'; module: string; uri: string; pin: string };

export interface OpensslTunnelOptions {
  /** The openssl command. Default `openssl` (from PATH). */
  command?: string;
  /** Where each connection's private directory is made (mode 0700). Default the system's temporary directory. */
  tmpDir?: string;
}

/**
 * Every running tunnel process with its private directory (while it still exists), so that they
 * end with the agent however it exits.
 */
const running = new Map<ChildProcessWithoutNullStreams, { dir: string | null }>();
let exitHookInstalled = false;

function track(child: ChildProcessWithoutNullStreams, files: { dir: string | null }): void {
  running.set(child, files);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const [c, f] of running) {
      c.kill('SIGKILL');
      if (f.dir) rmSync(f.dir, { recursive: true, force: true });
    }
  });
}

/**
 * Properties that send signatures to the TPM (the device key is there) and keep hashing, ciphers
 * and random numbers in the default provider. A TPM has few object slots: hashing there would
 * exhaust them, and TLS record encryption in the TPM would crawl.
 */
const TPM2_PROPERTIES = '?tpm2.signature=yes,tpm2.digest!=yes,tpm2.cipher!=yes,tpm2.rand!=yes';

/** A value for an OpenSSL configuration file: quoted, so that `#`, `$` and spaces are literal. */
function confValue(value: string, what: string): string {
  if (/\p{Cc}/u.test(value))
    throw new AgentError('TRUST_ANCHOR', `${what} contains control characters; OpenSSL cannot be given it`);
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

function opensslConfig(key: OpensslKey): string {
  if (key.kind === 'tpm2')
    return [
      'openssl_conf = rampart_tls',
      '[rampart_tls]',
      'providers = rampart_providers',
      'alg_section = rampart_algorithms',
      '[rampart_providers]',
      // The default provider first: it wins where both offer the same algorithm equally well.
      'default = rampart_default',
      'tpm2 = rampart_tpm2',
      '[rampart_default]',
      'activate = 1',
      '[rampart_tpm2]',
      'activate = 1',
      '[rampart_algorithms]',
      `default_properties = ${TPM2_PROPERTIES}`,
      '',
    ].join('\n');
  return [
    'openssl_conf = rampart_tls',
    '[rampart_tls]',
    'engines = rampart_engines',
    '[rampart_engines]',
    'pkcs11 = rampart_pkcs11',
    '[rampart_pkcs11]',
    'engine_id = pkcs11',
    `MODULE_PATH = ${confValue(key.module, 'the PKCS#11 module path')}`,
    `PIN = ${confValue(key.pin, 'the PKCS#11 PIN')}`,
    'init = 1',
    '',
  ].join('\n');
}

/** The host for `-connect`: an IPv6 address in brackets. */
function connectHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

const CERT_PATTERN = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\s*/g;

/**
 * Mutual TLS through `openssl s_client` (OpenSSL 3): the child process does the handshake, signing
 * with the key in the TPM (tpm2-openssl provider) or the PKCS#11 token (libp11 engine), and relays
 * the application's bytes between its standard input and output and the TLS connection. It verifies
 * the server strictly: only the pinned root (`-CAfile`, no system CAs), `-verify_return_error`, and
 * the host name or IP address checked against the certificate. Nothing the application writes
 * reaches the child before the handshake is complete. The key material and the PIN never appear on
 * its command line; the PIN is in a configuration file (mode 0600, in a directory of mode 0700)
 * that is deleted as soon as the connection is up, or ends.
 */
export class OpensslTunnel implements MutualTls {
  readonly via: 'openssl-tpm2' | 'openssl-pkcs11';

  constructor(
    private readonly key: OpensslKey,
    private readonly options: OpensslTunnelOptions = {},
  ) {
    this.via = key.kind === 'tpm2' ? 'openssl-tpm2' : 'openssl-pkcs11';
  }

  connect(target: MutualTlsTarget): Duplex {
    return new TunnelStream(this.key, target, this.options);
  }
}

interface HeldWrite {
  chunk: Buffer;
  callback: (err?: Error | null) => void;
}

/** TLS alerts a server sends when it does not accept the client certificate. */
const CERTIFICATE_ALERTS = /certificate|unknown ca|access denied|decrypt error/i;

/** Lines of s_client's standard error that say nothing about a failure. */
const NOISE = [
  /^Can't use SSL_get_servername/,
  /^depth=\d+ /,
  /^verify return:1/,
  /^DONE$/,
  /^Engine ".*" set\.$/,
];

/**
 * The stream over one s_client process: what is written goes to its standard input (once the
 * handshake is complete), what it prints on standard output is what the server sent. Ending the
 * stream ends its input (s_client then closes the connection); destroying it kills the process.
 */
class TunnelStream extends Duplex {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly host: string;
  private readonly where: string;
  /** The private directory with the child's files, until they are deleted. */
  private readonly files: { dir: string | null } = { dir: null };
  private stderr = '';
  private secured = false;
  private finished = false;
  private held: HeldWrite[] = [];
  private heldFinal: ((err?: Error | null) => void) | null = null;
  private readonly handshakeTimer: NodeJS.Timeout;
  private idleTimer: NodeJS.Timeout | null = null;
  private idleMs = 0;

  constructor(
    private readonly key: OpensslKey,
    target: MutualTlsTarget,
    options: OpensslTunnelOptions,
  ) {
    super({ allowHalfOpen: false });
    const host = target.host.replace(/^\[|\]$/g, '');
    this.host = host;
    this.where = `${connectHost(host)}:${target.port}`;
    const certs = target.certPem.match(CERT_PATTERN) ?? [];
    if (certs.length === 0)
      throw new AgentError(
        'CERT_REFUSED',
        'no device certificate to present over TLS; enroll the device first',
      );
    const dir = mkdtempSync(join(options.tmpDir ?? tmpdir(), 'rampart-tls-'));
    this.files.dir = dir;
    const file = (name: string, content: string | Buffer) => {
      const path = join(dir, name);
      writeFileSync(path, content, { mode: 0o600 });
      return path;
    };
    let child: ChildProcessWithoutNullStreams;
    try {
      const args = [
        's_client',
        // Quiet (no session dump), and "CONNECTION ESTABLISHED" on standard error once the handshake is done.
        '-brief',
        // The application's bytes are data, never s_client commands (a line starting with Q or R).
        '-nocommands',
        // End of input closes the connection.
        '-no_ign_eof',
        '-connect',
        this.where,
        ...(isIP(host) ? ['-verify_ip', host] : ['-servername', host, '-verify_hostname', host]),
        '-CAfile',
        file('root-ca.pem', target.caPem),
        '-no-CApath',
        '-no-CAstore',
        '-verify_return_error',
        '-cert',
        file('device.crt', certs[0]!),
        ...(certs.length > 1 ? ['-cert_chain', file('chain.pem', certs.slice(1).join(''))] : []),
        '-key',
        this.key.kind === 'tpm2'
          ? file('device-key.tss2.pem', this.key.keyPem)
          : `org.openssl.engine:pkcs11:${this.key.uri}`,
        // The TPM keys the agent creates have no authorization value: never ask for one. (The
        // engine gets the token's PIN from the configuration; without it, it would prompt, which
        // is refused below, rather than try an empty PIN against the token's retry counter.)
        ...(this.key.kind === 'tpm2' ? ['-pass', 'pass:'] : []),
        // Our own configuration replaces the system's: restate its floor.
        '-min_protocol',
        'TLSv1.2',
        '-cipher',
        'DEFAULT:@SECLEVEL=2',
      ];
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        OPENSSL_CONF: file('openssl.cnf', opensslConfig(key)),
      };
      if (key.kind === 'tpm2') env.TPM2OPENSSL_TCTI = key.tcti;
      child = spawn(options.command ?? 'openssl', args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      this.removeFiles();
      throw err instanceof AgentError
        ? err
        : new AgentError('TRUST_ANCHOR', `cannot start the TLS tunnel (openssl s_client): ${String(err)}`, {
            cause: err,
          });
    }
    this.child = child;
    track(child, this.files);
    const timeoutMs = target.timeoutMs ?? 30_000;
    this.handshakeTimer = setTimeout(
      () =>
        this.destroy(
          new AgentError(
            'TLS_UNREACHABLE',
            `no TLS connection to ${this.where} within ${timeoutMs / 1000} s` + this.detail(),
          ),
        ),
      timeoutMs,
    );
    child.once('error', (err: NodeJS.ErrnoException) =>
      this.destroy(
        err.code === 'ENOENT'
          ? new AgentError(
              'TRUST_ANCHOR',
              `${options.command ?? 'openssl'} is not installed: mutual TLS with a key in the ${this.anchorName()} needs the openssl command (apt-get install openssl)`,
            )
          : new AgentError('TRUST_ANCHOR', `the TLS tunnel (openssl s_client) failed: ${err.message}`, {
              cause: err,
            }),
      ),
    );
    child.stdin.on('error', () => undefined); // a dead child: reported when it closes
    child.stdout.on('data', (chunk: Buffer) => {
      this.touch();
      if (!this.push(chunk)) child.stdout.pause();
    });
    child.stderr.on('data', (chunk: Buffer) => this.onStderr(chunk.toString('utf8')));
    // 'close', not 'exit': by then everything it printed has been read.
    child.once('close', (code, signal) => this.onClose(code, signal));
  }

  // Socket-like methods, for HTTP clients that call them on their connection.
  setTimeout(ms: number, callback?: () => void): this {
    this.idleMs = ms;
    if (callback) this.once('timeout', callback);
    this.touch();
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  setKeepAlive(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.touch();
    if (!this.secured) {
      this.held.push({ chunk, callback });
      return;
    }
    this.writeChild(chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.secured) {
      this.heldFinal = callback;
      return;
    }
    this.child.stdin.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    clearTimeout(this.handshakeTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
      kill.unref();
      child.once('exit', () => clearTimeout(kill));
    }
    this.removeFiles();
    const held = this.held;
    this.held = [];
    for (const h of held) h.callback();
    this.heldFinal?.();
    this.heldFinal = null;
    callback(err);
  }

  private writeChild(chunk: Buffer, callback: (err?: Error | null) => void): void {
    if (!this.child.stdin.writable) {
      callback();
      return;
    }
    // A write error means the child is gone: its close reports why.
    this.child.stdin.write(chunk, () => callback());
  }

  private touch(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (this.idleMs > 0 && !this.destroyed) {
      this.idleTimer = setTimeout(() => this.emit('timeout'), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private onStderr(text: string): void {
    // Kept bounded: only the start (the handshake) and the end (why it closed) matter.
    this.stderr =
      this.stderr.length < 16_384 ? this.stderr + text : this.stderr.slice(0, 8192) + text.slice(-8192);
    if (!this.secured && /^CONNECTION ESTABLISHED$/m.test(this.stderr)) this.onSecure();
    // A provider or engine that did not get its secret from the configuration asks on the terminal,
    // which is this process's data channel: never let it read there.
    if (!this.secured && /Enter .*(PIN|pass ?phrase)/i.test(this.stderr))
      this.destroy(
        new AgentError(
          'TRUST_ANCHOR',
          `OpenSSL asked for the ${this.key.kind === 'pkcs11' ? 'PIN of the PKCS#11 token' : 'password of the TPM key'} instead of using the key: ` +
            (this.key.kind === 'pkcs11'
              ? 'the libp11 engine did not take its configuration (is libengine-pkcs11-openssl installed?)'
              : 'the key has an authorization value the agent does not know'),
        ),
      );
  }

  private onSecure(): void {
    this.secured = true;
    clearTimeout(this.handshakeTimer);
    // Everything the child needed from its files (the PIN among them) has been read.
    this.removeFiles();
    this.emit('secureConnect');
    const held = this.held;
    this.held = [];
    for (const h of held) this.writeChild(h.chunk, h.callback);
    if (this.heldFinal) {
      const final = this.heldFinal;
      this.heldFinal = null;
      this.child.stdin.end();
      final();
    }
  }

  private onClose(code: number | null, signal: NodeJS.Signals | null): void {
    running.delete(this.child);
    this.removeFiles();
    clearTimeout(this.handshakeTimer);
    if (this.destroyed || this.finished) return;
    this.finished = true;
    const failure = this.failure(code, signal);
    if (failure) this.destroy(failure);
    else this.push(null);
  }

  private removeFiles(): void {
    if (!this.files.dir) return;
    rmSync(this.files.dir, { recursive: true, force: true });
    this.files.dir = null;
  }

  private anchorName(): string {
    return this.key.kind === 'tpm2' ? 'TPM' : 'PKCS#11 token';
  }

  /** What s_client said, without the lines that say nothing: OpenSSL's reasons, one each. */
  private reasons(): string[] {
    const out: string[] = [];
    for (const raw of this.stderr.split('\n')) {
      const line = raw.trim();
      if (!line || NOISE.some((n) => n.test(line))) continue;
      if (/^CONNECTION ESTABLISHED$/.test(line)) continue;
      if (
        /^(Protocol version|Ciphersuite|Requested Signature Algorithms|Peer certificate|Hash used|Signature type|Verification|Server Temp Key|Supported Elliptic|Shared Elliptic|Peer signing digest|Peer signature type):/.test(
          line,
        )
      )
        continue;
      // "40E7…:error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:file:line:"
      const e = /^[0-9A-F]+:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):/.exec(line);
      const reason = e ? e[1]!.trim() : line;
      if (!out.includes(reason)) out.push(reason);
    }
    return out.slice(-6);
  }

  private detail(): string {
    const reasons = this.reasons();
    return reasons.length ? ` (openssl: ${reasons.join('; ')})` : '';
  }

  /** Why the tunnel ended, as an AgentError; null when it simply closed after a good connection. */
  private failure(code: number | null, signal: NodeJS.Signals | null): AgentError | null {
    const err = this.stderr;
    const detail = this.detail();
    const verify = /verify error:num=(\d+):([^\n]+)/.exec(err);
    if (verify)
      return new AgentError(
        'TLS_UNTRUSTED',
        `${this.where} is not trusted: ${verify[2]!.trim()} (X509 verify error ${verify[1]}); ` +
          `only a certificate that chains to the root CA pinned at enrollment and names ${this.host} is accepted`,
      );
    const alert = this.reasons()
      .map((r) => /\balert (.+)$/i.exec(r)?.[1])
      .find((a) => a !== undefined);
    if (alert)
      return new AgentError(
        'TLS_REFUSED',
        `${this.where} ended the TLS connection with the alert "${alert.trim()}"` +
          (CERTIFICATE_ALERTS.test(alert)
            ? ': it did not accept the device certificate'
            : ': it refused the connection the device offered'),
      );
    if (this.secured) {
      // After a good handshake, a close without close_notify or a reset is how servers often end
      // connections: the end of the stream, as Node's TLS stack reports it.
      return null;
    }
    if (
      /connect:errno=|BIO_connect|BIO_lookup|Connection refused|Name or service not known|No route to host|Network is unreachable|Connection timed out/i.test(
        err,
      )
    )
      return new AgentError('TLS_UNREACHABLE', `cannot reach ${this.where}${detail}`);
    const keyProblem =
      /client certificate private key|PKCS11_get_private_key|private key was not found|Login failed|PIN incorrect|PIN locked|ENGINE_by_id|no such engine|dso not found|unable to load provider|tpm2::|Esys_|Tss2_|tcti/i.test(
        err,
      );
    if (keyProblem) return new AgentError('TRUST_ANCHOR', this.keyProblemMessage(detail));
    if (/unexpected eof|Connection reset|errno=104/i.test(err))
      return new AgentError(
        'TLS_UNREACHABLE',
        `${this.where} closed the connection during the TLS handshake${detail}`,
      );
    return new AgentError(
      'TLS_UNREACHABLE',
      `the TLS connection to ${this.where} failed before the handshake completed ` +
        `(openssl s_client ${signal ? `was killed by ${signal}` : `exited with status ${code}`})${detail}`,
    );
  }

  private keyProblemMessage(detail: string): string {
    const err = this.stderr;
    if (this.key.kind === 'pkcs11') {
      if (/PIN incorrect|Login failed/i.test(err))
        return (
          'the PKCS#11 engine could not log in to the token with the configured PIN: set pkcs11.pin or ' +
          "RAMPART_AGENT_PKCS11_PIN to the token's user PIN (each wrong attempt brings the token closer to locking it)" +
          detail
        );
      if (/PIN locked/i.test(err))
        return `the user PIN of the PKCS#11 token is locked; unlock it with the token's SO PIN${detail}`;
      if (/ENGINE_by_id|no such engine|dso not found/i.test(err))
        return (
          'OpenSSL has no PKCS#11 engine: mutual TLS with a key in a PKCS#11 token needs libp11 ' +
          `(apt-get install libengine-pkcs11-openssl)${detail}`
        );
      return (
        'OpenSSL could not use the identity key in the PKCS#11 token (module, token label and key label ' +
        `as configured: pkcs11.module, pkcs11.tokenLabel, pkcs11.keyLabel)${detail}`
      );
    }
    return (
      `OpenSSL could not use the identity key in the TPM at ${this.key.tcti}: mutual TLS with a TPM key needs ` +
      'the tpm2-openssl provider (apt-get install tpm2-openssl) and the TPM that created the key' +
      detail
    );
  }
}
