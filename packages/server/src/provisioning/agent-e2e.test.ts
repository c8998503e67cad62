import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signatureProblem } from '@rampart/shared/provisioning';
import { EstClient } from '../../../agent/src/est/client.js';
import { IdentityStore } from '../../../agent/src/identity/store.js';
import { readBirthIdentity } from '../../../agent/src/provisioning/birth.js';
import { provisionDevice } from '../../../agent/src/provisioning/provision.js';
import { createSoftHsmToken, type SoftHsmToken } from '../../../agent/src/test-support/softhsm.js';
import { startSwtpm, type Swtpm } from '../../../agent/src/test-support/swtpm.js';
import { TpmTrustAnchor } from '../../../agent/src/trust-anchor/tpm.js';
import type { TrustAnchor } from '../../../agent/src/trust-anchor/trust-anchor.js';
import { runCli } from '../../../cli/src/test-support/run-cli.js';
import { PkiPeers } from '../test-support/pki.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';

/**
 * Zero-touch provisioning with nothing faked: the offline station (`rampart factory`) provisions
 * devices whose keys live in a software key file, a TPM (swtpm) and a PKCS#11 token (SoftHSM2),
 * its manifest is imported into the running platform, and each device's own agent
 * (`rampart-agent`, a separate process, as on the device) measures its boot, attests and gets its
 * operational certificate. Then the attacks: a device the imported manifest does not list, and
 * quotes made by another TPM than the one recorded at the factory.
 */
const AGENT = fileURLToPath(new URL('../../../agent/bin/rampart-agent.js', import.meta.url));
const exec = promisify(execFile);
const MODEL = 'DW100';
const PASSPHRASE = 'passphrase of the e2e station';

