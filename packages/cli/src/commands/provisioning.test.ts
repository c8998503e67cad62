import { execFileSync } from 'node:child_process';
import { X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDocument, signatureProblem } from '@rampart/shared/provisioning';
import { stationSigner } from '../../../server/src/provisioning/factory.js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import {
  DeviceSide,
  factoryDevice,
  newP256,
  signedManifest,
  type FactoryDevice,
} from '../test-support/provisioning.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

/**
 * The provisioning commands against a running platform: a station registered from the command line,
 * a manifest it signed imported, reference values and attestation settings, a device that attests
 * and enrolls as rampart-agent would; then its trace, attestation results and transcripts, the
 * transcripts checked offline (and every edit caught), decommissioning and re-provisioning.
 */
const MODEL = 'gw200';
const OS = '05'.padStart(64, '0');
const APP = 'a1'.padStart(64, '0');
const GOOD = [
  { component: 'os' as const, digest: OS },
  { component: 'application' as const, digest: APP },
];

describe(
  'rampart station / batch / attestation / transcript and the device provisioning verbs',
  { timeout: 60_000 },
  () => {
    let t: TestPlatform;
    let dir: string;
    let env: Record<string, string>;
    let device: DeviceSide;
    const cli = (...args: string[]) => runCli(args, { env });
    const station = { name: 'line-1', key: undefined as unknown as KeyObject, caPem: '' };
    const devices: Record<string, FactoryDevice> = {};
    const file = (name: string, text: string) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    };

    beforeAll(async () => {
      t = await startTestPlatform('sqlite');
      env = cliEnvFor(t.dataDir);
      dir = mkdtempSync(join(tmpdir(), 'rampart-provisioning-cli-'));
      device = new DeviceSide(t);
      expect((await t.call('POST', '/api/v1/device-models', { body: { id: MODEL } })).status).toBe(201);
    });
    afterAll(async () => {
      await device?.close();
      await t?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('station register writes the registration the API returned to --out, and lists the station', async () => {
      const k = newP256();
      station.key = k.privateKey;
      const pub = file('station.pub.pem', k.publicPem);
      const out = join(dir, 'line-1.station.json');
      const r = await cli(
        'station',
        'register',
        'line-1',
        '--public-key',
        pub,
        '--description',
        'Plant 2',
        '--out',
        out,
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('registered station line-1');
      expect(r.stdout).toContain(`wrote the station CA certificate, its chain and the root CA to ${out}`);

      const bundle = JSON.parse(readFileSync(out, 'utf8'));
      expect(Object.keys(bundle).sort()).toEqual(['certificate', 'chain', 'rootCertificate', 'station']);
      expect(bundle.station).toMatchObject({ name: 'line-1', status: 'active', description: 'Plant 2' });
      // The certificate printed is the one in the bundle: a CA for the station's own key, under the chain.
      expect(r.stdout).toContain(bundle.certificate.trim());
      const ca = new X509Certificate(bundle.certificate);
      expect(ca.ca).toBe(true);
      expect(ca.publicKey.export({ type: 'spki', format: 'pem' })).toBe(k.publicPem);
      expect(ca.verify(new X509Certificate(bundle.chain).publicKey)).toBe(true);
      expect(bundle.rootCertificate.trim()).toBe(readFileSync(join(t.dataDir, 'ca.pem'), 'utf8').trim());
      station.caPem = bundle.certificate;

      const list = await cli('station', 'list');
      expect(list.code, list.stderr).toBe(0);
      expect(list.stdout).toMatch(/NAME\s+STATUS\s+KEY ID/);
      expect(list.stdout).toMatch(/line-1\s+active\s+[0-9a-f]{16}…/);
      const json = JSON.parse((await cli('station', 'list', '--json')).stdout);
      expect(json).toEqual([expect.objectContaining({ name: 'line-1', keyId: bundle.station.keyId })]);
    });

    it('station register refuses a private key, an existing --out file, a taken name, and a token without the permission', async () => {
      const k = newP256();
      const priv = file('other.key', k.privatePem);
      const leaked = await cli('station', 'register', 'line-2', '--public-key', priv);
      expect(leaked.code).toBe(2);
      expect(leaked.stderr).toContain('holds a private key');
      expect(leaked.stderr).toContain('openssl pkey');

      const pub = file('other.pub.pem', k.publicPem);
      const exists = await cli(
        'station',
        'register',
        'line-2',
        '--public-key',
        pub,
        '--out',
        join(dir, 'line-1.station.json'),
      );
      expect(exists.code).toBe(2);
      expect(exists.stderr).toContain('exists already');

      // Refused by the platform: the --out file is not left behind.
      const takenOut = join(dir, 'taken.station.json');
      const taken = await cli('station', 'register', 'line-1', '--public-key', pub, '--out', takenOut);
      expect(taken.code).toBe(6);
      expect(existsSync(takenOut)).toBe(false);

      const viewer = await runCli(['station', 'register', 'line-2', '--public-key', pub], {
        env: { ...env, RAMPART_TOKEN: await t.tokenFor('viewer') },
      });
      expect(viewer.code).toBe(4);
      // None of them registered anything.
      const names = JSON.parse((await cli('station', 'list', '--json')).stdout).map(
        (s: { name: string }) => s.name,
      );
      expect(names).toEqual(['line-1']);
    });

    it('batch import takes a signed manifest, and refuses an edited one with exit 2 and the reason', async () => {
      for (const id of ['gw-1', 'gw-2', 'gw-3']) devices[id] = await factoryDevice(station, id);
      const manifest = await signedManifest(station, 'b-001', MODEL, Object.values(devices));
      const good = file('b-001.json', JSON.stringify(manifest));
      const r = await cli('batch', 'import', good);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('imported batch b-001 from station line-1: 3 devices');
      expect(r.stdout).toMatch(/manifest sha256\s+[0-9a-f]{64}/);

      const extra = await factoryDevice(station, 'gw-9');
      const m2 = await signedManifest(station, 'b-002', MODEL, [extra]);
      const edited = file(
        'b-002.json',
        JSON.stringify({ ...m2, devices: m2.devices.map((d) => ({ ...d, model: 'other' })) }),
      );
      const refused = await cli('batch', 'import', edited);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('station signature is not valid');
      const rogue = newP256().privateKey;
      const forged = file(
        'b-003.json',
        JSON.stringify(await signDocument({ ...m2, batch: 'b-003' }, stationSigner(rogue))),
      );
      expect((await cli('batch', 'import', forged)).code).toBe(2);
      const notJson = await cli('batch', 'import', file('junk.json', '{"format": '));
      expect(notJson.code).toBe(2);
      expect(notJson.stderr).toContain('not valid JSON');

      const list = await cli('batch', 'list');
      expect(list.stdout).toMatch(/b-001\s+line-1\s+3/);
      const batches = JSON.parse((await cli('batch', 'list', '--json')).stdout);
      expect(batches.map((b: { id: string }) => b.id)).toEqual(['b-001']);
    });

    it('attestation reference add / list / remove, and per-model settings', async () => {
      const ids: number[] = [];
      for (const [component, digest] of [
        ['os', OS],
        ['application', APP.toUpperCase()],
      ]) {
        const r = await cli(
          'attestation',
          'reference',
          'add',
          '--model',
          MODEL,
          '--component',
          component!,
          '--sha256',
          digest!,
          '--json',
        );
        expect(r.code, r.stderr).toBe(0);
        const v = JSON.parse(r.stdout);
        expect(v).toMatchObject({ model: MODEL, component, digest: digest!.toLowerCase() });
        ids.push(v.id);
      }
      const badHash = await cli(
        'attestation',
        'reference',
        'add',
        '--model',
        MODEL,
        '--component',
        'os',
        '--sha256',
        'abc',
      );
      expect(badHash.code).toBe(2);
      const spare = JSON.parse(
        (
          await cli(
            'attestation',
            'reference',
            'add',
            '--model',
            MODEL,
            '--component',
            'configuration',
            '--sha256',
            OS,
            '--json',
          )
        ).stdout,
      );
      const list = await cli('attestation', 'reference', 'list', '--model', MODEL);
      expect(list.stdout).toMatch(new RegExp(`${ids[0]}\\s+${MODEL}\\s+os\\s+${OS}`));
      expect((await cli('attestation', 'reference', 'remove', String(spare.id))).code).toBe(0);
      expect((await cli('attestation', 'reference', 'remove', String(spare.id))).code).toBe(5);
      const left = JSON.parse((await cli('attestation', 'reference', 'list', '--json')).stdout);
      expect(left.map((v: { id: number }) => v.id).sort()).toEqual([...ids].sort());

      const shown = await cli('attestation', 'settings', MODEL);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toMatch(/attestation\s+required \(default/);
      const set = await cli(
        'attestation',
        'settings',
        MODEL,
        '--require',
        '--no-accept-warning',
        '--admit-software',
        '--certificate-hours',
        '12',
        '--json',
      );
      expect(set.code, set.stderr).toBe(0);
      expect(JSON.parse(set.stdout)).toEqual({
        model: MODEL,
        attestation: 'required',
        acceptWarning: false,
        admitSoftwareAnchor: true,
        certificateHours: 12,
        configured: true,
      });
      expect((await cli('attestation', 'settings', MODEL)).stdout).toMatch(
        /software anchor\s+admitted \(weaker/,
      );
      expect((await cli('attestation', 'settings', MODEL, '--require', '--off')).code).toBe(2);
      expect((await cli('attestation', 'settings', 'no-such-model')).code).toBe(5);
    });

    it('device trace, attestation and transcript after a zero-touch enrollment', async () => {
      const d = devices['gw-1']!;
      const attested = await device.attest(d, station.caPem, GOOD);
      expect(attested.body.result?.status, JSON.stringify(attested.body)).toBe('affirming');
      expect((await device.enroll(d, attested.body.token)).status).toBe(200);
      // gw-2 boots software nobody registered.
      const bad = await device.attest(devices['gw-2']!, station.caPem, [
        { component: 'application', digest: 'e1'.padStart(64, '0') },
      ]);
      expect(bad.body.result.status).toBe('contraindicated');

      const trace = await cli('device', 'trace', 'gw-1');
      expect(trace.code, trace.stderr).toBe(0);
      expect(trace.stdout).toMatch(/^gw-1 ← batch b-001 ← station line-1 ← \d{4}-/);
      expect(trace.stdout).toMatch(/registry\s+active/);
      expect(trace.stdout).toMatch(/issued\s+factory@1\s+[0-9a-f]+\s+affirming/);
      const traceJson = JSON.parse((await cli('device', 'trace', 'gw-1', '--json')).stdout);
      expect(traceJson.manufacture).toMatchObject({
        serial: 'SN-gw-1',
        batch: { id: 'b-001' },
        station: { name: 'line-1' },
      });
      const unenrolled = await cli('device', 'trace', 'gw-3');
      expect(unenrolled.stdout).toContain('not registered yet');
      expect((await cli('device', 'trace', 'nobody')).code).toBe(5);

      const att = await runCli(['device', 'attestation', 'gw-1'], { env: { ...env, FORCE_COLOR: '1' } });
      expect(att.code, att.stderr).toBe(0);
      expect(att.stdout).toContain('\x1b[32maffirming\x1b[39m');
      expect(att.stdout).toContain('software \x1b[33m(weaker: key not held in hardware)');
      const contra = await runCli(['device', 'attestation', 'gw-2'], { env: { ...env, FORCE_COLOR: '1' } });
      expect(contra.stdout).toContain('\x1b[31mcontraindicated\x1b[39m');
      expect(contra.stdout).toMatch(/not among the reference values/);
      expect(contra.stdout).toMatch(/1\s+application\s+\S*unknown/);
      const attJson = JSON.parse((await cli('device', 'attestation', 'gw-1', '--json')).stdout);
      expect(attJson[0]).toMatchObject({ status: 'affirming', anchorStrength: 'software', used: true });
      expect((await cli('device', 'attestation', 'gw-3')).stdout).toContain('has not been attested yet');
      expect((await cli('device', 'attestation', 'nobody')).code).toBe(5);

      const out = join(dir, 'gw-1.transcript.json');
      const exported = await cli('device', 'transcript', 'gw-1', '--out', out);
      expect(exported.code, exported.stderr).toBe(0);
      expect(exported.stdout).toMatch(/wrote transcript tr-\S+ \(issued at .*\) of device gw-1/);
      const doc = JSON.parse(readFileSync(out, 'utf8'));
      expect(doc).toMatchObject({
        deviceId: 'gw-1',
        decision: 'issued',
        policy: { name: 'factory', version: 1 },
      });
      const platformKey = readFileSync(join(t.dataDir, 'transcript-signing.pub.pem'), 'utf8');
      expect(signatureProblem(doc, platformKey)).toBeNull();
      const stdoutExport = await cli('device', 'transcript', 'gw-1');
      expect(JSON.parse(stdoutExport.stdout)).toEqual(doc);
      expect((await cli('device', 'transcript', 'gw-1', '--out', out)).code).toBe(2);
      const none = await cli('device', 'transcript', 'gw-3');
      expect(none.code).toBe(5);
      expect(none.stderr).toContain('has no provisioning transcripts');
      expect((await cli('device', 'transcript', 'nobody')).code).toBe(5);
    });

    it('transcript key and transcript verify: valid as exported, exit 1 naming the failure on any edit', async () => {
      const keyFile = join(dir, 'transcript-signing.pub.pem');
      const key = await cli('transcript', 'key', '--out', keyFile);
      expect(key.code, key.stderr).toBe(0);
      expect(readFileSync(keyFile, 'utf8')).toBe(
        readFileSync(join(t.dataDir, 'transcript-signing.pub.pem'), 'utf8'),
      );
      expect(JSON.parse((await cli('transcript', 'key', '--json')).stdout).keyId).toMatch(/^[0-9a-f]{64}$/);

      const path = join(dir, 'gw-1.transcript.json');
      const doc = JSON.parse(readFileSync(path, 'utf8'));
      // Offline: no platform at this URL, and no data directory.
      const offline = (...args: string[]) => runCli(args, { env: { RAMPART_URL: 'https://127.0.0.1:9' } });
      const ok = await offline('transcript', 'verify', path, '--key', keyFile);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(
        new RegExp(`^valid\\s+${doc.id}: device gw-1, issued at ${doc.time} \\(policy factory@1\\)`),
      );
      // The key from the data directory by default.
      expect((await cli('transcript', 'verify', path)).code).toBe(0);

      const edits: [string, unknown, RegExp][] = [
        ['decision', { ...doc, decision: 'refused' }, /changed after it was signed/],
        [
          'attestation status',
          { ...doc, attestation: { ...doc.attestation, status: 'warning' } },
          /changed after it was signed/,
        ],
        ['a removed member', (({ trace: _t, ...rest }) => rest)(doc), /changed after it was signed/],
        ['an added member', { ...doc, note: 'hello' }, /changed after it was signed/],
        [
          'the signature',
          { ...doc, signature: { ...doc.signature, value: Buffer.alloc(70, 1).toString('base64') } },
          /changed after it was signed/,
        ],
        ['no signature', (({ signature: _s, ...rest }) => rest)(doc), /has no signature/],
        [
          'another signer',
          await signDocument({ ...doc, signature: undefined }, stationSigner(newP256().privateKey)),
          /signed by key [0-9a-f]{16}…, not by the expected key/,
        ],
      ];
      // One edited transcript alone: exit 1, named as invalid with the reason.
      const single = await offline(
        'transcript',
        'verify',
        file('edited.json', JSON.stringify(edits[0]![1])),
        '--key',
        keyFile,
      );
      expect(single.code).toBe(1);
      expect(single.stdout).toMatch(new RegExp(`^INVALID\\s+${doc.id}: the signature does not match`));
      expect(single.stdout).toContain('1 of 1 transcript failed verification');
      // Every kind of edit, with the original among them: each edit is caught, the original passes.
      const batch = await offline(
        'transcript',
        'verify',
        file('edited.jsonl', [doc, ...edits.map((e) => e[1])].map((x) => JSON.stringify(x)).join('\n')),
        '--key',
        keyFile,
        '--json',
      );
      expect(batch.code).toBe(1);
      const checks = JSON.parse(batch.stdout).transcripts as { valid: boolean; problem: string | null }[];
      expect(checks[0]).toMatchObject({ valid: true, problem: null });
      edits.forEach(([what, , reason], i) => {
        expect(checks[i + 1]!.valid, what).toBe(false);
        expect(checks[i + 1]!.problem, what).toMatch(reason);
      });

      // Several at once: a JSON array and JSON lines; one bad one fails the whole file and is named.
      const lines = [doc, { ...doc, deviceId: 'gw-2' }, doc].map((x) => JSON.stringify(x)).join('\n') + '\n';
      const jsonl = await offline(
        'transcript',
        'verify',
        file('all.jsonl', lines),
        '--key',
        keyFile,
        '--json',
      );
      expect(jsonl.code).toBe(1);
      const v = JSON.parse(jsonl.stdout);
      expect(v.valid).toBe(false);
      expect(v.transcripts.map((x: { valid: boolean }) => x.valid)).toEqual([true, false, true]);
      expect(v.transcripts[1]).toMatchObject({
        index: 2,
        id: doc.id,
        problem: expect.stringMatching(/changed/),
      });
      const array = await offline(
        'transcript',
        'verify',
        file('all.json', JSON.stringify([doc, doc])),
        '--key',
        keyFile,
      );
      expect(array.code).toBe(0);
      expect(array.stdout).toContain('all 2 transcripts are valid');

      // Straight from the export, on standard input.
      const all = await cli('device', 'transcript', 'gw-1', '--all');
      expect(Array.isArray(JSON.parse(all.stdout))).toBe(true);
      const piped = await runCli(['transcript', 'verify', '-', '--key', keyFile], { input: all.stdout });
      expect(piped.code, piped.stderr).toBe(0);

      const noKey = await offline('transcript', 'verify', path, '--key', join(dir, 'missing.pem'));
      expect(noKey.code).toBe(2);
      const notJson = await offline('transcript', 'verify', file('junk.txt', 'not json\n'), '--key', keyFile);
      expect(notJson.code).toBe(2);
    });

    it('device decommission revokes the certificates; reprovision lets the device enroll again', async () => {
      const d = devices['gw-1']!;
      const notYet = await cli('device', 'reprovision', 'gw-1');
      expect(notYet.code).toBe(6);
      expect(notYet.stderr).toContain('is active, not decommissioned');

      const serials = (await t.call('GET', '/api/v1/certificates?device=gw-1&state=valid')).body.items.map(
        (c: { serial: string }) => c.serial,
      );
      expect(serials).toHaveLength(1);
      const off = await cli('device', 'decommission', 'gw-1');
      expect(off.code, off.stderr).toBe(0);
      expect(off.stdout).toContain(
        'decommissioned device gw-1: revoked 1 certificate (cessationOfOperation)',
      );
      expect(off.stdout).toContain(serials[0]);
      const cert = (await t.call('GET', `/api/v1/certificates/${serials[0]}`)).body;
      expect(cert).toMatchObject({ state: 'revoked', revocationReason: 'cessationOfOperation' });
      const again = JSON.parse((await cli('device', 'decommission', 'gw-1', '--json')).stdout);
      expect(again).toMatchObject({ alreadyDecommissioned: true, revokedCertificates: [] });

      const refused = await device.enroll(d, (await device.attest(d, station.caPem, GOOD)).body.token);
      expect(refused.status).toBe(403);
      expect(refused.body).toContain('rampart device reprovision gw-1');

      const back = await cli('device', 'reprovision', 'gw-1', '--json');
      expect(back.code, back.stderr).toBe(0);
      expect(JSON.parse(back.stdout)).toMatchObject({ id: 'gw-1', status: 'pending' });
      expect((await device.enroll(d, (await device.attest(d, station.caPem, GOOD)).body.token)).status).toBe(
        200,
      );
      expect((await cli('device', 'decommission', 'nobody')).code).toBe(5);
    });

    it('manufacturer add / list / remove', async () => {
      const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
      openssl(
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        'acme.key',
        '-out',
        'acme-ca.pem',
        '-subj',
        '/O=Acme/CN=Acme IDevID CA',
        '-days',
        '30',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
      );
      openssl('x509', '-in', 'acme-ca.pem', '-outform', 'DER', '-out', 'acme-ca.der');
      openssl(
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        'leaf.key',
        '-out',
        'leaf.pem',
        '-subj',
        '/CN=leaf',
        '-days',
        '30',
        '-addext',
        'basicConstraints=critical,CA:FALSE',
      );

      const added = await cli(
        'manufacturer',
        'add',
        'acme',
        '--certificate',
        join(dir, 'acme-ca.der'),
        '--json',
      );
      expect(added.code, added.stderr).toBe(0);
      const fingerprint = new X509Certificate(readFileSync(join(dir, 'acme-ca.der'))).fingerprint256
        .replace(/:/g, '')
        .toLowerCase();
      expect(JSON.parse(added.stdout)).toMatchObject({ name: 'acme', fingerprint });
      expect(
        (await cli('manufacturer', 'add', 'acme-2', '--certificate', join(dir, 'acme-ca.pem'))).code,
      ).toBe(6);
      const leaf = await cli('manufacturer', 'add', 'leafy', '--certificate', join(dir, 'leaf.pem'));
      expect(leaf.code).toBe(2);
      expect(leaf.stderr).toContain('not a CA certificate');
      expect(
        (await cli('manufacturer', 'add', 'x', '--certificate', join(dir, 'station.pub.pem'))).code,
      ).toBe(2);

      const list = await cli('manufacturer', 'list');
      expect(list.stdout).toMatch(/acme\s+.*Acme IDevID CA/);
      expect((await cli('manufacturer', 'remove', 'acme')).code).toBe(0);
      expect((await cli('manufacturer', 'remove', 'acme')).code).toBe(5);
      expect(JSON.parse((await cli('manufacturer', 'list', '--json')).stdout)).toEqual([]);
    });

    it('station revoke: the station CA certificate is revoked and its manifests refused', async () => {
      const r = await cli('station', 'revoke', 'line-1');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/station line-1 is revoked .*CA certificate [0-9a-f]+ revoked/);
      const caSerial = JSON.parse((await cli('station', 'list', '--json')).stdout)[0].caSerial;
      expect((await t.call('GET', `/api/v1/certificates/${caSerial}`)).body.state).toBe('revoked');
      const late = await signedManifest(station, 'b-late', MODEL, [await factoryDevice(station, 'gw-late')]);
      const refused = await cli('batch', 'import', file('late.json', JSON.stringify(late)));
      expect(refused.code).toBe(2);
      expect((await cli('station', 'revoke', 'nope')).code).toBe(5);
    });
  },
);
