import { describe, expect, it } from 'vitest';
import { loadAgentConfig } from './config.js';

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
