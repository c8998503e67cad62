#!/usr/bin/env node
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { MEASURED_COMPONENTS, type MeasuredComponent } from '@rampart/shared/attestation';
import { SharedError } from '@rampart/shared/errors';
import { createLogger } from '@rampart/shared/logging';
import { trustAnchorFor } from '../anchor.js';
import { checkMeasurements, measure, measurementStore } from '../attestation/measurements.js';
import { loadAgentConfig, redactedConfig, type AgentConfig } from '../config.js';
import {
  AgentDaemon,
  agentRunning,
  readAgentStatus,
  updateStartupCheck,
  type AgentStatus,
} from '../daemon.js';
import { AgentError } from '../errors.js';
import { EstClient, type ClientCertificate, type EnrollmentCredentials } from '../est/client.js';
import { NodeMutualTls } from '../tls/mutual-tls.js';
import type { CertificateInfo } from '../identity/certificate.js';
import { enrollDevice, renewDevice } from '../identity/enroll.js';
import { renewalTime } from '../identity/renewal.js';
import { IdentityStore } from '../identity/store.js';
import { readBirthIdentity } from '../provisioning/birth.js';
import type { AttestationResult } from '../provisioning/client.js';
import { provisionDevice } from '../provisioning/provision.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { installerFor } from '../updates/device.js';
import { updateClientFor, type UpdateCheck } from '../updates/client.js';
import type { Installer, UpdateResult } from '../updates/installer.js';
import { UPDATE_KINDS, runningSlot, type UpdateKind } from '../updates/state.js';

interface Globals {
  config?: string;
  dataDir?: string;
  json?: boolean;
}

interface IdentityFlags {
  estUrl?: string;
  ca?: string;
  deviceId?: string;
}

interface RunFlags extends IdentityFlags {
  mqttUrl?: string;
  keepalive?: string;
  backoffInitialMs?: string;
  backoffMaxMs?: string;
  queueMaxMessages?: string;
  queueMaxBytes?: string;
}

/** The one place that names the token variable: secrets are read from a file or the environment, never argv. */
const TOKEN_ENV = 'RAMPART_AGENT_ENROLLMENT_TOKEN';

function configOf(cmd: Command, flags: RunFlags = {}) {
  const o = cmd.optsWithGlobals() as Globals;
  const config = loadAgentConfig({
    file: o.config,
    flags: {
      dataDir: o.dataDir,
      deviceId: flags.deviceId,
      'est.url': flags.estUrl,
      'est.caFile': flags.ca,
      'mqtt.url': flags.mqttUrl,
      'mqtt.keepaliveSeconds': flags.keepalive,
      'mqtt.backoff.initialMs': flags.backoffInitialMs,
      'mqtt.backoff.maxMs': flags.backoffMaxMs,
      'queue.maxMessages': flags.queueMaxMessages,
      'queue.maxBytes': flags.queueMaxBytes,
    },
  }).config;
  return { opts: o, config };
}

/** Run `fn`, then let the anchor close what it holds open (a PKCS#11 session), whatever happened. */
async function withAnchor<T>(anchor: TrustAnchor, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    await anchor.close?.();
  }
}

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;
}

function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : human());
}

function certificateJson(info: CertificateInfo) {
  return {
    serial: info.serial,
    deviceId: info.deviceId,
    subject: info.subject,
    issuer: info.issuer,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    fingerprintSha256: info.fingerprintSha256,
    expired: Date.now() >= info.notAfter.getTime(),
  };
}

