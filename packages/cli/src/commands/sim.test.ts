import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signatureProblem } from '@rampart/shared/provisioning';
import { assignProfiles, parseProfileMix, simulatedReferenceValues } from '@rampart/sim/fleet';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { CLI_BIN, cliEnvFor, runCli } from '../test-support/run-cli.js';

interface SimLine {
  event: 'started' | 'status' | 'stopped';
  devices: number;
  enrolled?: number;
  reused?: number;
  online?: number;
  byProfile?: Record<string, { devices: number; online: number }>;
  byTrustAnchor?: Record<string, { devices: number; online: number }>;
  totals?: Record<string, number>;
  updates?: Record<string, number> | null;
  updateFaults?: string;
  provisioning?: Record<string, unknown>;
}

/** Run `rampart sim … --json`, calling `whileRunning` once the fleet has started; resolves at exit. */
function runSim(
  args: string[],
  env: Record<string, string>,
  whileRunning: (lines: SimLine[], stop: () => void) => Promise<void> = async () => {},
): Promise<{ code: number | null; lines: SimLine[]; stderr: string; during: unknown }> {
  const child = spawn(process.execPath, [CLI_BIN, 'sim', ...args, '--json'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: SimLine[] = [];
  let buffered = '';
  let stderr = '';
  let during: Promise<unknown> | null = null;
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffered.slice(0, nl)) as SimLine;
      buffered = buffered.slice(nl + 1);
      lines.push(line);
      if (line.event === 'started')
        during = whileRunning(lines, () => child.kill('SIGTERM')).then(
          () => null,
          (err: unknown) => err,
        );
    }
  });
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      void Promise.resolve(during).then((result) => resolve({ code, lines, stderr, during: result }));
    }),
  );
}

/** Processes whose command line mentions `text` (from /proc). */
function processesWith(text: string): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text)) out.push(Number(pid));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

