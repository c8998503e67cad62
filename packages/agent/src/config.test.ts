import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { settingsOf } from '@rampart/shared/config';
import { trustAnchorFor } from './anchor.js';
import { AgentConfigSchema, loadAgentConfig, redactedConfig } from './config.js';

describe('agent configuration', () => {
  it('reads the device id and the EST settings from RAMPART_AGENT_* variables; the token is not a setting', () => {
    const loaded = loadAgentConfig({
      env: {
        RAMPART_AGENT_DEVICE_ID: 'dw-0001',
        RAMPART_AGENT_EST_URL: 'https://rampart.example:8444',
        RAMPART_AGENT_EST_CA_FILE: 'ca.pem',
        RAMPART_AGENT_ENROLLMENT_TOKEN: 'secret',
      },
    });
    expect(loaded.config).toMatchObject({
      deviceId: 'dw-0001',
      est: { url: 'https://rampart.example:8444', caFile: `${process.cwd()}/ca.pem`, timeoutMs: 30_000 },
    });
    expect(loaded.warnings).toEqual([]);
    expect(JSON.stringify(loaded.config)).not.toContain('secret');
  });

  it('refuses a device id the registry would not accept, naming the flag', () => {
    expect(() => loadAgentConfig({ env: {}, flags: { deviceId: 'bad id' } })).toThrow(
      /deviceId must match .* from flag --device-id/,
    );
  });
});

describe('gateway and queue settings', () => {
  it('have defaults, and read RAMPART_AGENT_MQTT_* / RAMPART_AGENT_QUEUE_* variables', () => {
    expect(loadAgentConfig({ env: {} }).config).toMatchObject({
      mqtt: {
        keepaliveSeconds: 60,
        connectTimeoutMs: 30_000,
        backoff: { initialMs: 1000, maxMs: 120_000, factor: 2, resetAfterMs: 60_000 },
      },
      queue: { maxMessages: 10_000, maxBytes: 16 * 1024 * 1024, syncIntervalMs: 200 },
    });
    const loaded = loadAgentConfig({
      env: {
        RAMPART_AGENT_MQTT_URL: 'mqtts://gw.example:8883',
        RAMPART_AGENT_MQTT_BACKOFF_MAX_MS: '300000',
        RAMPART_AGENT_QUEUE_MAX_MESSAGES: '500',
      },
    });
    expect(loaded.warnings).toEqual([]);
    expect(loaded.config.mqtt.url).toBe('mqtts://gw.example:8883');
    expect(loaded.config.mqtt.backoff.maxMs).toBe(300_000);
    expect(loaded.config.queue.maxMessages).toBe(500);
  });

  it('refuse a plain mqtt:// gateway, a tiny queue and a backoff whose maximum is below its start', () => {
    expect(() => loadAgentConfig({ env: { RAMPART_AGENT_MQTT_URL: 'mqtt://gw.example:1883' } })).toThrow(
      /mqtt\.url must match .* from environment variable RAMPART_AGENT_MQTT_URL/,
    );
    expect(() => loadAgentConfig({ env: {}, flags: { 'queue.maxBytes': '10' } })).toThrow(
      /queue\.maxBytes must be >= 1024 .* from flag --queue-max-bytes/,
    );
    expect(() =>
      loadAgentConfig({
        env: { RAMPART_AGENT_MQTT_BACKOFF_INITIAL_MS: '5000', RAMPART_AGENT_MQTT_BACKOFF_MAX_MS: '100' },
      }),
    ).toThrow(/mqtt\.backoff\.maxMs \(100\) must be at least mqtt\.backoff\.initialMs \(5000\)/);
  });
});