function untilText(ms: number): string {
  const abs = Math.abs(ms);
  const text =
    abs >= 2 * 86_400_000
      ? `${Math.round(abs / 86_400_000)} days`
      : abs >= 2 * 3_600_000
        ? `${Math.round(abs / 3_600_000)} h`
        : `${Math.max(1, Math.round(abs / 60_000))} min`;
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

function certificateText(info: CertificateInfo): string {
  const left = info.notAfter.getTime() - Date.now();
  return (
    `certificate serial: ${info.serial}\n` +
    `device id:          ${info.deviceId ?? '-'}\n` +
    `valid:              ${info.notBefore.toISOString()} to ${info.notAfter.toISOString()} ` +
    `(${left > 0 ? `expires ${untilText(left)}` : `EXPIRED ${untilText(left)}`})\n` +
    `issuer:             ${info.issuer}\n`
  );
}

function requireEstUrl(config: AgentConfig): string {
  if (!config.est.url)
    throw new AgentError(
      'USAGE',
      "no EST server given: pass --est-url https://host:port or set RAMPART_AGENT_EST_URL (est.url) to the platform's EST address",
    );
  return config.est.url;
}

function readPinnedRoot(file: string | undefined, what: string): string {
  if (!file)
    throw new AgentError(
      'USAGE',
      `no root CA pinned: pass --ca FILE (or set RAMPART_AGENT_EST_CA_FILE) to Rampart's root CA, the platform's <server-data-dir>/ca.pem, ${what}`,
    );
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new AgentError(
      'USAGE',
      `cannot read the root CA file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}

/** The one-time token: from --token-file (or `-` for standard input), else the environment. Never argv. */
function readToken(tokenFile: string | undefined): string {
  let raw: string | undefined;
  let source: string;
  if (tokenFile !== undefined) {
    source = tokenFile === '-' ? 'standard input' : tokenFile;
    try {
      raw = readFileSync(tokenFile === '-' ? 0 : tokenFile, 'utf8');
    } catch (err) {
      throw new AgentError(
        'USAGE',
        `cannot read the token file ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  } else {
    source = TOKEN_ENV;
    raw = process.env[TOKEN_ENV];
  }
  if (raw === undefined)
    throw new AgentError(
      'USAGE',
      `no enrollment token: put the one-time token in a file and pass --token-file FILE (or --token-file - to read standard input), or set ${TOKEN_ENV}; ` +
        'the operator creates one with: rampart enrollment token create --device ID',
    );
  const token = raw.trim();
  if (!token) throw new AgentError('USAGE', `the enrollment token from ${source} is empty`);
  return token;
}

async function keyFingerprint(config: AgentConfig, create: boolean) {
  const anchor = trustAnchorFor(config);
  const key = await withAnchor(anchor, () => (create ? anchor.ensureKey() : anchor.publicKey()));
  return {
    anchor,
    key,
    fingerprint: key
      ? createHash('sha256')
          .update(key.export({ type: 'spki', format: 'der' }))
          .digest('hex')
      : null,
  };
}

async function describeIdentity(cmd: Command, create: boolean) {
  const { opts, config } = configOf(cmd);
  const { anchor, key, fingerprint } = await keyFingerprint(config, create);
  const store = new IdentityStore(config.dataDir);
  const cert = key ? store.current() : null;
  const info = key
    ? {
        trustAnchor: anchor.kind,
        strength: anchor.strength,
        publicKeyFingerprint: fingerprint,
        publicKeyPem: key.export({ type: 'spki', format: 'pem' }) as string,
        certificate: cert ? certificateJson(cert.info) : null,
      }
    : null;
  if (opts.json) process.stdout.write(JSON.stringify(info, null, 2) + '\n');
  else if (!info) process.stdout.write('no identity key yet; run: rampart-agent identity init\n');
  else
    process.stdout.write(
      `trust anchor: ${info.trustAnchor} — ${info.strength}\nkey sha256: ${info.publicKeyFingerprint}\n` +
        (cert
          ? certificateText(cert.info)
          : 'certificate: none yet; enroll with: rampart-agent enroll --token-file FILE\n') +
        info.publicKeyPem,
    );
  if (!info) process.exitCode = 1;
}

function identityResult(
  config: AgentConfig,
  store: IdentityStore,
  info: CertificateInfo,
  kind: string,
  strength: string,
) {
  return {
    deviceId: info.deviceId,
    certificate: certificateJson(info),
    // The middle of the renewal window; `run` draws the exact time with jitter.
    renewsAround: renewalTime(info.notBefore, info.notAfter, () => 0.5, 0).toISOString(),
    trustAnchor: kind,
    strength,
    files: {
      certificate: store.certFile,
      chain: store.chainFile,
      rootCa: store.rootFile,
    },
    dataDir: config.dataDir,
  };
}

/**
 * The claim certificate and key of `--claim-cert`/`--claim-key`: a software key shared by the
 * devices of a batch (it is in their firmware image), presented over mutual TLS in-process.
 */
function readClaim(certFile: string, keyFile: string): ClientCertificate {
  let certPem: string;
  let key: KeyObject;
  try {
    certPem = readFileSync(certFile, 'utf8');
    new X509Certificate(certPem);
  } catch (err) {
    throw new AgentError(
      'USAGE',
      `cannot read the claim certificate ${certFile}: ${(err as Error).message}; give the PEM file rampart enrollment policy claim-certificate wrote (claim.crt)`,
    );
  }
  try {
    key = createPrivateKey(readFileSync(keyFile));
  } catch (err) {
    throw new AgentError(
      'USAGE',
      `cannot read the claim key ${keyFile}: ${(err as Error).message}; give the PEM private key of the claim certificate (claim.key)`,
    );
  }
  if (!new X509Certificate(certPem).checkPrivateKey(key))
    throw new AgentError(
      'USAGE',
      `the claim key ${keyFile} is not the key of the claim certificate ${certFile}`,
    );
  return { certPem, tls: new NodeMutualTls(key) };
}

async function enrollAction(
  o: IdentityFlags & {
    tokenFile?: string;
    token?: string;
    auth: 'basic' | 'bearer';
    claimCert?: string;
    claimKey?: string;
  },
  cmd: Command,
) {
  if (o.token !== undefined)
    throw new AgentError(
      'USAGE',
      `never pass the enrollment token on the command line (other users see it in the process list); use --token-file FILE or ${TOKEN_ENV}`,
    );
  const { opts, config } = configOf(cmd, o);
  if (!config.deviceId)
    throw new AgentError(
      'USAGE',
      'no device id: pass --device-id ID or set RAMPART_AGENT_DEVICE_ID (deviceId), the id the device has in the Rampart registry',
    );
  const url = requireEstUrl(config);
  const rootPem = readPinnedRoot(config.est.caFile, 'to trust for enrollment');
  const deviceId = config.deviceId;
  if (!o.claimCert !== !o.claimKey)
    throw new AgentError('USAGE', 'a claim certificate needs both --claim-cert FILE and --claim-key FILE');
  if (o.claimCert && o.tokenFile)
    throw new AgentError('USAGE', 'enroll with a claim certificate or with a token, not both');
  let credentials: EnrollmentCredentials;
  if (o.claimCert && o.claimKey) credentials = { claim: readClaim(o.claimCert, o.claimKey), deviceId };
  else {
    const token = readToken(o.tokenFile);
    credentials = o.auth === 'bearer' || deviceId.includes(':') ? { bearer: token } : { deviceId, token };
  }
  const anchor = trustAnchorFor(config);
  const store = new IdentityStore(config.dataDir);
  const est = new EstClient({
    url,
    caPem: rootPem,
    caFile: config.est.caFile,
    timeoutMs: config.est.timeoutMs,
  });
  const info = await withAnchor(anchor, () =>
    enrollDevice({ anchor, store, est, rootPem, deviceId, credentials }),
  );
  store.rememberServer(url, deviceId);
  const result = identityResult(config, store, info, anchor.kind, anchor.strength);
  print(
    opts.json,
    result,
    () =>
      `enrolled ${deviceId}\n${certificateText(info)}` +
      `renews around:      ${result.renewsAround} (keep it renewed: rampart-agent run)\n` +
      `trust anchor:       ${anchor.kind} — ${anchor.strength}\n` +
      `saved in:           ${store.dir}\n`,
  );
}

function attestationText(result: AttestationResult): string {
  return (
    `attestation:        ${result.status} (${result.anchor} trust anchor; result ${result.id})\n` +
    result.reasons.map((r) => `  - ${r}\n`).join('')
  );
}

async function provisionAction(o: IdentityFlags, cmd: Command) {
  const { opts, config } = configOf(cmd, o);
  const birth = readBirthIdentity(config.dataDir);
  if (!birth)
    throw new AgentError(
      'BIRTH_IDENTITY',
      `the device has no birth identity in ${config.dataDir}/identity/birth/ (certificate.pem, device.json and root-ca.pem, ` +
        'written by the factory station); a device without one enrolls with a one-time token: rampart-agent enroll',
    );
  const deviceId = birth.device.deviceId;
  if (config.deviceId && config.deviceId !== deviceId)
    throw new AgentError(
      'USAGE',
      `the factory provisioned this device as "${deviceId}" (${birth.files.device}), but the configuration says ` +
        `device id "${config.deviceId}"; remove deviceId (RAMPART_AGENT_DEVICE_ID, --device-id) or fix it`,
    );
  const store = new IdentityStore(config.dataDir);
  const url = config.est.url ?? store.server()?.estUrl ?? requireEstUrl(config);
  const anchor = trustAnchorFor(config);
  const est = new EstClient({
    url,
    caPem: birth.rootPem,
    caFile: birth.files.rootCa,
    timeoutMs: config.est.timeoutMs,
  });
  const outcome = await withAnchor(anchor, () => provisionDevice({ anchor, store, est, birth }));
  const info = outcome.certificate;
  if (info) store.rememberServer(url, deviceId);
  const identity = info ? identityResult(config, store, info, anchor.kind, anchor.strength) : null;
  const result = {
    deviceId,
    attestation: outcome.attestation,
    enrolled: identity !== null,
    certificate: identity?.certificate ?? null,
    renewsAround: identity?.renewsAround ?? null,
    trustAnchor: anchor.kind,
    strength: anchor.strength,
    factory: {
      serial: birth.device.serial,
      model: birth.device.model,
      batch: birth.device.batch,
      station: birth.device.station,
    },
    files: identity?.files ?? null,
    dataDir: config.dataDir,
    problem: outcome.refusal?.message ?? null,
  };
  print(opts.json, result, () =>
    info
      ? `provisioned ${deviceId}\n${attestationText(outcome.attestation)}${certificateText(info)}` +
        `renews around:      ${result.renewsAround} (keep it renewed: rampart-agent run)\n` +
        `trust anchor:       ${anchor.kind} — ${anchor.strength}\n` +
        `saved in:           ${store.dir}\n`
      : `not provisioned: ${deviceId}\n${attestationText(outcome.attestation)}`,
  );
  if (outcome.refusal) throw outcome.refusal;
}

/** The EST client for renewal: it trusts the root pinned at enrollment (identity/root-ca.pem). */
function renewalClient(config: AgentConfig, store: IdentityStore): EstClient {
  if (!store.current())
    throw new AgentError(
      'NOT_ENROLLED',
      `the device has no certificate in ${store.dir} yet; enroll it first: rampart-agent enroll --token-file FILE`,
    );
  // The EST server given now, else the one the device enrolled with.
  const url = config.est.url ?? store.server()?.estUrl ?? requireEstUrl(config);
  const stored = store.rootPem();
  const caFile = stored ? store.rootFile : config.est.caFile;
  const caPem = stored ?? readPinnedRoot(config.est.caFile, 'or enroll first');
  return new EstClient({ url, caPem, caFile, timeoutMs: config.est.timeoutMs });
}

async function renewAction(o: IdentityFlags, cmd: Command) {
  const { opts, config } = configOf(cmd, o);
  const anchor = trustAnchorFor(config);
  const store = new IdentityStore(config.dataDir);
  const before = store.current();
  const est = renewalClient(config, store);
  const info = await withAnchor(anchor, () =>
    renewDevice({ anchor, store, est, deviceId: config.deviceId ?? store.server()?.deviceId }),
  );
  const result = {
    ...identityResult(config, store, info, anchor.kind, anchor.strength),
    previousSerial: before?.info.serial ?? null,
  };
  print(
    opts.json,
    result,
    () =>
      `renewed ${info.deviceId ?? ''} (previous serial ${result.previousSerial ?? '-'})\n${certificateText(info)}` +
      `renews around:      ${result.renewsAround}\n`,
  );
}

async function runAction(o: RunFlags, cmd: Command) {
  const { opts, config } = configOf(cmd, o);
  const log = createLogger({
    name: 'rampart-agent',
    level: config.log.level,
    format: opts.json || !process.stderr.isTTY ? 'json' : 'pretty',
  });
  const anchor = trustAnchorFor(config);
  const store = new IdentityStore(config.dataDir);
  const est = renewalClient(config, store);
  const installer = installerFor(config, anchor, log);
  const booted = await updateStartupCheck(installer, log);
  const updates = config.updates.model
    ? updateClientFor({ config, anchor, store, installer, log })
    : undefined;
  if (!updates && config.updates.checkIntervalSeconds > 0)
    log.warn(
      'periodic update checks are off: set updates.model (the device model releases are checked against)',
    );
  // An update decided at this start (committed after a reboot, rolled back after a crash loop) is
  // reported like one decided while running, so that its deployment counts it; the daemon sends
  // its receipt, and again when the platform could not be reached.
  const daemon = AgentDaemon.start({
    config,
    log,
    anchor,
    store,
    est,
    ...(updates ? { updates, receipt: booted?.receipt ?? null } : {}),
  });
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, `${signal}: stopping (flushing the offline queue)`);
    void daemon.stop();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const outcome = await withAnchor(anchor, () => daemon.done);
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  if (outcome !== 'stopped') process.exitCode = 1;
}

