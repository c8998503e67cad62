import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signatureProblem } from '@rampart/shared/provisioning';
import { readBirthIdentity } from '../../../agent/src/provisioning/birth.js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { runCli } from '../test-support/run-cli.js';

/**
 * `rampart factory` as a station operator runs it: offline, on a station directory, with devices
 * whose software trust anchor lives in their agent data directory. The platform is used only where
 * the operator would carry files to it (registering the station, importing the manifest).
 */
const PASSPHRASE = 'station passphrase for tests';
const env = { RAMPART_STATION_PASSPHRASE: PASSPHRASE };

let tp: TestPlatform;
let work: string;
let station: string;

const factory = (args: string[], extra: Record<string, string> = env) =>
  runCli(['factory', ...args, '--station-dir', station], { env: extra });

function deviceDir(name: string): string {
  const dir = join(work, name);
  writeFileSync(join(work, `${name}.agent.json`), JSON.stringify({ trustAnchor: 'software' }));
  return dir;
}

const provisionArgs = (dir: string, id: string, batch = 'b-1', serial = `SN-${id}`) => [
  'provision',
  '--batch',
  batch,
  '--device-dir',
  dir,
  '--agent-config',
  `${dir}.agent.json`,
  '--id',
  id,
  '--serial',
  serial,
  '--model',
  'DW100',
  '--hardware-revision',
  'B',
];

const batchFile = () => readFileSync(join(station, 'batches', 'b-1.json'), 'utf8');

async function register(name: string, publicKeyPem: string) {
  const r = await tp.call('POST', '/api/v1/stations', { body: { name, publicKey: publicKeyPem } });
  expect(r.status).toBe(201);
  return r.body as { station: { name: string }; certificate: string; chain: string; rootCertificate: string };
}