describe('PKCS#11 trust anchor settings', () => {
  const pkcs11Env = {
    RAMPART_AGENT_TRUST_ANCHOR: 'pkcs11',
    RAMPART_AGENT_PKCS11_MODULE: '/usr/lib/softhsm/libsofthsm2.so',
    RAMPART_AGENT_PKCS11_TOKEN_LABEL: 'device',
    RAMPART_AGENT_PKCS11_PIN: '0042',
  };

  it('read RAMPART_AGENT_PKCS11_* variables, the PIN as text with its leading zeros', () => {
    expect(loadAgentConfig({ env: {} }).config.pkcs11).toEqual({ keyLabel: 'rampart-device' });
    const loaded = loadAgentConfig({ env: { ...pkcs11Env, RAMPART_AGENT_PKCS11_KEY_LABEL: 'dev-id' } });
    expect(loaded.warnings).toEqual([]);
    expect(loaded.config.trustAnchor).toBe('pkcs11');
    expect(loaded.config.pkcs11).toEqual({
      module: '/usr/lib/softhsm/libsofthsm2.so',
      tokenLabel: 'device',
      pin: '0042',
      keyLabel: 'dev-id',
    });
  });

  it('need the library, the token and the PIN with trustAnchor pkcs11, naming the variables', () => {
    expect(() => loadAgentConfig({ env: { RAMPART_AGENT_TRUST_ANCHOR: 'pkcs11' } })).toThrow(
      /pkcs11\.module is required with trustAnchor pkcs11 \(from environment variable RAMPART_AGENT_TRUST_ANCHOR\).*RAMPART_AGENT_PKCS11_MODULE[\s\S]*pkcs11\.tokenLabel is required[\s\S]*pkcs11\.pin is required.*RAMPART_AGENT_PKCS11_PIN/,
    );
    // Other anchors do not need the section.
    expect(loadAgentConfig({ env: { RAMPART_AGENT_TRUST_ANCHOR: 'tpm' } }).config.trustAnchor).toBe('tpm');
  });

  it('refuse a PIN that a YAML file turned into a number, without quoting it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-agent-config-'));
    try {
      const file = join(dir, 'agent.yaml');
      writeFileSync(
        file,
        'trustAnchor: pkcs11\npkcs11:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  tokenLabel: device\n  pin: 987654\n',
      );
      let message = '';
      try {
        loadAgentConfig({ file, env: {} });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toContain(
        `pkcs11.pin must be non-empty text (a PIN of digits in a YAML file needs quotes`,
      );
      expect(message).toContain(`from config file ${file}`);
      expect(message).not.toContain('987654');
      writeFileSync(
        file,
        'trustAnchor: pkcs11\npkcs11:\n  module: /m.so\n  tokenLabel: device\n  pin: "0987"\n',
      );
      expect(loadAgentConfig({ file, env: {} }).config.pkcs11.pin).toBe('0987');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('show the PIN as (redacted) when the configuration is printed, and leave the original alone', () => {
    const { config } = loadAgentConfig({ env: pkcs11Env });
    const shown = redactedConfig(config);
    expect(shown.pkcs11.pin).toBe('(redacted)');
    expect(JSON.stringify(shown)).not.toContain('0042');
    expect(config.pkcs11.pin).toBe('0042');
    expect(redactedConfig(loadAgentConfig({ env: {} }).config).pkcs11.pin).toBeUndefined();
  });

  it('make trustAnchorFor refuse a hand-built pkcs11 configuration without a PIN', () => {
    const { config } = loadAgentConfig({ env: pkcs11Env });
    delete config.pkcs11.pin;
    expect(() => trustAnchorFor(config)).toThrow(/needs pkcs11\.module, pkcs11\.tokenLabel and pkcs11\.pin/);
  });
});

describe('docs/agent.md', () => {
  it('lists exactly the settings of AgentConfigSchema, with their variables and defaults', () => {
    const doc = readFileSync(new URL('../../../docs/agent.md', import.meta.url), 'utf8');
    const table = doc.split('<!-- agent-settings:start -->')[1]!.split('<!-- agent-settings:end -->')[0]!;
    const rows = table
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => l.split('|').map((c) => c.trim()))
      .map((c) => ({ key: c[1]!.replace(/`/g, ''), env: c[2]!.replace(/`/g, ''), default: c[3]! }));
    expect(rows).toEqual(
      settingsOf(AgentConfigSchema, 'RAMPART_AGENT_').map((s) => ({
        key: s.key,
        env: s.env,
        default: s.default === undefined ? '(none)' : `\`${JSON.stringify(s.default)}\``,
      })),
    );
  });
});
