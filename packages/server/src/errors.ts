/**
 * The one error type of the server package. `code` is stable and maps to an HTTP status and an
 * RFC 9457 problem type; `errors` names offending fields where there are any.
 */
export type RampartErrorCode =
  | 'VALIDATION'
  | 'QUERY_INVALID'
  | 'IMPORT_INVALID'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'RATE_LIMITED'
  | 'KEYSTORE'
  | 'STORAGE'
  | 'INTERNAL';

export const STATUS_OF: Record<RampartErrorCode, number> = {
  VALIDATION: 400,
  QUERY_INVALID: 400,
  IMPORT_INVALID: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  KEYSTORE: 500,
  STORAGE: 500,
  INTERNAL: 500,
};

export interface FieldProblem {
  field: string;
  message: string;
}

export class RampartError extends Error {
  readonly code: RampartErrorCode;
  readonly errors: readonly FieldProblem[];

  constructor(
    code: RampartErrorCode,
    message: string,
    errors: readonly FieldProblem[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RampartError';
    this.code = code;
    this.errors = errors;
  }

  get status(): number {
    return STATUS_OF[this.code];
  }
}

export const notFound = (what: string) => new RampartError('NOT_FOUND', `${what} does not exist`);
export const conflict = (message: string) => new RampartError('CONFLICT', message);
export const invalid = (field: string, message: string) =>
  new RampartError('VALIDATION', `${field} ${message}`, [{ field, message }]);