function statusText(status: AgentStatus, running: boolean): string {
  const lines = [
    `device id:   ${status.deviceId}`,
    `agent:       ${running ? `running (pid ${status.pid}, version ${status.version})` : `not running (last seen ${status.updatedAt})`}`,
    `gateway:     ${status.gateway} — ${running ? status.state : 'stopped'} since ${status.since}`,
    `certificate: ${status.certificate ? `${status.certificate.serial}, valid until ${status.certificate.notAfter}` : '-'}`,
    `renewal:     ${status.nextRenewal ?? '-'}`,
    `queue:       ${status.queue.messages} messages, ${status.queue.bytes} bytes; ${status.queue.dropped} dropped since start`,
  ];
  if (status.lastFailure)
    lines.push(
      `last failure: ${status.lastFailure.message} (${status.lastFailure.kind}, ${status.lastFailure.at})`,
    );
  return lines.join('\n') + '\n';
}

function statusAction(_o: unknown, cmd: Command) {
  const { opts, config } = configOf(cmd);
  const status = readAgentStatus(config.dataDir);
  if (!status) {
    print(
      opts.json,
      null,
      () =>
        `rampart-agent has not run with data directory ${config.dataDir}; start it with: rampart-agent run\n`,
    );
    process.exitCode = 1;
    return;
  }
  const running = agentRunning(status);
  print(opts.json, { ...status, running }, () => statusText(status, running));
  if (!running) process.exitCode = 1;
}

