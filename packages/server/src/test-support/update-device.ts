import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { createLogger } from '@rampart/shared/logging';
import type { TestPlatform } from './platform.js';
// The device side is the real agent code, talking to the real platform over mutual TLS.
import { EstClient } from '../../../agent/src/est/client.js';
import { enrollDevice } from '../../../agent/src/identity/enroll.js';
import { mutualTlsIdentity } from '../../../agent/src/identity/current.js';
import { IdentityStore } from '../../../agent/src/identity/store.js';
import { SoftwareTrustAnchor } from '../../../agent/src/trust-anchor/software.js';
import type { TrustAnchor } from '../../../agent/src/trust-anchor/trust-anchor.js';
import { FileRollbackCounter } from '../../../agent/src/updates/counter.js';
import { Installer } from '../../../agent/src/updates/installer.js';
import { UpdateClient } from '../../../agent/src/updates/client.js';
import { AgentError } from '../../../agent/src/errors.js';

/** A device enrolled with the test platform, with the agent's installer and update client. */
export interface UpdateDevice {
  id: string;
  dataDir: string;
  store: IdentityStore;
  anchor: SoftwareTrustAnchor;
  installer: Installer;
  /** Every line the device's logger wrote (level info and above). */
  logs: string[];
  client(opts?: {
    /** The model the agent is configured with (default: the one it was registered as). */
    model?: string;
    now?: () => Date;
    /** Called on every mutual-TLS connection the client opens. */
    onConnect?: () => void;
    /** The anchor that unwraps content keys (default: the device's own). */
    anchor?: Pick<TrustAnchor, 'kind' | 'unwrapKey'>;
  }): UpdateClient;
}

/**
 * Register `id` as a device of `model`, enroll it through EST with a one-time token and a software
 * anchor in a fresh directory (pushed onto `dirs` for removal), and give it the agent's A/B
 * installer and update client against the platform's director.
 */
export async function enrollUpdateDevice(
  t: TestPlatform,
  o: { id: string; model: string; dirs: string[]; selfTest?: string },
): Promise<UpdateDevice> {
  const { id, model } = o;
  const registered = await t.call('POST', '/api/v1/devices', { body: { id, model } });
  if (registered.status !== 201)
    throw new Error(`registering ${id} failed: ${registered.status} ${JSON.stringify(registered.body)}`);
  const tok = await t.call('POST', '/api/v1/enrollment-tokens', { body: { deviceId: id, expiresIn: '1h' } });
  const estUrl = t.platform.listeners.find((l) => l.name === 'est')!.url;
  const dataDir = mkdtempSync(join(tmpdir(), 'rampart-update-device-'));
  o.dirs.push(dataDir);
  const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
  const store = new IdentityStore(dataDir);
  const rootPem = readFileSync(join(t.dataDir, 'ca.pem'), 'utf8');
  await enrollDevice({
    anchor,
    store,
    est: new EstClient({ url: estUrl, caPem: rootPem }),
    rootPem,
    deviceId: id,
    credentials: { deviceId: id, token: tok.body.token as string },
  });
  const logs: string[] = [];
  const log = createLogger({ level: 'info', destination: { write: (l: string) => void logs.push(l) } });
  const publicKey = (await anchor.publicKey())!;
  const installer = new Installer({
    dataDir,
    counter: new FileRollbackCounter(join(dataDir, 'slots', 'counters.json')),
    log,
    selfTest: { timeoutMs: 5000, ...(o.selfTest ? { command: o.selfTest } : {}) },
    maxBootAttempts: 3,
    commitTimeoutMs: 60_000,
    signer: async () => ({ deviceId: id, publicKey, sign: (d) => anchor.sign(d) }),
  });
  return {
    id,
    dataDir,
    store,
    anchor,
    installer,
    logs,
    client: (opts = {}) =>
      new UpdateClient({
        dataDir,
        estUrl,
        model: opts.model ?? model,
        installer,
        anchor: opts.anchor ?? anchor,
        log,
        download: { retryDelayMs: 10 },
        ...(opts.now ? { now: opts.now } : {}),
        identity: async () => {
          const m = await mutualTlsIdentity(store, anchor, Date.now(), 'the director');
          const tls = m.tls;
          return {
            deviceId: m.deviceId,
            certPem: store.clientCertificatePem(),
            tls: {
              via: tls.via,
              connect: (target) => {
                opts.onConnect?.();
                return tls.connect(target);
              },
            },
            caPem: m.rootPem,
          };
        },
      }),
  };
}

/**
 * Create a release through the API (`query`: name, version, model, …) and wait until it is
 * published: a release after an earlier one of the model is first `preparing` (deltas).
 */
export async function publishRelease(
  t: TestPlatform,
  query: string,
  body: Buffer,
): Promise<{ path: string; sha256: string }> {
  const r = await t.call('POST', `/api/v1/updates/releases?${query}`, {
    raw: body,
    contentType: 'application/octet-stream',
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  await t.platform.updates.preparationsSettled();
  return r.body as { path: string; sha256: string };
}

/**
 * Expect `check` to fail as the agent refuses an update (UPDATE_REFUSED, the message matching
 * `message`), logged by `device` as `update.refused`; the device's log is cleared afterwards.
 */
export async function expectUpdateRefused(
  check: Promise<unknown>,
  message: RegExp,
  device: UpdateDevice,
): Promise<void> {
  const err = await check.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  expect((err as AgentError).code).toBe('UPDATE_REFUSED');
  expect((err as AgentError).message).toMatch(message);
  expect(device.logs.some((l) => l.includes('"update.refused"'))).toBe(true);
  device.logs.length = 0;
}
