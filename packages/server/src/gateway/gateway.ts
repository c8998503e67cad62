import type { X509Certificate } from 'node:crypto';
import type { Logger } from '@rampart/shared/logging';
import type { PolicyAction } from '@rampart/shared/policy';
import { normalizeSerial } from '@rampart/shared/pki';
import type { FleetRegistry } from '../fleet/registry.js';
import type { IdentityService } from '../identity/service.js';
import type { Storage } from '../storage/index.js';
import { whenCommitted } from '../storage/committed.js';
import { deviceIdFromSan } from '../identity/x509.js';
import type { AuthenticationResult, ConnectAttempt, GatewayHooks, GatewaySession } from './broker.js';
import { compilePolicies, type CompiledPolicy, type DeviceContext } from './policy/index.js';
import type { PolicyStore } from './policies.js';
import type { ShadowService } from './shadows.js';
import { GatewayStats } from './stats.js';
import { shadowTopics, type ShadowDocument } from '@rampart/shared/shadow';
import { RampartError } from '../errors.js';

export interface GatewayEvents {
  /** A connection was refused or a message not authorized: a security event. */
  onRefusal?(event: {
    kind: 'connect' | PolicyAction;
    deviceId: string | null;
    reason: string;
    remoteAddress: string;
  }): void;
  onConnect?(session: GatewaySession): void;
  onDisconnect?(session: GatewaySession, reason: string): void;
  onTraffic?(direction: 'in' | 'out', bytes: number): void;
}

interface LiveSession extends GatewaySession {
  /** Replaced when policies change: the next message is decided by the new one. */
  policy: CompiledPolicy;
}

/**
 * The gateway's decisions, independent of the broker: who a connection is (the device id in its
 * certificate, checked against the live certificate and device state), what each session may do
 * (its compiled policy), and which live sessions must end when a certificate is revoked or a
 * device disabled, quarantined or deleted. The broker adapter asks through {@link GatewayHooks}
 * and is told to kick through `kick`.
 */
/** Devices whose contexts are read together when live sessions are re-authorized. */
const REAUTHORIZE_BATCH = 500;

export class Gateway implements GatewayHooks {
  private readonly bySession = new Map<string, LiveSession>();
  private readonly byDevice = new Map<string, Set<string>>();
  private readonly bySerial = new Map<string, Set<string>>();
  private kickSession: (sessionId: string, reason: string) => void = () => {};

  constructor(
    private readonly storage: Storage,
    identity: IdentityService,
    private readonly fleet: FleetRegistry,
    private readonly policies: PolicyStore,
    private readonly shadows: ShadowService,
    private readonly logger: Logger,
    private readonly events: GatewayEvents = {},
    readonly stats: GatewayStats = new GatewayStats(storage, logger),
  ) {
    // A policy created, changed, attached or detached re-authorizes every live session at once.
    policies.onChange(() => {
      this.reauthorize().catch((err: unknown) =>
        this.logger.error({ err }, 're-authorizing live sessions after a policy change failed'),
      );
    });
    // So does a registry change: a device's attributes, model or groups feed its policies.
    fleet.onChange((change) => {
      policies.forget();
      this.reauthorize('all' in change ? undefined : change.devices).catch((err: unknown) =>
        this.logger.error({ err }, 're-authorizing live sessions after a registry change failed'),
      );
    });
    // Revocation reaches live sessions at once, not at the next handshake.
    identity.onRevoked((list) => {
      for (const r of list)
        this.kickWhere(this.bySerial.get(r.serial), `certificate ${r.serial} revoked (${r.reason})`);
    });
    // Disabling, quarantining, decommissioning or deleting a device ends its sessions once the change is committed;
    // a quarantined device reconnects under the quarantine policy.
    fleet.devices.onStatusChange(async (_db, change) => {
      if (change.to === 'disabled' || change.to === 'quarantined' || change.to === 'decommissioned')
        whenCommitted(
          async () => {
            const row = await this.storage.db
              .selectFrom('devices')
              .select('status')
              .where('id', '=', change.deviceId)
              .executeTakeFirst();
            // Deleted (no row) counts as committed too.
            return !row || row.status === change.to;
          },
          () => this.kickWhere(this.byDevice.get(change.deviceId), `device ${change.to}`),
          (err) => this.logger.error({ err }, 'session follow-up failed'),
        );
    });
  }

  private publishMessage: (topic: string, payload: string) => Promise<void> = async () => {};

  /** The adapter's kick and publish functions (set once the broker is up). */
  bindBroker(broker: {
    kick(sessionId: string, reason: string): void;
    publish(topic: string, payload: string): Promise<void>;
  }): void {
    this.kickSession = (id, reason) => broker.kick(id, reason);
    this.publishMessage = (topic, payload) => broker.publish(topic, payload);
  }

