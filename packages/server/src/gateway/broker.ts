import type { X509Certificate } from 'node:crypto';
import type { PolicyAction } from '@rampart/shared/policy';

/**
 * The broker adapter: what the gateway needs from an MQTT broker, and what the broker asks the
 * gateway. The embedded broker (aedes) implements it now; an external broker (through its auth
 * plugin hooks and an admin API for kicks) can implement it later without touching the policy
 * engine or the session logic.
 */
export interface ConnectAttempt {
  /** The verified TLS client certificate; null on the insecure development listener. */
  certificate: X509Certificate | null;
  clientId: string;
  remoteAddress: string;
}

export interface GatewaySession {
  /** Broker-assigned handle, unique per connection. */
  readonly id: string;
  readonly deviceId: string;
  readonly certificateSerial: string | null;
  readonly clientId: string;
  readonly remoteAddress: string;
  readonly connectedAt: number;
}

export type AuthenticationResult =
  { ok: true; session: GatewaySession } | { ok: false; reason: string; returnCode: 2 | 4 | 5 };

/** What the broker calls. `authorize` is synchronous: it runs for every message. */
export interface GatewayHooks {
  authenticate(attempt: ConnectAttempt, sessionId: string): Promise<AuthenticationResult>;
  authorize(session: GatewaySession, action: Exclude<PolicyAction, 'connect'>, resource: string): boolean;
  connected(session: GatewaySession): void;
  disconnected(session: GatewaySession, reason: string): void;
  /** An authorized publish from a session has been accepted (the gateway serves its reserved topics). */
  published(session: GatewaySession, topic: string, payload: Buffer): void;
  /** A message was delivered to a session. */
  delivered(session: GatewaySession, topic: string, bytes: number): void;
  /** Something the broker refused before or outside authorization (TLS, framing, limits). */
  securityEvent(kind: string, deviceId: string | null, sourceAddress: string | null, reason: string): void;
}

export interface BrokerListener {
  name: string;
  url: string;
}

export interface BrokerAdapter {
  readonly kind: string;
  /** Start listening; returns the listeners (mqtts, and the insecure one when enabled). */
  listen(): Promise<BrokerListener[]>;
  /** Close a live session now. */
  kick(sessionId: string, reason: string): void;
  /** Publish on behalf of the platform (QoS 1; deliveries are still authorized per subscriber). */
  publish(topic: string, payload: Buffer | string): Promise<void>;
  /** Live sessions the broker holds. */
  sessionCount(): number;
  /** Replace the TLS material (server certificate renewal, CA rollover). */
  updateTls(tls: { key: string; cert: string; ca: string[] }): void;
  close(): Promise<void>;
}