const program = new Command('rampart-agent')
  .description('Rampart device agent: holds the device identity and talks to the platform')
  .option('--config <file>', 'agent config file (YAML or JSON); or RAMPART_AGENT_CONFIG')
  .option('--data-dir <dir>', 'agent state directory (default ./rampart-agent); or RAMPART_AGENT_DATA_DIR')
  .option('--json', 'machine-readable JSON output')
  .configureHelp({ showGlobalOptions: true })
  .addHelpText(
    'after',
    examples(
      'rampart-agent identity init --data-dir /var/lib/rampart-agent',
      'rampart-agent enroll --est-url https://rampart.example:8444 --ca ca.pem --device-id dw-0001 --token-file token.txt',
      'rampart-agent provision --est-url https://rampart.example:8444',
      'rampart-agent run',
      'rampart-agent identity show --json',
    ),
  );

const estUrlOption = () =>
  new Option('--est-url <url>', "the platform's EST server, https://host:port; or RAMPART_AGENT_EST_URL");

const identity = program
  .command('identity')
  .description('The device identity: its key in the trust anchor and its certificate');
identity.addHelpText('after', examples('rampart-agent identity init', 'rampart-agent identity show'));
identity
  .command('init')
  .description(
    'Create the identity key inside the trust anchor (no-op when it exists) and show its fingerprint',
  )
  .addHelpText('after', examples('rampart-agent identity init'))
  .action((_o, cmd: Command) => describeIdentity(cmd, true));
