/**
 * The one error type of the CLI. Its exit code tells scripts what kind of failure happened:
 *   1 the operation failed (or a verification found a problem)   2 usage or invalid input
 *   3 Rampart could not be reached                                4 authentication or permission refused
 *   5 the thing named does not exist                              6 conflict with the current state
 */
export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  unreachable: 3,
  refused: 4,
  notFound: 5,
  conflict: 6,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode = EXIT.failed,
    /** Extra lines for people: field errors, what to do next. */
    readonly hints: readonly string[] = [],
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export function exitCodeForStatus(status: number): ExitCode {
  if (status === 401 || status === 403) return EXIT.refused;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status >= 400 && status < 500) return EXIT.usage;
  return EXIT.failed;
}
