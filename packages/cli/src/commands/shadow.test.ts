import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
