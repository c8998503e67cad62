import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_BIN, runCli } from '../test-support/run-cli.js';

const PASSPHRASE = 'test passphrase for rampart';
const FREE_PORTS = [
  '--api-port',
  '0',
  '--est-port',
  '0',
  '--pki-port',
  '0',
  '--mqtt-port',
  '0',
  '--updates-port',
  '0',
];
const execFileP = promisify(execFile);

interface Running {
  child: ChildProcessWithoutNullStreams;
  url: string;
  port: number;
  est: { url: string; port: number };
  pki: { url: string; port: number };
  mqtt: { url: string; port: number };
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Start the real `rampart up` on free ports and wait for its "listening" lines (api, est, pki, mqtt). */
function startUp(
  dataDir: string,
  env: Record<string, string> = { RAMPART_KEYSTORE_PASSPHRASE: PASSPHRASE },
  ports = [
    '--api-port',
    '0',
    '--est-port',
    '0',
    '--pki-port',
    '0',
    '--mqtt-port',
    '0',
    '--updates-port',
    '0',
  ],
) {
  const args = ['up', '--data-dir', dataDir, ...ports];
  const child = spawn(process.execPath, [CLI_BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return new Promise<Running>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`rampart up did not start in time:\n${out}\n${err}`));
    }, 30_000);
    const onData = () => {
      // One line per listener; wait for all four.
      const m = /^listening api (https:\/\/127\.0\.0\.1:(\d+))$/m.exec(out);
      const est = /^listening est (https:\/\/127\.0\.0\.1:(\d+)\/\.well-known\/est)$/m.exec(out);
      const pki = /^listening pki (http:\/\/127\.0\.0\.1:(\d+))$/m.exec(out);
      const mqtt = /^listening mqtt (mqtts:\/\/127\.0\.0\.1:(\d+))$/m.exec(out);
      if (!m || !est || !pki || !mqtt) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      resolve({
        child,
        url: m[1]!,
        port: Number(m[2]),
        est: { url: est[1]!, port: Number(est[2]) },
        pki: { url: pki[1]!, port: Number(pki[2]) },
        mqtt: { url: mqtt[1]!, port: Number(mqtt[2]) },
        stdout: () => out,
        stderr: () => err,
        exited,
      });
    };
    child.stdout.on('data', onData);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`rampart up exited with ${code} before listening:\n${out}\n${err}`));
    });
  });
}

function lastActions(dataDir: string, n: number): string[] {
  const db = new Database(join(dataDir, 'rampart.db'), { readonly: true });
  try {
    const rows = db.prepare('select action from audit_entries order by seq desc limit ?').all(n) as {
      action: string;
    }[];
    return rows.map((r) => r.action).reverse();
  } finally {
    db.close();
  }
}

async function verifyOffline(dataDir: string) {
  const r = await runCli(['audit', 'verify', '--data-dir', dataDir, '--json']);
  return { code: r.code, result: r.stdout ? JSON.parse(r.stdout) : null, stderr: r.stderr };
}

