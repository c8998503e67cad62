import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '@rampart/shared/schema';

/**
 * Every setting of the platform server. Each key can be set in the config file, as an environment
 * variable (`api.rateLimit.max` -> `RAMPART_API_RATE_LIMIT_MAX`) or, for the common ones, as a flag.
 */
export const ServerConfigSchema = Type.Object(
  {
    dataDir: Type.String({
      default: './rampart-data',
      minLength: 1,
      description:
        'Directory for the embedded database, keys, TLS material, the admin token and the runtime file.',
    }),
    database: Type.Object(
      {
        url: Type.Optional(
          Type.String({
            pattern: '^(sqlite:|postgres(ql)?://)',
            description:
              'sqlite:<path> (embedded default: sqlite:<dataDir>/rampart.db) or postgres://user:pass@host:port/db for production.',
          }),
        ),
        poolSize: Type.Integer({
          default: 10,
          minimum: 1,
          maximum: 200,
          description: 'PostgreSQL connection pool size.',
        }),
        sqliteSynchronous: StringEnum(['normal', 'full'], {
          default: 'full',
          description:
            'SQLite durability: "full" syncs every commit (survives power loss); "normal" survives process crashes only.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    api: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1', description: 'Address the management API listens on.' }),
        port: Type.Integer({
          default: 8443,
          minimum: 0,
          maximum: 65535,
          description: 'HTTPS port of the management API (0 = any free port).',
        }),
        publicHostnames: Type.Array(Type.String(), {
          default: [],
          description: 'Extra DNS names or IP addresses to put in the API server certificate.',
        }),
        bodyLimit: Type.Integer({
          default: 1048576,
          minimum: 1024,
          description: 'Largest accepted request body in bytes.',
        }),
        importBodyLimit: Type.Integer({
          default: 67108864,
          minimum: 1024,
          description: 'Largest accepted bulk-import body in bytes.',
        }),
        rateLimit: Type.Object(
          {
            max: Type.Integer({
              default: 3000,
              minimum: 1,
              description: 'Requests allowed per token (or per address when unauthenticated) in each window.',
            }),
            windowSeconds: Type.Integer({
              default: 60,
              minimum: 1,
              description: 'Length of the rate-limit window in seconds.',
            }),
          },
          { additionalProperties: false, default: {} },
        ),
        trustProxy: Type.Boolean({
          default: false,
          description: 'Trust X-Forwarded-* headers (only behind a proxy you control).',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    audit: Type.Object(
      {
        checkpointIntervalSeconds: Type.Integer({
          default: 60,
          minimum: 1,
          description:
            'How often a signed checkpoint is written when new entries exist (also written at shutdown).',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    keystore: Type.Object(
      {
        passphraseFile: Type.Optional(
          Type.String({
            description:
              'File holding the passphrase that encrypts platform keys at rest. RAMPART_KEYSTORE_PASSPHRASE takes precedence; without either, one is generated into the data directory.',
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
        format: StringEnum(['json', 'pretty'], {
          default: 'json',
          description: 'json for machines, pretty for people.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);

export type ServerConfig = Static<typeof ServerConfigSchema>;

/** Environment variables that configure the CLI as a client, not the server. */
export const CLIENT_ENV = [
  'RAMPART_URL',
  'RAMPART_TOKEN',
  'RAMPART_CA',
  'RAMPART_CONFIG',
  'RAMPART_KEYSTORE_PASSPHRASE',
];