  private readonly publishListeners: ((session: GatewaySession, topic: string, payload: Buffer) => void)[] =
    [];

  /** Told of every authorized publish from a device (commands use it for responses). */
  onDevicePublish(listener: (session: GatewaySession, topic: string, payload: Buffer) => void): void {
    this.publishListeners.push(listener);
  }

  delivered(session: GatewaySession, _topic: string, bytes: number): void {
    this.stats.count(session.deviceId, 'messages_out');
    this.stats.count(session.deviceId, 'bytes_out', bytes);
    this.events.onTraffic?.('out', bytes);
  }

  securityEvent(kind: string, deviceId: string | null, sourceAddress: string | null, reason: string): void {
    this.stats.event(kind, deviceId, sourceAddress, reason);
  }

  isConnected(deviceId: string): boolean {
    return this.byDevice.has(deviceId);
  }

  /** Publish on behalf of the platform. */
  publish(topic: string, payload: string): Promise<void> {
    return this.publishMessage(topic, payload);
  }

  /** Serve the device side of the shadow: `get` and `update` of the reported state. */
  published(session: GatewaySession, topic: string, payload: Buffer): void {
    this.stats.count(session.deviceId, 'messages_in');
    this.stats.count(session.deviceId, 'bytes_in', payload.length);
    this.events.onTraffic?.('in', payload.length);
    for (const l of this.publishListeners) l(session, topic, payload);
    const topics = shadowTopics(session.deviceId);
    if (topic !== topics.get && topic !== topics.update) return;
    void this.serveShadow(session, topic === topics.get ? 'get' : 'update', payload).catch((err: unknown) =>
      this.logger.error({ err, device: session.deviceId }, 'serving a shadow request failed'),
    );
  }

  private async serveShadow(session: GatewaySession, op: 'get' | 'update', payload: Buffer): Promise<void> {
    const topics = shadowTopics(session.deviceId);
    if (op === 'get') {
      const doc = await this.shadows.get(this.storage.db, session.deviceId);
      return this.publishMessage(topics.getAccepted, JSON.stringify(doc));
    }
    let request: {
      state?: { reported?: unknown; desired?: unknown };
      version?: unknown;
      clientToken?: unknown;
    };
    const reject = (code: number, message: string, clientToken?: unknown) =>
      this.publishMessage(
        topics.updateRejected,
        JSON.stringify({ code, message, ...(typeof clientToken === 'string' ? { clientToken } : {}) }),
      );
    try {
      request = JSON.parse(payload.toString('utf8')) as typeof request;
    } catch {
      return reject(400, 'the update is not JSON; send {"state": {"reported": {...}}, "version": N}');
    }
    const token = request?.clientToken;
    if (
      typeof request !== 'object' ||
      request === null ||
      typeof request.state !== 'object' ||
      request.state === null
    )
      return reject(400, 'the update needs a "state" object with "reported"', token);
    if (request.state.desired !== undefined)
      return reject(403, 'a device reports; the desired state is set by operators', token);
    if (
      request.version !== undefined &&
      (typeof request.version !== 'number' || !Number.isInteger(request.version))
    )
      return reject(400, '"version" must be an integer', token);
    try {
      const { after } = await this.storage.db
        .transaction()
        .execute((tx) =>
          this.shadows.update(
            tx,
            session.deviceId,
            'reported',
            request.state!.reported,
            request.version as number | undefined,
          ),
        );
      await this.publishMessage(
        topics.updateAccepted,
        JSON.stringify({
          state: { reported: request.state.reported },
          version: after.version,
          ...(typeof token === 'string' ? { clientToken: token } : {}),
        }),
      );
    } catch (err) {
      if (err instanceof RampartError) return reject(err.status, err.message, token);
      throw err;
    }
  }

  /** After the desired state changed (committed): tell a connected device what is left to do. */
  async desiredChanged(doc: ShadowDocument): Promise<void> {
    if (!Object.keys(doc.state.delta).length || !this.byDevice.has(doc.deviceId)) return;
    await this.publishMessage(
      shadowTopics(doc.deviceId).delta,
      JSON.stringify({ state: doc.state.delta, version: doc.version }),
    );
  }

  private kickWhere(ids: Set<string> | undefined, reason: string): void {
    for (const id of [...(ids ?? [])]) {
      const s = this.bySession.get(id);
      this.logger.info({ event: 'mqtt.session.closed', device: s?.deviceId, reason }, 'live session closed');
      this.kickSession(id, reason);
    }
  }

  /** Kick every live session of a device (used by policy changes and operators). */
  disconnectDevice(deviceId: string, reason: string): void {
    this.kickWhere(this.byDevice.get(deviceId), reason);
  }

