import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPem, toPem } from '@rampart/shared/pki';

/** A CA made with the openssl command line, for tests. */
export interface TestCa {
  name: string;
  certFile: string;
  keyFile: string;
  pem: string;
  der: Buffer;
  /** This CA and its issuers up to (not including) the root, PEM: what a server sends with a leaf. */
  chainPem: string;
}

const CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[issuing]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/**
 * A throwaway PKI built with the `openssl` CLI in a temporary directory: roots, issuing CAs, TLS
 * server certificates and device certificates issued from DER CSRs. It stands in for the
 * platform's CA in the agent's unit tests only.
 */
export class TestPki {
  readonly dir: string;
  private n = 0;

  constructor(dir = mkdtempSync(join(tmpdir(), 'rampart-agent-pki-'))) {
    this.dir = dir;
    writeFileSync(join(dir, 'openssl.cnf'), CONFIG);
  }

  openssl(...args: string[]): string {
    return execFileSync('openssl', args, { cwd: this.dir, encoding: 'utf8', stdio: 'pipe' });
  }

  private file(base: string): string {
    return join(this.dir, `${base}-${++this.n}`);
  }

  private key(base: string): string {
    const keyFile = `${base}.key`;
    this.openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyFile);
    return keyFile;
  }

  private read(certFile: string): { pem: string; der: Buffer } {
    const pem = readFileSync(certFile, 'utf8');
    return { pem, der: fromPem(pem, 'CERTIFICATE')[0]! };
  }

  private serial(): string {
    return '0x' + randomBytes(12).toString('hex');
  }

  rootCa(name: string, days = 30): TestCa {
    const base = this.file('root');
    const keyFile = this.key(base);
    const certFile = `${base}.pem`;
    this.openssl(
      'req',
      '-x509',
      '-new',
      '-key',
      keyFile,
      '-subj',
      `/CN=${name}`,
      '-days',
      String(days),
      '-config',
      'openssl.cnf',
      '-extensions',
      'root',
      '-set_serial',
      this.serial(),
      '-out',
      certFile,
    );
    return { name, certFile, keyFile, ...this.read(certFile), chainPem: '' };
  }

  issuingCa(name: string, parent: TestCa, days = 30): TestCa {
    const base = this.file('issuing');
    const keyFile = this.key(base);
    this.openssl(
      'req',
      '-new',
      '-key',
      keyFile,
      '-subj',
      `/CN=${name}`,
      '-config',
      'openssl.cnf',
      '-out',
      `${base}.csr`,
    );
    const certFile = `${base}.pem`;
    this.openssl(
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      parent.certFile,
      '-CAkey',
      parent.keyFile,
      '-set_serial',
      this.serial(),
      '-days',
      String(days),
      '-extfile',
      'openssl.cnf',
      '-extensions',
      'issuing',
      '-out',
      certFile,
    );
    const read = this.read(certFile);
    return { name, certFile, keyFile, ...read, chainPem: read.pem + parent.chainPem };
  }

  /** A TLS server certificate and key (PEM); `certPem` carries the issuing chain after the leaf. */
  serverCert(ca: TestCa, san = 'DNS:localhost,IP:127.0.0.1'): { certPem: string; keyPem: string } {
    const base = this.file('server');
    const keyFile = this.key(base);
    this.openssl(
      'req',
      '-new',
      '-key',
      keyFile,
      '-subj',
      '/CN=est.test',
      '-config',
      'openssl.cnf',
      '-out',
      `${base}.csr`,
    );
    writeFileSync(
      `${base}.ext`,
      `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
    );
    this.openssl(
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      '-set_serial',
      this.serial(),
      '-days',
      '2',
      '-extfile',
      `${base}.ext`,
      '-out',
      `${base}.pem`,
    );
    return {
      certPem: readFileSync(`${base}.pem`, 'utf8') + ca.chainPem,
      keyPem: readFileSync(keyFile, 'utf8'),
    };
  }

  /**
   * A certificate for the key and subject of a DER CSR, as the platform issues device certificates
   * (clientAuth, SAN URI); `san` and `eku` override the extensions.
   */
  issue(csrDer: Uint8Array, ca: TestCa, options: { san?: string; eku?: string; days?: number } = {}): Buffer {
    const base = this.file('device');
    writeFileSync(`${base}.csr`, toPem('CERTIFICATE REQUEST', csrDer));
    const san = options.san ?? this.sanOf(`${base}.csr`);
    writeFileSync(
      `${base}.ext`,
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        `extendedKeyUsage=${options.eku ?? 'clientAuth'}`,
        'authorityKeyIdentifier=keyid',
        ...(san ? [`subjectAltName=${san}`] : []),
      ].join('\n') + '\n',
    );
    this.openssl(
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      '-set_serial',
      this.serial(),
      '-days',
      String(options.days ?? 1),
      '-extfile',
      `${base}.ext`,
      '-out',
      `${base}.pem`,
    );
    return this.read(`${base}.pem`).der;
  }

  private sanOf(csrFile: string): string {
    const text = this.openssl('req', '-in', csrFile, '-noout', '-text');
    const m = /URI:(\S+)/.exec(text);
    return m ? `URI:${m[1]!.replace(/,$/, '')}` : '';
  }
}