identity
  .command('show')
  .description(
    'Show the trust anchor, the public key fingerprint and the current certificate (serial, validity, issuer); exit 1 when there is no key',
  )
  .addHelpText(
    'after',
    examples('rampart-agent identity show', 'rampart-agent identity show --json | jq .certificate.notAfter'),
  )
  .action((_o, cmd: Command) => describeIdentity(cmd, false));

program
  .command('enroll')
  .description(
    'Enroll the device over EST with a one-time token or a claim certificate: create the key if needed, get a certificate, check it and save it',
  )
  .addOption(estUrlOption())
  .option(
    '--ca <file>',
    "Rampart's root CA (PEM; the platform's <server-data-dir>/ca.pem), pinned from now on; or RAMPART_AGENT_EST_CA_FILE",
  )
  .option('--device-id <id>', "the device's id in the registry; or RAMPART_AGENT_DEVICE_ID")
  .option(
    '--token-file <file>',
    `file holding the one-time enrollment token (- for standard input); or ${TOKEN_ENV}`,
  )
  .addOption(
    new Option('--auth <method>', 'how the token is sent: HTTP Basic (user = device id) or a bearer token')
      .choices(['basic', 'bearer'])
      .default('basic'),
  )
  .addOption(new Option('--token <token>').hideHelp())
  .option(
    '--claim-cert <file>',
    "instead of a token: the batch's claim certificate (PEM), presented over mutual TLS; with --claim-key",
  )
  .option('--claim-key <file>', "the claim certificate's private key (PEM)")
  .addHelpText(
    'after',
    examples(
      'rampart-agent enroll --est-url https://rampart.example:8444 --ca ca.pem --device-id dw-0001 --token-file /run/token',
      'rampart-agent enroll --device-id dw-0001 --claim-cert /etc/rampart/claim.crt --claim-key /etc/rampart/claim.key',
      `${TOKEN_ENV}=$(cat token) rampart-agent enroll --device-id dw-0001 --json`,
      'rampart-agent enroll --device-id dw-0001 --token-file - < /media/usb/enrollment-token',
    ),
  )
  .action(enrollAction);

program
  .command('provision')
  .description(
    'Zero-touch provisioning: attest the device to the platform with the birth identity the factory left ' +
      'in <data-dir>/identity/birth/ (measured-boot evidence signed in the trust anchor, over a fresh nonce), ' +
      'then enroll with the attestation token it hands out',
  )
  .addOption(estUrlOption())
  .addHelpText(
    'after',
    examples(
      'rampart-agent provision --est-url https://rampart.example:8444',
      'rampart-agent provision --json | jq .attestation.status',
      'RAMPART_AGENT_TRUST_ANCHOR=tpm rampart-agent provision --data-dir /var/lib/rampart-agent',
    ) +
      '\nNo token and no --ca: the device id and the pinned root CA come from the factory files. Exit 1\n' +
      'when the verifier issues no token (the reasons say what it found), 3 when the platform cannot be\n' +
      'reached or is not trusted, 4 when it refuses the device.\n',
  )
  .action(provisionAction);

program
  .command('renew')
  .description(
    'Renew the device certificate now (EST simplereenroll over mutual TLS with the current certificate; same key; ' +
      'a provisioned device attests first and sends the attestation token)',
  )
  .addOption(estUrlOption())
  .addHelpText(
    'after',
    examples('rampart-agent renew', 'rampart-agent renew --json | jq -r .certificate.serial'),
  )
  .action(renewAction);

program
  .command('run')
  .description(
    'Run the agent: stay connected to the gateway (MQTT over mutual TLS, reconnecting with backoff), deliver queued messages, ' +
      'keep the shadow in step, answer commands (ping built in) and keep the certificate renewed; stops cleanly on SIGINT/SIGTERM',
  )
  .addOption(estUrlOption())
  .option(
    '--mqtt-url <url>',
    "the platform's gateway, mqtts://host:port (default: the EST host, port 8883); or RAMPART_AGENT_MQTT_URL",
  )
  .option('--keepalive <seconds>', 'MQTT keep-alive (default 60); or RAMPART_AGENT_MQTT_KEEPALIVE_SECONDS')
  .option(
    '--backoff-initial-ms <ms>',
    'longest wait before the first reconnection attempt (default 1000); or RAMPART_AGENT_MQTT_BACKOFF_INITIAL_MS',
  )
  .option(
    '--backoff-max-ms <ms>',
    'longest wait between reconnection attempts (default 120000); or RAMPART_AGENT_MQTT_BACKOFF_MAX_MS',
  )
  .option(
    '--queue-max-messages <n>',
    'messages the offline queue keeps before dropping the oldest (default 10000); or RAMPART_AGENT_QUEUE_MAX_MESSAGES',
  )
  .option(
    '--queue-max-bytes <n>',
    'bytes the offline queue keeps before dropping the oldest (default 16 MiB); or RAMPART_AGENT_QUEUE_MAX_BYTES',
  )
  .addHelpText(
    'after',
    examples(
      'rampart-agent run',
      'rampart-agent run --mqtt-url mqtts://rampart.example:8883 --json',
      'RAMPART_AGENT_EST_URL=https://rampart.example:8444 rampart-agent run --backoff-max-ms 300000',
      'rampart-agent run --queue-max-messages 50000 --queue-max-bytes 67108864',
    ),
  )
  .action(runAction);

