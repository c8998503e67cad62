/**
 * The one error type of the shared package. Every error carries a stable `code` so that callers
 * (the CLI, the API's problem mapper, tests) can react to the kind of failure without parsing text.
 */
export type SharedErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_FILE_UNREADABLE'
  | 'QUERY_SYNTAX'
  | 'AUDIT_FORMAT'
  /** An update artifact, its chunk hashes or a binary delta do not match what the signed metadata says. */
  | 'UPDATE_FORMAT';

export class SharedError extends Error {
  readonly code: SharedErrorCode;
  readonly details: readonly string[];

  constructor(code: SharedErrorCode, message: string, details: readonly string[] = []) {
    super(message);
    this.name = 'SharedError';
    this.code = code;
    this.details = details;
  }
}