  liveSessions(deviceId?: string): GatewaySession[] {
    const all = [...this.bySession.values()];
    return deviceId ? all.filter((s) => s.deviceId === deviceId) : all;
  }

  private refuse(
    attempt: ConnectAttempt,
    deviceId: string | null,
    reason: string,
    returnCode: 2 | 4 | 5,
  ): AuthenticationResult {
    this.logger.warn(
      {
        event: 'mqtt.connect.refused',
        device: deviceId,
        clientId: attempt.clientId,
        sourceAddress: attempt.remoteAddress,
        reason,
      },
      'MQTT connection refused',
    );
    this.events.onRefusal?.({ kind: 'connect', deviceId, reason, remoteAddress: attempt.remoteAddress });
    this.stats.event('connect.refused', deviceId, attempt.remoteAddress, reason);
    return { ok: false, reason, returnCode };
  }

  async authenticate(attempt: ConnectAttempt, sessionId: string): Promise<AuthenticationResult> {
    const cert = attempt.certificate;
    if (!cert) return this.connectWithoutCertificate(attempt, sessionId);
    const deviceId = deviceIdOf(cert);
    if (!deviceId) return this.refuse(attempt, null, 'the client certificate names no device', 5);
    this.stats.count(deviceId, 'connect_attempts');
    const serial = normalizeSerial(cert.serialNumber);
    const record = await this.storage.db
      .selectFrom('certificates')
      .select(['status', 'not_after', 'device_id', 'profile'])
      .where('serial', '=', serial)
      .executeTakeFirst();
    if (!record || record.profile !== 'device' || record.device_id !== deviceId)
      return this.refuse(
        attempt,
        deviceId,
        `certificate ${serial} is not a device certificate Rampart issued to ${deviceId}`,
        5,
      );
    if (record.status !== 'good')
      return this.refuse(attempt, deviceId, `certificate ${serial} is revoked`, 5);
    if (record.not_after <= new Date().toISOString())
      return this.refuse(attempt, deviceId, `certificate ${serial} has expired`, 5);
    return this.admit(attempt, sessionId, deviceId, serial);
  }

  /** The insecure development listener: the client id is taken as the device id, unverified. */
  private async connectWithoutCertificate(
    attempt: ConnectAttempt,
    sessionId: string,
  ): Promise<AuthenticationResult> {
    return this.admit(attempt, sessionId, attempt.clientId, null);
  }

  private async admit(
    attempt: ConnectAttempt,
    sessionId: string,
    deviceId: string,
    serial: string | null,
  ): Promise<AuthenticationResult> {
    const device = await this.deviceContext(deviceId);
    if (!device) return this.refuse(attempt, deviceId, `device ${deviceId} is not registered`, 5);
    if (device.status === 'disabled')
      return this.refuse(attempt, deviceId, `device ${deviceId} is disabled`, 5);
    if (device.status === 'pending')
      return this.refuse(
        attempt,
        deviceId,
        `device ${deviceId} is pending; it becomes active when it enrolls`,
        5,
      );
    const policy = compilePolicies(await this.policies.forDevice(device), device);
    const decision = policy.decide('connect', attempt.clientId);
    if (!decision.allowed)
      return this.refuse(attempt, deviceId, `client id "${attempt.clientId}" refused: ${decision.reason}`, 2);
    const session: LiveSession = {
      id: sessionId,
      deviceId,
      certificateSerial: serial,
      clientId: attempt.clientId,
      remoteAddress: attempt.remoteAddress,
      connectedAt: Date.now(),
      policy,
    };
    return { ok: true, session };
  }

