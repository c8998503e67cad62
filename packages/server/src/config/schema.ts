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
    est: Type.Object(
      {
        host: Type.String({
          default: '127.0.0.1',
          description: 'Address the EST enrollment server listens on.',
        }),
        port: Type.Integer({
          default: 8444,
          minimum: 0,
          maximum: 65535,
          description: 'HTTPS port of the EST server (RFC 7030, /.well-known/est/); 0 = any free port.',
        }),
        refusalsPerMinute: Type.Integer({
          default: 300,
          minimum: 0,
          description:
            'Refused enrollment and attestation requests allowed per source address and minute; beyond it the address gets 429 on simpleenroll, simplereenroll and the attestation endpoints until the minute is over (0 = no limit).',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    gateway: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1', description: 'Address the MQTT gateway listens on.' }),
        port: Type.Integer({
          default: 8883,
          minimum: 0,
          maximum: 65535,
          description: 'MQTT over TLS port (mqtts, client certificate required); 0 = any free port.',
        }),
        limits: Type.Object(
          {
            maxPacketBytes: Type.Integer({
              default: 131072,
              minimum: 1024,
              maximum: 268435455,
              description: 'Largest MQTT packet accepted from a device; a larger one closes its connection.',
            }),
            publishesPerSecond: Type.Integer({
              default: 100,
              minimum: 1,
              description: 'Publishes per device and second; one more closes the connection.',
            }),
            bytesPerSecond: Type.Integer({
              default: 1048576,
              minimum: 1024,
              description: 'Payload bytes per device and second; more closes the connection.',
            }),
            maxSubscriptions: Type.Integer({
              default: 50,
              minimum: 1,
              description: 'Subscriptions per session; further filters get SUBACK 0x80.',
            }),
            maxTopicLength: Type.Integer({
              default: 256,
              minimum: 16,
              maximum: 65535,
              description: 'Longest topic or filter, in characters.',
            }),
            maxRetainedPerDevice: Type.Integer({
              default: 100,
              minimum: 0,
              description:
                'Retained messages a device may keep on the broker; one more closes its connection.',
            }),
            maxTopicLevels: Type.Integer({
              default: 16,
              minimum: 2,
              maximum: 32,
              description: 'Most levels in a topic or filter.',
            }),
          },
          { additionalProperties: false, default: {} },
        ),
        insecurePlainPort: Type.Optional(
          Type.Integer({
            minimum: 0,
            maximum: 65535,
            description:
              'DEVELOPMENT ONLY: also accept plain MQTT over TCP on this port, without TLS or certificates (the client id is taken as the device id); logs a warning at start. Off unless set.',
          }),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    pki: Type.Object(
      {
        host: Type.String({
          default: '127.0.0.1',
          description: 'Address the PKI listener (CRLs, CA certificates, OCSP; plain HTTP) listens on.',
        }),
        port: Type.Integer({
          default: 8080,
          minimum: 0,
          maximum: 65535,
          description: 'HTTP port of the PKI listener; 0 = any free port.',
        }),
        publicUrl: Type.Optional(
          Type.String({
            pattern: '^http://[^/]+$',
            description:
              "Base URL written into certificates as CRL distribution point and OCSP URL, e.g. http://pki.example.com:8080 (default: the listener's own address).",
          }),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    updates: Type.Object(
      {
        host: Type.String({
          default: '127.0.0.1',
          description:
            'Address the updates listener (TUF metadata and release artifacts; plain HTTP, verified by the client) listens on.',
        }),
        port: Type.Integer({
          default: 8082,
          minimum: 0,
          maximum: 65535,
          description: 'HTTP port of the updates listener; 0 = any free port.',
        }),
        publicUrl: Type.Optional(
          Type.String({
            pattern: '^https?://[^/]+(/.*[^/])?$',
            description:
              "Base URL devices reach the updates listener at, e.g. http://updates.example.com (default: the listener's own address).",
          }),
        ),
        development: Type.Optional(
          Type.Boolean({
            description:
              'DEVELOPMENT ONLY: create the release repository with threshold-1 root and targets keys kept by the server, so releases publish at once. Default: on for the embedded defaults (SQLite and the file key store), off otherwise.',
          }),
        ),
        maxArtifactBytes: Type.Integer({
          default: 1073741824,
          minimum: 1,
          description: 'Largest release artifact accepted by the API, in bytes.',
        }),
        artifactCacheBytes: Type.Integer({
          default: 67108864,
          minimum: 0,
          description:
            'Memory for serving the artifacts being downloaded (a rollout fetches the same images again and again), in bytes; an artifact above a quarter of it is streamed from the store. 0 turns it off.',
        }),
        rootExpiry: Type.String({
          default: '365d',
          pattern: '^\\d+[smhdw]$',
          description: 'Lifetime of root metadata.',
        }),
        targetsExpiry: Type.String({
          default: '90d',
          pattern: '^\\d+[smhdw]$',
          description: 'Lifetime of top-level targets metadata.',
        }),
        delegatedExpiry: Type.String({
          default: '90d',
          pattern: '^\\d+[smhdw]$',
          description: 'Lifetime of delegated targets metadata.',
        }),
        snapshotExpiry: Type.String({
          default: '7d',
          pattern: '^\\d+[smhdw]$',
          description: 'Lifetime of snapshot metadata (re-signed automatically at half of it).',
        }),
        timestampExpiry: Type.String({
          default: '1d',
          pattern: '^\\d+[smhdw]$',
          description: 'Lifetime of timestamp metadata (re-signed automatically at half of it).',
        }),
        deltas: Type.Object(
          {
            enabled: Type.Boolean({
              default: true,
              description:
                'Generate binary deltas (xdelta3) from earlier releases of the same model and kind when a release is created; devices running one of those download the patch instead of the image.',
            }),
            fromReleases: Type.Integer({
              default: 3,
              minimum: 1,
              maximum: 8,
              description: 'How many of the most recent earlier releases get a delta to a new release.',
            }),
            xdelta3: Type.String({
              default: 'xdelta3',
              minLength: 1,
              description:
                'The xdelta3 program that encodes deltas (Debian package xdelta3); without it releases publish without deltas.',
            }),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    ca: Type.Object(
      {
        organization: Type.String({
          default: 'Rampart',
          minLength: 1,
          maxLength: 64,
          description: 'Organization name in the CA certificates (used when the hierarchy is created).',
        }),
        keyAlgorithm: StringEnum(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072'], {
          default: 'ec-p256',
          description: 'Key algorithm of the CA keys (used when the hierarchy is created).',
        }),
        deviceCertificateHours: Type.Integer({
          default: 24,
          minimum: 1,
          maximum: 24 * 398,
          description:
            'Validity of operational device certificates issued by the shipped enrollment policies.',
        }),
        supersedeOnRenewal: Type.Boolean({
          default: true,
          description: "Revoke a device's previous certificate (reason superseded) when it renews.",
        }),
        crlValidityHours: Type.Integer({
          default: 24,
          minimum: 1,
          maximum: 24 * 31,
          description:
            'nextUpdate of each CRL; CRLs are re-signed on every revocation and at half this time.',
        }),
        ocspValidityMinutes: Type.Integer({
          default: 60,
          minimum: 1,
          maximum: 7 * 24 * 60,
          description: 'nextUpdate of OCSP answers; pre-signed answers are refreshed at half this time.',
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
        backend: StringEnum(['file', 'pkcs11'], {
          default: 'file',
          description:
            'Where platform keys live: "file" (encrypted files in <dataDir>/keys) or "pkcs11" (a PKCS#11 token: an HSM or SoftHSM2).',
        }),
        passphraseFile: Type.Optional(
          Type.String({
            description:
              'File backend: file holding the passphrase that encrypts platform keys at rest. RAMPART_KEYSTORE_PASSPHRASE takes precedence; without either, one is generated into the data directory.',
          }),
        ),
        pkcs11: Type.Object(
          {
            module: Type.String({
              default: '/usr/lib/softhsm/libsofthsm2.so',
              minLength: 1,
              description: 'PKCS#11 backend: path of the PKCS#11 module (shared library) of the HSM.',
            }),
            tokenLabel: Type.String({
              default: 'rampart',
              minLength: 1,
              maxLength: 32,
              description:
                'PKCS#11 backend: label of the token that holds the platform keys (at most 32 characters).',
            }),
            pinFile: Type.Optional(
              Type.String({
                description:
                  "PKCS#11 backend: file holding the token's user PIN. RAMPART_KEYSTORE_PIN takes precedence; one of them is required.",
              }),
            ),
          },
          { additionalProperties: false, default: {} },
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

/**
 * `RAMPART_*` environment variables that are not settings: how the CLI reaches a server, the config
 * file, and the key store's secrets (read where they are used, never stored in the configuration).
 */
export const CLIENT_ENV = [
  'RAMPART_URL',
  'RAMPART_TOKEN',
  'RAMPART_CA',
  'RAMPART_CONFIG',
  'RAMPART_KEYSTORE_PASSPHRASE',
  'RAMPART_KEYSTORE_PIN',
];
