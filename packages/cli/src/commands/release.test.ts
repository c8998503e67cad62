import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Updater } from 'tuf-js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

// Each step spawns the CLI; give them room on a busy machine.
describe('rampart release: offline M-of-N approval and root rotation', { timeout: 120_000 }, () => {
  let t: TestPlatform;
  let env: Record<string, string>;
  let work: string;
  let updatesUrl: string;
  let clientDir: string;
  const fw = randomBytes(20_000);

  /** The signing machine: no data directory, no URL, no token. */
  const offline = (args: string[]) => runCli(args, { cwd: work, env: {} });
  const cli = (args: string[]) => runCli(args, { cwd: work, env });
  const json = (stdout: string) => JSON.parse(stdout);

  /** A device's TUF client that has trusted root v1 and keeps its state between refreshes. */
  const device = () =>
    new Updater({
      metadataDir: clientDir,
      metadataBaseUrl: `${updatesUrl}/metadata`,
      targetDir: clientDir,
      targetBaseUrl: `${updatesUrl}/targets`,
      config: { fetchRetries: 0 },
    });

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', { 'updates.development': true });
    env = cliEnvFor(t.dataDir);
    work = mkdtempSync(join(tmpdir(), 'rampart-release-'));
    clientDir = mkdtempSync(join(tmpdir(), 'rampart-release-device-'));
    updatesUrl = t.platform.listeners.find((l) => l.name === 'updates')!.url;
    writeFileSync(
      join(clientDir, 'root.json'),
      await (await fetch(`${updatesUrl}/metadata/1.root.json`)).text(),
    );
    writeFileSync(join(work, 'fw.bin'), fw);
    for (const name of ['alice', 'bob', 'carol', 'mallory', 'r1', 'r2']) {
      const r = await offline([
        'release',
        'keygen',
        '--out',
        `${name}.pem`,
        '--public-out',
        `${name}.pub.pem`,
        '--json',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(json(r.stdout).keyid).toMatch(/^[0-9a-f]{64}$/);
    }
  });
  afterAll(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
    rmSync(clientDir, { recursive: true, force: true });
  });

  it('shows the development repository as insecure', async () => {
    const r = await cli(['release', 'status']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/WARNING: DEVELOPMENT.*INSECURE/);
    expect(r.stdout).toContain('timestamp');
  });

  it('publishes a release at once on the development repository', async () => {
    const r = await cli(['release', 'create', 'fw.bin', '--version', '1.0.0', '--model', 'DW100', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ path: 'DW100/fw-1.0.0.bin', state: 'published', role: 'targets' });
    const list = await cli(['release', 'list', '--json']);
    expect(json(list.stdout).items).toHaveLength(1);
    const usage = await cli(['release', 'create', 'fw.bin', '--version', '1.0.1']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--model/);
  });

  it('waits while deltas from the earlier release are generated and shows them; --no-wait returns at once', async () => {
    const next = Buffer.concat([fw.subarray(0, 10_000), Buffer.from('changed'), fw.subarray(10_007)]);
    writeFileSync(join(work, 'fw-next.bin'), next);
    const create = (version: string, ...more: string[]) =>
      cli([
        'release',
        'create',
        'fw-next.bin',
        '--name',
        'fw',
        '--version',
        version,
        '--model',
        'DW100',
        ...more,
      ]);
    const r = await create('1.1.0', '--json');
    expect(r.code, r.stderr).toBe(0);
    const view = json(r.stdout);
    expect(view).toMatchObject({ path: 'DW100/fw-1.1.0.bin', state: 'published' });
    expect(view.deltas).toEqual([expect.objectContaining({ fromVersion: '1.0.0' })]);
    expect(view.custom.deltas[0].from.version).toBe('1.0.0');

    const shown = await cli(['release', 'status', 'DW100/fw-1.1.0.bin']);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/Deltas\s+from 1\.0\.0: \d+ B \(\d+\.\d%\)/);
    const list = await cli(['release', 'list', '--model', 'DW100']);
    expect(list.stdout).toMatch(/DELTAS FROM/);
    expect((await cli(['release', 'status', 'DW100/no-such.bin'])).code).toBe(5);

    const quick = await create('1.2.0', '--no-wait', '--json');
    expect(quick.code, quick.stderr).toBe(0);
    expect(json(quick.stdout).state).toBe('preparing');
    await t.platform.updates.preparationsSettled();
    const after = await cli(['release', 'status', 'DW100/fw-1.2.0.bin', '--json']);
    expect(json(after.stdout).state).toBe('published');
  });

  it('encrypts a release with --encrypt: the repository serves ciphertext and signs the plaintext hash', async () => {
    const r = await cli([
      'release',
      'create',
      'fw.bin',
      '--version',
      '1.0.0-enc',
      '--model',
      'DW100',
      '--encrypt',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Encrypted\s+yes \(AES-256-GCM; plaintext 20000 bytes/);
    const shown = json((await cli(['release', 'list', '--model', 'DW100', '--json'])).stdout).items.find(
      (x: { version: string }) => x.version === '1.0.0-enc',
    );
    const plainSha = createHash('sha256').update(fw).digest('hex');
    expect(shown.custom.encryption).toMatchObject({
      algorithm: 'aes-256-gcm',
      length: fw.length,
      sha256: plainSha,
    });
    expect(shown.sha256).not.toBe(plainSha);
    const served = Buffer.from(await (await fetch(shown.url)).arrayBuffer());
    expect(served.length).toBe(fw.length);
    expect(served.equals(fw)).toBe(false);
  });

  let requestId: number;
  it('a 2-of-3 delegated role: a release waits for two offline signatures', async () => {
    const role = await cli([
      'release',
      'role',
      'set',
      'acme',
      '--key',
      'alice.pub.pem',
      '--key',
      'bob.pub.pem',
      '--key',
      'carol.pub.pem',
      '--threshold',
      '2',
      '--paths',
      'acme/*',
      '--json',
    ]);
    expect(role.code, role.stderr).toBe(0);
    expect(json(role.stdout)).toMatchObject({ role: 'targets', published: true });

    const r = await cli(['release', 'create', 'fw.bin', '--version', '2.0.0', '--model', 'acme', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const release = json(r.stdout);
    expect(release).toMatchObject({ path: 'acme/fw-2.0.0.bin', role: 'acme', state: 'pending', url: null });
    requestId = release.signingRequest;
    expect(requestId).toBeGreaterThan(0);

    // Not visible to devices yet.
    const updater = device();
    await updater.refresh();
    await expect(updater.getTargetInfo('acme/fw-2.0.0.bin')).rejects.toThrow();

    // Another change to the role must wait for this one.
    const second = await cli(['release', 'create', 'fw.bin', '--version', '2.0.1', '--model', 'acme']);
    expect(second.code).toBe(6);
    expect(second.stderr).toMatch(/waiting for signatures/);

    const req = await cli(['release', 'request', String(requestId), '--out', 'req.json', '--json']);
    expect(req.code, req.stderr).toBe(0);
    expect(json(req.stdout).missing[0]).toMatchObject({ role: 'acme', needed: 2 });
  });

  it('refuses signatures by a key outside the role, tampered, or for another version', async () => {
    const m = await offline([
      'release',
      'sign',
      'req.json',
      '--key',
      'mallory.pem',
      '--out',
      'sig-mallory.json',
    ]);
    expect(m.code, m.stderr).toBe(0);
    const wrongKey = await cli(['release', 'submit', 'sig-mallory.json']);
    expect(wrongKey.code).toBe(2);
    expect(wrongKey.stderr).toMatch(/may not sign acme/);

    const a = await offline(['release', 'sign', 'req.json', '--key', 'alice.pem', '--out', 'sig-alice.json']);
    expect(a.code, a.stderr).toBe(0);
    const sig = JSON.parse(readFileSync(join(work, 'sig-alice.json'), 'utf8'));
    writeFileSync(
      join(work, 'sig-bad.json'),
      JSON.stringify({ ...sig, sig: sig.sig.slice(0, -4) + (sig.sig.endsWith('0000') ? '1111' : '0000') }),
    );
    const bad = await cli(['release', 'submit', 'sig-bad.json', '--request', String(requestId)]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/does not verify/);

    writeFileSync(join(work, 'sig-old.json'), JSON.stringify({ ...sig, version: sig.version + 1 }));
    const conflict = await cli(['release', 'submit', 'sig-old.json', '--request', String(requestId)]);
    expect(conflict.code).toBe(6);

    writeFileSync(join(work, 'sig-role.json'), JSON.stringify({ ...sig, role: 'nope' }));
    const role = await cli(['release', 'submit', 'sig-role.json', '--request', String(requestId)]);
    expect(role.code).toBe(2);

    const status = await cli(['release', 'request', String(requestId), '--json']);
    expect(json(status.stdout).signedBy).toEqual([]);
  });

  it('publishes after the second valid signature; the device then downloads it', async () => {
    const first = await cli(['release', 'submit', 'sig-alice.json', '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(json(first.stdout)).toMatchObject({ state: 'pending', missing: [{ needed: 1 }] });

    const b = await offline(['release', 'sign', 'req.json', '--key', 'bob.pem', '--out', 'sig-bob.json']);
    expect(b.code, b.stderr).toBe(0);
    const second = await cli(['release', 'submit', 'sig-bob.json', '--json']);
    expect(second.code, second.stderr).toBe(0);
    expect(json(second.stdout).state).toBe('published');

    const list = await cli(['release', 'list', '--model', 'acme', '--json']);
    expect(json(list.stdout).items[0].state).toBe('published');

    const updater = device();
    await updater.refresh();
    const info = await updater.getTargetInfo('acme/fw-2.0.0.bin');
    expect(info?.length).toBe(fw.length);
    const path = await updater.downloadTarget(info!, join(clientDir, 'acme-fw.bin'));
    expect(readFileSync(path).equals(fw)).toBe(true);
  });

  it('rotates root to 2-of-2 offline keys; the device follows the rotation', async () => {
    const r = await cli([
      'release',
      'role',
      'set',
      'root',
      '--key',
      'r1.pub.pem',
      '--key',
      'r2.pub.pem',
      '--threshold',
      '2',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const out = json(r.stdout);
    // The old (development) root key signed it; the new threshold still needs both offline keys.
    expect(out.published).toBe(false);
    expect(out.signingRequest.missing).toHaveLength(1);
    const id = String(out.signingRequest.id);
    expect((await cli(['release', 'request', id, '--out', 'root-req.json'])).code).toBe(0);
    for (const k of ['r1', 'r2']) {
      const s = await offline([
        'release',
        'sign',
        'root-req.json',
        '--key',
        `${k}.pem`,
        '--out',
        `root-${k}.json`,
      ]);
      expect(s.code, s.stderr).toBe(0);
    }
    expect(json((await cli(['release', 'submit', 'root-r1.json', '--json'])).stdout).state).toBe('pending');
    expect(json((await cli(['release', 'submit', 'root-r2.json', '--json'])).stdout).state).toBe('published');

    const updater = device();
    await updater.refresh();
    const root = JSON.parse(readFileSync(join(clientDir, 'root.json'), 'utf8'));
    expect(root.signed.roles.root.threshold).toBe(2);
    expect(root.signatures).toHaveLength(3);
    expect(await updater.getTargetInfo('DW100/fw-1.0.0.bin')).toBeDefined();
  });

  it('rotates the director keys with `release director-rotate`; --help shows examples', async () => {
    const help = await cli(['release', 'director-rotate', '--help']);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/--root/);
    expect(help.stdout).toMatch(/--targets/);
    expect(help.stdout).toMatch(/rampart release director-rotate --root --targets --json/);

    const none = await cli(['release', 'director-rotate']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--root, --targets or both/);

    const targets = await cli(['release', 'director-rotate', '--targets', '--json']);
    expect(targets.code, targets.stderr).toBe(0);
    expect(json(targets.stdout)).toMatchObject({ version: 2, rotated: ['targets'] });

    const both = await cli(['release', 'director-rotate', '--root', '--targets']);
    expect(both.code, both.stderr).toBe(0);
    expect(both.stdout).toMatch(/rotated root and targets: director root v3/);
    expect(both.stdout).toMatch(/Signed by/);
    const root = JSON.parse(
      (await t.platform.updates.director.rootDocument(t.platform.updates.storage.db))!,
    ) as { signed: { version: number }; signatures: unknown[] };
    expect(root.signed.version).toBe(3);
    expect(root.signatures).toHaveLength(2);
  });
});

describe(
  'rampart release init: a production repository with offline keys from the start',
  { timeout: 120_000 },
  () => {
    let t: TestPlatform;
    let env: Record<string, string>;
    let work: string;
    const offline = (args: string[]) => runCli(args, { cwd: work, env: {} });
    const cli = (args: string[]) => runCli(args, { cwd: work, env });
    const json = (stdout: string) => JSON.parse(stdout);

    beforeAll(async () => {
      t = await startTestPlatform('sqlite', { 'updates.development': false });
      env = cliEnvFor(t.dataDir);
      work = mkdtempSync(join(tmpdir(), 'rampart-release-init-'));
      for (const name of ['root-1', 'root-2', 'targets-1']) {
        const r = await offline([
          'release',
          'keygen',
          '--out',
          `${name}.pem`,
          '--public-out',
          `${name}.pub.pem`,
        ]);
        expect(r.code, r.stderr).toBe(0);
      }
    });
    afterAll(async () => {
      await t?.close();
      rmSync(work, { recursive: true, force: true });
    });

    it('--help shows the whole ceremony', async () => {
      const help = await cli(['release', 'init', '--help']);
      expect(help.code, help.stderr).toBe(0);
      for (const option of ['--root-key', '--root-threshold', '--targets-key', '--targets-threshold'])
        expect(help.stdout).toContain(option);
      expect(help.stdout).toMatch(/rampart release keygen --out \/media\/token\/root-1\.pem/);
      expect(help.stdout).toMatch(
        /rampart release init --root-key root-1\.pub\.pem --root-key root-2\.pub\.pem/,
      );
      expect(help.stdout).toMatch(/rampart release request 1 --out request-1\.json/);
      expect(help.stdout).toMatch(/rampart release sign request-1\.json --key/);
      expect(help.stdout).toMatch(/rampart release submit sig-root-1\.json/);
    });

    it('refuses incomplete options before calling the server', async () => {
      const noTargets = await cli([
        'release',
        'init',
        '--root-key',
        'root-1.pub.pem',
        '--root-threshold',
        '1',
      ]);
      expect(noTargets.code).toBe(2);
      expect(noTargets.stderr).toMatch(/--targets-key/);
      const tooMany = await cli([
        'release',
        'init',
        '--root-key',
        'root-1.pub.pem',
        '--root-threshold',
        '2',
        '--targets-key',
        'targets-1.pub.pem',
        '--targets-threshold',
        '1',
      ]);
      expect(tooMany.code).toBe(2);
      expect(tooMany.stderr).toMatch(/--root-threshold must be a whole number from 1 to 1/);
      expect((await t.call('GET', '/api/v1/updates/signing-requests')).body.items).toEqual([]);
    });

    it('initialises 2-of-2 root and 1-of-1 targets; the repository serves once the offline keys signed', async () => {
      const initArgs = [
        'release',
        'init',
        '--root-key',
        'root-1.pub.pem',
        '--root-key',
        'root-2.pub.pem',
        '--root-threshold',
        '2',
        '--targets-key',
        'targets-1.pub.pem',
        '--targets-threshold',
        '1',
      ];
      const r = await cli([...initArgs, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const out = json(r.stdout);
      expect(out.root).toMatchObject({ role: 'root', version: 1, published: false });
      expect(out.targets).toMatchObject({ role: 'targets', version: 1, published: false });
      const again = await cli(initArgs);
      expect(again.code).toBe(6);
      expect(again.stderr).toMatch(/initialisation is under way/);

      const [rootId, targetsId] = [String(out.root.signingRequest.id), String(out.targets.signingRequest.id)];
      expect((await cli(['release', 'request', rootId, '--out', 'request-root.json'])).code).toBe(0);
      expect((await cli(['release', 'request', targetsId, '--out', 'request-targets.json'])).code).toBe(0);
      for (const [file, key, sig] of [
        ['request-root.json', 'root-1.pem', 'sig-root-1.json'],
        ['request-root.json', 'root-2.pem', 'sig-root-2.json'],
        ['request-targets.json', 'targets-1.pem', 'sig-targets-1.json'],
      ] as const) {
        const s = await offline(['release', 'sign', file, '--key', key, '--out', sig]);
        expect(s.code, s.stderr).toBe(0);
      }
      expect(json((await cli(['release', 'submit', 'sig-root-1.json', '--json'])).stdout).state).toBe(
        'pending',
      );
      const notYet = await cli(['release', 'status', '--json']);
      expect(json(notYet.stdout).initialized).toBe(false);
      expect(json((await cli(['release', 'submit', 'sig-targets-1.json', '--json'])).stdout).state).toBe(
        'published',
      );
      expect(json((await cli(['release', 'submit', 'sig-root-2.json', '--json'])).stdout).state).toBe(
        'published',
      );

      const status = await cli(['release', 'status']);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).not.toMatch(/DEVELOPMENT/);
      expect(status.stdout).toMatch(/Initialised\s+yes/);
      expect(status.stdout).toMatch(/root\s+1\s+\S+\s+\S*\s*2 of 2/);

      const updatesUrl = t.platform.listeners.find((l) => l.name === 'updates')!.url;
      const dir = join(work, 'device');
      mkdirSync(dir);
      writeFileSync(join(dir, 'root.json'), await (await fetch(`${updatesUrl}/metadata/1.root.json`)).text());
      await new Updater({
        metadataDir: dir,
        metadataBaseUrl: `${updatesUrl}/metadata`,
        targetDir: dir,
        targetBaseUrl: `${updatesUrl}/targets`,
        config: { fetchRetries: 0 },
      }).refresh();
    });
  },
);
