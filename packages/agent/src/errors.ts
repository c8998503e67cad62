/** The one error type of the device agent, with stable codes. */
export type AgentErrorCode = 'CONFIG_INVALID' | 'TRUST_ANCHOR' | 'KEY_FILE_INSECURE';

export class AgentError extends Error {
  constructor(
    readonly code: AgentErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}