program
  .command('status')
  .description(
    'Show what the running agent last reported: gateway connection state, certificate, next renewal, offline queue; exit 1 when it is not running',
  )
  .addHelpText('after', examples('rampart-agent status', 'rampart-agent status --json | jq .state'))
  .action(statusAction);

function updateLogger(opts: Globals, config: AgentConfig) {
  return createLogger({
    name: 'rampart-agent',
    level: config.log.level,
    format: opts.json || !process.stderr.isTTY ? 'json' : 'pretty',
  });
}

/** Run `fn` with the installer of the configuration; the anchor is closed afterwards. */
async function withInstaller<T>(
  cmd: Command,
  fn: (installer: Installer, opts: Globals) => Promise<T>,
): Promise<T> {
  const { opts, config } = configOf(cmd);
  const anchor = trustAnchorFor(config);
  const installer = installerFor(config, anchor, updateLogger(opts, config));
  return withAnchor(anchor, () => fn(installer, opts));
}

function updateResultText(r: UpdateResult): string {
  const head =
    r.outcome === 'committed'
      ? `committed version ${r.version} in slot ${r.slot}`
      : r.outcome === 'rolled-back'
        ? `ROLLED BACK version ${r.version} (${r.reason}); slot ${r.running} runs again`
        : r.outcome === 'rebooting'
          ? `rebooting into slot ${r.slot} (version ${r.version}); the self-test runs at the next start`
          : `no update pending; slot ${r.running} runs${r.version ? ` version ${r.version}` : ''}`;
  return `${head}\n${r.outcome === 'nothing-pending' ? '' : `  ${r.detail}\n`}${r.receipt ? `receipt: ${r.receipt}\n` : ''}`;
}

function printUpdateResult(opts: Globals, r: UpdateResult): void {
  print(opts.json, r, () => updateResultText(r));
  if (r.outcome === 'rolled-back') process.exitCode = 1;
}

function parseReleaseCounter(text: string): number {
  if (!/^[0-9]{1,15}$/.test(text))
    throw new AgentError('USAGE', `--release-counter must be a whole number ≥ 0 (got "${text}")`);
  return Number(text);
}

const update = program
  .command('update')
  .description(
    'Software updates on the device: install into the inactive A/B slot, self-test, commit or roll back (see docs/agent.md)',
  );
update.addHelpText(
  'after',
  examples(
    'rampart-agent update install app-1.4.0.tar --version 1.4.0 --release-counter 14',
    'rampart-agent update status',
    'rampart-agent update commit',
  ),
);
update
  .command('install')
  .description(
    'Install a verified artifact into the inactive slot, activate it on trial, restart, run the self-test, then commit ' +
      '(advancing the anti-rollback counter and signing a receipt) or roll back; exit 1 when rolled back',
  )
  .argument('<file>', 'the artifact (already verified: this command trusts the file it is given)')
  .requiredOption('--version <version>', 'the release version, e.g. 1.4.0')
  .requiredOption(
    '--release-counter <n>',
    "the release's anti-rollback counter: refused when below the device's counter for the kind",
  )
  .addOption(
    new Option(
      '--kind <kind>',
      'what the artifact is: application and configuration restart, os and firmware reboot',
    )
      .choices([...UPDATE_KINDS])
      .default('application'),
  )
  .option(
    '--sha256 <hex>',
    'the SHA-256 the artifact must have; refused before anything changes when it differs',
  )
  .option('--name <file-name>', 'the file name inside the slot (default: the artifact file name)')
  .addHelpText(
    'after',
    examples(
      'rampart-agent update install app-1.4.0.tar --version 1.4.0 --release-counter 14',
      'rampart-agent update install rootfs-2026.11.img --version 2026.11 --release-counter 7 --kind os --json',
      'rampart-agent update install app.bin --version 1.4.1 --release-counter 15 --sha256 3f2a…',
    ) +
      '\nExit codes: 0 committed (or rebooting into the new slot), 1 rolled back or failed,\n' +
      "2 invalid input, 4 refused (release counter below the device's, wrong SHA-256),\n" +
      '6 another update is still pending.\n',
  )
  .action(
    (
      file: string,
      o: { version: string; releaseCounter: string; kind: UpdateKind; sha256?: string; name?: string },
      cmd: Command,
    ) =>
      withInstaller(cmd, async (installer, opts) => {
        if (o.sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(o.sha256))
          throw new AgentError('USAGE', '--sha256 must be 64 hex digits');
        const result = await installer.install({
          file,
          version: o.version,
          kind: o.kind,
          releaseCounter: parseReleaseCounter(o.releaseCounter),
          sha256: o.sha256,
          name: o.name,
        });
        printUpdateResult(opts, result);
      }),
  );

