import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { toPem } from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import {
  certificatesFromPem,
  checkIssuedCertificate,
  frozenCertificate,
  parseCertificate,
  parsePinnedRoots,
  pathToRoot,
  type CheckedIdentity,
  type IssuedCertificateCheck,
  type ParsedCertificate,
} from './certificate.js';
import { writeFileAtomic } from './files.js';
import { RecentMemo } from '../recent-memo.js';

/** Certificates are public: readable by every user of the device (the key is not here). */
export const CERT_FILE_MODE = 0o644;

/**
 * The device's certificate identity under `<dataDir>/identity/`:
 *   device.crt    the device certificate (PEM)
 *   chain.pem     the CA certificates from EST cacerts that chain to the pinned root (PEM)
 *   root-ca.pem   the root CA pinned at enrollment (PEM), trusted for every later connection
 * The private key stays where the trust anchor keeps it (for the software anchor, device-key.pem
 * in the same directory, mode 0600).
 */
export class IdentityStore {
  readonly dir: string;
  readonly certFile: string;
  readonly chainFile: string;
  readonly rootFile: string;

  constructor(readonly dataDir: string) {
    this.dir = join(dataDir, 'identity');
    this.certFile = join(this.dir, 'device.crt');
    this.chainFile = join(this.dir, 'chain.pem');
    this.rootFile = join(this.dir, 'root-ca.pem');
    this.serverFile = join(this.dir, 'server.json');
  }

  readonly serverFile: string;
  /**
   * The device certificate and the chain as last parsed, by file content: each is read at every
   * connection and update check, but parsed only when its file changed (renewal, enrollment).
   */
  private readonly certMemo = new RecentMemo<ParsedCertificate>(2);
  private readonly chainMemo = new RecentMemo<readonly ParsedCertificate[]>(2);

  /** Where the device enrolled (EST URL) and as whom, so that renewal needs no flags. */
  server(): { estUrl: string; deviceId: string } | null {
    if (!existsSync(this.serverFile)) return null;
    try {
      const v = JSON.parse(readFileSync(this.serverFile, 'utf8')) as { estUrl?: unknown; deviceId?: unknown };
      return typeof v.estUrl === 'string' && typeof v.deviceId === 'string'
        ? { estUrl: v.estUrl, deviceId: v.deviceId }
        : null;
    } catch {
      return null;
    }
  }

  rememberServer(estUrl: string, deviceId: string): void {
    writeFileAtomic(this.serverFile, JSON.stringify({ estUrl, deviceId }, null, 2) + '\n', CERT_FILE_MODE);
  }

  /** The current device certificate, or null before enrollment. */
  current(): ParsedCertificate | null {
    if (!existsSync(this.certFile)) return null;
    return this.certMemo.get(readFileSync(this.certFile, 'utf8'), (pem) => {
      const der = certificatesFromPem(pem)[0];
      if (!der)
        throw new AgentError(
          'CERT_REFUSED',
          `${this.certFile} holds no PEM certificate; enroll again: rampart-agent enroll`,
        );
      return frozenCertificate(parseCertificate(der));
    });
  }

  /** The CA certificates saved with the device certificate (empty before enrollment). */
  chain(): ParsedCertificate[] {
    if (!existsSync(this.chainFile)) return [];
    return [
      ...this.chainMemo.get(readFileSync(this.chainFile, 'utf8'), (pem) =>
        Object.freeze(certificatesFromPem(pem).map((d) => frozenCertificate(parseCertificate(d)))),
      ),
    ];
  }

  /** The root CA pinned at enrollment (PEM), or null before enrollment. */
  rootPem(): string | null {
    return existsSync(this.rootFile) ? readFileSync(this.rootFile, 'utf8') : null;
  }

  /**
   * What the device presents as TLS client certificate: its certificate and the CAs from it up to
   * (not including) the pinned root, as PEM.
   */
  clientCertificatePem(): string {
    const leaf = this.current();
    if (!leaf)
      throw new AgentError('NOT_ENROLLED', 'the device has no certificate yet; run: rampart-agent enroll');
    const chain = this.chain();
    const root = this.rootPem();
    const path = root ? pathToRoot(leaf, chain, parsePinnedRoots(root, this.rootFile), Date.now()) : null;
    return [leaf, ...(path ?? chain)].map((c) => toPem('CERTIFICATE', c.der)).join('');
  }

  /**
   * Check what the EST server issued (see checkIssuedCertificate) and only then save it. A refused
   * certificate throws CERT_REFUSED and leaves every file as it was. Files are replaced atomically,
   * the device certificate last, so a reader never pairs a new certificate with an old chain.
   */
  install(check: IssuedCertificateCheck): CheckedIdentity {
    const checked = checkIssuedCertificate(check);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (this.rootPem() !== check.rootPem) writeFileAtomic(this.rootFile, check.rootPem, CERT_FILE_MODE);
    writeFileAtomic(
      this.chainFile,
      checked.chain.map((c) => toPem('CERTIFICATE', c.der)).join(''),
      CERT_FILE_MODE,
    );
    writeFileAtomic(this.certFile, toPem('CERTIFICATE', checked.leaf.der), CERT_FILE_MODE);
    return checked;
  }
}
