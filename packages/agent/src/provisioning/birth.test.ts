import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { provisionAtFactory } from '../test-support/factory.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { BIRTH_FILES, FACTORY_DEVICE_FORMAT, readBirthIdentity, writeBirthIdentity } from './birth.js';

let pki: TestPki;
let root: TestCa;
let station: TestCa;
let otherStation: TestCa;

beforeAll(() => {
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  station = pki.issuingCa('Station 1 CA', root);
  otherStation = pki.issuingCa('Station 2 CA', root);
});

const dataDir = () => mkdtempSync(join(tmpdir(), 'agent-birth-'));

describe('birth identity files', () => {
  it('lays the files out under identity/birth/', () => {
    expect(BIRTH_FILES('/var/lib/rampart-agent')).toEqual({
      dir: '/var/lib/rampart-agent/identity/birth',
      certificate: '/var/lib/rampart-agent/identity/birth/certificate.pem',
      device: '/var/lib/rampart-agent/identity/birth/device.json',
      rootCa: '/var/lib/rampart-agent/identity/birth/root-ca.pem',
    });
  });

  it('reads back what the station wrote, with the modes the layout promises', async () => {
    const dir = dataDir();
    expect(readBirthIdentity(dir)).toBeNull();
    const { birth: written, anchor } = await provisionAtFactory({
      pki,
      root,
      station,
      dataDir: dir,
      deviceId: 'dw-0100',
      device: { hardwareRevision: null },
    });
    const read = readBirthIdentity(dir)!;
    expect(read.device).toEqual({
      format: FACTORY_DEVICE_FORMAT,
      deviceId: 'dw-0100',
      serial: 'SN-dw-0100',
      model: 'DW100',
      hardwareRevision: null,
      trustAnchor: 'software',
      batch: 'batch-2026-11-a',
      station: 'station-1',
      provisionedAt: written.device.provisionedAt,
    });
    expect(read.certificates).toEqual(written.certificates);
    expect(read.certificates).toHaveLength(2);
    expect(read.certificates[1]).toBe(station.pem);
    expect(read.rootPem).toBe(root.pem);
    expect(read.birthCertificate.info.issuer).toBe('CN=Station 1 CA');
    const key = (await anchor.publicKey())!.export({ type: 'spki', format: 'der' });
    expect(read.birthCertificate.x509.publicKey.export({ type: 'spki', format: 'der' })).toEqual(key);

    const files = BIRTH_FILES(dir);
    expect(statSync(files.certificate).mode & 0o777).toBe(0o644);
    expect(statSync(files.rootCa).mode & 0o777).toBe(0o644);
    expect(statSync(files.device).mode & 0o777).toBe(0o600);
    expect(readFileSync(files.certificate, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
  });

  it('says which file is missing from an incomplete birth identity', async () => {
    const dir = dataDir();
    await provisionAtFactory({ pki, root, station, dataDir: dir, deviceId: 'dw-0101' });
    rmSync(BIRTH_FILES(dir).rootCa);
    expect(() => readBirthIdentity(dir)).toThrow(
      expect.objectContaining({
        code: 'BIRTH_IDENTITY',
        message: expect.stringMatching(/incomplete: .*root-ca\.pem is missing/),
      }),
    );
  });

  it('names the file and the problem of a malformed birth identity', async () => {
    const dir = dataDir();
    await provisionAtFactory({ pki, root, station, dataDir: dir, deviceId: 'dw-0102' });
    const files = BIRTH_FILES(dir);
    const good = {
      device: readFileSync(files.device, 'utf8'),
      certificate: readFileSync(files.certificate, 'utf8'),
      root: readFileSync(files.rootCa, 'utf8'),
    };
    const record = JSON.parse(good.device) as Record<string, unknown>;
    const expectRefusal = (file: string, content: string, message: RegExp) => {
      writeFileSync(file, content);
      try {
        expect(() => readBirthIdentity(dir)).toThrow(
          expect.objectContaining({ code: 'BIRTH_IDENTITY', message: expect.stringMatching(message) }),
        );
      } finally {
        writeFileSync(
          file,
          file === files.device ? good.device : file === files.rootCa ? good.root : good.certificate,
        );
      }
    };

    expectRefusal(files.device, '{"format": ', /device\.json is not JSON/);
    expectRefusal(
      files.device,
      JSON.stringify({ ...record, format: 'rampart-factory-device/2' }),
      /device\.json: field format must be equal to constant/,
    );
    expectRefusal(
      files.device,
      JSON.stringify({ ...record, trustAnchor: 'smartcard' }),
      /device\.json: field trustAnchor must be one of "tpm", "pkcs11", "software"/,
    );
    expectRefusal(
      files.device,
      JSON.stringify({ ...record, provisionedAt: 'yesterday' }),
      /field provisionedAt must be a valid date-time/,
    );
    expectRefusal(files.device, JSON.stringify({ ...record, extra: 1 }), /field extra is not a known field/);
    const { serial: _serial, ...withoutSerial } = record;
    expectRefusal(files.device, JSON.stringify(withoutSerial), /field serial is required/);

    const [birthPem] = good.certificate.split(/(?<=-----END CERTIFICATE-----\n)/);
    expectRefusal(files.certificate, 'not a certificate', /certificate\.pem must hold .*no PEM certificate/);
    expectRefusal(
      files.certificate,
      birthPem!,
      /certificate\.pem must hold the birth certificate followed by .*one certificate/,
    );
    expectRefusal(
      files.certificate,
      station.pem + birthPem!,
      /first certificate \(CN=Station 1 CA\) is a CA certificate/,
    );
    expectRefusal(
      files.certificate,
      birthPem! + otherStation.pem,
      /is not signed by CN=Station 2 CA, the certificate after it/,
    );
    expectRefusal(
      files.rootCa,
      station.pem,
      /root-ca\.pem holds CN=Station 1 CA, which is not a self-signed root CA/,
    );
    expectRefusal(files.rootCa, '', /root-ca\.pem holds no PEM certificate/);

    // Put back as it was, it reads again.
    expect(readBirthIdentity(dir)!.device.deviceId).toBe('dw-0102');
  });

  it('refuses to write what the agent would refuse to read, and writes nothing then', async () => {
    const dir = dataDir();
    const { birth } = await provisionAtFactory({ pki, root, station, dataDir: dir, deviceId: 'dw-0103' });
    const other = dataDir();
    const input = {
      device: { ...birth.device, deviceId: 'dw-0104' },
      birthCertificate: birth.certificates[0]!,
      stationCaCertificate: otherStation.pem,
      rootCa: root.pem,
    };
    expect(() => writeBirthIdentity(other, input)).toThrow(/is not signed by CN=Station 2 CA/);
    expect(() =>
      writeBirthIdentity(other, {
        ...input,
        stationCaCertificate: station.pem,
        device: { ...input.device, deviceId: 'no spaces' },
      }),
    ).toThrow(/field deviceId must match the pattern/);
    expect(readBirthIdentity(other)).toBeNull();
  });
});
