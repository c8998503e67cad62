import { resolve } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { describeOrigin, envNameFor, loadConfig, type LoadedConfig } from '@rampart/shared/config';
import { StringEnum } from '@rampart/shared/schema';
import { DEVICE_ID_PATTERN } from '@rampart/shared/pki';
import { AgentError } from './errors.js';

/** Environment variables the agent reads that are not settings (secrets never go in a config file). */
export const AGENT_SECRET_ENV = ['RAMPART_AGENT_ENROLLMENT_TOKEN'] as const;

/** Settings whose values are secret: `rampart-agent config` shows them as this text, never the value. */
export const REDACTED = '(redacted)';

/** Settings of the device agent: `RAMPART_AGENT_*` environment variables, a config file, or flags. */
export const AgentConfigSchema = Type.Object(
  {
    dataDir: Type.String({
      default: './rampart-agent',
      minLength: 1,
      description: 'Where the agent keeps its key (software trust anchor) and state.',
    }),
    trustAnchor: StringEnum(['software', 'tpm', 'pkcs11'], {
      default: 'software',
      description:
        'Where the device key lives. `tpm`: created in a TPM 2.0 and never leaving it (through tpm2-tools); `pkcs11`: created in a PKCS#11 token (secure element, smart card, HSM) and never leaving it; `software`: a key file (weaker).',
    }),
    tpm: Type.Object(
      {
        tcti: Type.String({
          default: 'device:/dev/tpmrm0',
          minLength: 1,
          description:
            'The TSS2 TCTI tpm2-tools talk to the TPM through: `device:/dev/tpmrm0` (the kernel resource manager), `tabrmd` (tpm2-abrmd), or `swtpm:host=H,port=P` for a software TPM. `renew` and `run` (mutual TLS signed in the TPM) need a resource manager: not `device:/dev/tpm0` or a swtpm reached directly.',
        }),
        parentHandle: Type.Integer({
          default: 0x81000001,
          minimum: 0x81000000,
          maximum: 0x81ffffff,
          description:
            'Persistent handle of the storage primary key the identity key is created under; created when missing.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    pkcs11: Type.Object(
      {
        module: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              "PKCS#11 trust anchor: path of the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so.",
          }),
        ),
        tokenLabel: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: 32,
            description: 'PKCS#11 trust anchor: label of the token that holds the identity key.',
          }),
        ),
        // Any type here, checked in loadAgentConfig: the loader quotes rejected values in its
        // messages, and a PIN must never be shown.
        pin: Type.Optional(
          Type.Unsafe<string>({
            description:
              "PKCS#11 trust anchor: the token's user PIN. Never shown by `rampart-agent config`; keep it in the environment or a config file only the agent can read.",
          }),
        ),
        keyLabel: Type.String({
          default: 'rampart-device',
          minLength: 1,
          description: 'PKCS#11 trust anchor: CKA_LABEL of the identity key pair; created when missing.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
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
    mqtt: Type.Object(
      {
        url: Type.Optional(
          Type.String({
            pattern: '^mqtts://[^\\s/?#]+/?$',
            description:
              "The platform's device gateway, mqtts://host:port (MQTT over TLS). Default: the EST server's host, port 8883.",
          }),
        ),
        keepaliveSeconds: Type.Integer({
          default: 60,
          minimum: 5,
          maximum: 65_535,
          description:
            'MQTT keep-alive, in seconds: the agent pings the gateway after this long without traffic; the gateway drops a connection silent for 1.5 times as long.',
        }),
        connectTimeoutMs: Type.Integer({
          default: 30_000,
          minimum: 1000,
          description:
            'Time limit for the TLS handshake and the CONNACK of one connection attempt, in milliseconds.',
        }),
        backoff: Type.Object(
          {
            initialMs: Type.Integer({
              default: 1000,
              minimum: 1,
              description: 'Reconnection: the first retry waits a random time below this, in milliseconds.',
            }),
            maxMs: Type.Integer({
              default: 120_000,
              minimum: 1,
              description:
                'Reconnection: no retry waits longer than this, in milliseconds (at least initialMs).',
            }),
            factor: Type.Number({
              default: 2,
              minimum: 1,
              maximum: 10,
              description: 'Reconnection: each failed attempt in a row multiplies the longest wait by this.',
            }),
            resetAfterMs: Type.Integer({
              default: 60_000,
              minimum: 0,
              description:
                'Reconnection: a connection that stays up this long starts the backoff afresh, in milliseconds.',
            }),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    queue: Type.Object(
      {
        maxMessages: Type.Integer({
          default: 10_000,
          minimum: 1,
          maximum: 10_000_000,
          description:
            'Offline queue: messages kept while they cannot be delivered; beyond this the oldest are dropped.',
        }),
        maxBytes: Type.Integer({
          default: 16 * 1024 * 1024,
          minimum: 1024,
          maximum: 1024 * 1024 * 1024,
          description:
            'Offline queue: bytes (topics and payloads) kept while they cannot be delivered; beyond this the oldest are dropped.',
        }),
        syncIntervalMs: Type.Integer({
          default: 200,
          minimum: 0,
          maximum: 60_000,
          description:
            'Offline queue: new messages reach the disk (fsync) at most this long after they are queued, in milliseconds.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    updates: Type.Object(
      {
        selfTest: Type.Object(
          {
            command: Type.Optional(
              Type.String({
                minLength: 1,
                description:
                  'Updates: the self-test a newly installed slot must pass before it is committed, run with /bin/sh -c (RAMPART_UPDATE_* variables name the slot and release); exit 0 passes. Without one, starting is the test.',
              }),
            ),
            timeoutSeconds: Type.Integer({
              default: 60,
              minimum: 1,
              maximum: 3600,
              description: 'Updates: a self-test still running after this many seconds is killed and fails.',
            }),
          },
          { additionalProperties: false, default: {} },
        ),
        maxBootAttempts: Type.Integer({
          default: 3,
          minimum: 1,
          maximum: 100,
          description:
            'Updates: starts of a pending slot allowed without a commit; one more is a crash loop and rolls back.',
        }),
        commitTimeoutSeconds: Type.Integer({
          default: 900,
          minimum: 1,
          description:
            'Updates: a pending slot not committed this many seconds after it was activated is rolled back at the next check.',
        }),
        hooksDir: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'Updates: directory of executable hooks (install, activate, restart, reboot, booted, commit, rollback) called at each step, for real bootloaders (U-Boot, GRUB); see docs/agent.md.',
          }),
        ),
        model: Type.Optional(
          Type.String({
            pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$',
            description:
              "Updates: the device's model as releases name it (target custom `models`); a release for another model is refused. Needed for `update check` and periodic checks.",
          }),
        ),
        hardwareRevision: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: 64,
            description:
              "Updates: the device's hardware revision; a release limited to other revisions (or to any, when this is unset) is refused.",
          }),
        ),
        checkIntervalSeconds: Type.Integer({
          default: 3600,
          minimum: 0,
          maximum: 604_800,
          description:
            'Updates: `rampart-agent run` asks the director for an update this often (and once shortly after it starts); 0 turns periodic checks off. Needs updates.model.',
        }),
        tpmCounterIndex: Type.Integer({
          default: 0x01520000,
          minimum: 0x01000000,
          maximum: 0x01bffff0,
          description:
            'Updates, TPM trust anchor: first NV index of the anti-rollback counters (two indexes per artifact kind, eight in all).',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    log: Type.Object(
      {
        level: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
          default: 'info',
          description: 'Least severe level logged.',
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
  'mqtt.url': '--mqtt-url',
  'mqtt.keepaliveSeconds': '--keepalive',
  'mqtt.backoff.initialMs': '--backoff-initial-ms',
  'mqtt.backoff.maxMs': '--backoff-max-ms',
  'queue.maxMessages': '--queue-max-messages',
  'queue.maxBytes': '--queue-max-bytes',
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
  const { backoff } = loaded.config.mqtt;
  if (backoff.maxMs < backoff.initialMs)
    throw new AgentError(
      'CONFIG_INVALID',
      `invalid configuration:\n  mqtt.backoff.maxMs (${backoff.maxMs}) must be at least mqtt.backoff.initialMs (${backoff.initialMs}), ${describeOrigin(loaded.origins.get('mqtt.backoff.maxMs') ?? loaded.origins.get('mqtt.backoff.initialMs'))}`,
    );
  checkPkcs11(loaded);
  loaded.config.dataDir = resolve(loaded.config.dataDir);
  if (loaded.config.est.caFile) loaded.config.est.caFile = resolve(loaded.config.est.caFile);
  if (loaded.config.updates.hooksDir)
    loaded.config.updates.hooksDir = resolve(loaded.config.updates.hooksDir);
  return loaded;
}

/** The configuration as `rampart-agent config` shows it: secrets (the PKCS#11 PIN) replaced by `(redacted)`. */
export function redactedConfig(config: AgentConfig): AgentConfig {
  const copy = structuredClone(config);
  if (copy.pkcs11.pin !== undefined) copy.pkcs11.pin = REDACTED;
  return copy;
}

/**
 * The PIN is text (a YAML file turns `pin: 1234` into a number, which could also lose leading
 * zeros: it must be quoted), and `trustAnchor: pkcs11` needs the library, the token and the PIN.
 * Messages name the setting and where it came from, never the PIN.
 */
function checkPkcs11(loaded: LoadedConfig<AgentConfig>): void {
  const { config, origins } = loaded;
  const problems: string[] = [];
  const pin: unknown = config.pkcs11.pin;
  if (pin !== undefined && (typeof pin !== 'string' || pin === ''))
    problems.push(
      `pkcs11.pin must be non-empty text (a PIN of digits in a YAML file needs quotes: pin: "0000"), ${describeOrigin(origins.get('pkcs11.pin') ?? origins.get('pkcs11'))}`,
    );
  if (config.trustAnchor === 'pkcs11') {
    const missing = (['module', 'tokenLabel', 'pin'] as const).filter((k) => config.pkcs11[k] === undefined);
    for (const k of missing)
      problems.push(
        `pkcs11.${k} is required with trustAnchor pkcs11 (${describeOrigin(origins.get('trustAnchor'))}): set it in the config file or ${envNameFor(['pkcs11', k], 'RAMPART_AGENT_')}`,
      );
  }
  if (problems.length)
    throw new AgentError('CONFIG_INVALID', `invalid configuration:\n  ${problems.join('\n  ')}`);
}