describe('rampart up', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'rampart-up-test-'));
  let ca: string;
  let agent: Agent;
  let adminToken: string;

  beforeAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
  });
  afterAll(async () => {
    await agent?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('first start: prints the admin token once, serves verified HTTPS, and stops cleanly on SIGTERM', async () => {
    const up = await startUp(dataDir);
    expect(up.stdout()).toContain(`rampart up: data in ${dataDir} (sqlite)`);
    const token = /^first start: created the admin token.*\n {2}(rpt_\S+)$/m.exec(up.stdout())?.[1];
    expect(token).toMatch(/^rpt_[a-z0-9]{12}_/);
    adminToken = token!;
    const tokenFile = join(dataDir, 'admin-token');
    expect(readFileSync(tokenFile, 'utf8').trim()).toBe(token);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    const runtime = JSON.parse(readFileSync(join(dataDir, 'runtime.json'), 'utf8'));
    expect(runtime).toMatchObject({
      pid: up.child.pid,
      listeners: [
        { name: 'api', url: up.url },
        { name: 'est', url: up.est.url },
        { name: 'pki', url: up.pki.url },
        { name: 'updates', url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) },
        { name: 'mqtt', url: up.mqtt.url },
      ],
    });
    // --api-port 0 --est-port 0 --pki-port 0 --mqtt-port 0: four free ports, none of the defaults.
    const ports = [up.port, up.est.port, up.pki.port, up.mqtt.port];
    expect(new Set(ports).size).toBe(4);
    for (const p of ports) expect([0, 8443, 8444, 8080, 8883]).not.toContain(p);
    expect(up.stdout().match(/^listening /gm)).toHaveLength(5);

    // Real certificate verification against the CA file the platform leaves for its clients.
    ca = readFileSync(join(dataDir, 'ca.pem'), 'utf8');
    agent = new Agent({ connect: { ca } });
    const health = await request(`${up.url}/healthz`, { dispatcher: agent });
    expect(health.statusCode).toBe(200);
    expect(await health.body.json()).toMatchObject({ status: 'ok', checks: { database: 'ok' } });
    // Without that CA the same server is not trusted.
    const untrusted = new Agent();
    await expect(request(`${up.url}/healthz`, { dispatcher: untrusted })).rejects.toThrow(/certificate/i);
    await untrusted.close();

    // curl as an independent TLS peer.
    const curl = await execFileP('curl', [
      '--silent',
      '--show-error',
      '--fail',
      '--cacert',
      join(dataDir, 'ca.pem'),
      `${up.url}/healthz`,
    ]);
    expect(JSON.parse(curl.stdout)).toMatchObject({ status: 'ok' });
    await expect(execFileP('curl', ['--silent', '--fail', `${up.url}/healthz`])).rejects.toMatchObject({
      code: 60,
    });

    // The EST server (TLS chained to the same root) and the plain-HTTP PKI listener answer on their ports.
    const cacerts = await execFileP('curl', [
      '--silent',
      '--show-error',
      '--fail',
      '--cacert',
      join(dataDir, 'ca.pem'),
      `${up.est.url}/cacerts`,
    ]);
    expect(cacerts.stdout.length).toBeGreaterThan(100);
    const rootCrt = await execFileP('curl', [
      '--silent',
      '--show-error',
      '--fail',
      `${up.pki.url}/ca/root-1.crt`,
    ]);
    expect(rootCrt.stdout.length).toBeGreaterThan(100);

    up.child.kill('SIGTERM');
    expect(await up.exited).toEqual({ code: 0, signal: null });
    expect(up.stdout()).toMatch(/stopped\n$/);
    expect(existsSync(join(dataDir, 'runtime.json'))).toBe(false);
    expect(lastActions(dataDir, 2)).toEqual(['platform.stop', 'audit.checkpoint']);
    const v = await verifyOffline(dataDir);
    expect(v.code).toBe(0);
    expect(v.result).toMatchObject({ ok: true, unanchoredEntries: 0, firstBad: null });
  });

  it('second start: prints no token, keeps the admin token, and stops cleanly on SIGINT', async () => {
    const before = readFileSync(join(dataDir, 'admin-token'), 'utf8');
    // Ports through --set this time: an absent --est-port/--pki-port flag must not override them.
    const up = await startUp(dataDir, undefined, [
      '--api-port',
      '0',
      '--set',
      'est.port=0',
      '--set',
      'pki.port=0',
      '--updates-port',
      '0',
    ]);
    expect(up.stdout()).not.toContain('first start');
    const est = /listening est https:\/\/127\.0\.0\.1:(\d+)/.exec(up.stdout())![1];
    const pki = /listening pki http:\/\/127\.0\.0\.1:(\d+)/.exec(up.stdout())![1];
    expect([est, pki]).not.toContain('8444');
    expect([est, pki]).not.toContain('8080');
    expect(up.stdout()).not.toContain('rpt_');
    expect(readFileSync(join(dataDir, 'admin-token'), 'utf8')).toBe(before);
    // The first token still works against the restarted platform.
    const who = await request(`${up.url}/api/v1/whoami`, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(who.statusCode).toBe(200);
    await who.body.dump();

    up.child.kill('SIGINT');
    expect(await up.exited).toEqual({ code: 0, signal: null });
    expect(existsSync(join(dataDir, 'runtime.json'))).toBe(false);
    expect(lastActions(dataDir, 2)).toEqual(['platform.stop', 'audit.checkpoint']);
    const db = new Database(join(dataDir, 'rampart.db'), { readonly: true });
    const stop = db
      .prepare("select details from audit_entries where action = 'platform.stop' order by seq desc")
      .get() as {
      details: string;
    };
    db.close();
    expect(JSON.parse(stop.details)).toEqual({ reason: 'SIGINT' });
    const v = await verifyOffline(dataDir);
    expect(v.result).toMatchObject({ ok: true, unanchoredEntries: 0 });
  });

  it('refuses to start without the passphrase its key store was made with', async () => {
    const r = await runCli(['up', '--data-dir', dataDir, ...FREE_PORTS]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('RAMPART_KEYSTORE_PASSPHRASE');
    // No passphrase was made up for the existing key store.
    expect(existsSync(join(dataDir, 'keystore.passphrase'))).toBe(false);
    const wrong = await runCli(['up', '--data-dir', dataDir, ...FREE_PORTS], {
      env: { RAMPART_KEYSTORE_PASSPHRASE: 'not the right passphrase' },
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('the key store passphrase does not open');
  });

  it('refuses a second platform on the same data directory, and a port already in use', async () => {
    const up = await startUp(dataDir);
    try {
      const twice = await runCli(['up', '--data-dir', dataDir, ...FREE_PORTS], {
        env: { RAMPART_KEYSTORE_PASSPHRASE: PASSPHRASE },
      });
      expect(twice.code).toBe(6);
      expect(twice.stderr).toContain(
        `another Rampart (pid ${up.child.pid}) is using data directory ${dataDir}`,
      );

      const other = mkdtempSync(join(tmpdir(), 'rampart-up-port-'));
      try {
        const env = { RAMPART_KEYSTORE_PASSPHRASE: PASSPHRASE };
        const busy = await runCli(
          [
            'up',
            '--data-dir',
            other,
            '--api-port',
            String(up.port),
            '--est-port',
            '0',
            '--pki-port',
            '0',
            '--mqtt-port',
            '0',
            '--updates-port',
            '0',
          ],
          { env },
        );
        expect(busy.code).toBe(6);
        expect(busy.stderr).toContain(`cannot listen on 127.0.0.1:${up.port} (EADDRINUSE)`);
        expect(busy.stderr).toContain('--api-port');
        // The refused start released its own data directory again.
        expect(existsSync(join(other, 'rampart.lock'))).toBe(false);

        for (const [flag, port] of [
          ['--est-port', up.est.port],
          ['--pki-port', up.pki.port],
          ['--mqtt-port', up.mqtt.port],
        ] as const) {
          const ports = {
            '--api-port': '0',
            '--est-port': '0',
            '--pki-port': '0',
            '--mqtt-port': '0',
            '--updates-port': '0',
            [flag]: String(port),
          };
          const r = await runCli(['up', '--data-dir', other, ...Object.entries(ports).flat()], { env });
          expect(r.code, r.stderr).toBe(6);
          expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${port} (EADDRINUSE)`);
          expect(r.stderr).toContain(flag);
          expect(existsSync(join(other, 'rampart.lock'))).toBe(false);
        }
      } finally {
        rmSync(other, { recursive: true, force: true });
      }
    } finally {
      up.child.kill('SIGTERM');
      expect((await up.exited).code).toBe(0);
    }
    expect(existsSync(join(dataDir, 'rampart.lock'))).toBe(false);
  });

  it('keeps every acknowledged write across kill -9, with an intact audit chain', async () => {
    const up = await startUp(dataDir);
    const acknowledged: string[] = [];
    let killed = false;
    const writer = (async () => {
      for (let i = 0; ; i++) {
        if (acknowledged.length === 20 && !killed) {
          // Kill while the next write is in flight.
          killed = true;
          setTimeout(() => up.child.kill('SIGKILL'), Math.floor(Math.random() * 10));
        }
        let status: number;
        let body: { record?: { id: string } };
        try {
          const res = await request(`${up.url}/api/v1/tokens`, {
            method: 'POST',
            dispatcher: agent,
            headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
            body: JSON.stringify({ name: `crash ${i}`, role: 'viewer' }),
          });
          status = res.statusCode;
          body = (await res.body.json()) as typeof body;
        } catch {
          return; // the server is gone: this write was not acknowledged
        }
        if (status !== 201) throw new Error(`write ${i} refused: ${JSON.stringify(body)}`);
        acknowledged.push(body.record!.id);
      }
    })();
    await writer;
    expect(await up.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(acknowledged.length).toBeGreaterThanOrEqual(20);

    const again = await startUp(dataDir);
    try {
      const auth = { authorization: `Bearer ${adminToken}` };
      const tokens = await request(`${again.url}/api/v1/tokens`, { dispatcher: agent, headers: auth });
      const ids = new Set(((await tokens.body.json()) as { items: { id: string }[] }).items.map((t) => t.id));
      for (const id of acknowledged) expect(ids.has(id), `token ${id} was acknowledged`).toBe(true);
      const entries = await request(`${again.url}/api/v1/audit/entries?action=token.create&limit=1000`, {
        dispatcher: agent,
        headers: auth,
      });
      const targets = new Set(
        ((await entries.body.json()) as { items: { target: string }[] }).items.map((e) => e.target),
      );
      for (const id of acknowledged) expect(targets.has(`token:${id}`), `audit entry for ${id}`).toBe(true);

      // Verified offline while the restarted platform runs.
      const v = await verifyOffline(dataDir);
      expect(v.code).toBe(0);
      expect(v.result).toMatchObject({ ok: true, firstBad: null });
    } finally {
      again.child.kill('SIGTERM');
      expect(await again.exited).toEqual({ code: 0, signal: null });
    }
    expect((await verifyOffline(dataDir)).result).toMatchObject({ ok: true, unanchoredEntries: 0 });
  });
});

describe('rampart up --demo', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'rampart-demo-test-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('starts a small simulated fleet that enrolls, connects and answers commands, with an audited short-lived token', async () => {
    rmSync(dataDir, { recursive: true, force: true });
    const up = await startUp(dataDir, undefined, [...FREE_PORTS, '--demo', '3']);
    try {
      for (let i = 0; i < 100 && !/^demo fleet: 3 simulated devices/m.test(up.stdout()); i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(up.stdout()).toMatch(/^demo fleet: 3 simulated devices/m);
      const env = { RAMPART_DATA_DIR: dataDir };
      let ping = await runCli(['device', 'command', 'demo-0001', 'ping', '--timeout', '5s', '--json'], {
        env,
      });
      for (let i = 0; i < 20 && ping.code !== 0; i++) {
        // The devices connect over the first few seconds.
        await new Promise((r) => setTimeout(r, 250));
        ping = await runCli(['device', 'command', 'demo-0001', 'ping', '--timeout', '5s', '--json'], { env });
      }
      expect(ping.code, ping.stderr).toBe(0);
      expect(JSON.parse(ping.stdout)).toMatchObject({ status: 'succeeded', result: { pong: true } });

      const list = await runCli(['device', 'list', '--query', 'model = "SIM-1"', '--json'], { env });
      expect(JSON.parse(list.stdout).items.map((d: { id: string }) => d.id)).toEqual([
        'demo-0001',
        'demo-0002',
        'demo-0003',
      ]);
      const tokens = await runCli(['token', 'list', '--json'], { env });
      const parsed = JSON.parse(tokens.stdout) as
        | { name: string; role: string; expiresAt: string }[]
        | { items: { name: string; role: string; expiresAt: string }[] };
      const demo = (Array.isArray(parsed) ? parsed : parsed.items).find((t) => t.name === 'demo fleet');
      expect(demo?.role).toBe('operator');
      expect(Date.parse(demo!.expiresAt) - Date.now()).toBeLessThanOrEqual(15 * 60_000);
      // Both tokens the platform made for itself are in the audit log: the first admin and the demo's.
      expect(lastActions(dataDir, 100).filter((a) => a === 'token.create')).toHaveLength(2);
    } finally {
      up.child.kill('SIGTERM');
      expect(await up.exited).toEqual({ code: 0, signal: null });
    }
  }, 90_000);
});