async function agent(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await exec(process.execPath, [AGENT, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir(), ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

interface Device {
  id: string;
  dir: string;
  config: string;
  env: Record<string, string>;
}

let tp: TestPlatform;
let est: string;
let work: string;
let station: string;
let tpm: Swtpm;
let otherTpm: Swtpm;
let token: SoftHsmToken;
const devices: Record<string, Device> = {};
const images: Record<'os' | 'application', string> = { os: '', application: '' };

function device(id: string, config: Record<string, unknown>, env: Record<string, string> = {}): Device {
  const dir = join(work, id);
  const file = join(work, `${id}.agent.json`);
  writeFileSync(file, JSON.stringify({ ...config, est: { url: est } }), { mode: 0o600 });
  return (devices[id] = { id, dir, config: file, env });
}

const factory = (args: string[], env: Record<string, string> = {}) =>
  runCli(['factory', ...args, '--station-dir', station], {
    env: { RAMPART_STATION_PASSPHRASE: PASSPHRASE, ...env },
  });

const stationProvision = (d: Device, batch: string, extra: string[] = []) =>
  factory(
    [
      'provision',
      '--batch',
      batch,
      '--device-dir',
      d.dir,
      '--agent-config',
      d.config,
      '--id',
      d.id,
      '--serial',
      `SN-${d.id}`,
      '--model',
      MODEL,
      '--json',
      ...extra,
    ],
    d.env,
  );

async function provisionAtStation(d: Device, batch: string, extra: string[] = []) {
  const r = await stationProvision(d, batch, extra);
  expect(r.code, r.stderr).toBe(0);
}

/** The device boots: its agent measures the OS and the application. */
async function boot(d: Device) {
  for (const component of ['os', 'application'] as const) {
    const r = await agent(
      ['measure', component, images[component], '--config', d.config, '--data-dir', d.dir],
      d.env,
    );
    expect(r.code, r.stderr).toBe(0);
  }
}

const provisionOnDevice = (d: Device) =>
  agent(['provision', '--config', d.config, '--data-dir', d.dir, '--json'], d.env);

beforeAll(async () => {
  [tp, tpm, otherTpm] = await Promise.all([startTestPlatform('sqlite'), startSwtpm(), startSwtpm()]);
  est = new PkiPeers(tp).est;
  token = createSoftHsmToken();
  work = mkdtempSync(join(tmpdir(), 'rampart-zero-touch-'));
  station = join(work, 'station');
  for (const component of ['os', 'application'] as const) {
    images[component] = join(work, `${component}.img`);
    writeFileSync(images[component], `${component} image 2026.11`);
  }

  // The station: created offline, registered online with its public key only, CA installed offline.
  expect((await factory(['init', '--name', 'line-1'])).code).toBe(0);
  const reg = await tp.call('POST', '/api/v1/stations', {
    body: { name: 'line-1', publicKey: readFileSync(join(station, 'station.pub.pem'), 'utf8') },
  });
  expect(reg.status).toBe(201);
  writeFileSync(join(work, 'station-ca.json'), JSON.stringify(reg.body));
  const installed = await factory(['install-ca', join(work, 'station-ca.json')]);
  expect(installed.code, installed.stderr).toBe(0);

  // On the line: a device with each kind of trust anchor into batch b-1; one more into b-2.
  device('sw-1', { trustAnchor: 'software' });
  device('tpm-1', { trustAnchor: 'tpm', tpm: { tcti: tpm.tcti } });
  device(
    'hsm-1',
    { trustAnchor: 'pkcs11', pkcs11: { module: token.module, tokenLabel: token.tokenLabel, pin: token.pin } },
    token.env,
  );
  device('csr-1', { trustAnchor: 'software' });
  device('stray-1', { trustAnchor: 'software' });
  for (const id of ['sw-1', 'tpm-1', 'hsm-1']) await provisionAtStation(devices[id]!, 'b-1');
  // Its birth certificate is issued by the platform at import, from the request the station records.
  await provisionAtStation(devices['csr-1']!, 'b-1', ['--csr-only']);
  await provisionAtStation(devices['stray-1']!, 'b-2');
  const closed = await factory(['close-batch', '--batch', 'b-1', '--json']);
  expect(closed.code, closed.stderr).toBe(0);

  // The platform: the manifest imported, the model and the reference values of what devices run.
  const manifest = JSON.parse(readFileSync(JSON.parse(closed.stdout).manifest as string, 'utf8'));
  const imported = await tp.call('POST', '/api/v1/batches', { body: manifest });
  expect(imported.status, JSON.stringify(imported.body)).toBe(201);
  expect(imported.body).toMatchObject({ batch: 'b-1', station: 'line-1', devices: 4 });
  writeFileSync(join(work, 'imported.json'), JSON.stringify(imported.body));
  const csr = devices['csr-1']!;
  const birth = await factory([
    'install-birth',
    join(work, 'imported.json'),
    '--device-dir',
    csr.dir,
    '--agent-config',
    csr.config,
  ]);
  expect(birth.code, birth.stderr).toBe(0);
  expect(
    (await tp.call('POST', '/api/v1/device-models', { body: { id: MODEL, name: 'Door sensor' } })).status,
  ).toBe(201);
  for (const component of ['os', 'application'] as const) {
    const digest = createHash('sha256').update(readFileSync(images[component])).digest('hex');
    const ref = await tp.call('POST', '/api/v1/reference-values', {
      body: { model: MODEL, component, digest },
    });
    expect(ref.status).toBe(201);
  }
  for (const d of Object.values(devices)) await boot(d);
}, 120_000);

afterAll(async () => {
  await tp?.close();
  await tpm?.stop();
  await otherTpm?.stop();
  token?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('zero-touch provisioning, factory station to operational certificate', () => {
  it.each(['sw-1', 'tpm-1', 'hsm-1', 'csr-1'])(
    '%s: rampart-agent provision attests and gets an operational certificate, traced to batch and station',
    async (id) => {
      const d = devices[id]!;
      const r = await provisionOnDevice(d);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      const anchor = { 'sw-1': 'software', 'tpm-1': 'tpm', 'hsm-1': 'pkcs11', 'csr-1': 'software' }[id];
      expect(out).toMatchObject({
        deviceId: id,
        enrolled: true,
        trustAnchor: anchor,
        attestation: { status: 'affirming', anchor, reasons: [] },
        factory: { serial: `SN-${id}`, model: MODEL, batch: 'b-1', station: 'line-1' },
      });
      const cert = await tp.call('GET', `/api/v1/certificates/${out.certificate.serial}`);
      expect(cert.body).toMatchObject({ deviceId: id, state: 'valid' });
      expect((await tp.call('GET', `/api/v1/devices/${id}`)).body).toMatchObject({
        id,
        model: MODEL,
        serial: `SN-${id}`,
        status: 'active',
      });

      const trace = await tp.call('GET', `/api/v1/devices/${id}/trace`);
      expect(trace.status).toBe(200);
      expect(trace.body.manufacture).toMatchObject({
        serial: `SN-${id}`,
        trustAnchor: anchor,
        tpm: id === 'tpm-1',
        // Issued offline by the station CA, or at import by Rampart's manufacturing CA (--csr-only).
        birthCertificate: {
          issuer: expect.stringContaining(
            id === 'csr-1' ? 'Rampart Manufacturing CA' : 'Factory station line-1',
          ),
        },
        batch: { id: 'b-1' },
        station: { name: 'line-1', status: 'active' },
      });
      expect(trace.body.enrollments).toEqual([
        expect.objectContaining({ decision: 'issued', certificateSerial: out.certificate.serial }),
      ]);

      // The transcript verifies offline with the platform's transcript key, and not once edited.
      const transcripts = await tp.call('GET', `/api/v1/devices/${id}/transcripts`);
      expect(transcripts.body).toHaveLength(1);
      const t = transcripts.body[0];
      expect(t).toMatchObject({
        deviceId: id,
        decision: 'issued',
        attestation: { status: 'affirming', anchor },
        trace: { batch: 'b-1', station: 'line-1' },
      });
      const key = (await tp.call('GET', '/api/v1/provisioning/transcript-key')).body as string;
      expect(signatureProblem(t, key)).toBeNull();
      expect(signatureProblem({ ...t, trace: { batch: 'b-9', station: 'line-1' } }, key)).toMatch(
        /changed after it was signed/,
      );
    },
    60_000,
  );

  it('the station refuses a TPM it provisioned before, as another device, and records nothing', async () => {
    const batch = join(station, 'batches', 'b-2.json');
    const before = readFileSync(batch, 'utf8');
    const again: Device = {
      id: 'tpm-2',
      dir: join(work, 'tpm-2'),
      config: devices['tpm-1']!.config,
      env: {},
    };
    const r = await stationProvision(again, 'b-2');
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('this TPM was provisioned already, as device tpm-1 (batch b-1)');
    // Refused on its endorsement key, before any key was made in it for the new device.
    for (const blob of ['tpm-key.pub', 'ak.pub'])
      expect(existsSync(join(again.dir, 'identity', 'tpm', blob))).toBe(false);
    expect(existsSync(join(again.dir, 'identity', 'birth'))).toBe(false);
    expect(readFileSync(batch, 'utf8')).toBe(before);
  });

  it('refuses a device provisioned at the station but missing from the imported manifest', async () => {
    const d = devices['stray-1']!;
    const r = await provisionOnDevice(d);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('device stray-1 is not in any imported manifest');
    expect(JSON.parse(r.stdout || '{}').enrolled ?? false).toBe(false);
    expect((await tp.call('GET', '/api/v1/devices/stray-1')).status).toBe(404);
    expect((await tp.call('GET', '/api/v1/certificates?device=stray-1')).body.items).toEqual([]);
  });

  describe('quotes from another TPM than the one recorded at the factory', () => {
    const d = () => devices['tpm-1']!;
    let genuine: TpmTrustAnchor;
    let other: TpmTrustAnchor;
    const certificates = async () =>
      (await tp.call('GET', '/api/v1/certificates?device=tpm-1')).body.items.length;

    beforeAll(async () => {
      genuine = new TpmTrustAnchor({ dir: join(d().dir, 'identity', 'tpm'), tcti: tpm.tcti });
      // A second TPM with its own identity key and attestation key, its PCRs never extended.
      other = new TpmTrustAnchor({ dir: mkdtempSync(join(work, 'other-tpm-')), tcti: otherTpm.tcti });
      await other.ensureKey();
      await other.ensureAttestationKey();
    }, 60_000);

    /**
     * The device key of tpm-1 (its TPM signs with it), with the attestation key and quotes of the
     * other TPM, sent to the real platform the way the agent sends evidence.
     */
    async function relay(akOf: () => Promise<Buffer>) {
      const anchor: TrustAnchor & Record<string, unknown> = {
        kind: 'tpm',
        strength: 'hardware',
        ensureKey: () => genuine.ensureKey(),
        publicKey: () => genuine.publicKey(),
        sign: (data: Uint8Array) => genuine.sign(data),
        tlsKey: async () => null,
        ensureAttestationKey: akOf,
        certifyAttestationKey: (q: Buffer) => other.certifyAttestationKey(q),
        quote: (pcrs: readonly number[], q: Buffer) => other.quote(pcrs, q),
      };
      const birth = readBirthIdentity(d().dir)!;
      return provisionDevice({
        anchor,
        store: new IdentityStore(mkdtempSync(join(work, 'relay-'))),
        est: new EstClient({ url: est, caPem: birth.rootPem }),
        birth,
      });
    }

    it("refuses the other TPM's attestation key and quote", async () => {
      const before = await certificates();
      await expect(relay(() => other.ensureAttestationKey())).rejects.toMatchObject({
        code: 'EST_REFUSED',
        status: 403,
        serverMessage: expect.stringContaining(
          'signed by another attestation key than the one recorded for this device at the factory',
        ),
      });
      expect(await certificates()).toBe(before);
    });

    it('refuses a quote of the other TPM presented with the recorded attestation key', async () => {
      const before = await certificates();
      await expect(relay(async () => (await genuine.attestationKeyPublic())!)).rejects.toMatchObject({
        code: 'EST_REFUSED',
        status: 403,
        serverMessage: expect.stringContaining(
          'the quote signature does not verify with the attestation key',
        ),
      });
      expect(await certificates()).toBe(before);
    });

    it("gets nothing when the device's TPM is swapped: its key does not load in another TPM", async () => {
      const swapped = join(work, 'tpm-1.swapped.json');
      writeFileSync(
        swapped,
        JSON.stringify({ trustAnchor: 'tpm', tpm: { tcti: otherTpm.tcti }, est: { url: est } }),
      );
      const before = await certificates();
      const r = await agent(['provision', '--config', swapped, '--data-dir', d().dir, '--json']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/tpm2_load/);
      expect(await certificates()).toBe(before);
    });
  });
});
