import { resolve } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { loadConfig, type LoadedConfig } from '@rampart/shared/config';
import { StringEnum } from '@rampart/shared/schema';

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

export function loadAgentConfig(
  input: { file?: string; env?: Record<string, string | undefined>; flags?: Record<string, unknown> } = {},
): LoadedConfig<AgentConfig> {
  const env = input.env ?? process.env;
  const loaded = loadConfig(AgentConfigSchema, {
    file: input.file ?? env.RAMPART_AGENT_CONFIG,
    env,
    envPrefix: 'RAMPART_AGENT_',
    flags: input.flags,
    ignoreEnv: ['RAMPART_AGENT_CONFIG'],
  });
  loaded.config.dataDir = resolve(loaded.config.dataDir);
  return loaded;
}
