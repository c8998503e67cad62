import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadConfig, type LoadedConfig } from '@rampart/shared/config';
import { CLIENT_ENV, ServerConfigSchema, type ServerConfig } from './schema.js';

export { ServerConfigSchema, CLIENT_ENV, type ServerConfig } from './schema.js';

export interface ServerConfigInput {
  /** Explicit config file (flag `--config` or RAMPART_CONFIG); otherwise ./rampart.yaml when present. */
  file?: string | undefined;
  env?: Record<string, string | undefined>;
  flags?: Record<string, unknown>;
  flagNames?: Record<string, string>;
  cwd?: string;
}

export function loadServerConfig(input: ServerConfigInput = {}): LoadedConfig<ServerConfig> {
  const env = input.env ?? process.env;
  const cwd = input.cwd ?? process.cwd();
  let file = input.file ?? env.RAMPART_CONFIG;
  if (!file) {
    for (const candidate of ['rampart.yaml', 'rampart.yml', 'rampart.json']) {
      if (existsSync(resolve(cwd, candidate))) {
        file = resolve(cwd, candidate);
        break;
      }
    }
  }
  const loaded = loadConfig(ServerConfigSchema, {
    file,
    env,
    flags: input.flags,
    flagNames: { dataDir: '--data-dir', ...input.flagNames },
    ignoreEnv: CLIENT_ENV,
  });
  loaded.config.dataDir = resolve(cwd, loaded.config.dataDir);
  return loaded;
}

/** The database URL in effect: the configured one, or the embedded SQLite file in the data directory. */
export function databaseUrlOf(config: ServerConfig): string {
  return config.database.url ?? `sqlite:${resolve(config.dataDir, 'rampart.db')}`;
}