beforeAll(async () => {
  tp = await startTestPlatform('sqlite');
  work = mkdtempSync(join(tmpdir(), 'rampart-factory-'));
  station = join(work, 'station');
}, 60_000);
afterAll(async () => {
  await tp?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('rampart factory', () => {
  it('init: refuses without a passphrase, then creates the key encrypted at rest', async () => {
    let r = await factory(['init', '--name', 'line-1'], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('RAMPART_STATION_PASSPHRASE');
    expect(r.stderr).toContain('--passphrase-file');
    expect(existsSync(station)).toBe(false);
    r = await factory(['init', '--name', 'line-1'], { RAMPART_STATION_PASSPHRASE: 'short' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('at least 12 characters');

    const passFile = join(work, 'pass');
    writeFileSync(passFile, `${PASSPHRASE}\n`, { mode: 0o600 });
    r = await factory(['init', '--name', 'line-1', '--passphrase-file', passFile, '--json'], {});
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.next[0]).toBe(
      `rampart station register line-1 --public-key ${join(station, 'station.pub.pem')} --out station-ca.json`,
    );
    const keyPem = readFileSync(join(station, 'station.key.pem'), 'utf8');
    expect(keyPem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    expect(statSync(join(station, 'station.key.pem')).mode & 0o777).toBe(0o600);
    expect(() => createPrivateKey(keyPem)).toThrow();
    expect(() => createPrivateKey({ key: keyPem, passphrase: 'not the passphrase' })).toThrow();
    const key = createPrivateKey({ key: keyPem, passphrase: PASSPHRASE });
    expect(createPublicKey(key).export({ type: 'spki', format: 'pem' })).toBe(
      readFileSync(join(station, 'station.pub.pem'), 'utf8'),
    );

    r = await factory(['init', '--name', 'line-1']);
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('holds a station already');
    expect(readFileSync(join(station, 'station.key.pem'), 'utf8')).toBe(keyPem);
  });

  it('provision: refused until the station CA is installed, and says how', async () => {
    const r = await factory(provisionArgs(deviceDir('early'), 'dw-early'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('rampart station register line-1 --public-key');
    expect(r.stderr).toContain('rampart factory install-ca');
    expect(existsSync(join(work, 'early'))).toBe(false);
  });

  it('install-ca: refuses the registration of another station or key, installs its own', async () => {
    const own = await register('line-1', readFileSync(join(station, 'station.pub.pem'), 'utf8'));
    const other = await register(
      'line-2',
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
        type: 'spki',
        format: 'pem',
      }) as string,
    );
    const write = (name: string, body: unknown) => {
      const file = join(work, name);
      writeFileSync(file, JSON.stringify(body));
      return file;
    };
    const before = readFileSync(join(station, 'station.json'), 'utf8');
    let r = await factory(['install-ca', write('other.json', other)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('registration of station line-2, not line-1');
    // Renamed to look like this station's: the certificate is still for another key.
    r = await factory([
      'install-ca',
      write('renamed.json', { ...other, station: { ...other.station, name: 'line-1' } }),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the CA certificate is for another key \([0-9a-f]{16}…\) than this station's/);
    // A chain that does not lead to the root.
    r = await factory([
      'install-ca',
      write('chainless.json', { ...own, chain: own.rootCertificate, rootCertificate: own.rootCertificate }),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('the chain does not lead to the root');
    expect(readFileSync(join(station, 'station.json'), 'utf8')).toBe(before);
    expect(existsSync(join(station, 'ca'))).toBe(false);

    const file = write('station-ca.json', own);
    r = await factory(['install-ca', file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const installed = JSON.parse(r.stdout);
    const cert = new X509Certificate(own.certificate);
    expect(installed).toMatchObject({
      station: 'line-1',
      unchanged: false,
      ca: { serial: cert.serialNumber.toLowerCase(), issuer: expect.stringContaining('Manufacturing') },
    });
    expect(readFileSync(join(station, 'ca', 'root-ca.pem'), 'utf8')).toBe(
      readFileSync(join(tp.dataDir, 'ca.pem'), 'utf8'),
    );
    r = await factory(['install-ca', file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('has this CA certificate installed already');
  });

  it('provision: key in the trust anchor, birth certificate from the station CA, birth identity, batch record', async () => {
    const dir = deviceDir('dw-1');
    const r = await factory([...provisionArgs(dir, 'dw-1'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      deviceId: 'dw-1',
      batch: 'b-1',
      station: 'line-1',
      trustAnchor: 'software',
      keyCreated: true,
      csr: false,
      tpm: null,
      devicesInBatch: 1,
      birthIdentity: join(dir, 'identity', 'birth'),
    });
    // What the device's agent will read: its key's birth certificate, from the station CA, and the pinned root.
    const birth = readBirthIdentity(dir)!;
    expect(birth.device).toMatchObject({
      deviceId: 'dw-1',
      serial: 'SN-dw-1',
      model: 'DW100',
      hardwareRevision: 'B',
      trustAnchor: 'software',
      batch: 'b-1',
      station: 'line-1',
    });
    const deviceKey = createPublicKey(
      createPrivateKey(readFileSync(join(dir, 'identity', 'device-key.pem'))),
    );
    expect(birth.birthCertificate.x509.publicKey.equals(deviceKey)).toBe(true);
    expect(birth.certificates[1]).toBe(readFileSync(join(station, 'ca', 'certificate.pem'), 'utf8'));
    expect(birth.rootPem).toBe(readFileSync(join(tp.dataDir, 'ca.pem'), 'utf8'));
    expect(birth.birthCertificate.x509.subject).toContain('CN=dw-1');
    expect(birth.birthCertificate.x509.subjectAltName).toBe('URI:urn:rampart:device:dw-1');
    const batch = JSON.parse(batchFile());
    expect(batch).toMatchObject({ batch: 'b-1', station: 'line-1', closedAt: null });
    expect(batch.devices).toEqual([
      expect.objectContaining({
        deviceId: 'dw-1',
        publicKey: deviceKey.export({ type: 'spki', format: 'der' }).toString('base64'),
        birthCertificate: birth.certificates[0],
      }),
    ]);
  });

  it('provision: a device id, serial or trust anchor provisioned before is refused and nothing changes', async () => {
    const before = batchFile();
    // The same id on another device: refused before that device is touched.
    const fresh = deviceDir('dw-dup');
    let r = await factory(provisionArgs(fresh, 'dw-1'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('device dw-1 is in batch b-1 already');
    r = await factory(provisionArgs(fresh, 'dw-9', 'b-1', 'SN-dw-1'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('serial SN-dw-1 is recorded already, for device dw-1');
    expect(existsSync(fresh)).toBe(false);
    // The device provisioned as dw-1, presented again as another device.
    r = await factory(provisionArgs(join(work, 'dw-1'), 'dw-2'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('the device was provisioned already');
    expect(r.stderr).toContain('birth identity of dw-1');
    // Its birth identity gone, its key is still the one recorded for dw-1.
    const copy = deviceDir('dw-1-copy');
    mkdirSync(join(copy, 'identity'), { recursive: true, mode: 0o700 });
    copyFileSync(join(work, 'dw-1', 'identity', 'device-key.pem'), join(copy, 'identity', 'device-key.pem'));
    r = await factory(provisionArgs(copy, 'dw-2'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain("the key in this device's trust anchor is recorded already, for device dw-1");
    expect(existsSync(join(copy, 'identity', 'birth'))).toBe(false);
    // Another device's birth identity, next to a key of its own: a key mismatch.
    const clone = deviceDir('dw-1-clone');
    mkdirSync(join(clone, 'identity'), { recursive: true, mode: 0o700 });
    cpSync(join(work, 'dw-1', 'identity', 'birth'), join(clone, 'identity', 'birth'), { recursive: true });
    writeFileSync(
      join(clone, 'identity', 'device-key.pem'),
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
      { mode: 0o600 },
    );
    r = await factory(provisionArgs(clone, 'dw-2'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain(
      'its birth certificate certifies another key than the one in the software trust anchor',
    );
    // A wrong passphrase.
    r = await factory(provisionArgs(fresh, 'dw-2'), { RAMPART_STATION_PASSPHRASE: 'not the passphrase' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('wrong passphrase');
    expect(batchFile()).toBe(before);
  });

  it('provision --csr-only records a certificate request and leaves the birth identity for later', async () => {
    const dir = deviceDir('dw-3');
    const r = await factory([...provisionArgs(dir, 'dw-3'), '--csr-only'], {});
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('requested: the platform issues it when the batch is imported');
    expect(r.stdout).toContain('rampart factory install-birth');
    expect(existsSync(join(dir, 'identity', 'birth'))).toBe(false);
    const record = JSON.parse(batchFile()).devices.find((d: { deviceId: string }) => d.deviceId === 'dw-3');
    expect(record.csr).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(record.birthCertificate).toBeUndefined();
  });

  it('close-batch: a manifest signed by the station key; the batch takes no more devices', async () => {
    const out = join(work, 'b-1.manifest.json');
    let r = await factory(['close-batch', '--batch', 'b-1', '--out', out], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('RAMPART_STATION_PASSPHRASE');
    r = await factory(['close-batch', '--batch', 'b-0']);
    expect(r.code).toBe(5);

    r = await factory(['close-batch', '--batch', 'b-1', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      batch: 'b-1',
      devices: 2,
      manifest: join(station, 'batches', 'b-1.manifest.json'),
      out,
    });
    const manifest = JSON.parse(readFileSync(out, 'utf8'));
    expect(readFileSync(join(station, 'batches', 'b-1.manifest.json'), 'utf8')).toBe(
      readFileSync(out, 'utf8'),
    );
    expect(manifest).toMatchObject({ format: 'rampart-batch-manifest/1', batch: 'b-1', station: 'line-1' });
    expect(manifest.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual(['dw-1', 'dw-3']);
    const stationKey = readFileSync(join(station, 'station.pub.pem'), 'utf8');
    expect(signatureProblem(manifest, stationKey)).toBeNull();
    expect(signatureProblem({ ...manifest, batch: 'b-2' }, stationKey)).toMatch(
      /changed after it was signed/,
    );

    const before = batchFile();
    r = await factory(provisionArgs(deviceDir('dw-4'), 'dw-4'));
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('batch b-1 was closed');
    expect(r.stderr).toContain('takes no more devices');
    expect(existsSync(join(work, 'dw-4'))).toBe(false);
    r = await factory(['close-batch', '--batch', 'b-1', '--out', join(work, 'again.json')]);
    expect(r.code).toBe(6);
    expect(batchFile()).toBe(before);
  });

  it('install-birth: after the import, the request-only device gets the birth certificate the platform issued', async () => {
    const manifest = JSON.parse(readFileSync(join(work, 'b-1.manifest.json'), 'utf8'));
    const imported = await tp.call('POST', '/api/v1/batches', { body: manifest });
    expect(imported.status).toBe(201);
    expect(imported.body.issued.map((i: { deviceId: string }) => i.deviceId)).toEqual(['dw-3']);
    const file = join(work, 'imported.json');
    writeFileSync(file, JSON.stringify(imported.body));

    // Not the device the certificate is for.
    let r = await factory([
      'install-birth',
      file,
      '--device-dir',
      join(work, 'dw-1'),
      '--agent-config',
      join(work, 'dw-1.agent.json'),
    ]);
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('got its birth certificate from the station');
    const dir = join(work, 'dw-3');
    r = await factory(
      ['install-birth', file, '--device-dir', dir, '--agent-config', `${dir}.agent.json`, '--json'],
      {},
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ deviceId: 'dw-3', batch: 'b-1', unchanged: false });
    const birth = readBirthIdentity(dir)!;
    expect(birth.device).toMatchObject({ deviceId: 'dw-3', batch: 'b-1', station: 'line-1' });
    expect(birth.birthCertificate.info.subject).toContain('dw-3');
    expect(birth.birthCertificate.x509.fingerprint256).toBe(
      new X509Certificate(imported.body.issued[0].certificate).fingerprint256,
    );
    r = await factory(
      ['install-birth', file, '--device-dir', dir, '--agent-config', `${dir}.agent.json`],
      {},
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('installed already');
  });

  it('status: the station, its CA and its batches, for people and as JSON', async () => {
    let r = await factory(['status', '--json'], {});
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      station: { name: 'line-1', ca: { subject: expect.stringContaining('line-1') } },
      batches: [{ batch: 'b-1', state: 'closed', devices: 2, awaitingBirthCertificate: 1 }],
    });
    r = await factory(['status'], {});
    expect(r.stdout).toMatch(/BATCH\s+STATE\s+DEVICES/);
    expect(r.stdout).toMatch(/b-1\s+closed\s+2\s+1/);
    // Not a station.
    r = await runCli(['factory', 'status', '--station-dir', work]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('rampart factory init');
  });
});