update
  .command('check')
  .description(
    'Run one update cycle: ask the director what this device must install, check it against the release repository ' +
      '(path, length, hashes, model, hardware revision, release counter), download it chunk-verified — only a patch ' +
      'when the release offers a delta from the image this device runs, the full image otherwise or when the patch ' +
      'fails — install it and ' +
      'send the signed receipt. Exit 0 when nothing is to do or the release was installed and committed; 1 when it ' +
      'rolled back or the download failed; 3 when the platform cannot be reached; 4 when the update is refused ' +
      '(the repositories disagree, another model, a rollback, expired metadata) or the platform refuses the device',
  )
  .addHelpText(
    'after',
    examples(
      'rampart-agent update check',
      'rampart-agent update check --json | jq .outcome',
      "rampart-agent update check --json | jq '{transfer, downloadedBytes}'",
      'RAMPART_AGENT_UPDATES_MODEL=DW100 rampart-agent update check',
    ),
  )
  .action((_o, cmd: Command) => {
    const { opts, config } = configOf(cmd);
    const anchor = trustAnchorFor(config);
    const log = updateLogger(opts, config);
    const store = new IdentityStore(config.dataDir);
    const installer = installerFor(config, anchor, log);
    return withAnchor(anchor, async () => {
      const r: UpdateCheck = await updateClientFor({ config, anchor, store, installer, log }).check();
      print(opts.json, r, () =>
        r.result
          ? (r.transfer
              ? `downloaded ${r.downloadedBytes ?? 0} bytes: ${r.transfer === 'delta' ? 'a delta from the running image' : 'the full image'}\n`
              : '') +
            updateResultText(r.result) +
            (r.receiptSent ? 'receipt sent to the platform\n' : 'receipt NOT sent yet\n')
          : `${r.detail}\n`,
      );
      if (r.result?.outcome === 'rolled-back') process.exitCode = 1;
    });
  });

update
  .command('status')
  .description(
    'Show the A/B slots: which runs, which is pending (starts so far, deadline), what each holds, the last outcome and its receipt',
  )
  .addHelpText(
    'after',
    examples('rampart-agent update status', 'rampart-agent update status --json | jq .running'),
  )
  .action((_o, cmd: Command) =>
    withInstaller(cmd, async (installer, opts) => {
      const state = installer.state();
      const running = runningSlot(state);
      const result = {
        running,
        runningVersion: state.slots[running]?.version ?? null,
        active: state.active,
        pending: state.pending,
        slots: state.slots,
        installInterrupted: state.install,
        finishing: state.finishing,
        last: state.last,
        dir: installer.dir,
      };
      const slotLine = (slot: 'a' | 'b') => {
        const c = state.slots[slot];
        return `slot ${slot}: ${c ? `${c.version} (${c.kind}, release counter ${c.releaseCounter}, ${c.status})` : 'empty'}${slot === running ? '  <- runs' : ''}`;
      };
      print(
        opts.json,
        result,
        () =>
          [
            slotLine('a'),
            slotLine('b'),
            state.pending
              ? `pending: slot ${state.pending.slot}, started ${state.pending.bootAttempts} times, must be committed before ${state.pending.deadline}`
              : 'pending: none',
            ...(state.install
              ? [`interrupted install into slot ${state.install.slot}: abandoned at the next start`]
              : []),
            state.last
              ? `last: ${state.last.outcome}${state.last.reason ? ` (${state.last.reason})` : ''} of ${state.last.version} at ${state.last.at}${state.last.receipt ? `; receipt ${state.last.receipt}` : ''}`
              : 'last: -',
          ].join('\n') + '\n',
      );
    }),
  );

update
  .command('commit')
  .description(
    'Commit the pending slot now, without waiting for the self-test (the operator vouches for it); exit 5 when nothing is pending',
  )
  .addHelpText('after', examples('rampart-agent update commit', 'rampart-agent update commit --json'))
  .action((_o, cmd: Command) =>
    withInstaller(cmd, async (installer, opts) => printUpdateResult(opts, await installer.commit())),
  );

update
  .command('rollback')
  .description('Roll the pending slot back: the previous slot runs again; exit 5 when nothing is pending')
  .addHelpText('after', examples('rampart-agent update rollback', 'rampart-agent update rollback --json'))
  .action((_o, cmd: Command) =>
    withInstaller(cmd, async (installer, opts) => {
      const result = await installer.rollbackPending();
      print(opts.json, result, () => updateResultText(result));
    }),
  );

update
  .command('boot')
  .description(
    'The start-up check (rampart-agent run does it too): abandon an interrupted install, count a start of the pending ' +
      'slot, roll back on a crash loop or a passed deadline, else self-test and commit or roll back; call it early in boot',
  )
  .addHelpText(
    'after',
    examples('rampart-agent update boot', 'rampart-agent update boot --json | jq .outcome') +
      '\nExit 1 when it rolled back.\n',
  )
  .action((_o, cmd: Command) =>
    withInstaller(cmd, async (installer, opts) => printUpdateResult(opts, await installer.boot())),
  );

function measurementsOf(config: AgentConfig) {
  return measurementStore(config.dataDir, config.trustAnchor === 'tpm' ? config.tpm.tcti : null);
}

