import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { settingsOf } from '@rampart/shared/config';
import { AgentConfigSchema, loadAgentConfig } from './config.js';

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
