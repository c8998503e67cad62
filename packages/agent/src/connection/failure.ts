import { AgentError } from '../errors.js';

/** Why a connection attempt failed or a connection ended. */
export type ConnectFailureKind =
  /** CONNACK 5: the certificate is revoked, expired or unknown, or the device is not active. */
  | 'not-authorized'
  /** CONNACK 2: the client id is not the certificate's device id. */
  | 'identifier-rejected'
  /** CONNACK 4. */
  | 'bad-credentials'
  /** CONNACK 3. */
  | 'server-unavailable'
  /** CONNACK 1: the gateway does not speak MQTT 3.1.1. */
  | 'protocol-rejected'
  /** The gateway's certificate does not chain to the pinned root or does not name the host. */
  | 'untrusted-gateway'
  /** The gateway ended the TLS handshake: it did not accept the device certificate. */
  | 'certificate-refused'
  /** The device's own credentials could not be loaded (not enrolled, expired, key unavailable). */
  | 'credentials'
  /** The gateway could not be reached (DNS, refused, unreachable, reset before MQTT). */
  | 'unreachable'
  /** No CONNACK, or no keep-alive answer, in time. */
  | 'timeout'
  /** An established connection ended (the gateway closed it, restarted, or the network dropped). */
  | 'lost';

export interface ConnectFailure {
  kind: ConnectFailureKind;
  /** The gateway (or the device's own checks) refused: retrying alone will not help, someone must act. */
  refused: boolean;
  message: string;
  /** What to do next, when there is something to do. */
  advice: string | null;
}

const UNTRUSTED_SERVER_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

const UNTRUSTED_GATEWAY_ADVICE =
  "its certificate must chain to Rampart's root CA pinned at enrollment (identity/root-ca.pem) and name the host in mqtt.url; " +
  'check mqtt.url, and that the device was enrolled with the platform it connects to';

const CERTIFICATE_REFUSED_ADVICE =
  "the gateway accepts only certificates from Rampart's CAs; check the device certificate (rampart-agent identity show) and that mqtt.url is the platform that issued it";

/**
 * An AgentError: the device's own credentials could not be loaded, or the OpenSSL tunnel (a key in
 * a TPM or a PKCS#11 token) reported how the TLS connection failed.
 */
function describeAgentError(
  err: AgentError,
  context: { url: string; deviceId: string; wasOnline: boolean },
): ConnectFailure {
  switch (err.code) {
    case 'TLS_UNTRUSTED':
      return {
        kind: 'untrusted-gateway',
        refused: true,
        message: `the gateway at ${context.url}: ${err.message}`,
        advice: UNTRUSTED_GATEWAY_ADVICE,
      };
    case 'TLS_REFUSED':
      return {
        kind: 'certificate-refused',
        refused: true,
        message: `the gateway at ${context.url}: ${err.message}`,
        advice: CERTIFICATE_REFUSED_ADVICE,
      };
    case 'TLS_UNREACHABLE':
      return context.wasOnline
        ? {
            kind: 'lost',
            refused: false,
            message: `the connection to the gateway at ${context.url} was lost: ${err.message}`,
            advice: null,
          }
        : {
            kind: 'unreachable',
            refused: false,
            message: `the gateway at ${context.url}: ${err.message}`,
            advice: 'check mqtt.url and the network',
          };
    default:
      return { kind: 'credentials', refused: true, message: err.message, advice: null };
  }
}

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'ECONNRESET',
  'EPIPE',
]);

/**
 * What went wrong with a connection, in words an operator can act on. `err` is what the MQTT
 * client or the TLS stack reported (null when the connection simply closed); `wasOnline` says
 * whether the gateway had accepted the connection before it ended.
 */