program
  .command('measure')
  .description(
    "Measured boot: extend the SHA-256 of a file into the component's PCR (TPM) or the software register, and log it",
  )
  .argument('<component>', `what is measured: ${MEASURED_COMPONENTS.join(', ')}`)
  .argument('<file>', 'the image, binary or configuration file to measure')
  .option('--description <text>', 'what it is, for the event log (default: the file name)')
  .addHelpText(
    'after',
    examples(
      'rampart-agent measure bootloader /boot/u-boot.bin',
      'rampart-agent measure os /boot/rootfs.img --description "rootfs 2026.11"',
      'rampart-agent measure application /opt/app/bin/app',
      'rampart-agent measure configuration /etc/app/config.yaml --json',
    ) +
      '\nCall it from the boot scripts, in boot order; each component has its own PCR (8–11), and the\n' +
      'event log in <data-dir>/measurements/ lets the platform replay them.\n',
  )
  .action(async (component: string, file: string, _o, cmd: Command) => {
    const { opts, config } = configOf(cmd);
    if (!(MEASURED_COMPONENTS as readonly string[]).includes(component))
      throw new AgentError(
        'USAGE',
        `component must be one of ${MEASURED_COMPONENTS.join(', ')} (got "${component}")`,
      );
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (err) {
      throw new AgentError('USAGE', `cannot read ${file}: ${(err as Error).message}`);
    }
    const { register, log } = measurementsOf(config);
    const event = await measure({
      register,
      log,
      component: component as MeasuredComponent,
      data,
      description: cmd.opts<{ description?: string }>().description ?? basename(file),
    });
    if (opts.json)
      process.stdout.write(JSON.stringify({ ...event, register: register.kind }, null, 2) + '\n');
    else
      process.stdout.write(
        `measured ${event.component} (${event.description}) into ${register.kind === 'tpm' ? 'TPM PCR' : 'software register'} ${event.pcr}: sha256 ${event.digest}\n`,
      );
  });

program
  .command('measurements')
  .description(
    'Show the measured-boot event log and check that it replays to the registers; exit 1 when it does not',
  )
  .addHelpText('after', examples('rampart-agent measurements', 'rampart-agent measurements --json | jq .ok'))
  .action(async (_o, cmd: Command) => {
    const { opts, config } = configOf(cmd);
    const { register, log } = measurementsOf(config);
    const check = await checkMeasurements(register, log);
    if (opts.json)
      process.stdout.write(JSON.stringify({ register: register.kind, ...check }, null, 2) + '\n');
    else {
      for (const e of check.log)
        process.stdout.write(
          `${String(e.seq).padStart(3)}  PCR ${e.pcr}  ${e.component.padEnd(13)} ${e.digest.slice(0, 16)}…  ${e.description}\n`,
        );
      for (const r of check.registers)
        process.stdout.write(
          `PCR ${r.pcr}: ${r.replayed === r.actual ? 'matches the log' : `DOES NOT match the log (log replays to ${r.replayed.slice(0, 16)}…, ${register.kind} holds ${r.actual.slice(0, 16)}…)`}\n`,
        );
      if (check.tornTail)
        process.stdout.write('the last line of the event log was cut short (a crash while logging)\n');
      process.stdout.write(
        check.ok
          ? `event log verified: ${check.events} measurements replay to the ${register.kind === 'tpm' ? 'TPM PCRs' : 'software register (weaker: a file)'}\n`
          : 'the event log does not replay to the registers: it was edited, lost entries, or something was measured without logging\n',
      );
    }
    if (!check.ok) process.exitCode = 1;
  });

program
  .command('config')
  .description('Show the configuration in effect')
  .addHelpText('after', examples('RAMPART_AGENT_DATA_DIR=/data rampart-agent config --json'))
  .action((_o, cmd: Command) => {
    const { config } = configOf(cmd);
    process.stdout.write(JSON.stringify(redactedConfig(config), null, 2) + '\n');
  });

/** Exit codes as the `rampart` CLI uses them: 1 failed, 2 usage, 3 unreachable, 4 refused, 5 not found, 6 conflict. */
function exitCodeFor(err: AgentError | SharedError): number {
  switch (err.code) {
    case 'CONFIG_INVALID':
    case 'CONFIG_FILE_UNREADABLE':
    case 'USAGE':
      return 2;
    case 'EST_UNREACHABLE':
    case 'EST_TIMEOUT':
    case 'EST_UNTRUSTED':
      return 3;
    case 'UPDATE_REFUSED':
      return 4;
    case 'UPDATE_NOT_PENDING':
      return 5;
    case 'UPDATE_CONFLICT':
      return 6;
    case 'EST_REFUSED':
      return err instanceof AgentError && err.status !== undefined && err.status !== 401 && err.status !== 403
        ? 1
        : 4;
    default:
      return err instanceof SharedError ? 2 : 1;
  }
}

program.exitOverride();
for (const c of [program, identity, update, ...program.commands, ...identity.commands, ...update.commands])
  c.exitOverride();
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  if (err instanceof SharedError || err instanceof AgentError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(exitCodeFor(err));
  }
  throw err;
}
