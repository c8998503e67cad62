/** The one error type of the device agent, with stable codes. */
export type AgentErrorCode =
  | 'CONFIG_INVALID'
  | 'USAGE'
  | 'TRUST_ANCHOR'
  | 'KEY_FILE_INSECURE'
  /** The EST server could not be reached (DNS, connection refused or reset). */
  | 'EST_UNREACHABLE'
  /** The EST server did not answer in time. */
  | 'EST_TIMEOUT'
  /** The EST server's TLS certificate does not chain to the pinned root or does not name the host. */
  | 'EST_UNTRUSTED'
  /** The EST server answered with an error status (`status` says which). */
  | 'EST_REFUSED'
  /** The EST server accepted the request but has not issued yet (202 + Retry-After). */
  | 'EST_PENDING'
  /** The EST server's reply is not what EST promises (content type, body). */
  | 'EST_BAD_RESPONSE'
  /** Mutual TLS: the server's certificate does not chain to the pinned root or does not name the host. */
  | 'TLS_UNTRUSTED'
  /** Mutual TLS: the server ended the connection with an alert (it did not accept the device certificate). */
  | 'TLS_REFUSED'
  /** Mutual TLS: the server could not be reached, or the handshake did not complete in time. */
  | 'TLS_UNREACHABLE'
  /** An issued or stored certificate failed the agent's checks; the old identity was kept. */
  | 'CERT_REFUSED'
  /** The device has no certificate yet. */
  | 'NOT_ENROLLED'
  /** The device certificate has expired: renewal over mutual TLS is impossible, enroll again. */
  | 'CERT_EXPIRED'
  /** A message cannot be sent as given (topic with wildcards, larger than the offline queue). */
  | 'MESSAGE_INVALID'
  /** The gateway connection is not online (or is switching certificates); the request was not sent. */
  | 'NOT_CONNECTED'
  /** The connection was stopped. */
  | 'STOPPED'
  /** The gateway did not answer a request in time. */
  | 'TIMEOUT'
  /** The gateway refused a shadow update (`status` carries its code: 400, 403, 409). */
  | 'SHADOW_REJECTED'
  /** The offline queue on disk cannot be used (held by another process, unreadable directory). */
  | 'QUEUE_UNAVAILABLE'
  /** The measured-boot event log is damaged: it no longer replays to anything meaningful. */
  | 'MEASUREMENT_LOG'
  /** The factory's birth identity files (identity/birth/) are missing pieces, malformed or inconsistent. */
  | 'BIRTH_IDENTITY'
  /** The verifier appraised the device's evidence and issued no attestation token. */
  | 'ATTESTATION_REFUSED'
  /** An update download could not reach the server, or broke off too often without progress. */
  | 'DOWNLOAD_UNREACHABLE'
  /** An update download over HTTPS: the server's certificate does not chain to the pinned root. */
  | 'DOWNLOAD_UNTRUSTED'
  /** The update server answered a download with an error status (`status` says which). */
  | 'DOWNLOAD_REFUSED'
  /** A download did not match its signed metadata: a chunk kept failing its hash, or the server sent more than the length. */
  | 'DOWNLOAD_CORRUPT'
  /** An update was refused: its release counter is below the device's anti-rollback counter, or its hash is wrong. */
  | 'UPDATE_REFUSED'
  /** An update cannot start now: another one is pending (commit or roll it back first). */
  | 'UPDATE_CONFLICT'
  /** There is no pending update to commit or roll back. */
  | 'UPDATE_NOT_PENDING'
  /** An update step failed (a hook, the copy, the counter); the device keeps running the slot it ran. */
  | 'UPDATE_FAILED'
  /** The slot state file is damaged or in an unknown format. */
  | 'UPDATE_STATE';

export class AgentError extends Error {
  /** HTTP status of an EST reply, when the error comes from one. */
  readonly status: number | undefined;
  /** The text the server sent with an error status. */
  readonly serverMessage: string | undefined;
  /** Seconds the server asked to wait (Retry-After), when it said. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    readonly code: AgentErrorCode,
    message: string,
    options: { status?: number; serverMessage?: string; retryAfterSeconds?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AgentError';
    this.status = options.status;
    this.serverMessage = options.serverMessage;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}