export function describeConnectFailure(
  err: unknown,
  context: { url: string; deviceId: string; wasOnline: boolean },
): ConnectFailure {
  const { url, deviceId } = context;
  if (err instanceof AgentError) return describeAgentError(err, context);
  const e = (err ?? {}) as { code?: unknown; message?: unknown };
  const message = typeof e.message === 'string' ? e.message : err === null ? '' : String(err);
  const code = e.code;
  if (typeof code === 'number') {
    switch (code) {
      case 5:
        return {
          kind: 'not-authorized',
          refused: true,
          message: `the gateway refused the connection (CONNACK 5 not authorized) for ${deviceId}`,
          advice:
            'the certificate is revoked, expired or unknown to the platform, or the device is disabled, pending or not registered; ' +
            `ask the operator to check: rampart device show ${deviceId}. A revoked certificate means enrolling again with a new token ` +
            `(rampart enrollment token create --device ${deviceId}, then rampart-agent enroll)`,
        };
      case 2:
        return {
          kind: 'identifier-rejected',
          refused: true,
          message: `the gateway rejected the client id "${deviceId}" (CONNACK 2 identifier rejected)`,
          advice:
            'the client id must be the device id in the certificate; check deviceId (RAMPART_AGENT_DEVICE_ID) against: rampart-agent identity show',
        };
      case 4:
        return {
          kind: 'bad-credentials',
          refused: true,
          message: 'the gateway refused the credentials (CONNACK 4 bad user name or password)',
          advice:
            'Rampart authenticates devices by certificate only; check that mqtt.url points at the Rampart gateway',
        };
      case 3:
        return {
          kind: 'server-unavailable',
          refused: false,
          message: 'the gateway is unavailable (CONNACK 3)',
          advice: null,
        };
      case 1:
        return {
          kind: 'protocol-rejected',
          refused: true,
          message: 'the gateway does not accept MQTT 3.1.1 (CONNACK 1)',
          advice: 'check that mqtt.url points at the Rampart gateway',
        };
      default:
        return {
          kind: 'not-authorized',
          refused: true,
          message: `the gateway refused the connection (CONNACK ${code}): ${message}`,
          advice: null,
        };
    }
  }
  if (typeof code === 'string') {
    if (UNTRUSTED_SERVER_CODES.has(code))
      return {
        kind: 'untrusted-gateway',
        refused: true,
        message: `the gateway at ${url} is not trusted: ${message} (${code})`,
        advice: UNTRUSTED_GATEWAY_ADVICE,
      };
    if (/ALERT/.test(code) || /alert/i.test(message))
      return {
        kind: 'certificate-refused',
        refused: true,
        message: `the gateway ended the TLS handshake: ${message} (${code})`,
        advice: CERTIFICATE_REFUSED_ADVICE,
      };
    if (UNREACHABLE_CODES.has(code))
      return {
        kind: context.wasOnline ? 'lost' : 'unreachable',
        refused: false,
        message: context.wasOnline
          ? `the connection to ${url} was lost: ${message || code}`
          : `cannot reach the gateway at ${url}: ${message || code}`,
        advice: context.wasOnline ? null : 'check mqtt.url and the network',
      };
  }
  if (/connack timeout/i.test(message))
    return {
      kind: 'timeout',
      refused: false,
      message: `the gateway at ${url} did not answer CONNECT in time`,
      advice: null,
    };
  if (/keepalive timeout/i.test(message))
    return {
      kind: 'timeout',
      refused: false,
      message: `the gateway at ${url} stopped answering keep-alive pings`,
      advice: null,
    };
  if (context.wasOnline)
    return {
      kind: 'lost',
      refused: false,
      message: `the gateway closed the connection${message ? `: ${message}` : ''}`,
      advice: null,
    };
  return {
    kind: 'unreachable',
    refused: false,
    message: `the connection to ${url} closed before the gateway answered${message ? `: ${message}` : ''}`,
    advice:
      'if this repeats, the gateway may be refusing the device certificate in the TLS handshake; check mqtt.url and rampart-agent identity show',
  };
}
