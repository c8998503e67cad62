import { X509Certificate, generateKeyPairSync, sign } from 'node:crypto';
import { EstClient } from '@rampart/agent';
import { buildCsr, deviceUri, toPem } from '@rampart/shared/pki';
import type { DeviceIdentity } from './load/device.js';

/** A device to enroll and its one-time enrollment token (from `POST /api/v1/enrollment-tokens`). */
export interface EnrollmentJob {
  id: string;
  token: string;
}

export interface EnrollOptions {
  /** The EST base URL, `https://host:port/.well-known/est` (runtime.json's `est` listener). */
  estUrl: string;
  /** The platform's root CA (PEM) the EST server's certificate must chain to. */
  caPem: string;
  jobs: readonly EnrollmentJob[];
  /** Enrollments in flight at once, over as many kept-alive HTTPS connections. Default 16. */
  concurrency?: number;
  /** Called after each enrollment with the number done so far. */
  onProgress?: (done: number) => void;
}

/** A fresh P-256 key and its PKCS#10 request (CN = id, SAN urn:rampart:device:<id>), as a device makes them. */
export async function deviceKeyAndCsr(id: string): Promise<{ keyPem: string; csrDer: Buffer }> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csrDer = await buildCsr({
    commonName: id,
    publicKey,
    sanUris: [deviceUri(id)],
    sign: async (data) => sign('sha256', data, privateKey),
  });
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, csrDer };
}

/**
 * Enroll many simulated devices through EST `simpleenroll` (HTTP Basic `id:token`), each with a
 * fresh key made here, with the agent's EST client over kept-alive connections. Returns the
 * identities in the order of `jobs`; throws on the first refusal.
 */
export async function enrollDevices(o: EnrollOptions): Promise<DeviceIdentity[]> {
  const concurrency = Math.max(1, o.concurrency ?? 16);
  const est = new EstClient({ url: o.estUrl, caPem: o.caPem, keepAliveConnections: concurrency });
  const out = new Array<DeviceIdentity>(o.jobs.length);
  let next = 0;
  let done = 0;
  const lane = async () => {
    while (next < o.jobs.length) {
      const k = next++;
      const job = o.jobs[k]!;
      const { keyPem, csrDer } = await deviceKeyAndCsr(job.id);
      const [der] = await est.simpleEnroll(csrDer, { deviceId: job.id, token: job.token });
      if (!der) throw new Error(`enrolling ${job.id}: the reply holds no certificate`);
      if (!new X509Certificate(der).subject.split('\n').includes(`CN=${job.id}`))
        throw new Error(`enrolling ${job.id}: the certificate is for someone else`);
      out[k] = { id: job.id, keyPem, certPem: toPem('CERTIFICATE', der) };
      o.onProgress?.(++done);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, o.jobs.length) }, lane));
  } finally {
    est.close();
  }
  return out;
}
