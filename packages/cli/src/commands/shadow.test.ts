import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PkiPeers } from '../../../server/src/test-support/pki.js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';
import { patchFromPairs } from './shadow.js';

describe('key=value pairs as a merge patch', () => {
  it('nests dotted keys, parses JSON values and keeps other text as strings', () => {
    expect(patchFromPairs(['led=on', 'config.rate=5', 'config.mode="5"', 'old=null', 'list=[1,2]'])).toEqual({
      led: 'on',
      config: { rate: 5, mode: '5' },
      old: null,
      list: [1, 2],
    });
    expect(() => patchFromPairs(['novalue'])).toThrow(/key=value/);
    expect(() => patchFromPairs(['__proto__.x=1'])).toThrow(/not a key/);
  });
});

describe('rampart device shadow', () => {
  let t: TestPlatform;
  let env: Record<string, string>;

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    env = cliEnvFor(t.dataDir);
    await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
    await t.call('POST', '/api/v1/devices', { body: { id: 'cli-sh-1', model: 'DW100' } });
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('sets the desired state, shows the delta, and refuses a stale version with exit 6', async () => {
    const set = await runCli(['device', 'shadow', 'set', 'cli-sh-1', 'led=on', 'config.rate=5', '--json'], {
      env,
    });
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({
      version: 1,
      state: { delta: { led: 'on', config: { rate: 5 } } },
    });
    const show = await runCli(['device', 'shadow', 'show', 'cli-sh-1'], { env });
    expect(show.stdout).toMatch(/version\s+1/);
    expect(show.stdout).toContain('"led":"on"');
    const stale = await runCli(['device', 'shadow', 'set', 'cli-sh-1', 'led=off', '--version', '0'], { env });
    expect(stale.code).toBe(6);
    expect(stale.stderr).toMatch(/version 1, not 0/);
    const none = await runCli(['device', 'shadow', 'set', 'cli-sh-1'], { env });
    expect(none.code).toBe(2);
  });
});

describe('rampart device command', () => {
  let t: TestPlatform;
  let env: Record<string, string>;
  let device: MqttClient;

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    env = cliEnvFor(t.dataDir);
    const peers = new PkiPeers(t);
    await peers.device('cli-cmd-1');
    const res = await peers.enroll('cli-cmd-1', 'cli-cmd-1', await peers.token('cli-cmd-1'));
    if (res.status !== 200) throw new Error(res.body.toString());
    device = await mqtt.connectAsync(t.platform.listeners.find((l) => l.name === 'mqtt')!.url, {
      ca: readFileSync(peers.rootCa),
      cert: readFileSync(peers.path('cli-cmd-1.pem')),
      key: readFileSync(peers.path('cli-cmd-1.key')),
      clientId: 'cli-cmd-1',
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    device.on('message', (topic, payload) => {
      const req = JSON.parse(payload.toString()) as { name: string; args: Record<string, unknown> };
      if (req.name === 'reboot')
        device.publish(
          topic.replace(/request$/, 'response'),
          JSON.stringify({ status: 'succeeded', result: req.args }),
        );
    });
    await device.subscribeAsync('$rampart/devices/cli-cmd-1/commands/+/request', { qos: 1 });
  }, 60_000);
  afterAll(async () => {
    device?.end(true);
    await t?.close();
  });

  it('waits for the answer, exits 1 on a time-out, and lists what was sent', async () => {
    const ok = await runCli(
      ['device', 'command', 'cli-cmd-1', 'reboot', '--arg', 'delay=5', '--timeout', '5s', '--json'],
      { env },
    );
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ status: 'succeeded', result: { delay: 5 } });
    const hung = await runCli(['device', 'command', 'cli-cmd-1', 'hang', '--timeout', '1s'], { env });
    expect(hung.code).toBe(1);
    expect(hung.stdout).toMatch(/timed-out/);
    const list = await runCli(['device', 'commands', 'cli-cmd-1'], { env });
    expect(list.stdout).toMatch(/reboot\s+succeeded/);
    expect(list.stdout).toMatch(/hang\s+timed-out/);
    const bad = await runCli(['device', 'command', 'cli-cmd-1', 'reboot', '--timeout', 'soon'], { env });
    expect(bad.code).toBe(2);
    const conn = await runCli(['device', 'connection', 'cli-cmd-1', '--json'], { env });
    expect(JSON.parse(conn.stdout)).toMatchObject({ connected: true, sessions: [{ clientId: 'cli-cmd-1' }] });
  });
});
