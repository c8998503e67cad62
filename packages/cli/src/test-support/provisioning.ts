import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import {
  PCR_OF,
  ZERO_DIGEST,
  attestationQualifyingData,
  extendDigest,
  type MeasuredComponent,
} from '@rampart/shared/attestation';
import { canonicalJson } from '@rampart/shared/audit';
import { buildCsr } from '@rampart/shared/pki';
import {
  EVIDENCE_FORMAT,
  MANIFEST_FORMAT,
  QUOTED_PCRS,
  SOFTWARE_QUOTE_FORMAT,
  signDocument,
  type AttestationEvidence,
} from '@rampart/shared/provisioning';
import { issueBirthCertificate, stationSigner } from '../../../server/src/provisioning/factory.js';
import type { TestPlatform } from '../../../server/src/test-support/platform.js';

/**
 * The factory and the device, for tests of the provisioning commands: a station key, birth
 * certificates it issues offline, the manifest it signs; and a device with a software trust anchor
 * that attests over a fresh nonce and enrolls over EST with the attestation token — the same
 * messages rampart-agent sends, built here so that each test controls what the device measures.
 */
export interface FactoryDevice {
  id: string;
  key: KeyObject;
  spki: Buffer;
  birth: string;
}

export function newP256(): { privateKey: KeyObject; publicPem: string; privatePem: string } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKey,
    publicPem: createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }) as string,
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

export async function factoryDevice(
  station: { key: KeyObject; caPem: string },
  id: string,
): Promise<FactoryDevice> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const birth = await issueBirthCertificate({
    stationKey: station.key,
    stationCaPem: station.caPem,
    deviceSpki: spki,
    deviceId: id,
    serial: `SN-${id}`,
    validityDays: 3650,
  });
  return { id, key: privateKey, spki, birth };
}

export async function signedManifest(
  station: { name: string; key: KeyObject },
  batch: string,
  model: string,
  devices: readonly FactoryDevice[],
) {
  const now = new Date().toISOString();
  return signDocument(
    {
      format: MANIFEST_FORMAT,
      batch,
      station: station.name,
      createdAt: now,
      closedAt: now,
      devices: devices.map((d) => ({
        deviceId: d.id,
        serial: `SN-${d.id}`,
        model,
        hardwareRevision: null,
        trustAnchor: 'software' as const,
        publicKey: d.spki.toString('base64'),
        birthCertificate: d.birth,
        provisionedAt: now,
      })),
    },
    stationSigner(station.key),
  );
}

/** The device side of the EST listener (attestation and enrollment), trusting the platform's root. */
export class DeviceSide {
  private readonly dispatcher: Agent;
  private readonly base: string;

  constructor(t: TestPlatform) {
    this.dispatcher = new Agent({ connect: { ca: readFileSync(join(t.dataDir, 'ca.pem')) } });
    this.base = t.platform.listeners.find((l) => l.name === 'est')!.url.replace(/\/\.well-known\/est$/, '');
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async post(path: string, body: unknown) {
    const res = await request(this.base + path, {
      method: 'POST',
      dispatcher: this.dispatcher,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: text ? (JSON.parse(text) as Record<string, any>) : {} }; // eslint-disable-line @typescript-eslint/no-explicit-any
  }

  /** Attest with a software anchor measuring `measured`; returns the verifier's answer. */
  async attest(
    d: FactoryDevice,
    stationCaPem: string,
    measured: { component: MeasuredComponent; digest: string }[],
  ) {
    const nonce = await this.post('/attestation/v1/nonce', {});
    if (nonce.status !== 200) throw new Error(`nonce: ${JSON.stringify(nonce.body)}`);
    const n = nonce.body.nonce as string;
    const events = measured.map((m, i) => ({
      seq: i + 1,
      pcr: PCR_OF[m.component],
      component: m.component,
      digest: m.digest,
      description: `${m.component} image`,
      at: new Date().toISOString(),
    }));
    const registers: Record<string, string> = Object.fromEntries(
      QUOTED_PCRS.map((p) => [String(p), ZERO_DIGEST]),
    );
    for (const e of events) registers[String(e.pcr)] = extendDigest(registers[String(e.pcr)]!, e.digest);
    const statement = Buffer.from(
      canonicalJson({
        format: SOFTWARE_QUOTE_FORMAT,
        qualifyingData: attestationQualifyingData(n, d.spki).toString('hex'),
        registers,
      }),
    );
    const evidence: AttestationEvidence = {
      format: EVIDENCE_FORMAT,
      nonce: n,
      deviceId: d.id,
      anchor: 'software',
      key: d.spki.toString('base64'),
      birthCertificates: [d.birth, stationCaPem],
      eventLog: events,
      statement: {
        body: statement.toString('base64'),
        signature: sign('sha256', statement, d.key).toString('base64'),
      },
    };
    return this.post('/attestation/v1/evidence', evidence);
  }

  /** EST simpleenroll with the attestation token; the status tells whether a certificate was issued. */
  async enroll(d: FactoryDevice, token: string): Promise<{ status: number; body: string }> {
    const csr = await buildCsr({
      commonName: d.id,
      publicKey: createPublicKey(d.key),
      sign: async (data: Uint8Array) => sign('sha256', data, d.key),
    });
    const res = await request(`${this.base}/.well-known/est/simpleenroll`, {
      method: 'POST',
      dispatcher: this.dispatcher,
      headers: { 'content-type': 'application/pkcs10', authorization: `Bearer ${token}` },
      body: csr.toString('base64'),
    });
    return { status: res.statusCode, body: await res.body.text() };
  }
}
