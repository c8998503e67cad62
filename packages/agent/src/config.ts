import { resolve } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { loadConfig, type LoadedConfig } from '@rampart/shared/config';
import { StringEnum } from '@rampart/shared/schema';
import { DEVICE_ID_PATTERN } from '@rampart/shared/pki';

/** Environment variables the agent reads that are not settings (secrets never go in a config file). */
export const AGENT_SECRET_ENV = ['RAMPART_AGENT_ENROLLMENT_TOKEN'] as const;

/** Settings of the device agent: `RAMPART_AGENT_*` environment variables, a config file, or flags. */
export const AgentConfigSchema = Type.Object(
  {
    dataDir: Type.String({
      default: './rampart-agent',
      minLength: 1,
      description: 'Where the agent keeps its key (software trust anchor) and state.',
    }),
    trustAnchor: StringEnum(['software'], {
      default: 'software',
      description:
        'Where the device key lives. `software` is a key file (weaker than a TPM or secure element).',
    }),
    deviceId: Type.Optional(
      Type.String({
        pattern: DEVICE_ID_PATTERN.source,
        description:
          "The device's id in the Rampart registry: the CN and SAN URI of its certificate. Needed to enroll.",
      }),
    ),
    est: Type.Object(
      {
        url: Type.Optional(
          Type.String({
            description:
              "The platform's EST server, https://host:port (EST paths are under /.well-known/est/).",
          }),
        ),
        caFile: Type.Optional(
          Type.String({
            description:
              "Rampart's root CA certificate (PEM, the platform's <server-data-dir>/ca.pem), pinned at enrollment and copied to <dataDir>/identity/root-ca.pem.",
          }),
        ),
        timeoutMs: Type.Integer({
          default: 30_000,
          minimum: 1000,
          description: 'Time limit of one EST request, in milliseconds.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    server: Type.Object(
      {
        url: Type.Optional(
          Type.String({ description: 'Base URL of the Rampart platform the device talks to.' }),
        ),
        caFile: Type.Optional(
          Type.String({
            description: "PEM file with Rampart's CA certificate, pinned for every connection.",
          }),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    log: Type.Object(
      {
        level: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
          default: 'info',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);
export type AgentConfig = Static<typeof AgentConfigSchema>;

/** How `rampart-agent` spells the flags that set settings, for messages. */
export const AGENT_FLAG_NAMES: Record<string, string> = {
  dataDir: '--data-dir',
  deviceId: '--device-id',
  'est.url': '--est-url',
  'est.caFile': '--ca',
};

export function loadAgentConfig(
  input: { file?: string; env?: Record<string, string | undefined>; flags?: Record<string, unknown> } = {},
): LoadedConfig<AgentConfig> {
  const env = input.env ?? process.env;
  const loaded = loadConfig(AgentConfigSchema, {
    file: input.file ?? env.RAMPART_AGENT_CONFIG,
    env,
    envPrefix: 'RAMPART_AGENT_',
    flags: input.flags,
    flagNames: AGENT_FLAG_NAMES,
    ignoreEnv: ['RAMPART_AGENT_CONFIG', ...AGENT_SECRET_ENV],
  });
  loaded.config.dataDir = resolve(loaded.config.dataDir);
  if (loaded.config.est.caFile) loaded.config.est.caFile = resolve(loaded.config.est.caFile);
  return loaded;
}
