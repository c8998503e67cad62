import { execFileSync, spawn } from 'node:child_process';
import { generateKeyPairSync, sign, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { waitForPort } from './processes.js';
import { AsnConvert, type OctetString } from '@peculiar/asn1-schema';
import type { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import {
  BasicOCSPResponse,
  CertID,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  Request,
  TBSRequest,
} from '@peculiar/asn1-ocsp';
import {
  buildCsr,
  deviceUri,
  encodeBase64Body,
  normalizeSerial,
  serialFromBytes,
  serialToBytes,
  toPem,
} from '@rampart/shared/pki';

export interface DeviceCsr {
  id: string;
  der: Buffer;
  /** The EST request body: base64 with line breaks. */
  body: string;
  pem: string;
}

/** A fresh P-256 key and a CSR for each device id: CN = id, SAN URI urn:rampart:device:<id>, ECDSA-SHA256. */
export async function makeCsrs(ids: readonly string[]): Promise<DeviceCsr[]> {
  const out: DeviceCsr[] = [];
  for (const id of ids) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = await buildCsr({
      commonName: id,
      publicKey,
      sanUris: [deviceUri(id)],
      sign: async (data) => sign('sha256', data, privateKey),
    });
    out.push({ id, der, body: encodeBase64Body(der), pem: toPem('CERTIFICATE REQUEST', der) });
  }
  return out;
}

export function openssl(args: string[], cwd?: string): string {
  return execFileSync('openssl', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The issuer half of an OCSP CertID: SHA-1 of the issuing CA's name and of its key, as openssl makes them. */
export interface CertIdTemplate {
  hashAlgorithm: AlgorithmIdentifier;
  issuerNameHash: OctetString;
  issuerKeyHash: OctetString;
}

/** Let openssl build a request for this issuer and keep its CertID hashes, so that every request is one openssl would send. */
export function certIdTemplate(issuerPemFile: string, scratch: string): CertIdTemplate {
  const file = join(scratch, 'template.ocspreq');
  openssl(['ocsp', '-issuer', issuerPemFile, '-serial', '0x01', '-no_nonce', '-reqout', file]);
  const id = AsnConvert.parse(readFileSync(file), OCSPRequest).tbsRequest.requestList[0]!.reqCert;
  return {
    hashAlgorithm: id.hashAlgorithm,
    issuerNameHash: id.issuerNameHash,
    issuerKeyHash: id.issuerKeyHash,
  };
}

/** A DER OCSPRequest for one certificate, without nonce (RFC 6960 §4.1.1; the RFC 9919 profile). */
export function ocspRequest(t: CertIdTemplate, serial: string): Buffer {
  const reqCert = new CertID({ ...t, serialNumber: new Uint8Array(serialToBytes(serial)).buffer });
  return Buffer.from(
    AsnConvert.serialize(
      new OCSPRequest({ tbsRequest: new TBSRequest({ requestList: [new Request({ reqCert })] }) }),
    ),
  );
}

/** Check that `ocspRequest` builds, byte for byte, what `openssl ocsp -no_nonce -reqout` builds. */
export function assertSameAsOpenssl(
  t: CertIdTemplate,
  issuerPemFile: string,
  serial: string,
  scratch: string,
): void {
  const file = join(scratch, 'check.ocspreq');
  openssl(['ocsp', '-issuer', issuerPemFile, '-serial', `0x${serial}`, '-no_nonce', '-reqout', file]);
  if (!readFileSync(file).equals(ocspRequest(t, serial)))
    throw new Error(`the OCSP request built for serial ${serial} differs from the one openssl builds`);
}

/**
 * Cheap check of every response: an OCSPResponse SEQUENCE whose responseStatus ENUMERATED is 0
 * (successful). Sampled responses are parsed in full with `ocspSingleStatus`.
 */
export function ocspSuccessful(der: Buffer): boolean {
  if (der.length < 5 || der[0] !== 0x30) return false;
  const l = der[1]!;
  const off = 2 + (l & 0x80 ? l & 0x7f : 0);
  return der[off] === 0x0a && der[off + 1] === 0x01 && der[off + 2] === 0x00;
}

export function ocspSingleStatus(der: Buffer): { serial: string; status: 'good' | 'revoked' | 'unknown' } {
  const r = AsnConvert.parse(der, OCSPResponse);
  if (r.responseStatus !== OCSPResponseStatus.successful || !r.responseBytes)
    throw new Error(`OCSP response status ${r.responseStatus}`);
  const basic = AsnConvert.parse(r.responseBytes.response.buffer, BasicOCSPResponse);
  const single = basic.tbsResponseData.responses[0]!;
  const s = single.certStatus;
  return {
    serial: serialFromBytes(single.certID.serialNumber),
    status: s.revoked ? 'revoked' : s.unknown !== undefined ? 'unknown' : 'good',
  };
}

/** Verify one OCSP response with openssl against the CA chain; returns the status line openssl prints. */
export function opensslVerifyOcsp(
  der: Buffer,
  caFile: string,
  issuerFile: string,
  serial: string,
  scratch: string,
): string {
  const file = join(scratch, 'check.ocspresp');
  writeFileSync(file, der);
  const out = execFileSync(
    'openssl',
    ['ocsp', '-respin', file, '-CAfile', caFile, '-issuer', issuerFile, '-serial', `0x${serial}`],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const line = out.split('\n').find((l) => l.toLowerCase().startsWith(`0x${serial}:`)) ?? out;
  return line.trim();
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The peer CA: a plain openssl CA in a directory (EC P-256 key, index.txt database, new_certs_dir),
 * with a delegated OCSP-signing certificate, issuing device certificates with the same profile as
 * Rampart's (24 h, digitalSignature, clientAuth, SAN copied from the CSR, SKI/AKI, CRL DP, AIA).
 */
export class OpensslCa {
  readonly cnf: string;
  readonly caPem: string;
  private readonly ocspPem: string;
  private readonly ocspKey: string;
  private batches = 0;
  /** Lines in index.txt so far. */
  private issued = 0;

  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'newcerts'), { recursive: true });
    writeFileSync(join(dir, 'index.txt'), '');
    this.cnf = join(dir, 'ca.cnf');
    this.caPem = join(dir, 'ca.pem');
    this.ocspPem = join(dir, 'ocsp.pem');
    this.ocspKey = join(dir, 'ocsp.key');
    writeFileSync(
      this.cnf,
      `[ ca ]
default_ca = bench
[ bench ]
dir = ${dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = copy
x509_extensions = device_ext
email_in_dn = no
[ policy_any ]
commonName = supplied
[ device_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
crlDistributionPoints = URI:http://127.0.0.1/crl/bench.crl
authorityInfoAccess = OCSP;URI:http://127.0.0.1/ocsp, caIssuers;URI:http://127.0.0.1/ca/bench.crt
[ ocsp_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = OCSPSigning
noCheck = ignored
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`,
    );
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(
      [
        'req',
        '-x509',
        ...ec,
        '-keyout',
        'ca.key',
        '-out',
        'ca.pem',
        '-days',
        '30',
        '-subj',
        '/O=Bench/CN=openssl bench CA',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      dir,
    );
    openssl(
      [
        'req',
        '-new',
        ...ec,
        '-keyout',
        'ocsp.key',
        '-out',
        'ocsp.csr',
        '-subj',
        '/O=Bench/CN=openssl bench OCSP responder',
      ],
      dir,
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        'ocsp.csr',
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-set_serial',
        '0x0cc5',
        '-days',
        '30',
        '-extfile',
        this.cnf,
        '-extensions',
        'ocsp_ext',
        '-out',
        'ocsp.pem',
      ],
      dir,
    );
  }

  /**
   * `openssl ca -batch -infiles …`: one process checks and signs every CSR and writes its database
   * (index.txt, one file per certificate in new_certs_dir, the certificates to `-out`). Returns the
   * wall time of the whole process and the serials issued.
   */
  async issue(csrs: readonly DeviceCsr[]): Promise<{ seconds: number; serials: string[] }> {
    const batch = join(this.dir, `batch-${++this.batches}`);
    mkdirSync(batch);
    const files = csrs.map((c, i) => {
      const f = join(batch, `${i}.csr`);
      writeFileSync(f, c.pem);
      return f;
    });
    const out = join(batch, 'issued.pem');
    const t0 = performance.now();
    const child = spawn(
      'openssl',
      [
        'ca',
        '-batch',
        '-config',
        this.cnf,
        '-rand_serial',
        '-days',
        '1',
        '-notext',
        '-out',
        out,
        '-infiles',
        ...files,
      ],
      { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const seconds = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(`openssl ca failed (${code}):\n${stderr}`);
    // The database: one line per certificate (V, expiry, revocation, serial, file, subject).
    const lines = readFileSync(join(this.dir, 'index.txt'), 'utf8').split('\n').filter(Boolean);
    const added = lines.slice(this.issued);
    this.issued = lines.length;
    const serials = added.map((l) => normalizeSerial(l.split('\t')[3]!));
    if (serials.length !== csrs.length)
      throw new Error(`openssl ca issued ${serials.length} of ${csrs.length} certificates`);
    // And the last certificate written (-out keeps only that one) has the last serial.
    if (normalizeSerial(new X509Certificate(readFileSync(out)).serialNumber) !== serials.at(-1))
      throw new Error('openssl ca: index.txt and the certificate written disagree');
    return { seconds, serials };
  }

  /**
   * `openssl ocsp` as a responder over this CA's index.txt, signing with the delegated responder
   * certificate, responder id by key, nextUpdate one hour ahead (what Rampart does). It answers
   * HTTP/1.0 and closes each connection; `multi` forks that many responder processes.
   */
  async startResponder(multi: number): Promise<{ url: string; stop(): Promise<void> }> {
    const port = await freePort();
    const child = spawn(
      'openssl',
      [
        'ocsp',
        '-index',
        'index.txt',
        '-port',
        String(port),
        '-rsigner',
        this.ocspPem,
        '-rkey',
        this.ocspKey,
        '-CA',
        this.caPem,
        '-resp_key_id',
        '-nmin',
        '60',
        '-multi',
        String(multi),
      ],
      // Not detached: with -multi, openssl makes itself a process group leader (and exits if it cannot).
      { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    try {
      await waitForPort(port, child, 'openssl');
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
    }
    return {
      url: `http://127.0.0.1:${port}`,
      stop: () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          // Its process group: the parent and the responders it forked.
          const signal = (s: NodeJS.Signals) => {
            try {
              process.kill(-child.pid!, s);
            } catch {
              child.kill(s);
            }
          };
          // The parent notices SIGTERM only when a responder exits; SIGKILL if it does not follow.
          const kill = setTimeout(() => signal('SIGKILL'), 2000);
          child.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          signal('SIGTERM');
        }),
    };
  }
}
