import 'reflect-metadata';
import {
  X509CertificateGenerator,
  SubjectAlternativeNameExtension,
  BasicConstraintsExtension,
  KeyUsagesExtension,
  KeyUsageFlags,
  ExtendedKeyUsageExtension,
  ExtendedKeyUsage,
  SubjectKeyIdentifierExtension,
  cryptoProvider,
  X509Certificate,
} from '@peculiar/x509';
import { randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../files.js';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { getOrCreateKey, type KeyStore } from '../keystore/index.js';

cryptoProvider.set(webcrypto as unknown as Parameters<typeof cryptoProvider.set>[0]);

/**
 * The management API's TLS certificate until the platform CA exists: a self-signed certificate for
 * the API's names, whose key lives (exportable, encrypted) in the key store. Clients pin the
 * certificate itself, which `rampart up` leaves at `<data-dir>/ca.pem`.
 */
export interface ApiTlsMaterial {
  key: string;
  cert: string;
  /** What clients should trust. */
  caPem: string;
  caPath: string;
}

const KEY_LABEL = 'api-tls';
const VALIDITY_DAYS = 397;

function namesFor(extra: readonly string[]): string[] {
  return [...new Set(['localhost', '127.0.0.1', '::1', hostname(), ...extra])].sort();
}

async function issueSelfSigned(
  privateKey: KeyObject,
  publicKey: KeyObject,
  names: string[],
): Promise<string> {
  const subtle = webcrypto.subtle;
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const priv = await subtle.importKey(
    'pkcs8',
    privateKey.export({ type: 'pkcs8', format: 'der' }),
    alg,
    false,
    ['sign'],
  );
  const pub = await subtle.importKey('spki', publicKey.export({ type: 'spki', format: 'der' }), alg, true, [
    'verify',
  ]);
  const now = new Date();
  const cert = await X509CertificateGenerator.createSelfSigned({
    serialNumber: '01' + randomBytes(15).toString('hex'),
    name: `CN=Rampart management API (${hostname()})`,
    notBefore: new Date(now.getTime() - 5 * 60_000),
    notAfter: new Date(now.getTime() + VALIDITY_DAYS * 86400_000),
    keys: { privateKey: priv, publicKey: pub },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new BasicConstraintsExtension(false, undefined, true),
      new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
      new ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth], false),
      new SubjectAlternativeNameExtension(
        names.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n })),
      ),
      await SubjectKeyIdentifierExtension.create(pub),
    ],
  });
  return cert.toString('pem');
}

export async function ensureApiTls(
  dataDir: string,
  keys: KeyStore,
  extraNames: readonly string[],
): Promise<ApiTlsMaterial> {
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const certPath = join(dir, 'api.crt');
  const caPath = join(dataDir, 'ca.pem');
  const signingKey = await getOrCreateKey(keys, KEY_LABEL, 'ec-p256', { exportable: true });
  const privateKey = await keys.exportPrivateKey(KEY_LABEL);
  const names = namesFor(extraNames);

  let certPem: string | null = existsSync(certPath) ? readFileSync(certPath, 'utf8') : null;
  if (certPem) {
    const cert = new X509Certificate(certPem);
    const san = cert.getExtension(SubjectAlternativeNameExtension);
    const certNames = (san?.names.items.map((n) => n.value) ?? []).sort();
    const renewBy = new Date(Date.now() + 30 * 86400_000);
    const sameKey = Buffer.from(cert.publicKey.rawData).equals(
      signingKey.publicKey.export({ type: 'spki', format: 'der' }),
    );
    if (!sameKey || cert.notAfter < renewBy || names.some((n) => !certNames.includes(n))) certPem = null;
  }
  if (!certPem) {
    certPem = await issueSelfSigned(privateKey, signingKey.publicKey, names);
    writeFileAtomic(certPath, certPem, 0o644);
  }
  writeFileAtomic(caPath, certPem, 0o644);
  return {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    cert: certPem,
    caPem: certPem,
    caPath,
  };
}