describe('rampart sim', () => {
  let t: TestPlatform;
  let env: Record<string, string>;

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    env = cliEnvFor(t.dataDir);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('enrolls each device over EST, connects them, answers commands, follows the shadow, and its compromised devices are refused', async () => {
    const mix = 'normal=2,crashy=1,compromised=1';
    const profiles = assignProfiles(4, parseProfileMix(mix));
    const compromised = `sim-000${profiles.indexOf('compromised') + 1}`;
    const normal = `sim-000${profiles.indexOf('normal') + 1}`;

    /** Commands and the shadow, with the normal device, while the fleet runs. */
    const exercise = async (): Promise<void> => {
      // Wait until the device has reported its shadow: by then its subscriptions (commands
      // included) are in place. Connected alone is not enough: commands are not queued, and one
      // sent between CONNACK and SUBSCRIBE is lost.
      for (let i = 0; i < 50; i++) {
        const sh = await t.call('GET', `/api/v1/devices/${normal}/shadow`);
        if (sh.status === 200 && sh.body.state.reported.profile === 'normal') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const ping = await t.call('POST', `/api/v1/devices/${normal}/commands`, {
        body: { name: 'ping', timeoutSeconds: 5, wait: true },
      });
      expect(ping.body).toMatchObject({ status: 'succeeded', result: { pong: true } });
      const set = await t.call('PATCH', `/api/v1/devices/${normal}/shadow`, {
        body: { desired: { telemetryEveryMs: 250 } },
      });
      expect(set.status).toBe(200);
      for (let i = 0; i < 50; i++) {
        const s = await t.call('GET', `/api/v1/devices/${normal}/shadow`);
        if (s.body.state.reported.telemetryEveryMs === 250) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('the device did not report the desired telemetry period');
    };

    const run = await runSim(
      ['--devices', '4', '--profile', mix, '--speed', '10', '--duration', '45s', '--every', '1s'],
      env,
      async (lines, stop) => {
        try {
          await exercise();
          // Crashes and attacks come at random times (every ~3 s and ~1 s at this speed, each attack
          // one of three kinds): run until the status lines show both and the platform has recorded
          // a refused publish or subscribe, rather than for a fixed time they might not fall into.
          for (let i = 0; i < 130; i++) {
            const totals = lines.filter((l) => l.event === 'status').at(-1)?.totals;
            if (totals && totals.crashes! >= 1 && totals.attacks! >= 1 && totals.delivered! > 10) {
              const seen = await t.call('GET', `/api/v1/security-events?device=${compromised}&limit=100`);
              if (seen.body.items.some((e: { kind: string }) => e.kind === 'authorization.denied')) break;
            }
            await new Promise((r) => setTimeout(r, 300));
          }
        } finally {
          stop();
        }
      },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.during).toBeNull();
    expect(run.lines[0]).toMatchObject({ event: 'started', devices: 4, enrolled: 4, reused: 0 });
    const stopped = run.lines.at(-1)!;
    expect(stopped.event).toBe('stopped');
    expect(stopped.byProfile).toMatchObject({
      normal: { devices: 2 },
      crashy: { devices: 1 },
      compromised: { devices: 1 },
    });
    const totals = stopped.totals!;
    expect(totals.connects).toBeGreaterThanOrEqual(4);
    expect(totals.delivered).toBeGreaterThan(10);
    expect(totals.commands).toBeGreaterThanOrEqual(1);
    expect(totals.deltas).toBeGreaterThanOrEqual(1);
    // At ten times the speed the crashy device dies about every 3 s and the compromised one tries
    // something every second; the run went on until both had happened (at most 45 s). That each
    // attempt was refused is checked below.
    expect(totals.crashes).toBeGreaterThanOrEqual(1);
    expect(totals.attacks).toBeGreaterThanOrEqual(1);
    // Every device connected (the crashy one drops out every few seconds, so when all four are online
    // at one status tick depends on the machine's load; what each did is on the platform).
    for (const id of ['sim-0001', 'sim-0002', 'sim-0003', 'sim-0004']) {
      const c = await t.call('GET', `/api/v1/devices/${id}/connection`);
      expect(c.body.stats.connects, id).toBeGreaterThanOrEqual(1);
    }

    // The platform saw the devices as registered, enrolled and active, with their telemetry counted.
    const devices = await t.call('GET', `/api/v1/devices?query=${encodeURIComponent('model = "SIM-1"')}`);
    expect(devices.body.items.map((d: { id: string }) => d.id).sort()).toEqual([
      'sim-0001',
      'sim-0002',
      'sim-0003',
      'sim-0004',
    ]);
    expect(devices.body.items.every((d: { status: string }) => d.status === 'active')).toBe(true);
    // Every attack of the compromised device was refused and recorded as a security event.
    const events = await t.call('GET', `/api/v1/security-events?device=${compromised}&limit=100`);
    expect(events.status).toBe(200);
    const kinds = new Set(events.body.items.map((e: { kind: string }) => e.kind));
    expect(kinds.has('authorization.denied')).toBe(true);
    const others = await t.call('GET', `/api/v1/security-events?device=${normal}&limit=100`);
    expect(others.body.items.filter((e: { kind: string }) => e.kind === 'authorization.denied')).toEqual([]);
  }, 90_000);

  it('reuses the certificates of an earlier run instead of enrolling again', async () => {
    const run = await runSim(['--devices', '4', '--profile', 'normal', '--duration', '2s'], env);
    expect(run.code, run.stderr).toBe(0);
    expect(run.lines[0]).toMatchObject({ event: 'started', enrolled: 0, reused: 4 });
  }, 60_000);

  it('refuses an unknown profile with the list of profiles, and registers nothing', async () => {
    const r = await runCli(['sim', '--devices', '2', '--prefix', 'bad', '--profile', 'evil'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown profile "evil"; choose from normal, chatty, crashy, compromised');
    const devices = await t.call('GET', `/api/v1/devices?query=${encodeURIComponent('id like "bad-*"')}`);
    expect(devices.body.items).toEqual([]);
  });

  it('provisions zero-touch: the simulator acts as the factory, and each device (one with its own swtpm) attests, enrolls with its attestation token and connects', async () => {
    const ids = ['zt-0001', 'zt-0002', 'zt-0003', 'zt-0004'];
    const args = ['--devices', '4', '--prefix', 'zt', '--model', 'SIM-ZT', '--zero-touch', '--tpm', '1'];
    // The device with the TPM answers a command over the gateway: its TLS handshake was signed in its TPM.
    const run = await runSim([...args, '--duration', '6s', '--every', '1s'], env, async () => {
      for (let i = 0; i < 50; i++) {
        const sh = await t.call('GET', '/api/v1/devices/zt-0001/shadow');
        if (sh.status === 200 && sh.body.state.reported.profile === 'normal') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const ping = await t.call('POST', '/api/v1/devices/zt-0001/commands', {
        body: { name: 'ping', timeoutSeconds: 5, wait: true },
      });
      expect(ping.body).toMatchObject({ status: 'succeeded', result: { pong: true } });
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.during).toBeNull();
    const started = run.lines[0]!;
    expect(started).toMatchObject({
      event: 'started',
      devices: 4,
      enrolled: 4,
      reused: 0,
      provisioning: {
        mode: 'zero-touch',
        station: 'zt-station',
        batch: expect.stringMatching(/^zt-\d{8}-\d{6}-\d{3}$/),
        manufactured: 4,
        provisioned: { software: 3, tpm: 1 },
        reused: 0,
        attestation: { affirming: 4, warning: 0, contraindicated: 0 },
      },
    });
    const batch = (started.provisioning as { batch: string }).batch;
    // The TPM the simulator started for its device is gone with it, and its resource manager and bus.
    expect(processesWith(join(t.dataDir, 'sim', 'zt', 'zt-0001', 'swtpm'))).toEqual([]);
    expect(processesWith('Tabrmd.rampartsim')).toEqual([]);
    expect(processesWith('rampart-sim-dbus-')).toEqual([]);
    // Every device connects, the one with a TPM through the agent's TLS tunnel.
    const status = run.lines.filter((l) => l.event === 'status');
    expect(status.at(-1)).toMatchObject({ provisioning: started.provisioning });
    expect(
      status.some(
        (l) =>
          l.online === 4 &&
          l.byTrustAnchor?.software?.online === 3 &&
          l.byTrustAnchor?.tpm?.devices === 1 &&
          l.byTrustAnchor?.tpm?.online === 1,
      ),
    ).toBe(true);

    // The factory's side on the platform: the station, the imported batch, the firmware's reference values.
    const stations = await t.call('GET', '/api/v1/stations');
    expect(stations.body).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'zt-station', status: 'active' })]),
    );
    const batches = await t.call('GET', '/api/v1/batches');
    expect(batches.body).toEqual(
      expect.arrayContaining([expect.objectContaining({ id: batch, station: 'zt-station', devices: 4 })]),
    );
    const refs = await t.call('GET', '/api/v1/reference-values?model=SIM-ZT');
    expect(refs.body.map((r: { digest: string }) => r.digest).sort()).toEqual(
      simulatedReferenceValues()
        .map((r) => r.digest)
        .sort(),
    );
    // No device was given an enrollment token.
    const tokens = await t.call('GET', '/api/v1/enrollment-tokens');
    expect(tokens.body.items.filter((x: { deviceId: string }) => x.deviceId.startsWith('zt-'))).toEqual([]);

    // Each device: registered by its first enrollment, active, traced to the batch and station, an
    // affirming result from its own trust anchor, and a signed transcript of its enrollment.
    const transcriptKey = (await t.call('GET', '/api/v1/provisioning/transcript-key')).body as string;
    for (const id of ids) {
      const anchor = id === 'zt-0001' ? 'tpm' : 'software';
      const device = await t.call('GET', `/api/v1/devices/${id}`);
      expect(device.body).toMatchObject({ id, model: 'SIM-ZT', status: 'active', serial: `SN-${id}` });
      const trace = await t.call('GET', `/api/v1/devices/${id}/trace`);
      expect(trace.body.manufacture).toMatchObject({
        trustAnchor: anchor,
        tpm: anchor === 'tpm',
        batch: { id: batch },
        station: { name: 'zt-station' },
      });
      expect(trace.body.enrollments).toEqual([expect.objectContaining({ decision: 'issued' })]);
      const results = await t.call('GET', `/api/v1/devices/${id}/attestation`);
      expect(results.body).toEqual([
        expect.objectContaining({ status: 'affirming', anchor, reasons: [], used: true }),
      ]);
      expect(results.body[0].measurements.map((m: { verdict: string }) => m.verdict)).toEqual([
        'known',
        'known',
        'known',
        'known',
      ]);
      const transcripts = await t.call('GET', `/api/v1/devices/${id}/transcripts`);
      expect(transcripts.body).toHaveLength(1);
      expect(transcripts.body[0]).toMatchObject({
        decision: 'issued',
        attestation: { status: 'affirming', anchor },
        trace: { batch, station: 'zt-station' },
      });
      expect(signatureProblem(transcripts.body[0], transcriptKey)).toBeNull();
    }

    // The next run reuses the devices and the station: nothing made, nothing imported.
    const again = await runSim([...args, '--duration', '1s'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.lines[0]).toMatchObject({
      enrolled: 0,
      reused: 4,
      provisioning: { station: 'zt-station', batch: null, manufactured: 0, reused: 4 },
    });
    const after = await t.call('GET', '/api/v1/batches');
    expect(after.body.filter((b: { station: string }) => b.station === 'zt-station')).toHaveLength(1);
  }, 90_000);

  it('runs the update flow on every device: a deployment rolls out, healthy devices commit, the one whose self-test fails rolls back', async () => {
    const ids = ['upd-0001', 'upd-0002', 'upd-0003', 'upd-0004'];
    const faulty = 'upd-0003';
    const image = randomBytes(50_000);
    let deployment = 0;
    let release = { path: '', sha256: '' };
    const run = await runSim(
      [
        ...['--devices', '4', '--prefix', 'upd', '--duration', '60s', '--every', '1s'],
        ...['--update-every', '1s', '--update-faults', `self-test=${faulty}`],
      ],
      env,
      async (_lines, stop) => {
        try {
          // A release for the simulated model, published at once in the development repository.
          const up = await t.call(
            'POST',
            '/api/v1/updates/releases?name=sim-fw&version=2.0.0&model=SIM-1&fileName=sim-fw.bin',
            { raw: image, contentType: 'application/octet-stream' },
          );
          expect(up.status, JSON.stringify(up.body)).toBe(201);
          release = up.body as { path: string; sha256: string };
          const created = await t.call('POST', '/api/v1/deployments', {
            body: {
              release: release.path,
              target: { devices: ids },
              ratePerMinute: 6000,
              receiptTimeout: '45s',
            },
          });
          expect(created.status, JSON.stringify(created.body)).toBe(201);
          deployment = Number(created.body.id);
          for (let i = 0; i < 200; i++) {
            await t.platform.deployments.tick();
            const shown = await t.call('GET', `/api/v1/deployments/${deployment}`);
            const states = (shown.body.devices as { state: string }[]).map((d) => d.state);
            if (states.length === ids.length && !states.includes('assigned') && !states.includes('pending'))
              return;
            await new Promise((r) => setTimeout(r, 250));
          }
          throw new Error('the deployment did not finish on every device');
        } finally {
          // Let the devices' last status be counted, then stop the simulator.
          await new Promise((r) => setTimeout(r, 1500));
          stop();
        }
      },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.during).toBeNull();
    expect(run.lines[0]).toMatchObject({ event: 'started', devices: 4, updateFaults: `self-test=${faulty}` });

    // Per device, through the API: three succeeded, the faulty one rolled back.
    const shown = await t.call('GET', `/api/v1/deployments/${deployment}`);
    const byDevice = Object.fromEntries(
      (shown.body.devices as { deviceId: string; state: string; receiptId: string | null }[]).map((d) => [
        d.deviceId,
        d,
      ]),
    );
    for (const id of ids) {
      expect(byDevice[id], id).toMatchObject({
        state: id === faulty ? 'rolled-back' : 'succeeded',
        receiptId: expect.any(String),
      });
    }

    // The signed receipts are stored, one per device, naming the release and the deployment.
    const receipts = await t.platform.updates.storage.db
      .selectFrom('update_receipts')
      .selectAll()
      .where('device_id', 'in', ids)
      .execute();
    expect(receipts.map((r) => [r.device_id, r.outcome]).sort()).toEqual(
      ids.map((id) => [id, id === faulty ? 'rolled-back' : 'committed']),
    );
    for (const r of receipts)
      expect(r).toMatchObject({
        target_path: release.path,
        deployment_id: String(deployment),
        sha256: release.sha256,
        version: '2.0.0',
      });
    const rolledBack = JSON.parse(receipts.find((r) => r.device_id === faulty)!.document);
    expect(rolledBack).toMatchObject({ reason: 'self-test-failed', runningVersion: null });
    expect(rolledBack.detail).toContain('simulated self-test failure');

    // On the devices: the new release runs in slot b on the healthy ones; the faulty one runs
    // what it ran before and did not try the release again.
    const simDir = join(t.dataDir, 'sim', 'upd');
    const file = release.path.slice(release.path.lastIndexOf('/') + 1);
    for (const id of ids) {
      const state = JSON.parse(readFileSync(join(simDir, id, 'slots', 'state.json'), 'utf8'));
      if (id === faulty) {
        expect(state).toMatchObject({ active: 'a', pending: null, slots: { b: { status: 'failed' } } });
        expect(existsSync(join(simDir, id, 'slots', 'a', file))).toBe(false);
      } else {
        expect(state).toMatchObject({ active: 'b', pending: null, slots: { b: { status: 'committed' } } });
        expect(readFileSync(join(simDir, id, 'slots', 'b', file)).equals(image)).toBe(true);
      }
    }

    // The counts in the JSON lines: every device checked; four installs, three commits, one rollback.
    const stopped = run.lines.at(-1)!;
    expect(stopped.event).toBe('stopped');
    expect(stopped.updates).toMatchObject({ installed: 4, committed: 3, rolledBack: 1, interrupted: 0 });
    expect(stopped.updates!.checked).toBeGreaterThanOrEqual(8);
    expect(run.lines.filter((l) => l.event === 'status').every((l) => l.updates !== null)).toBe(true);
  }, 90_000);

  it('settles a power loss in mid-install to one whole release, and rolls back a release that crashes at every start', async () => {
    const [cut, crashing] = ['flt-0001', 'flt-0002'];
    let deployment = 0;
    const run = await runSim(
      [
        ...['--devices', '2', '--prefix', 'flt', '--duration', '60s', '--every', '1s', '--speed', '4'],
        ...['--update-every', '2s', '--update-faults', `power-loss=${cut},crash-after-boot=${crashing}`],
      ],
      env,
      async (_lines, stop) => {
        try {
          const up = await t.call(
            'POST',
            '/api/v1/updates/releases?name=flt-fw&version=3.0.0&model=SIM-1&fileName=flt-fw.bin',
            { raw: randomBytes(40_000), contentType: 'application/octet-stream' },
          );
          expect(up.status, JSON.stringify(up.body)).toBe(201);
          // After the earlier SIM-1 release it is `preparing` (deltas) for a moment.
          await t.platform.updates.preparationsSettled();
          const created = await t.call('POST', '/api/v1/deployments', {
            body: { release: up.body.path, target: { devices: [cut, crashing] }, ratePerMinute: 6000 },
          });
          expect(created.status, JSON.stringify(created.body)).toBe(201);
          deployment = Number(created.body.id);
          for (let i = 0; i < 200; i++) {
            await t.platform.deployments.tick();
            const shown = await t.call('GET', `/api/v1/deployments/${deployment}`);
            const states = (shown.body.devices as { state: string }[]).map((d) => d.state);
            if (states.length === 2 && !states.includes('assigned') && !states.includes('pending')) return;
            await new Promise((r) => setTimeout(r, 250));
          }
          throw new Error('the deployment did not finish on both devices');
        } finally {
          await new Promise((r) => setTimeout(r, 1000));
          stop();
        }
      },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.during).toBeNull();
    const shown = await t.call('GET', `/api/v1/deployments/${deployment}`);
    const state = (id: string) =>
      (shown.body.devices as { deviceId: string; state: string }[]).find((d) => d.deviceId === id)?.state;
    // Power went at a random step of every install of the first device; each restart left it running
    // a whole release, and the install was done again until one came through.
    expect(state(cut)).toBe('succeeded');
    // The second device's new slot crashed at each start until the crash-loop limit.
    expect(state(crashing)).toBe('rolled-back');
    const receipts = await t.platform.updates.storage.db
      .selectFrom('update_receipts')
      .select(['device_id', 'document'])
      .where('device_id', 'in', [cut, crashing])
      .execute();
    const crashed = JSON.parse(receipts.find((r) => r.device_id === crashing)!.document);
    expect(crashed).toMatchObject({ outcome: 'rolled-back', reason: 'crash-loop', bootAttempts: 4 });
    expect(JSON.parse(receipts.find((r) => r.device_id === cut)!.document)).toMatchObject({
      outcome: 'committed',
    });
    const slots = JSON.parse(readFileSync(join(t.dataDir, 'sim', 'flt', cut, 'slots', 'state.json'), 'utf8'));
    expect(slots).toMatchObject({ install: null, pending: null, finishing: null });
    const stopped = run.lines.at(-1)!;
    expect(stopped.updates).toMatchObject({ committed: 1, rolledBack: 1 });
    expect(stopped.updates!.interrupted).toBeGreaterThanOrEqual(1);
    // Three starts of the crashing slot went down.
    expect(stopped.totals!.crashes).toBe(3);
  }, 90_000);

  it('refuses --update-faults without --update-every, and an unknown fault', async () => {
    const lone = await runCli(
      ['sim', '--devices', '1', '--prefix', 'bad', '--update-faults', 'self-test=5%'],
      {
        env,
      },
    );
    expect(lone.code).toBe(2);
    expect(lone.stderr).toContain('--update-faults applies only when the devices run updates');
    const unknown = await runCli(
      ['sim', '--devices', '1', '--prefix', 'bad', '--update-every', '5s', '--update-faults', 'meltdown=5%'],
      { env },
    );
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(
      'unknown update fault "meltdown"; choose from self-test, crash-after-boot, power-loss',
    );
  });

  it('will not act as a station whose key it does not hold, and makes nothing', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const registered = await t.call('POST', '/api/v1/stations', {
      body: { name: 'line-9', publicKey: publicKey.export({ type: 'spki', format: 'pem' }) },
    });
    expect(registered.status).toBe(201);
    const r = await runCli(
      ['sim', '--devices', '2', '--prefix', 'imp', '--zero-touch', '--station', 'line-9', '--duration', '1s'],
      { env },
    );
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain(
      'station line-9 is already registered on the platform, with a key this simulator does not hold',
    );
    const batches = await t.call('GET', '/api/v1/batches');
    expect(batches.body.filter((b: { station: string }) => b.station === 'line-9')).toEqual([]);
    const devices = await t.call('GET', `/api/v1/devices?query=${encodeURIComponent('id like "imp-*"')}`);
    expect(devices.body.items).toEqual([]);

    const usage = await runCli(['sim', '--devices', '2', '--prefix', 'imp', '--tpm', '1'], { env });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--tpm and --station apply to zero-touch provisioning only');
  });
});