  /**
   * Recompile the policy of the live sessions of `deviceIds` (all when omitted). A session whose
   * device is gone or disabled, or whose client id is no longer allowed, is closed; every other
   * session simply has its next publish, subscribe or delivery decided by the new policy
   * (deliveries are checked per message, so narrowed subscriptions stop receiving too). Devices
   * are read 500 at a time, sessions whose policies and device values did not change keep their
   * compiled policy, and the event loop gets a turn between batches.
   */
  async reauthorize(deviceIds?: readonly string[]): Promise<void> {
    const live = (deviceIds ?? [...this.byDevice.keys()]).filter((id) => this.byDevice.has(id));
    for (let i = 0; i < live.length; i += REAUTHORIZE_BATCH) {
      const batch = live.slice(i, i + REAUTHORIZE_BATCH);
      const contexts = await this.deviceContexts(batch);
      for (const deviceId of batch) {
        const device = contexts.get(deviceId);
        const policies = device ? await this.policies.forDevice(device) : [];
        for (const id of [...(this.byDevice.get(deviceId) ?? [])]) {
          const s = this.bySession.get(id);
          if (!s) continue;
          if (!device || device.status === 'disabled') {
            this.kickSession(s.id, 'device no longer enabled');
            continue;
          }
          if (s.policy.isCurrent(policies, device)) continue;
          s.policy = compilePolicies(policies, device);
          const connect = s.policy.decide('connect', s.clientId);
          if (!connect.allowed) this.kickSession(s.id, `client id no longer allowed: ${connect.reason}`);
        }
      }
      if (i + REAUTHORIZE_BATCH < live.length) await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * What the policy engine knows of a device (its registry entry and every group it is in: static
   * groups with their ancestors, and matching dynamic groups), or null.
   */
  async deviceContext(deviceId: string): Promise<DeviceContext | null> {
    return (await this.deviceContexts([deviceId])).get(deviceId) ?? null;
  }

  /** {@link deviceContext} for many devices; devices not in the registry are absent from the map. */
  async deviceContexts(deviceIds: readonly string[]): Promise<Map<string, DeviceContext>> {
    const out = new Map<string, DeviceContext>();
    for (let i = 0; i < deviceIds.length; i += REAUTHORIZE_BATCH)
      await this.readContexts(deviceIds.slice(i, i + REAUTHORIZE_BATCH), out);
    return out;
  }

  private async readContexts(deviceIds: readonly string[], out: Map<string, DeviceContext>): Promise<void> {
    const rows = await this.storage.db
      .selectFrom('devices')
      .select(['id', 'model_id', 'hardware_revision', 'attributes', 'status'])
      .where('id', 'in', deviceIds)
      .execute();
    if (rows.length === 0) return;
    const groups = await this.fleet.groupsOfMany(
      this.storage.db,
      rows.map((r) => r.id),
    );
    for (const row of rows) {
      const attributes = (
        typeof row.attributes === 'string' ? JSON.parse(row.attributes) : row.attributes
      ) as DeviceContext['attributes'];
      out.set(row.id, {
        id: row.id,
        model: row.model_id,
        hardwareRevision: row.hardware_revision,
        attributes: attributes ?? {},
        groups: groups.get(row.id) ?? [],
        status: row.status as DeviceContext['status'],
      });
    }
  }

  authorize(session: GatewaySession, action: Exclude<PolicyAction, 'connect'>, resource: string): boolean {
    const live = this.bySession.get(session.id) ?? (session as LiveSession);
    const decision = live.policy.decide(action, resource);
    if (!decision.allowed) {
      this.logger.info(
        {
          event: 'mqtt.authorization.denied',
          device: session.deviceId,
          action,
          resource,
          reason: decision.reason,
        },
        'MQTT action denied',
      );
      this.stats.count(session.deviceId, 'authorization_failures');
      this.stats.event(
        'authorization.denied',
        session.deviceId,
        session.remoteAddress,
        `${action} ${resource}: ${decision.reason}`,
      );
      this.events.onRefusal?.({
        kind: action,
        deviceId: session.deviceId,
        reason: decision.reason,
        remoteAddress: session.remoteAddress,
      });
    }
    return decision.allowed;
  }

  connected(session: GatewaySession): void {
    const live = session as LiveSession;
    this.bySession.set(session.id, live);
    add(this.byDevice, session.deviceId, session.id);
    if (session.certificateSerial) add(this.bySerial, session.certificateSerial, session.id);
    this.logger.info(
      {
        event: 'mqtt.connect',
        device: session.deviceId,
        serial: session.certificateSerial,
        sourceAddress: session.remoteAddress,
      },
      'device connected',
    );
    this.events.onConnect?.(session);
    this.stats.connected(session.deviceId, session.remoteAddress);
    // A revocation that landed between authentication and now must still take effect.
    if (session.certificateSerial) void this.recheck(session);
  }

  private async recheck(session: GatewaySession): Promise<void> {
    const row = await this.storage.db
      .selectFrom('certificates')
      .select('status')
      .where('serial', '=', session.certificateSerial!)
      .executeTakeFirst();
    if (row?.status !== 'good') this.kickSession(session.id, 'certificate revoked');
  }

  disconnected(session: GatewaySession, reason: string): void {
    if (!this.bySession.delete(session.id)) return;
    remove(this.byDevice, session.deviceId, session.id);
    if (session.certificateSerial) remove(this.bySerial, session.certificateSerial, session.id);
    this.logger.info({ event: 'mqtt.disconnect', device: session.deviceId, reason }, 'device disconnected');
    this.events.onDisconnect?.(session, reason);
    this.stats.disconnected(session.deviceId, reason);
  }
}

function add(map: Map<string, Set<string>>, key: string, value: string): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(value);
}

function remove(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key);
  set?.delete(value);
  if (set?.size === 0) map.delete(key);
}

/** The device id of a certificate: its `urn:rampart:device:` SAN URI, else its CN. */
export function deviceIdOf(cert: X509Certificate): string | null {
  return deviceIdFromSan(cert) ?? /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1] ?? null;
}
